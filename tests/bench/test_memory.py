"""bench/memory.py: its request bodies, the artifact sizes, and a one-second smoke run with two workers
(correctness only: no memory figure is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.memory import artifacts, main, v2_digits


def test_a_batch_body_holds_count_copies_of_the_digit() -> None:
    values = (np.arange(784, dtype=np.float32) / np.float32(784)).reshape(1, 1, 28, 28)
    tensor = json.loads(v2_digits(values, 3))["inputs"][0]
    assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("input", [3, 1, 28, 28], "FP32")
    data = np.asarray(tensor["data"], dtype=np.float64).astype(np.float32).reshape(3, 1, 28, 28)
    assert all(np.array_equal(data[i], values[0]) for i in range(3))


def test_artifact_sizes_are_the_bytes_of_each_version(tmp_path: Path) -> None:
    version = tmp_path / "m" / "2"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"x" * 1000)
    (version / "card.json").write_bytes(b"{}" * 10)
    (tmp_path / "m" / ".tmp-3-abcd").mkdir()  # a publish in progress is not an artifact
    found = artifacts(tmp_path)
    assert [(a.name, a.version, a.directory_bytes, a.model_bytes) for a in found] == [("m", "2", 1020, 1000)]


@pytest.mark.slow
@pytest.mark.needs_apt("wrk")
def test_a_one_second_run_with_two_workers(tmp_path: Path) -> None:
    out = tmp_path / "memory.md"
    assert main(["--seconds", "1", "--workers", "2", "--connections", "2", "--out", str(out)]) == 0
    text = out.read_text()
    roles = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines() if line.startswith("| ")]
    assert {"supervisor", "worker 0", "worker 1", "**all**"} <= set(roles)
    assert "| mnist-oe | 1 |" in text and "| topics-oe | 1 |" in text
