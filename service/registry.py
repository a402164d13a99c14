"""The model registry: finds, verifies, loads and hot-swaps artifact versions under `model_dir`.

Layout: `model_dir/<name>/<version>/{model.onnx,card.json}` (plus `tokenizer.json` for text models) with
positive integer versions; the newest version that passes verification is served. Hidden entries
(`.tmp-2-abcd1234`, a publish in progress) are ignored. A version that fails (no card, invalid card, checksum
mismatch, unloadable graph or tokenizer) is skipped with a logged reason and counted once in
`oegate_model_load_failures_total`; the registry then tries the next older version, and never replaces a loaded
version with a failing one.

Swaps are atomic: the name -> version mapping is immutable and replaced in one assignment. A request holds a
lease on the version it started with (`Registry.lease`), so it finishes on that version's session; the replaced
version is retired (its batcher drained and stopped) only once its last lease is released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import anyio.to_thread

from service.batching import MicroBatcher
from service.card import Card, TextInputSpec, read_verified_card
from service.codecs.text import TextEncoder
from service.errors import ModelNotReadyError, NotFoundError
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings
from service.statistics import ModelStatistics

logger = logging.getLogger(__name__)


class ModelVersion:
    """One loaded artifact version: its card, its session, its micro-batcher and (text models) its tokenizer."""

    def __init__(
        self,
        path: Path,
        card: Card,
        runtime: Runtime,
        batcher: MicroBatcher,
        text_encoder: TextEncoder | None = None,
        statistics: ModelStatistics | None = None,
    ) -> None:
        self.path = path
        self.card = card
        self.runtime = runtime
        self.batcher = batcher
        self.text_encoder = text_encoder
        self.statistics = statistics if statistics is not None else ModelStatistics()
        self._leases = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return str(self.card.version)

    @property
    def provider(self) -> str:
        return self.runtime.provider

    def acquire(self) -> None:
        self._leases += 1
        self._idle.clear()

    def release(self) -> None:
        self._leases -= 1
        if self._leases == 0:
            self._idle.set()

    async def retire(self) -> None:
        """Wait until no request holds this version, then drain and stop its batcher."""
        await self._idle.wait()
        await self.batcher.close()


@dataclass
class ReloadReport:
    """What one scan did: versions that went live and versions that failed (with reasons)."""

    loaded: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)


def scan_versions(model_dir: Path) -> dict[str, list[tuple[int, Path]]]:
    """Model name -> [(version, path)], newest first. Hidden entries and non-integer names are ignored."""
    found: dict[str, list[tuple[int, Path]]] = {}
    if not model_dir.is_dir():
        return found
    for model_path in sorted(model_dir.iterdir()):
        if model_path.name.startswith(".") or not model_path.is_dir():
            continue
        versions = [
            (int(p.name), p)
            for p in model_path.iterdir()
            if p.is_dir() and p.name.isdigit() and str(int(p.name)) == p.name and int(p.name) > 0
        ]
        if versions:
            found[model_path.name] = sorted(versions, reverse=True)
    return found


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Changes when any file in the version directory changes, so a fixed version is retried."""
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in path.iterdir()))
    except OSError:
        return ()


