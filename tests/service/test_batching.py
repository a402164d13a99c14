from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np
import pytest

from service.batching import MicroBatcher, Outputs
from service.errors import InferenceFailedError, OverloadedError, ServiceError

pytestmark = pytest.mark.anyio


def doubling(batch: np.ndarray) -> Outputs:
    return {"double": batch * 2, "row_sum": batch.sum(axis=1)}


def make_batcher(
    run: Callable[[np.ndarray], Outputs] = doubling, sizes: list[int] | None = None, **overrides: float
) -> MicroBatcher:
    options = {"max_batch_size": 8, "max_delay_s": 0.05, "max_queue_size": 100, "retry_after_s": 2}
    options.update(overrides)
    batcher = MicroBatcher(
        run,
        name="toy/1",
        max_batch_size=int(options["max_batch_size"]),
        max_delay_s=options["max_delay_s"],
        max_queue_size=int(options["max_queue_size"]),
        retry_after_s=int(options["retry_after_s"]),
        on_batch=lambda size, seconds: (sizes if sizes is not None else []).append(size),
    )
    batcher.start()
    return batcher


def rows(*values: float) -> np.ndarray:
    return np.array([[v, v] for v in values], np.float32)


async def test_concurrent_requests_share_one_run_and_get_their_own_rows_back() -> None:
    sizes: list[int] = []
    batcher = make_batcher(sizes=sizes)
    results = await asyncio.gather(*(batcher.submit(rows(i)) for i in range(5)))
    assert sizes == [5]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["double"], rows(2 * i))
        np.testing.assert_array_equal(result["row_sum"], np.array([2 * i], np.float32))
    await batcher.close()


async def test_large_requests_are_split_and_reassembled_in_order() -> None:
    sizes: list[int] = []
    batcher = make_batcher(sizes=sizes, max_batch_size=4)
    result = await batcher.submit(rows(*range(10)))
    assert sizes == [4, 4, 2]
    np.testing.assert_array_equal(result["double"], rows(*(2 * v for v in range(10))))
    await batcher.close()


async def test_a_batch_never_exceeds_max_batch_size() -> None:
    sizes: list[int] = []
    batcher = make_batcher(sizes=sizes, max_batch_size=4)
    await asyncio.gather(*(batcher.submit(rows(1, 2, 3)) for _ in range(3)))
    assert sizes == [3, 3, 3]
    await batcher.close()


async def test_the_first_request_waits_up_to_max_delay_for_company() -> None:
    sizes: list[int] = []
    batcher = make_batcher(sizes=sizes, max_delay_s=0.5)

    async def late() -> Outputs:
        await asyncio.sleep(0.05)
        return await batcher.submit(rows(2))

    await asyncio.gather(batcher.submit(rows(1)), late())
    assert sizes == [2]
    await batcher.close()


async def test_with_no_delay_a_lone_request_runs_alone_and_later_ones_batch_while_it_runs() -> None:
    started, release = threading.Event(), threading.Event()

    def blocking_first(batch: np.ndarray) -> Outputs:
        if not started.is_set():
            started.set()
            release.wait(5)
        return doubling(batch)

    sizes: list[int] = []
    batcher = make_batcher(blocking_first, sizes=sizes, max_delay_s=0.0)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    while not started.is_set():  # the first request's run started without waiting for company
        await asyncio.sleep(0.001)
    later = [asyncio.ensure_future(batcher.submit(rows(i))) for i in (1, 2, 3)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(first, *later)
    assert sizes == [1, 3]  # the three queued during the first run share the next one
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["double"], rows(2 * i))
    await batcher.close()


async def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    started, release = threading.Event(), threading.Event()

    def blocking(batch: np.ndarray) -> Outputs:
        started.set()
        release.wait(5)
        return doubling(batch)

    batcher = make_batcher(blocking, max_batch_size=1, max_queue_size=3)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    while not started.is_set():  # the first request is running; the next three fill the queue
        await asyncio.sleep(0.001)
    queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in (1, 2, 3)]
    await asyncio.sleep(0.01)
    assert batcher.depth == 3
    with pytest.raises(OverloadedError) as caught:
        await batcher.submit(rows(4))
    assert caught.value.message == "model toy/1 is overloaded (3 instances queued, limit 3); retry after 2 s"
    assert caught.value.headers == {"Retry-After": "2"}
    assert caught.value.status_code == 503
    release.set()
    results = await asyncio.gather(first, *queued)
    assert [float(r["double"][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    assert batcher.depth == 0
    await batcher.close()


async def test_a_failing_run_fails_its_requests_but_not_the_worker() -> None:
    calls = []

    def flaky(batch: np.ndarray) -> Outputs:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return doubling(batch)

    batcher = make_batcher(flaky)
    with pytest.raises(InferenceFailedError) as caught:
        await batcher.submit(rows(1))
    assert caught.value.message == "model toy/1: inference failed: device lost"
    assert caught.value.status_code == 500
    np.testing.assert_array_equal((await batcher.submit(rows(3)))["double"], rows(6))
    await batcher.close()


async def test_close_finishes_queued_work_then_refuses_more() -> None:
    batcher = make_batcher(max_batch_size=1)
    pending = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(3)]
    await asyncio.sleep(0)
    await batcher.close()  # returns once the queued work has run
    results = await asyncio.wait_for(asyncio.gather(*pending), timeout=0.1)
    assert [float(r["double"][0, 0]) for r in results] == [0.0, 2.0, 4.0]
    with pytest.raises(ServiceError, match="batcher is not running"):
        await batcher.submit(rows(1))


async def test_a_cancelled_request_is_skipped() -> None:
    sizes: list[int] = []
    batcher = make_batcher(sizes=sizes, max_delay_s=0.2)
    cancelled = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    kept = await batcher.submit(rows(2))
    np.testing.assert_array_equal(kept["double"], rows(4))
    assert sizes == [1]  # only the surviving request ran
    assert batcher.depth == 0
    await batcher.close()
