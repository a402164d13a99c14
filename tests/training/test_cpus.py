"""Training's torch threads follow the affinity mask and the tightest cgroup CPU quota, like the service's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import cpus, pipeline


def _tree(tmp_path: Path, files: dict[str, str], own: str = "0::/kubepods/pod1/ctr\n") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.parent.mkdir(parents=True, exist_ok=True)
    proc.write_text(own)
    return root, proc


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"kubepods/pod1/ctr/cpu.max": "150000 100000\n"}, 1.5),
        ({"kubepods/pod1/ctr/cpu.max": "max 100000\n", "kubepods/cpu.max": "200000 100000\n"}, 2.0),
        ({"kubepods/pod1/ctr/cpu.max": "400000 100000\n", "kubepods/pod1/cpu.max": "100000 100000\n"}, 1.0),
        ({"kubepods/pod1/ctr/cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "250000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.5),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ],
)
def test_quota_is_the_tightest_limit_on_the_way_up(tmp_path: Path, files: dict[str, str], quota: float) -> None:
    root, proc = _tree(tmp_path, files)
    assert cpus.cgroup_cpu_quota(root, proc) == quota


def test_usable_cpus_is_the_affinity_capped_by_the_quota_rounded_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    root, proc = _tree(tmp_path, {"kubepods/pod1/ctr/cpu.max": "150000 100000\n"})
    assert cpus.usable_cpus(root, proc) == 2  # 1.5 CPUs -> 2 threads
    root, proc = _tree(tmp_path / "none", {})
    assert cpus.usable_cpus(root, proc) == 4  # no quota: the affinity mask
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {3})
    assert cpus.usable_cpus(root, proc) == 1


def test_set_threads_uses_the_usable_cpus_unless_run_threads_says(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(pipeline, "usable_cpus", lambda: 1)
    try:
        assert pipeline.set_threads(0) == 1 and torch.get_num_threads() == 1
        assert pipeline.set_threads(3) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
