"""The micro-batcher's contract, without wall-clock timing: runs are held on threading events, the worker is
given the loop with `settle()` (a few `asyncio.sleep(0)`, which runs every ready task without waiting for time to
pass), and delays are either 0 or an hour, so that a test either never waits or would hang (the `HANG` bound
only turns a hang into a failure)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import anyio.to_thread
import numpy as np
import pytest

from service.batching import MicroBatcher, Outputs
from service.errors import InferenceFailedError, OverloadedError, ServiceError

pytestmark = pytest.mark.anyio

HOUR = 3600.0
HANG = 5.0  # seconds: only a broken batcher gets near this (a correct one needs microseconds)


def doubling(batch: np.ndarray) -> Outputs:
    return {"double": batch * 2, "row_sum": batch.sum(axis=1)}


class Recorder:
    """What the batcher reported: batch sizes (on_batch) and queue depths (on_depth)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.depths: list[int] = []
        self.seconds: list[float] = []
        self.queue_waits: list[float] = []


def make_batcher(
    run: Callable[[np.ndarray], Outputs] = doubling, recorder: Recorder | None = None, **overrides: float
) -> MicroBatcher:
    options = {"max_batch_size": 8, "max_delay_s": 0.0, "max_queue_size": 100, "retry_after_s": 2}
    options.update(overrides)
    seen = recorder or Recorder()

    def on_batch(size: int, seconds: float) -> None:
        seen.sizes.append(size)
        seen.seconds.append(seconds)

    batcher = MicroBatcher(
        run,
        name="toy/1",
        max_batch_size=int(options["max_batch_size"]),
        max_delay_s=options["max_delay_s"],
        max_queue_size=int(options["max_queue_size"]),
        retry_after_s=int(options["retry_after_s"]),
        on_batch=on_batch,
        on_depth=seen.depths.append,
        on_queue_wait=seen.queue_waits.append,
    )
    batcher.start()
    return batcher


class Gate:
    """A run function that blocks each call until released, recording the batches it was given."""

    def __init__(self, block_first_only: bool = False) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.batches: list[np.ndarray] = []
        self._block_first_only = block_first_only

    def __call__(self, batch: np.ndarray) -> Outputs:
        self.batches.append(batch.copy())
        if not (self._block_first_only and len(self.batches) > 1):
            self.started.set()
            self.release.wait(HANG)
        return doubling(batch)

    async def wait_started(self) -> None:
        assert await anyio.to_thread.run_sync(self.started.wait, HANG)


async def settle() -> None:
    """Let every ready task (the worker, submitters) run until it blocks; no wall-clock time is involved."""
    for _ in range(20):
        await asyncio.sleep(0)


def rows(*values: float) -> np.ndarray:
    return np.array([[v, v] for v in values], np.float32)


async def test_concurrent_requests_share_one_run_and_get_their_own_rows_back() -> None:
    seen = Recorder()
    started = time.perf_counter()
    batcher = make_batcher(recorder=seen, max_delay_s=HOUR)
    assert batcher.closing is False
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(rows(i)) for i in range(8))), HANG)
    assert seen.sizes == [8]  # the batch filled up, so it ran without waiting out the hour
    (seconds,) = seen.seconds  # the run's duration: within the test's own, whatever the machine's speed
    assert isinstance(seconds, float) and 0.0 <= seconds <= time.perf_counter() - started
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["double"], rows(2 * i))
        np.testing.assert_array_equal(result["row_sum"], np.array([2 * i], np.float32))
    await batcher.close()


@pytest.mark.parametrize(("count", "chunks"), [(8, [4, 4]), (5, [4, 1]), (10, [4, 4, 2]), (4, [4]), (3, [3])])
async def test_large_requests_are_split_into_chunks_and_reassembled_in_order(count: int, chunks: list[int]) -> None:
    seen = Recorder()
    batcher = make_batcher(recorder=seen, max_batch_size=4)
    result = await asyncio.wait_for(batcher.submit(rows(*range(count))), HANG)
    assert seen.sizes == chunks
    np.testing.assert_array_equal(result["double"], rows(*(2 * v for v in range(count))))
    np.testing.assert_array_equal(result["row_sum"], np.arange(count, dtype=np.float32) * 2)
    assert sorted(result) == ["double", "row_sum"]
    await batcher.close()


