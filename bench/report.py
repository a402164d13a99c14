"""The results of one run: a table of measurements with throughput ratios, written as Markdown and JSON.

Ratios compare requests per second at the same number of connections, measured in the same run: against the plain
FastAPI baseline on the same API, and against Triton (which is loaded on V2 only, so native rows compare with its
V2 row: the same image, in a slightly different JSON body). With several rounds (each server started and loaded
again, in alternating order), a row holds the median of each number over the rounds, and the lowest and highest
req/s.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.inputs import JSON_COUNTERPART

BASELINE = "baseline"
TRITON = "triton"


@dataclass(frozen=True)
class Measurement:
    server: str
    api: str
    connections: int
    requests_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    requests: int
    errors: int
    duration_s: float
    mean_batch_size: float | None
    round: int = 1
    cpu_ms_per_request: float | None = None  # the server's CPU time over the window / requests answered


@dataclass(frozen=True)
class Row:
    measurement: Measurement  # the median over rounds (requests, errors and duration: the totals)
    rounds: int
    requests_per_s_min: float
    requests_per_s_max: float
    vs_baseline: float | None
    vs_triton: float | None
    vs_json: float | None = None  # a binary path against the same server's JSON path (bench.inputs.JSON_COUNTERPART)


def _median(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def combine(runs: list[Measurement]) -> Measurement:
    """One measurement from the rounds of one row: medians, and total requests, errors and time."""
    return replace(
        runs[0],
        requests_per_s=statistics.median(m.requests_per_s for m in runs),
        latency_p50_ms=statistics.median(m.latency_p50_ms for m in runs),
        latency_p99_ms=statistics.median(m.latency_p99_ms for m in runs),
        latency_mean_ms=statistics.median(m.latency_mean_ms for m in runs),
        requests=sum(m.requests for m in runs),
        errors=sum(m.errors for m in runs),
        duration_s=sum(m.duration_s for m in runs),
        mean_batch_size=_median([m.mean_batch_size for m in runs]),
        round=0,
        cpu_ms_per_request=_median([m.cpu_ms_per_request for m in runs]),
    )


def with_ratios(measurements: list[Measurement]) -> list[Row]:
    """One row per (server, API, connections), in first-measured order, its throughput divided by the baseline's
    (same API) and Triton's (V2) at the same connections."""
    groups: dict[tuple[str, str, int], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.server, m.api, m.connections), []).append(m)
    combined = {key: combine(runs) for key, runs in groups.items()}

    def ratio(m: Measurement, reference: Measurement | None) -> float | None:
        return m.requests_per_s / reference.requests_per_s if reference and reference.requests_per_s else None

    return [
        Row(
            m,
            len(groups[key]),
            min(run.requests_per_s for run in groups[key]),
            max(run.requests_per_s for run in groups[key]),
            ratio(m, combined.get((BASELINE, m.api, m.connections))),
            ratio(m, combined.get((TRITON, "v2", m.connections))),
            _json_ratio(m, combined, ratio),
        )
        for key, m in combined.items()
    ]


