"""Dynamic micro-batching: concurrent requests to one model version share an onnxruntime session run.

A worker task takes the first queued job, then keeps gathering jobs until the batch holds `max_batch_size`
instances or `max_delay_s` has passed since it took the first one (with 0, it takes only what is already queued),
and runs the batch in a worker thread (of the inference limiter, when given) so the event loop keeps serving;
while it runs, new jobs queue up for the next batch. Requests larger than `max_batch_size` are split into chunks
and their results put back together in order. Each job's queue wait (from `submit` to the start of the session run
that takes it) is reported to `on_queue_wait`, each run's size and duration to `on_batch`. The queue is bounded in
instances: a request that does not fit is refused at once (`OverloadedError`, HTTP 503 with Retry-After) rather
than waiting without limit.

Priority (light requests, service/admission.py): jobs submitted with `priority=True` have a queue and a worker of
their own, whose batches hold only priority jobs and run with the priority limiter. A lone small request thus never
waits for the ordinary jobs queued before it, nor for the ordinary worker's wait for an inference thread; it waits
at most for the priority run in progress. Each queue has the instance bound: ordinary jobs cannot fill the priority
queue's.

A batch of one instance (a lone request) runs on the event loop itself when the model's one-instance runs take
less than `INLINE_RUN_S` (1 ms) on average: the hand-off to a worker thread and back then costs more than the run
(BENCHMARKS.md section 1: -4% to -19% CPU per request at 1 connection for the MNIST net). The first such run, and
every run of a slower model (a text encoder, a WRN) or of a larger batch, goes to a thread, so the loop is never held
for long.

Each batcher serves one model version, so a batch never mixes models, versions or modalities. Its instances are
images (a float32 array [n, C, H, W], joined with `np.concatenate`) or texts (a `TokenBatch` of unpadded token
ids, joined as they are; the runtime pads the joined batch to its longest text).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio.to_thread
import numpy as np
from anyio import CapacityLimiter

from service.codecs.text import TokenBatch
from service.errors import InferenceFailedError, OverloadedError, ServiceError

logger = logging.getLogger(__name__)
INLINE_RUN_S = 0.001
"""A one-instance run whose moving-average duration is below this runs on the event loop, not in a thread."""
INLINE_EMA = 0.2  # weight of the newest one-instance run in that average

Outputs = dict[str, np.ndarray]
ModelInputs = np.ndarray | TokenBatch
"""A model version's instances: images [n, C, H, W] (image models) or token ids (text models)."""


