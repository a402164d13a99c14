"""Cost-weighted, two-lane admission (service/admission.py): exact cost accounting, refusal over the bound, and a
light request admitted and served while heavy requests hold the server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.admission import Admission, Lane, Ticket
from service.batching import MicroBatcher
from service.errors import OverloadedError
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings

HANG = 30.0  # seconds: a bound on waiting for an event that should come at once, never a measurement
MB = 1024 * 1024


def admission(**overrides: int) -> tuple[Admission, CollectorRegistry]:
    registry = CollectorRegistry()
    values = {
        "max_requests": 8,
        "max_bytes": 10 * MB,
        "max_body_bytes": 4 * MB,
        "light_request_bytes": 1000,
        "reserved_requests": 2,
    }
    values.update(overrides)
    return Admission(Metrics(registry), **values), registry


def counted(registry: CollectorRegistry, lane: str, outcome: str) -> float | None:
    return registry.get_sample_value("oegate_admissions_total", {"lane": lane, "outcome": outcome})


def test_a_request_costs_its_declared_body_and_is_light_up_to_light_request_bytes() -> None:
    gate, _ = admission()
    assert gate.ticket("500", encoded=False) == Ticket(Lane.LIGHT, 500)
    assert gate.ticket("1000", encoded=False) == Ticket(Lane.LIGHT, 1000)
    assert gate.ticket("1001", encoded=False) == Ticket(Lane.HEAVY, 1001)
    # Unknown (chunked), unparseable or compressed bodies cost the most they may become; so do oversized ones
    # (the body limit answers 413 for those once admitted).
    assert gate.ticket(None, encoded=False) == Ticket(Lane.HEAVY, 4 * MB)
    assert gate.ticket("12x", encoded=False) == Ticket(Lane.HEAVY, 4 * MB)
    assert gate.ticket("500", encoded=True) == Ticket(Lane.HEAVY, 4 * MB)
    assert gate.ticket(str(100 * MB), encoded=False) == Ticket(Lane.HEAVY, 4 * MB)


def test_heavy_requests_leave_the_reserve_in_requests_to_light_ones() -> None:
    gate, registry = admission()  # 8 requests, 2 of them reserved for light ones
    heavy, light = Ticket(Lane.HEAVY, 2000), Ticket(Lane.LIGHT, 500)
    assert [gate.try_admit(heavy) for _ in range(7)] == [True] * 6 + [False]
    assert (gate.requests, gate.bytes) == (6, 12_000)
    assert gate.refusal(heavy) == "6 requests in flight, limit 6 for heavy requests"
    assert not gate.saturated()
    assert [gate.try_admit(light) for _ in range(3)] == [True, True, False]
    assert (gate.requests, gate.bytes) == (8, 13_000)
    assert gate.refusal(light) == "8 requests in flight, limit 8 for light requests"
    assert gate.saturated()
    assert (counted(registry, "heavy", "admitted"), counted(registry, "heavy", "refused")) == (6.0, 1.0)
    assert (counted(registry, "light", "admitted"), counted(registry, "light", "refused")) == (2.0, 1.0)
    assert registry.get_sample_value("oegate_requests_in_flight") == 8.0
    assert registry.get_sample_value("oegate_requests_in_flight_bytes") == 13_000.0
    gate.release(light)
    assert gate.try_admit(light)  # a light request's place is free again; still none for a heavy one
    assert not gate.try_admit(heavy)
    for _ in range(6):
        gate.release(heavy)
    for _ in range(2):
        gate.release(light)
    assert (gate.requests, gate.bytes) == (0, 0)
    assert registry.get_sample_value("oegate_requests_in_flight_bytes") == 0.0


def test_the_bound_counts_bytes_and_keeps_the_light_reserve_in_bytes_too() -> None:
    gate, registry = admission()  # 10 MB in all; the reserve is 2 x 1000 bytes
    big = Ticket(Lane.HEAVY, 4 * MB)
    assert [gate.try_admit(big) for _ in range(3)] == [True, True, False]  # 8 MB in flight; 12 MB would not fit
    assert (
        gate.refusal(big) == f"{8 * MB} bytes of requests in flight, limit {10 * MB - 2000} for heavy requests, "
        f"and this one costs {4 * MB}"
    )
    # A heavy request that fits in what is left above the reserve is admitted; one byte more is not.
    assert gate.try_admit(Ticket(Lane.HEAVY, 2 * MB - 2000))
    assert not gate.try_admit(Ticket(Lane.HEAVY, 1001))
    assert [gate.try_admit(Ticket(Lane.LIGHT, 1000)) for _ in range(3)] == [True, True, False]
    assert (gate.requests, gate.bytes) == (5, 10 * MB)
    assert gate.saturated()
    assert counted(registry, "heavy", "refused") == 2.0


def test_the_reserve_must_leave_room_for_a_heavy_request_of_the_largest_body() -> None:
    with pytest.raises(ValueError, match="the light reserve must leave room"):
        admission(max_bytes=4 * MB + 1999)
    with pytest.raises(ValueError, match="the light reserve must leave room"):
        admission(reserved_requests=8)


def test_settings_refuse_a_byte_bound_below_one_largest_body_plus_the_reserve(model_dir: Path) -> None:
    settings = Settings(model_dir=model_dir)
    assert (settings.light_reserved_requests, settings.light_reserved_bytes) == (192, 192 * 16 * 1024)
    with pytest.raises(ValueError, match=r"max_request_bytes_in_flight \(8388608\) must be >= max_body_bytes"):
        Settings(model_dir=model_dir, max_request_bytes_in_flight=8 * MB)


@pytest.fixture
def heavy_runs_held(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Runtime.run of a batch of more than one instance (a heavy request's) blocks until `release` is set, setting
    `started`; one-instance runs go straight through."""
    started, release = threading.Event(), threading.Event()
    original = Runtime.run

    def run(self: Runtime, inputs: Any) -> dict[str, np.ndarray]:
        if len(inputs) > 1 and not release.is_set():
            started.set()
            release.wait(HANG)
        return original(self, inputs)

    monkeypatch.setattr(Runtime, "run", run)
    yield started, release
    release.set()


