"""Reading batch counters from Prometheus text, as oegate and Triton write it."""

from __future__ import annotations

import pytest

from bench.servers import mean_batch_size, metric_value

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
