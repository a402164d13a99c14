"""How many CPUs this process may really use: its affinity mask and its cgroup's CPU quota, not the host's cores.

onnxruntime's default is one intra-op thread per core it sees; in a container limited to one CPU (a Kubernetes
limit, `docker run --cpus 1`) or a process pinned with `taskset`, those threads spin against the event loop and
each other. The service therefore sizes its onnxruntime threads from `usable_cpus()` unless settings say otherwise.

- Affinity: `os.sched_getaffinity(0)` (the CPUs the scheduler may run us on).
- Quota: cgroup v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD") of this process's cgroup and every ancestor (the
  tightest wins), else cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1 = unlimited). A fractional quota is
  rounded up (1.5 CPUs -> 2 threads).
- Workers: with `OEGATE_WORKERS=N` the N worker processes share those CPUs, so each sizes its threads for
  `usable // N` of them (at least 1): 2 workers on 2 CPUs get one onnxruntime thread each instead of two apiece.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may use, and where the number came from."""

    affinity: int
    quota: float | None  # CPUs allowed by the cgroup quota; None when unlimited or unknown
    workers: int = 1  # server processes sharing these CPUs (OEGATE_WORKERS)

    @property
    def total(self) -> int:
        """CPUs all worker processes together may use."""
        limit = self.affinity if self.quota is None else min(self.affinity, math.ceil(self.quota))
        return max(1, limit)

    @property
    def usable(self) -> int:
        """This process's share of `total`: what it sizes its threads for."""
        return max(1, self.total // self.workers)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_quota(text: str | None) -> float | None:
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _own_cgroup_v2(proc_self_cgroup: Path) -> str:
    """This process's cgroup v2 path ("0::/some/path"), "/" when unknown."""
    for line in (_read(proc_self_cgroup) or "").splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return "/"


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """CPUs the cgroup quota allows this process (module doc), None when there is no quota."""
    quotas: list[float] = []
    relative = Path(_own_cgroup_v2(proc_self_cgroup).lstrip("/"))
    for directory in [root / relative, *(root / parent for parent in relative.parents)]:
        quota = _v2_quota(_read(directory / "cpu.max"))
        if quota is not None:
            quotas.append(quota)
    if quotas:
        return min(quotas)
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        quota_text, period_text = _read(v1 / "cpu.cfs_quota_us"), _read(v1 / "cpu.cfs_period_us")
        try:
            quota, period = float(quota_text or "-1"), float(period_text or "0")
        except ValueError:
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def cpu_budget(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP, *, workers: int = 1) -> CpuBudget:
    """The CPUs of this process (module doc), shared by `workers` server processes."""
    # macOS and Windows have no affinity call: every core counts there.
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return CpuBudget(affinity=affinity, quota=cgroup_cpu_quota(root, proc_self_cgroup), workers=workers)


def onnxruntime_threads(intra_op: int, inter_op: int, budget: CpuBudget) -> tuple[int, int]:
    """(intra-op, inter-op) threads: a setting of 0 means one intra-op thread per usable CPU and one inter-op
    thread (the graph runs its operators in sequence)."""
    return (intra_op or budget.usable, inter_op or 1)