@pytest.mark.anyio
async def test_a_light_request_is_admitted_and_served_while_heavy_requests_hold_the_server(
    serve: Any, heavy_runs_held: tuple[threading.Event, threading.Event]
) -> None:
    """4 requests in flight, 2 kept for light ones; one inference thread and one decode thread. Two heavy requests
    (two instances, over `light_request_bytes`) hold the heavy lane: one in a held session run, one queued behind
    it. A third heavy one gets 503 at once; a light one (one instance) is still admitted, decoded, batched and run,
    and answered, while the heavy run is held."""
    started, release = heavy_runs_held
    one = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]}
    two = {"instances": one["instances"] * 2}
    assert len(json.dumps(one)) < 6000 < len(json.dumps(two))
    settings = {
        "max_requests_in_flight": 4,
        "light_reserved_share": 0.5,
        "light_request_bytes": 6000,
        "inference_concurrency": 1,
        "decode_concurrency": 1,
        "max_delay_ms": 0.0,
        "retry_after_s": 2,
    }
    async with serve(**settings) as (app, client):
        gate = app.state.components.limits.admission
        heavy = [asyncio.ensure_future(client.post("/v1/models/tiny/predict", json=two)) for _ in range(2)]
        assert await anyio.to_thread.run_sync(started.wait, HANG)
        with anyio.fail_after(HANG):
            while gate.requests < 2:  # a counter, not a clock
                await asyncio.sleep(0.01)
        refused = await client.post("/v1/models/tiny/predict", json=two)
        assert (refused.status_code, refused.headers["retry-after"]) == (503, "2")
        assert refused.json() == {
            "error": "the server is overloaded (2 requests in flight, limit 2 for heavy requests); retry after 2 s"
        }
        light = await client.post("/v1/models/tiny/predict", json=one)
        assert light.status_code == 200
        assert len(light.json()["predictions"]) == 1
        assert not release.is_set() and not any(request.done() for request in heavy)  # served while held
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}  # light requests still fit
        release.set()
        assert [response.status_code for response in await asyncio.gather(*heavy)] == [200, 200]
        registry: CollectorRegistry = app.state.components.metrics.registry
        assert (counted(registry, "heavy", "admitted"), counted(registry, "heavy", "refused")) == (2.0, 1.0)
        assert (counted(registry, "light", "admitted"), counted(registry, "light", "refused")) == (1.0, None)
        assert (gate.requests, gate.bytes) == (0, 0)


@pytest.mark.anyio
async def test_a_priority_job_runs_while_the_ordinary_worker_waits_for_its_run() -> None:
    """The batcher's ordinary worker is held in a session run with two more ordinary jobs queued behind it, filling
    the queue's bound; a priority job has its own queue (and bound), worker and limiter, and is answered first."""
    entered, release = threading.Event(), threading.Event()
    limiters_asked: list[bool] = []  # whether each run asked for the priority limiter, in order

    def run(inputs: Any) -> dict[str, np.ndarray]:
        if inputs[0, 0] == 1.0:  # the ordinary jobs' marker
            entered.set()
            release.wait(HANG)
        return {"x": inputs[:, 0]}

    limiters = {True: anyio.CapacityLimiter(1), False: anyio.CapacityLimiter(1)}

    def limiter(priority: bool) -> anyio.CapacityLimiter:
        limiters_asked.append(priority)
        return limiters[priority]

    batcher = MicroBatcher(
        run, name="m", max_batch_size=2, max_delay_s=0.0, max_queue_size=4, retry_after_s=1, limiter=limiter
    )
    batcher.start()
    try:
        ordinary = [asyncio.ensure_future(batcher.submit(np.ones((2, 1))))]
        assert await anyio.to_thread.run_sync(entered.wait, HANG)
        ordinary += [asyncio.ensure_future(batcher.submit(np.ones((2, 1)))) for _ in range(2)]
        with anyio.fail_after(HANG):
            while batcher.depth < 4:  # two jobs of 2 instances wait behind the held run (a counter, not a clock)
                await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError, match=r"model m is overloaded \(4 instances queued, limit 4\)"):
            await batcher.submit(np.ones((1, 1)))
        result = await batcher.submit(np.zeros((1, 1)), priority=True)
        assert result["x"].tolist() == [0.0]
        assert not any(job.done() for job in ordinary)
        release.set()
        assert [r["x"].tolist() for r in await asyncio.gather(*ordinary)] == [[1.0, 1.0]] * 3
        assert limiters_asked == [False, True, False, False]
    finally:
        release.set()
        await batcher.close()