def _json_ratio(
    m: Measurement,
    combined: dict[tuple[str, str, int], Measurement],
    ratio: Callable[[Measurement, Measurement | None], float | None],
) -> float | None:
    counterpart = JSON_COUNTERPART.get(m.api)  # type: ignore[call-overload]  # any API name may be reported
    return None if counterpart is None else ratio(m, combined.get((m.server, counterpart, m.connections)))


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(rows: list[Row]) -> str:
    several = any(row.rounds > 1 for row in rows)
    lines = [
        "| server | API | conns | req/s |"
        + (" req/s range |" if several else "")
        + " p50 ms | p99 ms | mean batch | CPU ms/req | errors | vs baseline | vs Triton | vs JSON |",
        "|---|---|---:|---:|" + ("---:|" if several else "") + "---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        m = row.measurement
        batch = "-" if m.mean_batch_size is None else f"{m.mean_batch_size:.2f}"
        spread = f" {row.requests_per_s_min:,.0f}-{row.requests_per_s_max:,.0f} |" if several else ""
        cpu = "-" if m.cpu_ms_per_request is None else f"{m.cpu_ms_per_request:.3f}"
        lines.append(
            f"| {m.server} | {m.api} | {m.connections} | {m.requests_per_s:,.0f} |{spread} {m.latency_p50_ms:.2f} | "
            f"{m.latency_p99_ms:.2f} | {batch} | {cpu} | {m.errors} | {_ratio_text(row.vs_baseline)} | "
            f"{_ratio_text(row.vs_triton)} | {_ratio_text(row.vs_json)} |"
        )
    return "\n".join(lines)


def markdown(facts: dict[str, Any], servers: dict[str, str], rows: list[Row], skipped: dict[str, str]) -> str:
    load_before = facts["load_average_before"]
    parts = [
        f"# oegate benchmark, {facts['started_utc']}",
        "",
        f"Command: `{facts['command']}`",
        "",
        "## Machine",
        "",
        f"- {facts['nproc']} CPUs ({facts['cpu_model']}), {facts['memory_gib']:.1f} GiB, Linux {facts['kernel']}",
        f"- load average before the run (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in load_before)}; "
        f"after: {', '.join(f'{v:.2f}' for v in facts['load_average_after'])}",
        f"- pinning: every server on core {facts['server_core']}, wrk (1 thread) on core {facts['client_core']} "
        "(`taskset -c`); the bench script itself on the client core",
        f"- load: wrk, closed loop, {facts['warmup_s']:g} s warm-up then {facts['duration_s']:g} s measured per "
        f"row; connections {', '.join(str(c) for c in facts['connections'])}; {facts['rounds']} round(s)",
        f"- model: {facts['model']}, one copy loaded by every server",
        f"- input: {facts['input']}; the same float32 values in every body ("
        + ", ".join(f"{api} {size} bytes" for api, size in facts["body_bytes"].items())
        + ")",
        f"- versions: {', '.join(f'{key} {value}' for key, value in facts['versions'].items())}",
        f"- git: {facts['git']}",
    ]
    if facts.get("under_load"):
        parts += ["", f"**Taken under load**: {facts['under_load']}"]
    parts += ["", "## Servers", ""]
    parts += [f"- **{name}**: {description}" for name, description in servers.items()]
    parts += ["", "## Correctness check (one request each, before loading it)", ""]
    parts += [f"- {line}" for line in facts["checks"]]
    if skipped:
        parts += ["", "## Not measured", ""]
        parts += [f"- **{name}**: {reason}" for name, reason in skipped.items()]
    parts += [
        "",
        "## Results",
        "",
        "req/s over the measured window; p50/p99 latency per request as wrk saw it; mean batch = instances per "
        "onnxruntime session run during the measured window (from oegate's `oegate_inference_batch_size` "
        "histogram, Triton's `nv_inference_count / nv_inference_exec_count`; 1 by construction for the baseline). "
        "CPU ms/req = the server's processes' CPU time (user + system, /proc) over the measured window divided by "
        "the requests answered: on a loaded machine it moves much less than req/s. "
        "Ratios are req/s divided by the baseline's on the same API, and by Triton's V2, at the same connections; "
        "vs JSON divides a binary path (v2-binary, native-raw) by the same server's JSON path (v2, native)"
        + (
            "; with several rounds every number is the median over the rounds (range: lowest-highest req/s)."
            if facts["rounds"] > 1
            else "."
        ),
        "",
        table(rows),
        "",
    ]
    return "\n".join(parts)


def write_results(
    output_dir: Path,
    stem: str,
    facts: dict[str, Any],
    servers: dict[str, str],
    measurements: list[Measurement],
    skipped: dict[str, str],
) -> tuple[Path, Path]:
    """`<output_dir>/<stem>.md` and `.json`, from the same rows."""
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = with_ratios(measurements)
    md_path, json_path = output_dir / f"{stem}.md", output_dir / f"{stem}.json"
    document = {
        "facts": facts,
        "servers": servers,
        "skipped": skipped,
        "results": [
            asdict(r.measurement)
            | {
                "rounds": r.rounds,
                "requests_per_s_min": r.requests_per_s_min,
                "requests_per_s_max": r.requests_per_s_max,
                "vs_baseline": r.vs_baseline,
                "vs_triton": r.vs_triton,
                "vs_json": r.vs_json,
            }
            for r in rows
        ],
        "runs": [asdict(m) for m in measurements],
    }
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    md_path.write_text(markdown(facts, servers, rows, skipped))
    return md_path, json_path