class Registry:
    """Serves the newest valid version of each model; `reload()` rescans, `lease()` hands a version to a request."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._models: Mapping[str, ModelVersion] = MappingProxyType({})
        self._known: frozenset[str] = frozenset()
        self._required: frozenset[str] = frozenset(settings.required_models or ())
        self._failures: dict[Path, tuple[tuple[str, int, int], ...]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    @property
    def models(self) -> Mapping[str, ModelVersion]:
        return self._models

    @property
    def required(self) -> frozenset[str]:
        return self._required

    async def start(self) -> ReloadReport:
        report = await self.reload()
        if self._settings.required_models is None:
            self._required = self._known
        missing = sorted(self._required - set(self._models))
        if missing:
            logger.error("required models not loaded: %s", missing)
        return report

    def ready(self) -> bool:
        """True when every required model has a loaded version (and at least one model is required)."""
        return bool(self._required) and self._required <= set(self._models)

    async def reload(self) -> ReloadReport:
        """Rescan `model_dir` and swap in any newer valid versions; never unloads a serving version."""
        async with self._lock:
            report = ReloadReport()
            found = await anyio.to_thread.run_sync(scan_versions, self._settings.model_dir)
            self._known = self._known | frozenset(found)
            models = dict(self._models)
            for name, versions in found.items():
                current = models.get(name)
                for version, path in versions:
                    if current is not None and version <= current.card.version:
                        break
                    loaded = await self._try_load(name, version, path, report)
                    if loaded is not None:
                        models[name] = loaded
                        break
            previous = self._models
            self._models = MappingProxyType(models)  # the atomic swap
            for name, model in models.items():
                old = previous.get(name)
                if model is old:
                    continue
                replaced = [] if old is None else [(old.version, old.provider)]
                threshold = model.card.threshold
                self._metrics.model_loaded(
                    name, model.version, model.provider, replaced, threshold.value, threshold.acceptance_target
                )
                if old is not None:
                    self._retire(old)
            return report

    async def _try_load(self, name: str, version: int, path: Path, report: ReloadReport) -> ModelVersion | None:
        fingerprint = _fingerprint(path)
        if self._failures.get(path) == fingerprint:
            return None  # failed before and unchanged: already logged and counted
        settings = self._settings

        def load() -> tuple[Card, Runtime, TextEncoder | None]:
            card = read_verified_card(path, name, version)
            encoder = TextEncoder.load(path, card.input) if isinstance(card.input, TextInputSpec) else None
            runtime = Runtime(
                path / "model.onnx", card, settings.providers, settings.intra_op_threads, settings.inter_op_threads
            )
            return card, runtime, encoder

        try:
            card, runtime, encoder = await anyio.to_thread.run_sync(load)
        except Exception as e:  # a bad artifact of any kind must never take the service down
            self._failures[path] = fingerprint
            self._metrics.model_load_failures.labels(name).inc()
            report.failed.append({"name": name, "version": str(version), "reason": str(e)})
            logger.error("skipping model version: %s", e, extra={"model": name, "version": str(version)})
            return None
        self._failures.pop(path, None)
        statistics = ModelStatistics()
        queue_wait = self._metrics.queue_wait.labels(name, str(version))

        def on_queue_wait(seconds: float) -> None:
            queue_wait.observe(seconds)
            statistics.record_queue_wait(seconds)

        def on_batch(size: int, seconds: float) -> None:
            self._observe_batch(name, size, seconds)
            statistics.record_execution(size, seconds)

        batcher = MicroBatcher(
            runtime.run,
            name=f"{name}/{version}",
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_delay_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            retry_after_s=settings.retry_after_s,
            on_batch=on_batch,
            on_depth=self._metrics.queue_depth.labels(name).set,
            on_queue_wait=on_queue_wait,
        )
        batcher.start()
        report.loaded.append({"name": name, "version": str(version), "provider": runtime.provider})
        logger.info(
            "model version loaded",
            extra={"model": name, "version": str(version), "provider": runtime.provider, "path": str(path)},
        )
        return ModelVersion(path, card, runtime, batcher, encoder, statistics)

    def _retire(self, old: ModelVersion) -> None:
        task = asyncio.get_running_loop().create_task(old.retire(), name=f"retire:{old.name}/{old.version}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _observe_batch(self, name: str, size: int, seconds: float) -> None:
        self._metrics.batch_size.labels(name).observe(size)
        self._metrics.inference_duration.labels(name).observe(seconds)

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The served version of `name` (which must equal `version` when given); 404/503 errors otherwise."""
        model = self._models.get(name)
        if model is None:
            if name in self._known or name in self._required:
                raise ModelNotReadyError(f"model '{name}' has no loadable version (see the service logs)")
            raise NotFoundError(f"model '{name}' not found")
        if version is not None and version != model.version:
            raise NotFoundError(f"model '{name}' version '{version}' is not loaded (serving version {model.version})")
        return model

    @asynccontextmanager
    async def lease(self, name: str, version: str | None = None) -> AsyncIterator[ModelVersion]:
        """Hold the served version for the whole request, so a swap in between cannot stop its session."""
        model = self.get(name, version)
        model.acquire()
        try:
            yield model
        finally:
            model.release()

    async def close(self) -> None:
        """Drain and stop every version (at shutdown)."""
        async with self._lock:
            models, self._models = self._models, MappingProxyType({})
            await asyncio.gather(*(model.retire() for model in models.values()), *self._retiring)

    async def poll(self, interval_s: float) -> None:
        """Rescan every `interval_s` seconds until cancelled; a failed scan is logged and retried next time."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reload()
            except Exception:  # keep polling whatever happened; the next scan may succeed
                logger.exception("model directory rescan failed")
