"""Capture: what the gate rejects in production, plus samples of what it accepts, kept as the next outlier pool.

Off unless `capture_dir` is set (then nothing is sampled, queued or stored, and no directory is created). When on,
each instance of a captured model (`capture_models`, default all) falls in one kind, by the decision its client got
(the request's threshold, the card's unless overridden):
- `rejected`: anomaly_score >= threshold, kept with probability `capture_rejected_rate`;
- `band`: accepted, threshold - `capture_band` <= anomaly_score < threshold, kept with `capture_band_rate`;
- `control`: accepted below the band, kept with `capture_control_rate`.
Each sample records its `source`: the value of the request's `capture_source_header` (default `X-OEGate-Source`),
a client's own declaration (set it at a proxy to make it trustworthy), kept only if it is 1-64 characters of
`[A-Za-z0-9._:@-]`, else "" (unknown); curation caps how many samples one source contributes to the next pool.
A rate of 1 or 0 draws nothing; any other rate draws one number from the capture's random generator per instance of
that kind, in request order, so a seeded generator gives exact, testable samples.

The request path only samples and puts each kept instance on a queue without blocking: its raw input as received
(`RawInput`, a reference the decoder already held: image bytes, the text, the checked float32 array), no copy. The
queue is bounded in instances and bytes (`capture_queue_size`, `capture_queue_bytes`); what does not fit is dropped
and counted. One writer thread stores each sample (service/capture_store.py) and enforces retention after each
write and every `RETENTION_INTERVAL_S` when idle: older than `capture_max_age_s`, then oldest first beyond
`capture_max_bytes`. A failing store (disk full, read-only, a broken index) drops and counts the sample; no request
ever waits for, or fails because of, capture.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import logging
import queue
import random
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread
import numpy as np

from service import capture_store
from service.errors import ServiceError
from service.metrics import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.inference import GateResult

logger = logging.getLogger(__name__)

InputKind = Literal["image", "array", "text"]
KINDS = ("rejected", "band", "control")
DROP_REASONS = ("queue_full", "too_large", "store_error", "shutdown")
RETENTION_INTERVAL_S = 60.0  # an idle writer still deletes expired captures this often
CLOSE_TIMEOUT_S = 10.0  # at shutdown, the writer gets this long to store what is queued
SOURCE_PATTERN = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


@dataclass(frozen=True, slots=True)
class RawInput:
    """One instance as the service received it: `image`, the encoded file's bytes (after base64 decoding); `text`,
    the text; `array`, the float32 [C, H, W] array the model got (the received numbers, range-checked)."""

    kind: InputKind
    data: bytes | str | np.ndarray

    @property
    def size(self) -> int:
        """Bytes it holds in memory (characters for a text; a text is at most `max_text_chars` long)."""
        return self.data.nbytes if isinstance(self.data, np.ndarray) else len(self.data)


RawInputs = list[RawInput]
"""Filled by a decoder, one per instance in request order, when the predictor asks for raw inputs (capture on)."""


@dataclass(frozen=True, slots=True)
class _Sample:
    record: capture_store.CaptureRecord
    raw: RawInput


_STOP = object()


def encode_payload(raw: RawInput) -> tuple[bytes, str, str]:
    """The file to store for `raw`: its bytes, media type and file extension."""
    if isinstance(raw.data, str):
        return raw.data.encode("utf-8"), "text/plain; charset=utf-8", ".txt"
    if isinstance(raw.data, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, raw.data, allow_pickle=False)
        return buffer.getvalue(), "application/x-npy", ".npy"
    if raw.data.startswith(PNG_SIGNATURE):
        return raw.data, "image/png", ".png"
    if raw.data.startswith(JPEG_SIGNATURE):
        return raw.data, "image/jpeg", ".jpg"
    return raw.data, "application/octet-stream", ".bin"


def request_source(value: str | None) -> str:
    """The source a request declares (its source header's value) as stored: the value if it is 1-64 characters of
    `[A-Za-z0-9._:@-]`, else "" (absent or not a plain name: never stored as sent)."""
    return value if value is not None and SOURCE_PATTERN.fullmatch(value) else ""


class Capture:
    """The capture policy, its bounded queue and its writer thread (started by `start`, stopped by `close`).

    `rng` (the sampling draws) and `clock` (capture times, retention) are injectable for tests."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.enabled = settings.capture_dir is not None
        self.directory: Path | None = settings.capture_dir
        self._models = None if settings.capture_models is None else frozenset(settings.capture_models)
        self._rates = {
            "rejected": settings.capture_rejected_rate,
            "band": settings.capture_band_rate,
            "control": settings.capture_control_rate,
        }
        self._band = settings.capture_band
        self._max_bytes = settings.capture_max_bytes
        self._max_age_s = settings.capture_max_age_s
        self._queue_size = settings.capture_queue_size
        self._queue_bytes = settings.capture_queue_bytes
        self._metrics = metrics
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._queue: queue.SimpleQueue[_Sample | object] = queue.SimpleQueue()
        self._idle = threading.Condition()  # guards the two pending counts below
        self._pending = 0  # samples queued or being written
        self._pending_bytes = 0
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._failing = False  # the writer's last store attempt failed (log once per streak)
        if self.enabled:
            for reason in DROP_REASONS:
                metrics.capture_dropped.labels(reason)

    def wants(self, model: str) -> bool:
        """Whether `model`'s requests should keep their raw inputs (capture on, model selected, writer running)."""
        return self._accepting and (self._models is None or model in self._models)

    # -- the request path: sample, then a non-blocking put -------------------------------------------------------

    def offer(self, result: GateResult, raw: Sequence[RawInput], source: str = "") -> None:
        """Sample `result`'s instances and queue the kept ones (never blocks, never raises for a full queue);
        `source` is the request's, already checked by `request_source`."""
        count = int(result.reject.shape[0])
        if len(raw) != count:  # a decoder that did not fill its raw inputs: a bug, not a reason to fail a request
            logger.warning("capture skipped: %d raw inputs for %d instances", len(raw), count)
            return
        now = self._clock()
        band_low = result.threshold - self._band
        scores, rejects, labels = result.anomaly_score.tolist(), result.reject.tolist(), result.label_index.tolist()
        for index in range(count):
            kind = "rejected" if rejects[index] else ("band" if scores[index] >= band_low else "control")
            if not self._sampled(kind):
                continue
            record = capture_store.CaptureRecord(
                id=uuid.uuid4().hex, time=now, model=result.model, version=result.version, kind=kind,
                anomaly_score=scores[index], threshold=result.threshold, label=result.labels[labels[index]],
                label_index=labels[index], reject=rejects[index], input_kind=raw[index].kind,
                media_type="", extension="",  # the writer's, once it has encoded the file
                source=source,
            )  # fmt: skip
            self._put(_Sample(record, raw[index]))

    def _sampled(self, kind: str) -> bool:
        rate = self._rates[kind]
        if rate >= 1.0:
            return True
        return rate > 0.0 and self._rng.random() < rate

    def _put(self, sample: _Sample) -> None:
        size = sample.raw.size
        with self._idle:
            if not self._accepting:
                reason = "shutdown"
            elif self._pending >= self._queue_size or self._pending_bytes + size > self._queue_bytes:
                reason = "queue_full"
            else:
                self._pending += 1
                self._pending_bytes += size
                self._queue.put(sample)
                return
        self._metrics.capture_dropped.labels(reason).inc()

    # -- the writer thread ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer (it creates the directory and the index); a no-op while capture is off."""
        if not self.enabled or self._thread is not None:
            return
        self._accepting = True
        self._thread = threading.Thread(target=self._write_loop, name="capture-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Stop accepting samples; give the writer `CLOSE_TIMEOUT_S` to store the queued ones, then return."""
        if self._thread is None:
            return
        with self._idle:
            self._accepting = False
        self._queue.put(_STOP)
        thread, self._thread = self._thread, None
        await anyio.to_thread.run_sync(thread.join, CLOSE_TIMEOUT_S)
        if thread.is_alive():
            logger.warning("capture writer still busy at shutdown", extra={"pending": self._pending})

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued sample has been stored or dropped (True), or `timeout` seconds pass (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _write_loop(self) -> None:
        connection = self._open()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=RETENTION_INTERVAL_S)
                except queue.Empty:
                    item = None  # idle: retention only
                if item is _STOP:
                    return
                if isinstance(item, _Sample):
                    try:  # done only after retention and the gauge, so `wait_idle` sees the store settled
                        if connection is None:
                            connection = self._open()
                        self._store(connection, item)
                        if connection is not None:
                            connection = self._retain(connection)
                    finally:
                        self._done(item)
                elif connection is not None:
                    connection = self._retain(connection)
        finally:
            if connection is not None:
                connection.close()

    def _open(self) -> sqlite3.Connection | None:
        """The index connection (directory and schema created), or None after logging why not."""
        assert self.directory is not None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            connection = capture_store.connect(self.directory)
        except (OSError, sqlite3.Error) as e:
            self._failed("capture store could not be opened", e)
            return None
        self._metrics.capture_store_bytes.set(capture_store.total_bytes(connection))
        return connection

    def _store(self, connection: sqlite3.Connection | None, sample: _Sample) -> None:
        assert self.directory is not None
        if connection is None:
            self._metrics.capture_dropped.labels("store_error").inc()
            return
        try:
            payload, media_type, extension = encode_payload(sample.raw)
            if len(payload) > self._max_bytes:
                self._metrics.capture_dropped.labels("too_large").inc()
                return
            record = dataclasses.replace(sample.record, media_type=media_type, extension=extension)
            capture_store.add(self.directory, connection, record, payload)
        # Any failure (a full or read-only disk, a locked or broken index, an unencodable text) drops this sample
        # only: a writer thread that died would silently end capture for the life of the process.
        except Exception as e:
            self._metrics.capture_dropped.labels("store_error").inc()
            self._failed("capture sample dropped: the store failed", e)
            return
        if self._failing:
            logger.info("capture store writing again")
            self._failing = False
        self._metrics.captures.labels(record.model, record.kind).inc()

    def _retain(self, connection: sqlite3.Connection) -> sqlite3.Connection | None:
        """Retention, then the store-size gauge; a failing index is reopened on the next sample."""
        assert self.directory is not None
        try:
            capture_store.enforce_retention(self.directory, connection, self._clock(), self._max_bytes, self._max_age_s)
            self._metrics.capture_store_bytes.set(capture_store.total_bytes(connection))
        except (OSError, sqlite3.Error) as e:
            self._failed("capture retention failed", e)
            connection.close()
            return None
        return connection

    def _done(self, sample: _Sample) -> None:
        with self._idle:
            self._pending -= 1
            self._pending_bytes -= sample.raw.size
            self._idle.notify_all()

    def _failed(self, message: str, error: BaseException) -> None:
        if not self._failing:  # once per streak: a broken disk must not flood the logs
            logger.error(message, extra={"error": f"{type(error).__name__}: {error}"})
        self._failing = True

    # -- the admin API (worker threads, own connections) ----------------------------------------------------------

    async def list(
        self, model: str | None, since: float | None, until: float | None, limit: int
    ) -> list[dict[str, Any]]:
        """Captures in [since, until) (of `model` if given), newest first, at most `limit`."""
        rows: list[dict[str, Any]] = await self._admin(
            lambda c: capture_store.list_rows(c, model, since, until, limit), []
        )
        for row in rows:
            row["time_utc"] = dt.datetime.fromtimestamp(row["time"], dt.UTC).isoformat().replace("+00:00", "Z")
        return rows

    async def delete(self, model: str | None, since: float | None, until: float | None) -> int:
        """Delete the captures in [since, until) (of `model` if given), files and rows; returns how many."""
        directory = self.directory
        assert directory is not None
        deleted: int = await self._admin(lambda c: capture_store.delete_range(directory, c, model, since, until), 0)
        return deleted

    async def _admin(self, work: Callable[[sqlite3.Connection], Any], empty: Any) -> Any:
        """`work` on a connection of its own, in a worker thread; `empty` while the writer has not made the index."""
        assert self.directory is not None
        directory = self.directory

        def run() -> Any:
            if not (directory / capture_store.INDEX).exists():
                return empty
            with capture_store.opened(directory) as connection:
                result = work(connection)
                self._metrics.capture_store_bytes.set(capture_store.total_bytes(connection))
                return result

        try:
            return await anyio.to_thread.run_sync(run)
        except (OSError, sqlite3.Error) as e:
            raise ServiceError(f"the capture store is unavailable: {type(e).__name__}: {e}") from e