async def test_a_full_batch_runs_at_once_without_waiting_for_the_delay() -> None:
    seen = Recorder()
    batcher = make_batcher(recorder=seen, max_batch_size=2, max_delay_s=HOUR)
    result = await asyncio.wait_for(batcher.submit(rows(1, 2)), HANG)  # fills the batch on its own
    np.testing.assert_array_equal(result["double"], rows(2, 4))
    pair = await asyncio.wait_for(asyncio.gather(batcher.submit(rows(3)), batcher.submit(rows(4))), HANG)
    assert [float(r["double"][0, 0]) for r in pair] == [6.0, 8.0]
    assert seen.sizes == [2, 2]
    await batcher.close()


async def test_jobs_that_exactly_fill_the_batch_join_it_and_one_more_waits() -> None:
    gate = Gate(block_first_only=True)
    seen = Recorder()
    batcher = make_batcher(gate, recorder=seen, max_batch_size=4, max_delay_s=0.0)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()  # the worker is busy; the next jobs queue up behind it
    queued = [asyncio.ensure_future(batcher.submit(r)) for r in (rows(1, 2), rows(3, 4), rows(5))]
    await settle()
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, *queued), HANG)
    assert seen.sizes == [1, 4, 1]  # 2 + 2 fill the batch exactly; the fifth row runs next
    np.testing.assert_array_equal(gate.batches[1], rows(1, 2, 3, 4))
    np.testing.assert_array_equal(results[2]["double"], rows(6, 8))
    np.testing.assert_array_equal(results[3]["double"], rows(10))
    await batcher.close()


async def test_the_first_request_waits_for_company_until_the_batch_is_full() -> None:
    seen = Recorder()
    batcher = make_batcher(recorder=seen, max_batch_size=3, max_delay_s=HOUR)
    first = asyncio.ensure_future(batcher.submit(rows(1)))
    await settle()  # the worker took the first job and waits (an hour at most) for more
    assert not first.done() and seen.sizes == []
    second = asyncio.ensure_future(batcher.submit(rows(2)))
    await settle()
    assert not first.done() and seen.sizes == []  # two of three: still waiting
    third = asyncio.ensure_future(batcher.submit(rows(3)))
    results = await asyncio.wait_for(asyncio.gather(first, second, third), HANG)
    assert seen.sizes == [3]
    assert [float(r["double"][0, 0]) for r in results] == [2.0, 4.0, 6.0]
    await batcher.close()


async def test_with_no_delay_a_lone_request_runs_alone_and_later_ones_batch_while_it_runs() -> None:
    gate = Gate(block_first_only=True)
    seen = Recorder()
    batcher = make_batcher(gate, recorder=seen, max_delay_s=0.0)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()  # the first request's run started without waiting for company
    later = [asyncio.ensure_future(batcher.submit(rows(i))) for i in (1, 2, 3)]
    await settle()
    assert batcher.depth == 3
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, *later), HANG)
    assert seen.sizes == [1, 3]  # the three queued during the first run share the next one
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["double"], rows(2 * i))
    await batcher.close()


async def test_the_queue_depth_counts_instances_waiting_and_is_reported() -> None:
    gate = Gate(block_first_only=True)
    seen = Recorder()
    batcher = make_batcher(gate, recorder=seen, max_batch_size=2, max_delay_s=0.0)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()
    assert batcher.depth == 0
    queued = asyncio.ensure_future(batcher.submit(rows(1, 2, 3)))  # two chunks: 2 + 1
    await settle()
    assert batcher.depth == 3
    gate.release.set()
    await asyncio.wait_for(asyncio.gather(first, queued), HANG)
    assert batcher.depth == 0
    assert seen.depths == [1, 0, 3, 1, 0]  # +1, taken; +3, a chunk of 2 taken, the last 1 taken
    assert seen.sizes == [1, 2, 1]
    await batcher.close()


