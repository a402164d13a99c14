"""Reading batch counters from Prometheus text, as oegate and Triton write it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.inputs import APIS
from bench.servers import RunningServer, ServerSpec, group_cpu_seconds, mean_batch_size, metric_value

OEGATE_METRICS = """\
# HELP oegate_inference_batch_size Instances per onnxruntime session run (micro-batch size).
# TYPE oegate_inference_batch_size histogram
oegate_inference_batch_size_bucket{le="1.0",model="mnist-oe"} 2.0
oegate_inference_batch_size_count{model="mnist-baseline"} 7.0
oegate_inference_batch_size_count{model="mnist-oe"} 5.0
oegate_inference_batch_size_sum{model="mnist-oe"} 40.0
"""
TRITON_METRICS = """\
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="mnist-oe",version="1"} 1200
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="mnist-oe",version="1"} 100
"""


def test_metric_value_matches_name_and_labels_exactly() -> None:
    assert metric_value(OEGATE_METRICS, "oegate_inference_batch_size_count", model="mnist-oe") == 5.0
    assert metric_value(OEGATE_METRICS, "oegate_inference_batch_size_sum", model="mnist-oe") == 40.0
    assert metric_value(OEGATE_METRICS, "oegate_inference_batch_size_sum", model="other") == 0.0


def test_metric_value_keeps_triton_counter_names_as_written() -> None:
    # prometheus_client's parser would report these as nv_inference_count_total.
    assert metric_value(TRITON_METRICS, "nv_inference_count", model="mnist-oe") == 1200.0
    assert metric_value(TRITON_METRICS, "nv_inference_exec_count", model="mnist-oe") == 100.0


def test_mean_batch_size_is_instances_per_run_between_readings() -> None:
    assert mean_batch_size((40.0, 5.0), (1240.0, 105.0)) == pytest.approx(12.0)
    assert mean_batch_size(None, None) == 1.0  # the baseline never batches
    assert mean_batch_size((40.0, 5.0), (40.0, 5.0)) is None  # nothing ran in between


def test_group_cpu_seconds_sums_utime_and_stime_of_the_group_only(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")

    def stat(pid: int, command: str, group: int, utime: int, stime: int) -> None:
        (tmp_path / str(pid)).mkdir()
        fields = ["S", "1", str(group), str(group), *["0"] * 7, str(utime), str(stime), *["0"] * 30]
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({command}) {' '.join(fields)}\n")

    stat(100, "python -m service", 100, 3 * ticks, ticks)
    stat(101, "tritonserver (x)", 100, ticks, 0)  # a child in the server's group; ")" in its name
    stat(200, "other", 200, 50 * ticks, 0)
    (tmp_path / "self").mkdir()
    assert group_cpu_seconds(100, tmp_path) == pytest.approx(5.0)
    assert group_cpu_seconds(300, tmp_path) == 0.0


def test_every_api_has_a_url() -> None:
    server = RunningServer(ServerSpec("oegate", "", APIS, "oegate"), "http://h", "m", None)
    urls = {api: server.url(api) for api in APIS}
    assert urls == {
        "native": "http://h/v1/models/m/predict",
        "native-raw": "http://h/v1/models/m/predict",
        "v2": "http://h/v2/models/m/infer",
        "v2-binary": "http://h/v2/models/m/infer",
    }
    assert server.cpu_seconds() is None  # no process group known
