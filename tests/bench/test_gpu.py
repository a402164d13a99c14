"""bench/gpu.py (`make gpu-check`) on a machine without CUDA: it says so, skips the CUDA parts and still runs the
CPU ones (correctness only: no figure is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.servers import REPO


@pytest.mark.slow
def test_without_cuda_it_reports_so_and_runs_the_cpu_parts(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OEGATE_")}, "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "bench.gpu", "--seconds", "0.5", "--batch-sizes", "1,4", "--epoch-steps", "2"]
    command += ["--clients", "1", "--connections", "2", "--out", str(out)]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("CUDA unavailable: onnxruntime: ")
    text = out.read_text()
    assert "- onnxruntime CUDA: CUDA unavailable: " in text and "- torch CUDA: CUDA unavailable: " in text
    for name in ("mnist-baseline", "mnist-oe", "topics-baseline", "topics-oe"):  # every default model, newest version
        newest = max(int(p.name) for p in (REPO / "models" / name).iterdir() if p.name.isdigit())
        model = f"{name}/{newest}"
        assert f"| {model} | computed | skipped (CUDA unavailable) |" in text
    assert "| mnist-oe | CPUExecutionProvider |" in text and "| topics-oe | CPUExecutionProvider |" in text
    assert "| CPUExecutionProvider | CPUExecutionProvider | 1 | 2 |" in text  # the service ran on the CPU
    assert "| cpu | 2 | 300 |" in text  # two OE steps: 50 digits + 100 outliers each
    assert "With CUDA: skipped (CUDA unavailable)." in text and "On CUDA: skipped (CUDA unavailable)." in text