async def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    gate = Gate()
    batcher = make_batcher(gate, max_batch_size=1, max_queue_size=3)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()  # the first request is running; the next three fill the queue
    queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in (1, 2, 3)]
    await settle()
    assert batcher.depth == 3
    with pytest.raises(OverloadedError) as caught:
        await batcher.submit(rows(4))
    assert caught.value.message == "model toy/1 is overloaded (3 instances queued, limit 3); retry after 2 s"
    assert caught.value.headers == {"Retry-After": "2"}
    assert caught.value.status_code == 503
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, *queued), HANG)
    assert [float(r["double"][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    assert batcher.depth == 0
    await batcher.close()


async def test_a_request_that_exactly_fills_the_queue_is_accepted() -> None:
    gate = Gate(block_first_only=True)
    batcher = make_batcher(gate, max_batch_size=2, max_queue_size=3)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()
    exact = asyncio.ensure_future(batcher.submit(rows(1, 2)))
    await settle()
    one_more = asyncio.ensure_future(batcher.submit(rows(3)))  # 2 + 1 = 3 = the limit: accepted
    await settle()
    assert batcher.depth == 3
    with pytest.raises(OverloadedError, match=r"\(3 instances queued, limit 3\)"):
        await batcher.submit(rows(4))
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, exact, one_more), HANG)
    np.testing.assert_array_equal(results[1]["double"], rows(2, 4))
    np.testing.assert_array_equal(results[2]["double"], rows(6))
    await batcher.close()


async def test_a_failing_run_fails_its_requests_but_not_the_worker(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def flaky(batch: np.ndarray) -> Outputs:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return doubling(batch)

    seen = Recorder()
    batcher = make_batcher(flaky, recorder=seen)
    with pytest.raises(InferenceFailedError) as caught, caplog.at_level(logging.ERROR, logger="service.batching"):
        await asyncio.wait_for(batcher.submit(rows(1, 2)), HANG)
    (record,) = caplog.records
    assert (record.getMessage(), record.model, record.batch_size) == ("inference failed", "toy/1", 2)  # type: ignore[attr-defined]
    assert caught.value.message == "model toy/1: inference failed: device lost"
    assert caught.value.status_code == 500
    assert seen.sizes == []  # a failed run is not observed as a batch
    assert batcher.depth == 0
    np.testing.assert_array_equal((await asyncio.wait_for(batcher.submit(rows(3)), HANG))["double"], rows(6))
    assert seen.sizes == [1]
    await batcher.close()


async def test_a_failing_run_fails_every_request_that_shared_it() -> None:
    gate = Gate(block_first_only=True)
    calls = []

    def failing_second(batch: np.ndarray) -> Outputs:
        calls.append(len(batch))
        if len(calls) == 2:
            raise RuntimeError("boom")
        return gate(batch)

    batcher = make_batcher(failing_second)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()
    shared = [asyncio.ensure_future(batcher.submit(rows(i))) for i in (1, 2)]
    await settle()
    gate.release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(first, *shared, return_exceptions=True), HANG)
    assert calls == [1, 2]
    assert isinstance(outcomes[0], dict)
    assert [type(o) for o in outcomes[1:]] == [InferenceFailedError, InferenceFailedError]
    await batcher.close()


async def test_close_awaits_queued_work_then_refuses_more() -> None:
    gate = Gate()
    batcher = make_batcher(gate, max_batch_size=1)
    pending = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(3)]
    await gate.wait_started()  # the first job is running, two more are queued
    closing = asyncio.ensure_future(batcher.close())
    await settle()
    assert batcher.closing
    assert not closing.done()  # close() waits for the queued work...
    with pytest.raises(ServiceError, match=r"^model toy/1: batcher is not running$"):
        await batcher.submit(rows(9))  # ...while refusing new work
    gate.release.set()
    await asyncio.wait_for(closing, HANG)
    assert [float(b[0, 0]) for b in gate.batches] == [0.0, 1.0, 2.0]  # every queued job ran before close returned
    results = await asyncio.wait_for(asyncio.gather(*pending), HANG)
    assert [float(r["double"][0, 0]) for r in results] == [0.0, 2.0, 4.0]
    await batcher.close()  # a second close is a no-op


async def test_a_batcher_that_was_never_started_refuses_work() -> None:
    batcher = MicroBatcher(
        doubling, name="idle/1", max_batch_size=1, max_delay_s=0.0, max_queue_size=1, retry_after_s=1
    )
    with pytest.raises(ServiceError, match=r"^model idle/1: batcher is not running$"):
        await batcher.submit(rows(1))
    await batcher.close()  # nothing to stop
    assert batcher.closing


async def test_a_cancelled_request_is_skipped() -> None:
    gate = Gate(block_first_only=True)
    seen = Recorder()
    batcher = make_batcher(gate, recorder=seen)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()
    cancelled = asyncio.ensure_future(batcher.submit(rows(1)))
    kept = asyncio.ensure_future(batcher.submit(rows(2)))
    await settle()
    cancelled.cancel()
    await settle()
    gate.release.set()
    await asyncio.wait_for(first, HANG)
    np.testing.assert_array_equal((await asyncio.wait_for(kept, HANG))["double"], rows(4))
    assert seen.sizes == [1, 1]  # only the surviving request ran in the second batch
    np.testing.assert_array_equal(gate.batches[1], rows(2))
    assert batcher.depth == 0
    await batcher.close()


