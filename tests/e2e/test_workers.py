"""`OEGATE_WORKERS=2`: two worker processes on one port, metrics summed across them, hot swap and admin pins in
both, one onnxruntime thread budget each, a killed worker restarted, and SIGTERM stopping them all
(service/workers.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.cpus import cpu_budget
from tests.e2e.server import REPO, service_process
from tests.service.conftest import clone_artifact
from tests.service.test_metrics import samples, value

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

BODY = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]}
PREDICT = "/v1/models/tiny/predict"
ADMIN_TOKEN = "admin-token-0123456789"
HANG_S = 60.0  # only a broken service gets near this


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


async def wait_for_log(path: Path, message: str, count: int) -> None:
    """Until `count` lines carry `message` (both workers listening, say); the log, not a clock, decides."""
    deadline = time.monotonic() + HANG_S
    while sum(line["message"] == message for line in log_lines(path)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {message!r} lines:\n{path.read_text()[-3000:]}"
        await asyncio.sleep(0.1)


async def predict_many(client: httpx.AsyncClient, count: int) -> list[httpx.Response]:
    """`count` predictions, 8 at a time; the client opens a new connection for each (no keep-alive), so the kernel
    spreads them over the workers (it balances connections, not requests)."""
    gate = asyncio.Semaphore(8)

    async def one() -> httpx.Response:
        async with gate:
            return await client.post(PREDICT, json=BODY)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_two_workers_sum_their_metrics_swap_and_pin_versions_and_stop_together(
    tmp_path: Path, tiny_artifact: Path
) -> None:
    models = tmp_path / "models"
    clone_artifact(tiny_artifact, models, "tiny", 1)
    env = {
        "OEGATE_MODEL_DIR": str(models),
        "OEGATE_WORKERS": "2",
        "OEGATE_POLL_INTERVAL_S": "0.2",
        "OEGATE_PROVIDERS": '["CPUExecutionProvider"]',
        "OEGATE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    log = tmp_path / "service.log"
    fresh_connections = httpx.Limits(max_keepalive_connections=0)
    with service_process(env, log) as url:
        await wait_for_log(log, "listening", 2)
        async with httpx.AsyncClient(base_url=url, limits=fresh_connections, timeout=30) as client:
            first = await predict_many(client, 200)
            before_swap = samples((await client.get("/metrics")).text)
            clone_artifact(tiny_artifact, models, "tiny", 2)  # each worker's poller finds it
            await wait_for_log(log, "model version loaded", 4)  # version 1 and 2 in both workers
            second = await predict_many(client, 100)
            after_swap = samples((await client.get("/metrics")).text)
            # A rollback through one worker's admin API: that worker at once, the other at its next poll.
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            pin = await client.put("/v1/admin/models/tiny/pin", json={"version": 1}, headers=admin)
            await wait_for_log(log, "model version loaded", 6)  # version 1 again, in both workers
            pinned = await predict_many(client, 60)
    lines = log_lines(log)

    assert [r.status_code for r in first] == [200] * 200
    # Counters summed across both workers equal the requests sent, and each worker served some of them.
    route = {"route": "/v1/models/{name}/predict", "status_class": "2xx", "model": "tiny"}
    assert value(before_swap, "oegate_request_duration_seconds_count", **route) == 200.0
    accepted = value(before_swap, "oegate_predictions_total", model="tiny", version="1", outcome="accepted")
    rejected = value(before_swap, "oegate_predictions_total", model="tiny", version="1", outcome="rejected")
    assert accepted is not None and rejected is not None and accepted + rejected == 200.0
    assert value(before_swap, "oegate_inference_batch_size_sum", model="tiny") == 200.0
    assert value(before_swap, "oegate_anomaly_score_count", model="tiny", version="1") == 200.0
    # Gauges: queue depth and requests in flight summed over workers (both idle), model info once per version.
    assert value(before_swap, "oegate_queue_depth", model="tiny") == 0.0
    assert value(before_swap, "oegate_requests_in_flight") == 0.0
    assert value(before_swap, "oegate_model_info", model="tiny", version="1", provider="CPUExecutionProvider") == 1.0
    # process_* are the live workers' own, summed: at least two workers' worth of resident memory.
    resident = value(before_swap, "process_resident_memory_bytes")
    assert resident is not None and resident > 2 * 10e6
    served_by = Counter(line["worker"] for line in lines if line.get("path") == PREDICT)
    assert set(served_by) == {0, 1} and sum(served_by.values()) == 360

    # Hot swap reached every worker: each logged version 2 and every later request answered version 2.
    loaded_2 = {
        line["worker"] for line in lines if line["message"] == "model version loaded" and line["version"] == "2"
    }
    assert loaded_2 == {0, 1}
    assert [(r.status_code, r.json()["version"]) for r in second] == [(200, "2")] * 100
    assert value(after_swap, "oegate_model_info", model="tiny", version="2", provider="CPUExecutionProvider") == 1.0
    assert value(after_swap, "oegate_model_info", model="tiny", version="1", provider="CPUExecutionProvider") is None
    assert value(after_swap, "oegate_model_threshold", model="tiny", version="1") is None
    assert value(after_swap, "oegate_predictions_total", model="tiny", version="1", outcome="accepted") == accepted
    assert value(after_swap, "oegate_request_duration_seconds_count", **route) == 300.0
    assert (pin.status_code, pin.json()["models"], pin.json()["pins"]) == (200, {"tiny": "1"}, {"tiny": 1})
    reloaded_1 = [
        line["worker"] for line in lines if line["message"] == "model version loaded" and line["version"] == "1"
    ]
    assert sorted(reloaded_1) == [0, 0, 1, 1]  # at start, then for the pin
    assert [(r.status_code, r.json()["version"]) for r in pinned] == [(200, "1")] * 60

    # Each worker sized onnxruntime for its share of the CPUs.
    started = [line for line in lines if line["message"] == "service started"]
    share = cpu_budget(workers=2).usable
    assert sorted(line["worker"] for line in started) == [0, 1]
    assert {(line["workers"], line["cpus_usable"], line["onnxruntime_intra_op_threads"]) for line in started} == {
        (2, share, share)
    }
    # SIGTERM to the supervisor stopped both workers gracefully, then the metrics directory was removed.
    stopped = {line["worker"] for line in lines if line["message"] == "Application shutdown complete."}
    assert stopped == {0, 1}
    assert any(line["message"] == "all workers stopped" for line in lines)
    (state_dir,) = [line["state_dir"] for line in lines if line["message"] == "supervisor starting workers"]
    assert not Path(state_dir).exists()  # the metrics files and the pin file


async def test_a_taken_port_fails_the_start_with_status_3(tmp_path: Path, tiny_artifact: Path) -> None:
    models = tmp_path / "models"
    clone_artifact(tiny_artifact, models, "tiny", 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OEGATE_")}
        env |= {"OEGATE_MODEL_DIR": str(models), "OEGATE_WORKERS": "2", "OEGATE_PORT": str(port)}
        completed = subprocess.run(
            [sys.executable, "-m", "service"], cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_S
        )
    assert completed.returncode == 3, completed.stderr
    assert "cannot bind" in completed.stderr


async def test_a_killed_worker_is_restarted_and_its_counts_are_kept(tmp_path: Path, tiny_artifact: Path) -> None:
    models = tmp_path / "models"
    clone_artifact(tiny_artifact, models, "tiny", 1)
    env = {"OEGATE_MODEL_DIR": str(models), "OEGATE_WORKERS": "2", "OEGATE_PROVIDERS": '["CPUExecutionProvider"]'}
    log = tmp_path / "service.log"
    fresh_connections = httpx.Limits(max_keepalive_connections=0)
    with service_process(env, log) as url:
        await wait_for_log(log, "listening", 2)
        async with httpx.AsyncClient(base_url=url, limits=fresh_connections, timeout=30) as client:
            first = await predict_many(client, 60)
            (killed,) = [
                line["pid"] for line in log_lines(log) if line["message"] == "listening" and line["worker"] == 0
            ]
            os.kill(killed, signal.SIGKILL)
            await wait_for_log(log, "listening", 3)  # worker 0 again, in a new process
            second = await predict_many(client, 60)
            metrics = samples((await client.get("/metrics")).text)
    lines = log_lines(log)
    assert [r.status_code for r in first + second] == [200] * 120
    restarted = [line for line in lines if line["message"] == "worker exited; restarting it"]
    assert [(line["worker_index"], line["worker_pid"], line["exit_code"]) for line in restarted] == [
        (0, killed, -signal.SIGKILL)
    ]
    route = {"route": "/v1/models/{name}/predict", "status_class": "2xx", "model": "tiny"}
    assert value(metrics, "oegate_request_duration_seconds_count", **route) == 120.0  # the killed worker's too
    # The dead worker's live gauges stopped counting: one info series, nothing in flight or queued.
    assert value(metrics, "oegate_model_info", model="tiny", version="1", provider="CPUExecutionProvider") == 1.0
    assert value(metrics, "oegate_requests_in_flight") == 0.0
    assert value(metrics, "oegate_queue_depth", model="tiny") == 0.0
