"""How many CPUs training may really use, for torch's intra-op threads: the affinity mask and the cgroup CPU quota.

torch sizes its thread pool from the CPUs it sees through the affinity mask, but not from a cgroup quota: a training
Job limited to 2 CPUs on a 32-core node gets 32 threads, and OpenMP threads that outnumber the CPUs spin against
each other (measured here on 2 oversubscribed cores: ~340 ms per OE step with 2 threads against ~20 ms with 1,
BENCHMARKS.md section 5). The rules are the service's (`service/cpus.py`); the two halves share no code, so they are
repeated here: cgroup v2 `cpu.max` of this process's cgroup and every ancestor (the tightest wins), else cgroup v1
`cpu.cfs_quota_us / cpu.cfs_period_us`; a fractional quota rounds up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = float(quota), float(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """CPUs the cgroup quota allows (e.g. 1.5), None without a quota."""
    own = next((line[3:] for line in _read(proc_self_cgroup).splitlines() if line.startswith("0::")), "/") or "/"
    relative = Path(own.lstrip("/"))
    quotas = []
    for directory in [root / relative, *(root / parent for parent in relative.parents)]:
        parts = _read(directory / "cpu.max").split()
        if len(parts) == 2 and parts[0] != "max" and (quota := _ratio(*parts)) is not None:
            quotas.append(quota)
    if quotas:
        return min(quotas)
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        quota = _ratio(_read(v1 / "cpu.cfs_quota_us") or "-1", _read(v1 / "cpu.cfs_period_us") or "0")
        if quota is not None:
            return quota
    return None


def usable_cpus(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """min(CPUs in the affinity mask, the cgroup quota rounded up), at least 1."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(root, proc_self_cgroup)
    return max(1, affinity if quota is None else min(affinity, math.ceil(quota)))