def test_the_slot_is_free_before_the_client_can_read_the_end_of_the_answer() -> None:
    """A client sends its next request as soon as it has the answer: by then this one must no longer count, or N
    connections against a bound of N would see 503s."""
    from service.limits import WorkLimits
    from service.middleware import InFlightLimitMiddleware

    limits = WorkLimits(Settings(), Metrics(CollectorRegistry()))
    counted_at: list[tuple[str, bool, int]] = []

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        await send({"type": "http.response.body", "body": b"}"})

    async def client_side(message: Any) -> None:
        counted_at.append((message["type"], bool(message.get("more_body", False)), limits.admission.requests))

    scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "headers": [(b"content-length", b"2")]}

    async def receive() -> Any:
        return {"type": "http.request", "body": b"{}"}

    asyncio.run(InFlightLimitMiddleware(answer, limits, Metrics(CollectorRegistry()))(scope, receive, client_side))
    assert counted_at == [
        ("http.response.start", False, 1),
        ("http.response.body", True, 1),
        ("http.response.body", False, 0),
    ]
    assert limits.admission.requests == 0 and limits.admission.bytes == 0  # released once, not twice


class _Held:
    """An ASGI app whose requests wait on `go` after reading their body, so that a test holds them in flight."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        self.seen.append(scope["path"])
        await self.go.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _post(path: str, content_length: int) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-length", str(content_length).encode())],
    }


def test_a_model_admits_at_most_queue_size_over_max_instances_heavy_requests_refusing_before_the_body() -> None:
    """Each heavy request holds at most max_instances instances, so max_queue_size // max_instances of them always fit
    the model's queue: the next one for that model is refused at once, before its body is read, instead of being
    read, decoded and then refused by the full queue (the late, slow 503s bench.attack found)."""
    from service.limits import WorkLimits
    from service.middleware import InFlightLimitMiddleware

    settings = Settings(max_queue_size=130, max_instances=64)
    assert settings.heavy_requests_per_model == 2 and Settings().heavy_requests_per_model == 16
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    limits = WorkLimits(settings, metrics)
    app = _Held()
    gate = InFlightLimitMiddleware(app, limits, metrics, heavy_per_model=settings.heavy_requests_per_model)
    heavy, light = settings.light_request_bytes + 1, settings.light_request_bytes

    async def scenario() -> list[list[dict[str, Any]]]:
        sent: list[list[dict[str, Any]]] = [[] for _ in range(6)]
        body_reads: list[int] = []

        def call(index: int, path: str, size: int) -> Any:
            async def receive() -> Any:
                body_reads.append(index)
                return {"type": "http.request", "body": b"{}"}

            async def send(message: Any) -> None:
                sent[index].append(message)

            return asyncio.create_task(gate(_post(path, size), receive, send))

        held = [call(0, "/v2/models/a/infer", heavy), call(1, "/v1/models/a/versions/3/predict", heavy)]
        await asyncio.sleep(0)
        await call(2, "/v2/models/a/infer", heavy)  # a third heavy one for model a: refused at once
        assert 2 not in body_reads and sent[2][0]["status"] == 503
        others = [call(3, "/v2/models/b/infer", heavy), call(4, "/v2/models/a/infer", light)]
        await asyncio.sleep(0)
        assert gate._heavy == {"a": 2, "b": 1} and limits.admission.requests == 4
        app.go.set()
        await asyncio.gather(*held, *others)
        assert gate._heavy == {}  # entries go with their last request: bounded whatever names clients send
        await call(5, "/v2/models/a/infer", heavy)  # room again
        return sent

    sent = asyncio.run(scenario())
    assert json.loads(sent[2][1]["body"]) == {
        "error": "the server is overloaded (2 heavy requests in flight for model a, limit 2); retry after 1 s"
    }
    assert (b"retry-after", b"1") in sent[2][0]["headers"]
    assert [sent[i][0]["status"] for i in (0, 1, 3, 4, 5)] == [200] * 5
    assert registry.get_sample_value("oegate_admissions_total", {"lane": "heavy", "outcome": "refused"}) == 1.0
    assert registry.get_sample_value("oegate_admissions_total", {"lane": "heavy", "outcome": "admitted"}) == 4.0
    assert registry.get_sample_value("oegate_admissions_total", {"lane": "light", "outcome": "admitted"}) == 1.0
    assert limits.admission.requests == 0 and limits.admission.bytes == 0