def join_inputs(parts: list[ModelInputs]) -> ModelInputs:
    """Several jobs' instances as one batch, in order (all parts are of one kind: one batcher, one model)."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], TokenBatch):
        return TokenBatch.join([part for part in parts if isinstance(part, TokenBatch)])
    return np.concatenate([part for part in parts if isinstance(part, np.ndarray)])


@dataclass
class _Job:
    inputs: ModelInputs
    future: asyncio.Future[Outputs] = field(repr=False)
    queued_at: float = field(default_factory=time.perf_counter)  # seconds (perf_counter) when submitted


class _Stop:
    """Queued by `close()`: the worker finishes every job before it, then exits."""


class MicroBatcher:
    """Gathers submitted instances into batches for `run` (a blocking function, e.g. `Runtime.run`)."""

    def __init__(
        self,
        run: Callable[[ModelInputs], Outputs],
        *,
        name: str,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_size: int,
        retry_after_s: int,
        on_batch: Callable[[int, float], None] = lambda size, seconds: None,
        on_depth: Callable[[int], None] = lambda depth: None,
        on_queue_wait: Callable[[float], None] = lambda seconds: None,
        limiter: Callable[[bool], CapacityLimiter] | None = None,
    ) -> None:
        self._run = run
        self._name = name
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_s
        self._max_queue_size = max_queue_size
        self._retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._on_queue_wait = on_queue_wait
        # Gives the inference threads' limiter for a batch of priority (True) or ordinary jobs (None: anyio's pool).
        self._limiter = limiter
        self._queues: dict[bool, asyncio.Queue[_Job | _Stop]] = {False: asyncio.Queue(), True: asyncio.Queue()}
        self._depths = {False: 0, True: 0}  # instances queued and not yet taken into a batch, per queue
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False
        self._single_run_s: float | None = None  # moving average of one-instance runs (None: none measured yet)

    def start(self) -> None:
        """Start the worker tasks, ordinary and priority (needs a running event loop)."""
        if not self._workers:
            loop = asyncio.get_running_loop()
            self._workers = [
                loop.create_task(self._work(False), name=f"batcher:{self._name}"),
                loop.create_task(self._work(True), name=f"batcher:{self._name}:priority"),
            ]

    async def close(self) -> None:
        """Stop accepting work, finish every queued job, then stop the worker."""
        if self._closing:
            return
        self._closing = True
        for queue in self._queues.values():
            queue.put_nowait(_Stop())
        await asyncio.gather(*self._workers)

    @property
    def depth(self) -> int:
        """Instances queued (both queues) and not yet taken into a batch."""
        return self._depths[False] + self._depths[True]

    @property
    def closing(self) -> bool:
        """True once `close()` was called (the worker may still be finishing queued jobs)."""
        return self._closing

    async def submit(self, inputs: ModelInputs, priority: bool = False) -> Outputs:
        """Queue `inputs` [n, ...] (in the priority queue if `priority`) and wait for their outputs, in order;
        raises OverloadedError if the queues are full."""
        if self._closing or not self._workers:
            raise ServiceError(f"model {self._name}: batcher is not running")
        n = len(inputs)
        if self._depths[priority] + n > self._max_queue_size:  # each queue has the bound: heavy jobs cannot fill it
            raise OverloadedError(
                f"model {self._name} is overloaded ({self._depths[priority]} instances queued, limit "
                f"{self._max_queue_size}); "
                f"retry after {self._retry_after_s} s",
                retry_after_s=self._retry_after_s,
            )
        loop = asyncio.get_running_loop()
        jobs = [
            _Job(inputs[start : start + self._max_batch_size], loop.create_future())
            for start in range(0, n, self._max_batch_size)
        ]
        for job in jobs:
            self._queues[priority].put_nowait(job)
        self._set_depth(priority, n)
        results = await asyncio.gather(*(job.future for job in jobs))
        if len(results) == 1:
            return results[0]
        return {key: np.concatenate([r[key] for r in results]) for key in results[0]}

    def _set_depth(self, priority: bool, change: int) -> None:
        self._depths[priority] += change
        self._on_depth(self.depth)

    async def _work(self, priority: bool) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queues[priority]
        carry: _Job | _Stop | None = None
        while True:
            first = carry if carry is not None else await queue.get()
            carry = None
            if isinstance(first, _Stop):
                return
            batch = [first]
            size = len(first.inputs)
            deadline = loop.time() + self._max_delay_s
            while size < self._max_batch_size:
                remaining = deadline - loop.time()
                try:
                    job = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining)
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if isinstance(job, _Stop) or size + len(job.inputs) > self._max_batch_size:
                    carry = job
                    break
                batch.append(job)
                size += len(job.inputs)
            self._set_depth(priority, -size)
            await self._execute(batch, size, priority)

    def _timed_run(self, inputs: ModelInputs) -> tuple[Outputs, float]:
        """The run's outputs and its duration in seconds (measured where it runs: the loop or a thread)."""
        started = time.perf_counter()
        outputs = self._run(inputs)
        return outputs, time.perf_counter() - started

    async def _execute(self, batch: list[_Job], size: int, priority: bool) -> None:
        live = [job for job in batch if not job.future.done()]  # a cancelled request needs no run
        if not live:
            return
        inputs = join_inputs([job.inputs for job in live])
        started = time.perf_counter()
        for job in live:
            self._on_queue_wait(started - job.queued_at)
        try:
            limiter = None if self._limiter is None else self._limiter(priority)
            if len(inputs) == 1 and self._single_run_s is not None and self._single_run_s < INLINE_RUN_S:
                outputs, run_s = self._timed_run(inputs)  # cheaper than a thread hand-off and back (module doc)
            else:
                outputs, run_s = await anyio.to_thread.run_sync(self._timed_run, inputs, limiter=limiter)
        except Exception as e:  # any onnxruntime failure fails this batch's requests, never the worker
            logger.exception("inference failed", extra={"model": self._name, "batch_size": size})
            for job in live:
                if not job.future.done():
                    job.future.set_exception(InferenceFailedError(f"model {self._name}: inference failed: {e}"))
            return
        if len(inputs) == 1:  # the run's own time, not the hand-off's: that is what running inline would cost
            last = self._single_run_s
            self._single_run_s = run_s if last is None else (1 - INLINE_EMA) * last + INLINE_EMA * run_s
        self._on_batch(len(inputs), time.perf_counter() - started)
        start = 0
        for job in live:
            stop = start + len(job.inputs)
            if not job.future.done():
                job.future.set_result({key: value[start:stop] for key, value in outputs.items()})
            start = stop
