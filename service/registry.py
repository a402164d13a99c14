"""The model registry: finds, verifies, loads and hot-swaps artifact versions under `model_dir`.

Layout: `model_dir/<name>/<version>/{model.onnx,card.json}` (plus `tokenizer.json` for text models) with
positive integer versions; the newest version that passes verification is served, unless the model is pinned.
Hidden entries (`.tmp-2-abcd1234`, a publish in progress) are ignored, and so is a version directory without
`card.json` yet (a copy in progress: skipped with a debug log, not a failure). A version that fails (invalid card,
checksum mismatch, unloadable graph or tokenizer) is skipped with a logged reason and counted in
`oegate_model_load_failures_total` once per card it had (files still arriving under the same card are retried
when they change, but not counted again); the registry then tries the next older version, and never replaces a
loaded version with a failing one. An entry that disappears while it is scanned is skipped, not an error.

Pins: a pinned model (`OEGATE_PIN`, or `pin()` from the admin API) serves exactly its pinned version; pinning an
earlier version is the rollback. A pin that cannot be loaded is refused and the served version kept. Unpinning
serves the newest valid version again. With several workers (`OEGATE_WORKERS`) the pins live in a file all of them
read at every scan (service/shared_pins.py): a pin through one worker's admin API reaches the others at their next
poll.

Unloading: a served version whose directory has been removed is taken out of service on the next scan (logged,
counted in `oegate_model_unloads_total{reason="removed"}`); the newest remaining valid version (the pinned one,
for a pinned model) is served instead, or none: then the model is not ready and its requests get 503. A missing
`model_dir` unloads nothing (a lost mount must not take every model out of service).

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
from service.errors import ForbiddenError, ModelNotReadyError, NotFoundError
from service.limits import WorkLimits
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings
from service.shared_pins import SharedPins
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


def scan_versions(model_dir: Path) -> dict[str, list[tuple[int, Path]]] | None:
    """Model name -> [(version, path)], newest first; None when `model_dir` is not a directory. Hidden entries and
    non-integer names are ignored, and so is a model directory removed while it is scanned."""
    found: dict[str, list[tuple[int, Path]]] = {}
    try:
        entries = sorted(model_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return None
    for model_path in entries:
        if model_path.name.startswith(".") or not model_path.is_dir():
            continue
        try:
            versions = [
                (int(p.name), p)
                for p in model_path.iterdir()
                if p.name.isdigit() and str(int(p.name)) == p.name and int(p.name) > 0 and p.is_dir()
            ]
        except (FileNotFoundError, NotADirectoryError):  # removed (or replaced) since it was listed
            logger.info("model directory vanished during the scan", extra={"path": str(model_path)})
            continue
        if versions:
            found[model_path.name] = sorted(versions, reverse=True)
    return found


Fingerprint = tuple[tuple[str, int, int], ...]


def _fingerprint(path: Path) -> Fingerprint:
    """Changes when any file in the version directory changes, so a fixed version is retried."""
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in path.iterdir()))
    except OSError:
        return ()


def _card_identity(fingerprint: Fingerprint) -> tuple[int, int] | None:
    """The card's (mtime, size) in `fingerprint`: a failure is counted once per card a version directory had."""
    return next(((mtime, size) for name, mtime, size in fingerprint if name == "card.json"), None)


