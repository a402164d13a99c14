"""bench/workers.py and bench/processes.py: the CPU split, the report, /proc parsing, and a one-second smoke run of
1 and 2 workers (correctness only: no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.processes import children, memory, pss_bytes, status_field
from bench.workers import Row, cpu_split, main, render, summary

STATUS = "Name:\tpython\nVmHWM:\t  400000 kB\nVmRSS:\t  312345 kB\nThreads:\t12\n"


@pytest.mark.parametrize(
    ("cpus", "server", "client", "expected"),
    [
        (2, None, None, (None, "0-1", "not pinned: 2 CPUs, so wrk shares them with the service")),
        (4, None, None, ("0-2", "3", "service on CPUs 0-2, wrk on CPUs 3 (taskset)")),
        (2, "0", "1", ("0", "1", "service on CPUs 0, wrk on CPUs 1 (taskset)")),
    ],
)
def test_the_client_gets_its_own_cpu_when_there_is_one_to_spare(
    cpus: int, server: str | None, client: str | None, expected: tuple[str | None, str, str]
) -> None:
    assert cpu_split(cpus, server, client) == expected


def test_the_report_gives_medians_and_the_ratio_to_one_worker() -> None:
    rows = [
        Row(1, 1, 1000.0, 10.0, 30.0, 0, 1.5, 1.0, 0.2),
        Row(2, 1, 1800.0, 6.0, 20.0, 0, 1.2, 1.9, 0.3),
        Row(1, 2, 1200.0, 9.0, 25.0, 0, None, 1.0, 0.2),
        Row(2, 2, 2000.0, 5.0, 18.0, 0, 1.1, 1.9, 0.3),
        Row(1, 3, 1100.0, 9.0, 25.0, 0, 1.4, 1.0, 0.2),
        Row(2, 3, 2200.0, 5.0, 18.0, 0, 1.1, 1.9, 0.3),
    ]
    assert summary(rows) == {1: 1100.0, 2: 2000.0}
    text = render({"machine": "test"}, rows)
    assert "| 1 | 1,100 | 1.00x | 1,100 |" in text and "| 2 | 2,000 | 1.82x | 1,053 |" in text
    assert "| 2 | 1 | 1,200 | 9.00 | 25.00 | 0 | - | 1.00 | 0.20 |" in text


def test_proc_files_are_read_in_bytes(tmp_path: Path) -> None:
    assert (status_field(STATUS, "VmRSS"), status_field(STATUS, "VmHWM")) == (312345 * 1024, 400000 * 1024)
    assert pss_bytes("Rss:  2048 kB\nPss:  1024 kB\n") == 1024 * 1024
    proc = tmp_path / "proc"
    for pid, ppid, comm in ((10, 1, "python"), (11, 10, "py (worker) 0"), (12, 10, "python"), (13, 11, "x")):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0 -1\n")
    (proc / "10" / "status").write_text(STATUS)
    (proc / "self").mkdir()
    assert children(10, proc) == [11, 12]  # a comm with spaces and parentheses does not shift the fields
    found = memory(10, "supervisor", proc)
    assert found is not None and (found.rss, found.peak_rss, found.pss) == (312345 * 1024, 400000 * 1024, None)
    assert memory(99, "gone", proc) is None


@pytest.mark.slow
@pytest.mark.needs_apt("wrk")
def test_a_one_second_run_of_one_and_two_workers(tmp_path: Path) -> None:
    out = tmp_path / "workers.md"
    assert main(["--duration", "1", "--warmup", "0", "--rounds", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| workers | median req/s | vs 1 worker |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 1 | ") and line.count(" | ") == 8]
    assert [line.split(" | ")[1] for line in rows] == ["1", "2"]  # round 1: one worker, then two
    assert all(line.split(" | ")[5] == "0" for line in rows)  # no errors
