"""Cost-weighted, two-lane admission (service/admission.py): exact cost accounting, refusal over the bound, and a
light request admitted and served while heavy requests hold the server."""

from __future__ import annotations

import asyncio
import json
import logging
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


def test_the_default_queue_holds_every_instance_of_the_heavy_requests_admitted_at_once(model_dir: Path) -> None:
    """An admitted heavy request never meets a full model queue with the defaults, so overload is refused at
    admission, before a body is read (a full queue refused requests only after reading and decoding them: the late,
    slow 503s bench.attack found)."""
    settings = Settings(model_dir=model_dir)
    heavy = settings.max_requests_in_flight - settings.light_reserved_requests
    assert (heavy, settings.max_instances, settings.max_queue_size) == (64, 64, 4096)
    assert settings.queue_holds_admitted_requests
    assert not Settings(model_dir=model_dir, max_queue_size=4095).queue_holds_admitted_requests
    assert Settings(model_dir=model_dir, max_queue_size=4095, max_instances=63).queue_holds_admitted_requests


@pytest.mark.anyio
async def test_a_queue_smaller_than_what_admission_admits_is_logged_at_start(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from service.app import create_app

    for size, expected in ((4096, []), (1024, ["max_queue_size is below what admission lets in"])):
        caplog.clear()
        app = create_app(Settings(model_dir=model_dir, providers=["CPUExecutionProvider"], max_queue_size=size))
        with caplog.at_level(logging.WARNING, logger="service.app"):
            async with app.router.lifespan_context(app):
                pass
        found = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "service.app"]
        assert [m[: len(e)] for m, e in zip(found, expected, strict=True)] == expected