class Registry:
    """Serves the newest valid version of each model; `reload()` rescans, `lease()` hands a version to a request."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        limits: WorkLimits | None = None,
        shared_pins: SharedPins | None = None,
    ) -> None:
        self._settings = settings
        self._shared_pins = shared_pins  # with several workers: the pins all of them serve (service/shared_pins.py)
        self._metrics = metrics
        self._limits = limits
        self._models: Mapping[str, ModelVersion] = MappingProxyType({})
        self._known: frozenset[str] = frozenset()
        self._required: frozenset[str] = frozenset(settings.required_models or ())
        self._pins: dict[str, int] = dict(settings.pin)
        self._failures: dict[Path, Fingerprint] = {}  # the fingerprint of each version's last failed load
        self._counted: dict[Path, tuple[int, int] | None] = {}  # the card each version's failure was counted for
        self._retiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    @property
    def models(self) -> Mapping[str, ModelVersion]:
        return self._models

    @property
    def required(self) -> frozenset[str]:
        return self._required

    @property
    def pins(self) -> Mapping[str, int]:
        return MappingProxyType(dict(self._pins))

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
        """Rescan `model_dir`: swap in newer valid versions (or the pinned ones), unload removed ones."""
        async with self._lock:
            return await self._reload()

    async def pin(self, name: str, version: int) -> ReloadReport:
        """Serve exactly `version` of `name` from now on (a rollback when it is older). The swap is a hot swap:
        requests in flight finish on the version they started with. NotFoundError (and the pin is not changed)
        when that version is not there or does not load. With several workers the pin goes to the shared pin file:
        this worker applies it now, the others at their next scan."""
        self._check_shared_pins()
        async with self._lock:
            previous = await self._set_pin(name, version)
            report = await self._reload()
            served = self._models.get(name)
            if served is None or served.card.version != version:
                await self._set_pin(name, previous)
                reasons = [f["reason"] for f in report.failed if f["name"] == name and f["version"] == str(version)]
                why = reasons[0] if reasons else f"no version directory {name}/{version} with a card"
                raise NotFoundError(f"cannot pin model '{name}' to version {version}: {why}")
            logger.info("model pinned", extra={"model": name, "version": str(version)})
            return report

    async def unpin(self, name: str) -> ReloadReport:
        """Serve the newest valid version of `name` again (a no-op if it is not pinned)."""
        self._check_shared_pins()
        async with self._lock:
            await self._set_pin(name, None)
            logger.info("model unpinned", extra={"model": name})
            return await self._reload()

    def _check_shared_pins(self) -> None:
        if self._settings.workers > 1 and self._shared_pins is None:
            raise ForbiddenError(
                f"this process is one of {self._settings.workers} workers without a shared pin file: a pin would "
                "reach it alone; pin with OEGATE_PIN or through a service started by `python -m service`"
            )

    async def _set_pin(self, name: str, version: int | None) -> int | None:
        """Pin `name` to `version` (None: unpin), here or in the shared pin file; returns its previous pin."""
        if self._shared_pins is not None:
            return await anyio.to_thread.run_sync(self._shared_pins.set, name, version)
        previous = self._pins.pop(name, None)
        if version is not None:
            self._pins[name] = version
        return previous

    async def _reload(self) -> ReloadReport:
        report = ReloadReport()
        if self._shared_pins is not None:  # another worker may have pinned or unpinned since the last scan
            self._pins = await anyio.to_thread.run_sync(self._shared_pins.read)
        found = await anyio.to_thread.run_sync(scan_versions, self._settings.model_dir)
        if found is None:
            if self._models:
                missing = str(self._settings.model_dir)
                logger.warning("model directory missing: nothing unloaded", extra={"path": missing})
            return report
        self._known = self._known | frozenset(found)
        models = dict(self._models)
        removed: list[ModelVersion] = []
        for name in sorted(set(found) | set(models)):
            versions = found.get(name, [])
            current = models.get(name)
            if current is not None and not await anyio.to_thread.run_sync(current.path.is_dir):
                removed.append(current)
                del models[name]
                current = None
            pinned = self._pins.get(name)
            if pinned is not None:
                if current is not None and current.card.version == pinned:
                    continue
                versions = [(version, path) for version, path in versions if version == pinned]
            for version, path in versions:
                if pinned is None and current is not None and version <= current.card.version:
                    break
                loaded = await self._try_load(name, version, path, report)
                if loaded is not None:
                    models[name] = loaded
                    break
        previous = self._models
        self._models = MappingProxyType(models)  # the atomic swap
        for gone in removed:
            logger.warning(
                "model version unloaded: its directory was removed",
                extra={"model": gone.name, "version": gone.version, "path": str(gone.path),
                       "now_serving": models[gone.name].version if gone.name in models else None},
            )  # fmt: skip
            self._metrics.model_unloaded(gone.name, gone.version, gone.provider, "removed")
            self._retire(gone)
        for name, model in models.items():
            old = previous.get(name)
            if model is old:
                continue
            replaced = [] if old is None or old in removed else [(old.version, old.provider)]
            threshold = model.card.threshold
            self._metrics.model_loaded(
                name, model.version, model.provider, replaced, threshold.value, threshold.acceptance_target
            )
            if old is not None and old not in removed:
                self._retire(old)
        return report

    async def _try_load(self, name: str, version: int, path: Path, report: ReloadReport) -> ModelVersion | None:
        fingerprint = await anyio.to_thread.run_sync(_fingerprint, path)
        if self._failures.get(path) == fingerprint:
            return None  # failed before and unchanged: already logged and counted
        card_identity = _card_identity(fingerprint)
        if card_identity is None:  # not an artifact yet (files still being copied), or gone: not a failure
            logger.debug("version directory without card.json skipped", extra={"model": name, "version": str(version)})
            return None
        settings = self._settings

        def load() -> tuple[Card, Runtime, TextEncoder | None]:
            card = read_verified_card(path, name, version)
            encoder = TextEncoder.load(path, card.input) if isinstance(card.input, TextInputSpec) else None
            runtime = Runtime(
                path / "model.onnx",
                card,
                settings.providers,
                settings.intra_op_threads,
                settings.inter_op_threads,
                cpu_mem_arena=settings.cpu_mem_arena,
                workers=settings.workers,
            )
            return card, runtime, encoder

        try:
            card, runtime, encoder = await anyio.to_thread.run_sync(load)
        except Exception as e:  # a bad artifact of any kind must never take the service down
            self._failures[path] = fingerprint
            report.failed.append({"name": name, "version": str(version), "reason": str(e)})
            if path in self._counted and self._counted[path] == card_identity:
                # Same card, other files changed (a slow copy): retried, but one failure is counted per card.
                logger.warning("model version still fails: %s", e, extra={"model": name, "version": str(version)})
                return None
            self._counted[path] = card_identity
            self._metrics.model_load_failures.labels(name).inc()
            logger.error("skipping model version: %s", e, extra={"model": name, "version": str(version)})
            return None
        self._failures.pop(path, None)
        self._counted.pop(path, None)
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
            limiter=None if self._limits is None else self._limits.priority_inference_limiter,
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
