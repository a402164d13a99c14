"""How `/metrics` merges the workers' files (service/multiprocess_metrics.py), on files written here the way
prometheus-client's multiprocess mode writes them (the test process itself stays in one-process mode)."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from service.multiprocess_metrics import RETIRED, live_worker_pids, scrape_registry
from tests.service.test_metrics import samples, value

NOT_A_PROCESS = 2**22 + 12345  # above Linux's pid_max limit (4194304): no such process


def write(directory: Path, kind: str, pid: int, metric: str, labels: dict[str, str], number: float) -> None:
    """One sample in `<kind>_<pid>.db`, as a worker with that pid would write it."""
    values = MmapedDict(str(directory / f"{kind}_{pid}.db"))
    key = mmap_key(metric, metric, list(labels), list(labels.values()), f"{metric} help")
    values.write_value(key, number, 0.0)
    values.close()


def test_counters_sum_and_retired_gauge_series_vanish(tmp_path: Path) -> None:
    me, other = os.getpid(), NOT_A_PROCESS
    for pid, count in ((me, 120.0), (other, 80.0), (NOT_A_PROCESS + 1, 5.0)):  # the last worker has exited
        write(tmp_path, "counter", pid, "oegate_predictions_total", {"model": "m", "version": "1"}, count)
    for pid, depth in ((me, 3.0), (other, 4.0)):
        write(tmp_path, "gauge_livesum", pid, "oegate_queue_depth", {"model": "m"}, depth)
    info = {"model": "m", "provider": "CPUExecutionProvider"}
    write(tmp_path, "gauge_livemax", me, "oegate_model_info", {**info, "version": "1"}, RETIRED)  # swapped to 2
    write(tmp_path, "gauge_livemax", other, "oegate_model_info", {**info, "version": "1"}, 1.0)  # not yet
    write(tmp_path, "gauge_livemax", me, "oegate_model_info", {**info, "version": "0"}, RETIRED)  # gone everywhere
    write(tmp_path, "gauge_livemax", me, "oegate_model_threshold", {"model": "m", "version": "2"}, 0.0)

    exposed = samples(generate_latest(scrape_registry(tmp_path)).decode())

    assert value(exposed, "oegate_predictions_total", model="m", version="1") == 205.0  # exited workers count too
    assert value(exposed, "oegate_queue_depth", model="m") == 7.0
    assert value(exposed, "oegate_model_info", **info, version="1") == 1.0  # one live worker still serves it
    assert value(exposed, "oegate_model_info", **info, version="0") is None
    assert value(exposed, "oegate_model_threshold", model="m", version="2") == 0.0  # a real 0 is kept
    # Live workers are those with live-gauge files; process metrics come from those that exist (this process).
    assert live_worker_pids(tmp_path) == [me, other]
    resident = value(exposed, "process_resident_memory_bytes")
    assert resident is not None and resident > 10e6
    assert any(name == "python_info" for name, _ in exposed)