async def test_a_batch_whose_requests_were_all_cancelled_is_not_run() -> None:
    gate = Gate(block_first_only=True)
    seen = Recorder()
    batcher = make_batcher(gate, recorder=seen)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()
    cancelled = asyncio.ensure_future(batcher.submit(rows(1)))
    await settle()
    cancelled.cancel()
    await settle()
    gate.release.set()
    await asyncio.wait_for(first, HANG)
    await batcher.close()
    assert len(gate.batches) == 1 and seen.sizes == [1]


async def test_a_job_that_does_not_fit_waits_for_the_next_batch() -> None:
    gate = Gate(block_first_only=True)
    seen = Recorder()
    batcher = make_batcher(gate, recorder=seen, max_batch_size=4)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()
    queued = [asyncio.ensure_future(batcher.submit(rows(i, i, i))) for i in (1, 2, 3)]  # 3 + 3 > 4
    await settle()
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, *queued), HANG)
    assert seen.sizes == [1, 3, 3, 3]  # never more than 4, and the job that did not fit ran next, not lost
    for i, result in enumerate(results[1:], start=1):
        np.testing.assert_array_equal(result["double"], rows(2 * i, 2 * i, 2 * i))
    await batcher.close()


async def test_close_runs_the_batch_it_was_gathering_when_it_met_the_stop() -> None:
    gate = Gate(block_first_only=True)
    seen = Recorder()
    batcher = make_batcher(gate, recorder=seen, max_batch_size=8)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()
    queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in (1, 2, 3)]
    await settle()
    closing = asyncio.ensure_future(batcher.close())  # the stop is queued behind the three jobs
    await settle()
    gate.release.set()
    await asyncio.wait_for(closing, HANG)
    assert seen.sizes == [1, 3]  # the three jobs ran together, then the worker stopped
    results = await asyncio.wait_for(asyncio.gather(first, *queued), HANG)
    assert [float(r["double"][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]


async def test_the_worker_task_is_named_for_its_model() -> None:
    batcher = make_batcher()
    assert "batcher:toy/1" in {task.get_name() for task in asyncio.all_tasks()}
    batcher.start()  # a second start keeps the one worker
    assert [t.get_name() for t in asyncio.all_tasks()].count("batcher:toy/1") == 1
    await batcher.close()


class FrozenClock:
    """The event loop's clock, moved only by the test: the batcher's delay is measured on it, so a test can hold
    time still or jump past a deadline without any real time passing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(asyncio.get_running_loop(), "time", lambda: self.now)


async def test_with_no_delay_queued_jobs_are_taken_even_when_the_clock_has_not_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FrozenClock(monkeypatch)  # the deadline is exactly now: remaining == 0, not < 0
    gate = Gate(block_first_only=True)
    seen = Recorder()
    batcher = make_batcher(gate, recorder=seen, max_delay_s=0.0)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await gate.wait_started()
    later = [asyncio.ensure_future(batcher.submit(rows(i))) for i in (1, 2, 3)]
    await settle()
    gate.release.set()
    for _ in range(100):  # no timers can fire on a frozen clock; wait on the results themselves
        if all(job.done() for job in [first, *later]):
            break
        await anyio.to_thread.run_sync(gate.started.wait, 0.01)
    assert seen.sizes == [1, 3]
    await batcher.close()


async def test_a_short_delay_waits_for_company_until_the_deadline_then_runs_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FrozenClock(monkeypatch)
    seen = Recorder()
    batcher = make_batcher(recorder=seen, max_batch_size=3, max_delay_s=0.5)
    first = asyncio.ensure_future(batcher.submit(rows(1)))
    await settle()
    assert not first.done() and seen.sizes == []  # 0.5 s of (frozen) time left: it waits
    second = asyncio.ensure_future(batcher.submit(rows(2)))
    await settle()
    assert not first.done() and seen.sizes == []  # still within the delay, the batch not full
    clock.now += 0.5  # the deadline passes
    for _ in range(100):  # the loop fires the expired wait on its next turn; the run itself takes a thread hop
        if first.done() and second.done():
            break
        await anyio.to_thread.run_sync(lambda: None)
    assert seen.sizes == [2]  # the two that came within the delay, without a third
    np.testing.assert_array_equal((await first)["double"], rows(2))
    np.testing.assert_array_equal((await second)["double"], rows(4))
    third = asyncio.ensure_future(batcher.submit(rows(3)))
    await settle()
    clock.now += 0.25
    await settle()
    assert not third.done()  # half the delay: still waiting
    clock.now += 0.25
    for _ in range(100):
        if third.done():
            break
        await anyio.to_thread.run_sync(lambda: None)
    assert seen.sizes == [2, 1]
    await batcher.close()


async def test_each_job_reports_its_wait_from_submit_to_the_start_of_its_run() -> None:
    """A job queued behind a held run waits at least as long as the run was held; the first job hardly waits;
    a request split into chunks reports one wait per chunk."""
    seen = Recorder()
    gate = Gate(block_first_only=True)
    batcher = make_batcher(run=gate, recorder=seen, max_batch_size=4)
    first = asyncio.ensure_future(batcher.submit(rows(1)))
    await gate.wait_started()
    second = asyncio.ensure_future(batcher.submit(rows(2)))
    third = asyncio.ensure_future(batcher.submit(rows(3, 4, 5, 6, 7)))  # 5 rows: chunks of 4 and 1
    await settle()
    held = 0.05
    await asyncio.sleep(held)
    gate.release.set()
    await asyncio.wait_for(asyncio.gather(first, second, third), HANG)
    assert seen.sizes == [1, 1, 4, 1]  # rows(2) runs alone: the third request's 4-row chunk does not fit with it
    assert len(seen.queue_waits) == 4  # one per job: the first request, the second, two chunks of the third
    assert seen.queue_waits[0] < held
    assert all(wait >= held for wait in seen.queue_waits[1:])
    await batcher.close()


def timed_as(batcher: MicroBatcher, durations: list[float], threads: list[tuple[int, bool]], loop: int) -> None:
    """Make `batcher` report `durations` (in turn) as its runs' own times, recording each run's size and whether it
    ran on the loop's thread: the inline decision is then exact whatever the machine's load."""
    left = iter(durations)

    def timed(batch: np.ndarray) -> tuple[Outputs, float]:
        threads.append((len(batch), threading.get_ident() == loop))
        return doubling(batch), next(left)

    batcher._timed_run = timed  # type: ignore[method-assign]


@pytest.mark.parametrize(("run_s", "inline"), [(0.0001, True), (0.0009, True), (0.001, False), (0.003, False)])
async def test_a_lone_instance_runs_on_the_loop_only_once_one_instance_runs_are_known_to_be_fast(
    run_s: float, inline: bool
) -> None:
    """The thread hand-off costs more than a tiny model's run: once one-instance runs average under INLINE_RUN_S
    (1 ms), they run on the event loop; the first (no measure yet), larger batches and slow models stay in threads."""
    threads: list[tuple[int, bool]] = []
    batcher = make_batcher()
    timed_as(batcher, [run_s] * 4, threads, threading.get_ident())
    try:
        for _ in range(3):
            await batcher.submit(np.ones((1, 2), np.float32))
        await batcher.submit(np.ones((2, 2), np.float32))
        assert threads == [(1, False), (1, inline), (1, inline), (2, False)]
        assert batcher._single_run_s == pytest.approx(run_s)  # batches of two do not move the one-instance average
    finally:
        await batcher.close()


async def test_the_one_instance_average_moves_with_each_run() -> None:
    from service import batching

    threads: list[tuple[int, bool]] = []
    batcher = make_batcher()
    timed_as(batcher, [0.0001, 0.004, 0.0001], threads, threading.get_ident())
    try:
        for _ in range(3):
            await batcher.submit(np.ones((1, 2), np.float32))
        second = (1 - batching.INLINE_EMA) * 0.0001 + batching.INLINE_EMA * 0.004  # 0.00088: still under 1 ms
        third = (1 - batching.INLINE_EMA) * second + batching.INLINE_EMA * 0.0001
        assert threads == [(1, False), (1, True), (1, True)]
        assert batcher._single_run_s == pytest.approx(third)
    finally:
        await batcher.close()


async def test_a_run_is_timed_where_it_runs() -> None:
    batcher = make_batcher(lambda batch: (time.sleep(0.005), doubling(batch))[1])
    try:
        outputs, seconds = batcher._timed_run(np.ones((1, 2), np.float32))
        assert seconds >= 0.005
        np.testing.assert_array_equal(outputs["double"], np.full((1, 2), 2.0, np.float32))
    finally:
        await batcher.close()
