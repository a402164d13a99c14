"""Ratios and the results table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench.report import Measurement, table, with_ratios, write_results


def measure(
    server: str, api: str, connections: int, rps: float, batch: float | None = 1.0, round_: int = 1
) -> Measurement:
    return Measurement(server, api, connections, rps, 1.0, 2.0, 1.1, int(rps * 10), 0, 10.0, batch, round_)


MEASUREMENTS = [
    measure("baseline", "native", 8, 1000.0),
    measure("baseline", "v2", 8, 800.0),
    measure("oegate", "native", 8, 500.0, 7.5),
    measure("oegate", "v2", 8, 600.0, 7.9),
    measure("oegate", "v2", 32, 700.0, 30.0),  # no baseline or Triton row at 32 connections
    measure("triton", "v2", 8, 400.0, None),
]


def test_ratios_compare_the_same_api_with_the_baseline_and_v2_with_triton() -> None:
    ratios = {
        (r.measurement.server, r.measurement.api, r.measurement.connections): r for r in with_ratios(MEASUREMENTS)
    }
    assert ratios["oegate", "native", 8].vs_baseline == pytest.approx(0.5)
    assert ratios["oegate", "v2", 8].vs_baseline == pytest.approx(0.75)
    assert ratios["oegate", "native", 8].vs_triton == pytest.approx(1.25)
    assert ratios["oegate", "v2", 8].vs_triton == pytest.approx(1.5)
    assert ratios["triton", "v2", 8].vs_baseline == pytest.approx(0.5)
    assert ratios["oegate", "v2", 32].vs_baseline is None and ratios["oegate", "v2", 32].vs_triton is None


def test_table_rows() -> None:
    lines = table(with_ratios(MEASUREMENTS)).splitlines()
    assert len(lines) == 2 + len(MEASUREMENTS)
    assert lines[4] == "| oegate | native | 8 | 500 | 1.00 | 2.00 | 7.50 | - | 0 | 0.50x | 1.25x | - |"
    assert lines[-1] == "| triton | v2 | 8 | 400 | 1.00 | 2.00 | - | - | 0 | 0.50x | 1.00x | - |"


def test_binary_paths_are_compared_with_the_same_servers_json_path() -> None:
    binary = [
        measure("oegate", "v2-binary", 8, 900.0, 7.0),
        measure("oegate", "native-raw", 8, 1000.0, 7.0),
        measure("triton", "v2-binary", 8, 600.0, 7.0),
        measure("oegate", "v2-binary", 128, 900.0, 7.0),  # no JSON row at 128 connections
    ]
    rows = {
        (r.measurement.server, r.measurement.api, r.measurement.connections): r
        for r in with_ratios(MEASUREMENTS + binary)
    }
    assert rows["oegate", "v2-binary", 8].vs_json == pytest.approx(1.5)
    assert rows["oegate", "native-raw", 8].vs_json == pytest.approx(2.0)
    assert rows["triton", "v2-binary", 8].vs_json == pytest.approx(1.5)
    assert rows["oegate", "v2-binary", 128].vs_json is None
    assert rows["oegate", "v2", 8].vs_json is None  # JSON paths have no JSON counterpart
    assert rows["oegate", "v2-binary", 8].vs_baseline is None  # the baseline answers JSON only


def test_cpu_per_request_is_the_median_over_rounds_and_shown_in_the_table() -> None:
    rounds = [
        replace(measure("oegate", "v2", 8, 600.0, 7.0, round_), cpu_ms_per_request=cpu)
        for round_, cpu in enumerate((1.25, 0.75, 1.0), start=1)
    ]
    (row,) = with_ratios(rounds)
    assert row.measurement.cpu_ms_per_request == pytest.approx(1.0)
    assert "| 1.000 | 0 |" in table([row])


def test_write_results_writes_the_same_rows_to_both_files(tmp_path: Path) -> None:
    facts = {
        "started_utc": "2026-01-01 00:00 UTC",
        "command": "python -m bench",
        "nproc": 2,
        "cpu_model": "cpu",
        "memory_gib": 1.0,
        "kernel": "6",
        "load_average_before": [0.1, 0.2, 0.3],
        "load_average_after": [1.0, 0.5, 0.4],
        "server_core": 0,
        "client_core": 1,
        "warmup_s": 3.0,
        "duration_s": 12.0,
        "rounds": 1,
        "connections": [8, 32],
        "input": "a digit",
        "model": "models/m/1",
        "body_bytes": {"native": 10, "v2": 11},
        "versions": {"wrk": "4"},
        "git": "abc",
        "checks": ["oegate v2: ok"],
    }
    md_path, json_path = write_results(tmp_path, "stamp", facts, {"oegate": "the service"}, MEASUREMENTS, {})
    markdown = md_path.read_text()
    assert "load average before the run (1, 5, 15 min): 0.10, 0.20, 0.30" in markdown
    assert table(with_ratios(MEASUREMENTS)) in markdown
    document = json.loads(json_path.read_text())
    assert [row["requests_per_s"] for row in document["results"]] == [m.requests_per_s for m in MEASUREMENTS]
    assert document["results"][2]["vs_baseline"] == pytest.approx(0.5)


def test_rounds_are_combined_by_median_before_ratios() -> None:
    runs = [
        measure("baseline", "v2", 8, 1000.0, round_=1),
        measure("oegate", "v2", 8, 600.0, 8.0, round_=1),
        measure("oegate", "v2", 8, 450.0, 6.0, round_=2),
        measure("baseline", "v2", 8, 800.0, round_=2),
        measure("oegate", "v2", 8, 500.0, 7.0, round_=3),
        measure("baseline", "v2", 8, 900.0, round_=3),
    ]
    baseline, oegate = with_ratios(runs)
    assert (baseline.measurement.server, baseline.rounds, baseline.measurement.requests_per_s) == ("baseline", 3, 900)
    assert (oegate.requests_per_s_min, oegate.measurement.requests_per_s, oegate.requests_per_s_max) == (450, 500, 600)
    assert oegate.measurement.mean_batch_size == 7.0
    assert oegate.measurement.requests == 6000 + 4500 + 5000
    assert oegate.vs_baseline == pytest.approx(500 / 900)
    assert (
        table([baseline, oegate]).splitlines()[3].startswith("| oegate | v2 | 8 | 500 | 450-600 | 1.00 | 2.00 | 7.00 |")
    )
