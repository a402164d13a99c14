"""The service as a tree of processes, for the workers and memory benchmarks: start `python -m service` with N
workers (optionally pinned to a CPU list with taskset), wait until every worker listens, name its processes and
read their memory from /proc.

With `OEGATE_WORKERS=1` the tree is one process; with N > 1 it is the supervisor, N workers and multiprocessing's
resource tracker (a child of the supervisor that the spawn start method runs). Memory per process:
- RSS (`VmRSS`) and peak RSS (`VmHWM`, the high-water mark since the process started) from /proc/<pid>/status;
- PSS (`Pss` in /proc/<pid>/smaps_rollup): each shared page divided among the processes that map it, so the PSS of
  all processes adds up to what the service really holds (summing RSS counts shared library pages once per
  process). None where the kernel does not offer smaps_rollup.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.servers import REPO, _stop, _wait_ready, free_port

READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ProcessMemory:
    role: str  # "service" (one process), "supervisor", "worker 0", ..., "resource tracker"
    pid: int
    rss: int  # bytes
    peak_rss: int  # bytes, VmHWM
    pss: int | None  # bytes


def status_field(status_text: str, name: str) -> int | None:
    """A `kB` field (`VmRSS`, `VmHWM`) of /proc/<pid>/status text, in bytes; None if absent."""
    for line in status_text.splitlines():
        if line.startswith(f"{name}:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected {name} unit {unit!r}")
            return int(value) * 1024
    return None


def pss_bytes(smaps_rollup_text: str) -> int | None:
    """The `Pss:` total of /proc/<pid>/smaps_rollup text, in bytes."""
    return status_field(smaps_rollup_text, "Pss")


def children(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """Pids whose parent is `pid` (read from each /proc/<pid>/stat; processes that exit meanwhile are skipped)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def memory(pid: int, role: str, proc: Path = Path("/proc")) -> ProcessMemory | None:
    """`pid`'s memory now; None if it has exited."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    try:
        pss = pss_bytes((proc / str(pid) / "smaps_rollup").read_text())
    except OSError:
        pss = None
    return ProcessMemory(role, pid, status_field(status, "VmRSS") or 0, status_field(status, "VmHWM") or 0, pss)


@dataclass
class ServiceTree:
    """A running service: its base URL, the pid `python -m service` runs as, and its log."""

    base_url: str
    pid: int
    workers: int
    log_path: Path

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid, from the workers' `listening` log lines (the newest per index)."""
        pids: dict[int, int] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                record: dict[str, Any] = json.loads(line)
                if record.get("message") == "listening" and isinstance(record.get("worker"), int):
                    pids[record["worker"]] = int(record["pid"])
        return pids

    def memory(self) -> list[ProcessMemory]:
        """Every process of the service, named by its role."""
        if self.workers == 1:
            return [m for m in [memory(self.pid, "service")] if m is not None]
        roles = {pid: f"worker {index}" for index, pid in self.worker_pids().items()}
        found = [memory(self.pid, "supervisor")]
        found += [memory(child, roles.get(child, "resource tracker")) for child in children(self.pid)]
        return [m for m in found if m is not None]


@contextmanager
def service_tree(
    workers: int, log_path: Path, cpus: str | None = None, settings: dict[str, str] | None = None
) -> Iterator[ServiceTree]:
    """`python -m service` with `workers` workers and `settings` (OEGATE_* only; the port is chosen here), pinned to
    the CPU list `cpus` (taskset syntax, e.g. "0" or "0-2") when given; yielded once every worker listens."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OEGATE_")}
    env |= {**(settings or {}), "OEGATE_PORT": str(port), "OEGATE_WORKERS": str(workers)}
    command = [sys.executable, "-m", "service"]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]  # taskset execs: the pid is the service's (or supervisor's)
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_ready(process, f"{base_url}/v2/health/ready", log_path, timeout_s=READY_TIMEOUT_S)
            tree = ServiceTree(base_url, process.pid, workers, log_path)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while workers > 1 and len(tree.worker_pids()) < workers:  # ready answers once one worker listens
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fewer than {workers} workers listening after {READY_TIMEOUT_S:g} s")
                time.sleep(0.1)
            yield tree
        finally:
            _stop(process, signal.SIGTERM)


def scrape(base_url: str) -> str:
    return httpx.get(f"{base_url}/metrics", timeout=30.0).text
