"""The CPUs the service sizes onnxruntime for: affinity and cgroup quota, read from fake cgroup trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import cpus
from service.cpus import CpuBudget, cgroup_cpu_quota, cpu_budget, onnxruntime_threads


def _tree(tmp_path: Path, files: dict[str, str], own: str = "0::/kubepods/pod1/ctr\n") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    (tmp_path / "self").write_text(own)
    return root, tmp_path / "self"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"kubepods/pod1/ctr/cpu.max": "150000 100000\n"}, 1.5),  # the container's own limit
        ({"kubepods/pod1/ctr/cpu.max": "max 100000\n", "kubepods/cpu.max": "200000 100000\n"}, 2.0),  # an ancestor's
        ({"kubepods/pod1/ctr/cpu.max": "400000 100000\n", "kubepods/pod1/cpu.max": "100000 100000\n"}, 1.0),  # tightest
        ({"kubepods/pod1/ctr/cpu.max": "max 100000\n"}, None),  # no quota anywhere
        ({"kubepods/pod1/ctr/cpu.max": "garbage\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),  # cgroup v1
        ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),  # v1 unlimited
        ({}, None),  # no cgroup file system at all
    ],
)
def test_cgroup_quota(tmp_path: Path, files: dict[str, str], expected: float | None) -> None:
    root, own = _tree(tmp_path, files)
    assert cgroup_cpu_quota(root, own) == expected


def test_the_root_cgroup_and_an_unreadable_self_file(tmp_path: Path) -> None:
    root, own = _tree(tmp_path, {"cpu.max": "300000 100000\n"}, own="0::/\n")
    assert cgroup_cpu_quota(root, own) == 3.0
    assert cgroup_cpu_quota(root, tmp_path / "missing") == 3.0  # unknown cgroup: the root's file still counts


@pytest.mark.parametrize(
    ("affinity", "quota", "usable"),
    [(16, None, 16), (16, 1.0, 1), (16, 1.5, 2), (2, 4.0, 2), (1, 0.1, 1), (4, 4.0, 4)],
)
def test_usable_cpus_are_the_smaller_of_affinity_and_rounded_up_quota(
    affinity: int, quota: float | None, usable: int
) -> None:
    assert CpuBudget(affinity, quota).usable == usable


@pytest.mark.parametrize(
    ("affinity", "quota", "workers", "usable"),
    [(2, None, 2, 1), (16, None, 4, 4), (16, 1.5, 2, 1), (2, None, 3, 1), (8, 6.0, 2, 3)],
)
def test_workers_share_the_cpus(affinity: int, quota: float | None, workers: int, usable: int) -> None:
    budget = CpuBudget(affinity, quota, workers)
    assert (budget.usable, onnxruntime_threads(0, 0, budget)) == (usable, (usable, 1))


def test_thread_counts_follow_the_budget_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    root, own = _tree(tmp_path, {"kubepods/pod1/ctr/cpu.max": "100000 100000\n"})
    budget = cpu_budget(root, own)
    assert (budget.affinity, budget.quota, budget.usable) == (4, 1.0, 1)
    assert onnxruntime_threads(0, 0, budget) == (1, 1)  # pinned by the quota: one thread, no spinning neighbours
    assert onnxruntime_threads(3, 2, budget) == (3, 2)  # explicit settings win
    assert onnxruntime_threads(0, 0, CpuBudget(4, None)) == (4, 1)


def test_a_runtime_with_default_settings_uses_the_budget(tiny_artifact: Path) -> None:
    from service.card import read_verified_card
    from service.runtime import Runtime

    card = read_verified_card(tiny_artifact, "tiny", 1)
    runtime = Runtime(tiny_artifact / "model.onnx", card, ["CPUExecutionProvider"], 0, 0)
    assert runtime.threads == (cpu_budget().usable, 1)
    assert Runtime(tiny_artifact / "model.onnx", card, ["CPUExecutionProvider"], 2, 3).threads == (2, 3)
    shared = Runtime(tiny_artifact / "model.onnx", card, ["CPUExecutionProvider"], 0, 0, workers=2)
    assert shared.threads == (max(1, cpu_budget().total // 2), 1)
