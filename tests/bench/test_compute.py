"""The compute-bound benchmark: its report's arithmetic on known rows, and one tiny end-to-end run (no timing is
asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import compute
from bench.compute import Row, render
from bench.compute_models import text_workload
from bench.servers import group_cpu_seconds
from service.codecs.text import TokenBatch


def test_report_compares_every_server_with_the_best_in_process_batch() -> None:
    rows = [
        Row("wrn", "inprocess", 0, 100.0, 10.0, 12.0, 1.0, per_cpu_s=110.0),
        Row("wrn", "inprocess", 0, 400.0, 40.0, 44.0, 16.0, per_cpu_s=420.0),  # the best batch size, both ways
        Row("wrn", "inprocess", 0, 300.0, 200.0, 210.0, 64.0, per_cpu_s=310.0),
        Row("wrn", "oegate", 0, 320.0, 150.0, 180.0, 40.0, per_cpu_s=210.0),
        Row("wrn", "oegate-nobatch", 0, 80.0, 700.0, 900.0, 1.0, per_cpu_s=84.0),
        Row("wrn", "triton", 0, 200.0, 300.0, 350.0, 30.0, errors=2, per_cpu_s=105.0),
    ]
    text = render(rows, {"machine": "test"})
    assert "| (a) in-process, best batch 16 (per CPU-s: 16) | 400 | 1.00x | 420 | 1.00x | | | | |" in text
    assert "| oegate | 320 | 0.80x | 210 | 0.50x | 150.0 | 180.0 | 40.0 | 0 |" in text
    assert "| oegate-nobatch | 80 | 0.20x | 84 | 0.20x | 700.0 | 900.0 | 1.0 | 0 |" in text
    assert "| triton | 200 | 0.50x | 105 | 0.25x | 300.0 | 350.0 | 30.0 | 2 |" in text
    assert "oegate / oegate-nobatch: **4.00x** answers/s, **2.50x** per CPU-second" in text
    assert "oegate / triton: **1.60x** answers/s, **2.00x** per CPU-second" in text


def test_group_cpu_seconds_counts_a_busy_process_group(tmp_path: Path) -> None:
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"],
        start_new_session=True,
    )
    seen = 0.0
    while busy.poll() is None:
        seen = max(seen, group_cpu_seconds(busy.pid))
    assert busy.returncode == 0
    assert seen >= 0.1  # it burned 0.3 s of CPU; sampled while alive, in clock ticks
    assert group_cpu_seconds(busy.pid) == 0.0  # gone: nothing left in the group


def test_text_workload_batches_copies_of_the_one_request_text() -> None:
    workload = text_workload()
    batch = workload.batch(3)
    assert isinstance(batch, TokenBatch)
    assert len(batch.ids) == 3 and all(np.array_equal(ids, batch.ids[0]) for ids in batch.ids)
    assert workload.api == "native" and b'"text"' in workload.body


@pytest.mark.slow
@pytest.mark.needs_apt("wrk")
def test_compute_bench_runs_the_image_model_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "compute.md"
    argv = [
        "--models", "wrn", "--wrn-depth", "10", "--wrn-widen", "1", "--servers", "oegate", "--connections", "2",
        "--duration", "1", "--warmup", "0", "--sweep-seconds", "0.05", "--batch-sizes", "1,2", "--out", str(out),
    ]  # fmt: skip
    assert compute.main(argv) == 0
    text = out.read_text()
    assert "WRN-10-1" in text
    assert "| (a) in-process, best batch " in text
    oegate = next(line for line in text.splitlines() if line.startswith("| oegate |"))
    assert oegate.endswith("| 0 |")  # no errors; its first answer matched the in-process score (else it raises)
