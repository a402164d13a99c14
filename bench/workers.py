"""`python -m bench.workers`: throughput of `OEGATE_WORKERS=N` against one worker, in the HTTP-bound case.

python -m bench.workers                                   # 1 and 2 workers, 3 interleaved rounds of 10 s at 32 conns
python -m bench.workers --duration 1 --warmup 0 --rounds 1 --out /tmp/w.md     # smoke
python -m bench.workers --wait-quiet 3600                 # first wait up to an hour for load average < 0.5

The HTTP-bound case: one MNIST digit per V2 JSON request to mnist-oe (default models/), so parsing, validation,
routing and encoding dominate and the model run is tiny. Each row starts a fresh `python -m service` with
`OEGATE_WORKERS=N` and otherwise default settings (CPU provider; onnxruntime threads from the CPU budget, i.e.
usable CPUs / N per worker), waits until every worker listens, checks one answer, runs wrk for a warm-up and then a
measured window, and reads around that window the service's merged /metrics (requests, instances per session run,
`process_cpu_seconds_total` summed over workers: the cores the service used) and wrk's own CPU time.

Pinning: on a machine with 3 or more CPUs wrk gets the last CPU and the service the others (`--client-cpus`,
`--server-cpus`, taskset lists). With 2 CPUs there is no core to spare: nothing is pinned and wrk shares both cores
with the workers (the report says so). Worker counts alternate order from round to round (1, 2 then 2, 1, ...) so
that a drift of the machine's load does not favour one; the summary takes medians over rounds.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import onnxruntime

from bench import inputs, wrk
from bench.processes import ServiceTree, scrape, service_tree
from bench.servers import REPO, metric_value, results_path, write_report

logger = logging.getLogger(__name__)

MODEL = "mnist-oe"


@dataclass(frozen=True)
class Row:
    workers: int
    round: int
    requests_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    errors: int
    mean_batch: float | None
    server_cores: float  # CPU seconds the service used per second of the window
    client_cores: float  # the same for wrk


def cpu_split(cpus: int, server_cpus: str | None, client_cpus: str | None) -> tuple[str | None, str, str]:
    """(the service's CPU list, None for unpinned; wrk's CPU list; how they were pinned, in words)."""
    everything = f"0-{cpus - 1}"
    if server_cpus is None and client_cpus is None:
        if cpus >= 3:
            server_cpus, client_cpus = f"0-{cpus - 2}", str(cpus - 1)
        else:
            return None, everything, f"not pinned: {cpus} CPUs, so wrk shares them with the service"
    server = server_cpus if server_cpus is not None else everything
    client = client_cpus if client_cpus is not None else everything
    return server, client, f"service on CPUs {server}, wrk on CPUs {client} (taskset)"


def _cpu_seconds(base_url: str) -> float:
    return metric_value(scrape(base_url), "process_cpu_seconds_total")


def _batch_counters(base_url: str) -> tuple[float, float]:
    text = scrape(base_url)
    return (
        metric_value(text, "oegate_inference_batch_size_sum", model=MODEL),
        metric_value(text, "oegate_inference_batch_size_count", model=MODEL),
    )


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(seconds: float, quiet_load: float) -> None:
    """Wait up to `seconds` for the 1-minute load average to drop below `quiet_load` (the report records it)."""
    deadline = time.monotonic() + seconds
    while (load := os.getloadavg()[0]) >= quiet_load and time.monotonic() < deadline:
        logger.info("1-minute load average %.2f >= %.2f: waiting", load, quiet_load)
        time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))


def check_answer(tree: ServiceTree, body: bytes, label: int) -> None:
    response = httpx.post(f"{tree.base_url}/v2/models/{MODEL}/infer", content=body, timeout=30.0)
    response.raise_for_status()
    answer = inputs.read_prediction("v2", response.json())
    if answer.label_index != label:
        raise RuntimeError(f"{MODEL} answered label {answer.label_index}, expected {label}")


def measure(
    workers: int,
    round_: int,
    *,
    body_path: Path,
    script: Path,
    label: int,
    connections: int,
    duration_s: float,
    warmup_s: float,
    server_cpus: str | None,
    client_cpus: str,
    log_dir: Path,
    settings: dict[str, str],
) -> Row:
    log_path = log_dir / f"workers-{workers}-round-{round_}.log"
    with service_tree(workers, log_path, server_cpus, settings) as tree:
        check_answer(tree, body_path.read_bytes(), label)
        url = f"{tree.base_url}/v2/models/{MODEL}/infer"
        if warmup_s > 0:
            wrk.run_wrk(url, script, connections=connections, duration_s=warmup_s, core=client_cpus)
        batches_before, cpu_before = _batch_counters(tree.base_url), _cpu_seconds(tree.base_url)
        client_before = _children_cpu_s()
        result = wrk.run_wrk(url, script, connections=connections, duration_s=duration_s, core=client_cpus)
        client_cpu = _children_cpu_s() - client_before
        cpu_after, batches_after = _cpu_seconds(tree.base_url), _batch_counters(tree.base_url)
    runs = batches_after[1] - batches_before[1]
    return Row(
        workers=workers,
        round=round_,
        requests_per_s=result.requests_per_s,
        latency_p50_ms=result.latency_p50_ms,
        latency_p99_ms=result.latency_p99_ms,
        errors=result.errors,
        mean_batch=(batches_after[0] - batches_before[0]) / runs if runs > 0 else None,
        server_cores=(cpu_after - cpu_before) / result.duration_s if result.duration_s > 0 else 0.0,
        client_cores=client_cpu / result.duration_s if result.duration_s > 0 else 0.0,
    )


def summary(rows: list[Row]) -> dict[int, float]:
    """Median req/s per worker count."""
    counts = sorted({row.workers for row in rows})
    return {n: statistics.median(row.requests_per_s for row in rows if row.workers == n) for n in counts}


def efficiency(rows: list[Row]) -> dict[int, float]:
    """Median req/s per core the service used: on a machine shared with other work, what each worker count makes
    of the CPU time it gets (0 where the service used none)."""
    counts = sorted({row.workers for row in rows})
    return {
        n: statistics.median(
            r.requests_per_s / r.server_cores if r.server_cores > 0 else 0.0 for r in rows if r.workers == n
        )
        for n in counts
    }


def render(facts: dict[str, str], rows: list[Row]) -> str:
    medians = summary(rows)
    base = medians.get(1)
    lines = ["# oegate workers: throughput of N worker processes vs one", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    per_core = efficiency(rows)
    lines += ["", "| workers | median req/s | vs 1 worker | median req/s per service core |", "|---:|---:|---:|---:|"]
    for n, median in medians.items():
        ratio = f"{median / base:.2f}x" if base else "-"
        lines.append(f"| {n} | {median:,.0f} | {ratio} | {per_core[n]:,.0f} |")
    lines += [
        "",
        "| round | workers | req/s | p50 ms | p99 ms | errors | instances/run | service cores | wrk cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        batch = "-" if row.mean_batch is None else f"{row.mean_batch:.2f}"
        lines.append(
            f"| {row.round} | {row.workers} | {row.requests_per_s:,.0f} | {row.latency_p50_ms:.2f} | "
            f"{row.latency_p99_ms:.2f} | {row.errors} | {batch} | {row.server_cores:.2f} | {row.client_cores:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


def machine_facts(command: str, pinning: str, connections: int, duration_s: float, rounds: int) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "?")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return {
        "command": f"`{command}`",
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} x {cpu_model}, Linux {platform.release()}, Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}",
        "git": commit.stdout.strip() or "?",
        "load average before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "pinning": pinning,
        "request": f"one MNIST test digit as a V2 JSON FP32 [1, 1, 28, 28] tensor to {MODEL}, wrk, {connections} "
        f"connections, {duration_s:g} s per row, {rounds} round(s)",
        "service": "`python -m service`, OEGATE_WORKERS=N, CPU provider, every other setting default",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--workers", type=lambda t: [int(p) for p in t.split(",")], default=[1, 2], help="counts (default 1,2)")
    add("--connections", type=int, default=32, help="wrk connections (default 32)")
    add("--duration", type=float, default=10.0, help="measured seconds per row (default 10)")
    add("--warmup", type=float, default=2.0, help="warm-up seconds per row (default 2)")
    add("--rounds", type=int, default=3, help="rounds; worker counts alternate order (default 3)")
    add("--server-cpus", default=None, help="taskset CPU list for the service (default: see the module doc)")
    add("--client-cpus", default=None, help="taskset CPU list for wrk (default: see the module doc)")
    add("--env", action="append", default=[], metavar="OEGATE_NAME=VALUE", help="extra setting (repeatable)")
    add("--wait-quiet", type=float, default=0.0, help="first wait up to this many seconds for a quiet machine")
    add("--quiet-load", type=float, default=0.5, help="1-minute load average counted as quiet (default 0.5)")
    default_out = results_path("workers")
    add("--out", type=Path, default=default_out, help="Markdown results (default bench/results/<stamp>-workers.md)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or min(args.workers) < 1:
        parser.error("--rounds and --workers must be >= 1")
    if args.duration < 1 or args.duration != int(args.duration) or args.warmup != int(args.warmup):
        parser.error("wrk takes whole seconds: --duration >= 1, --warmup >= 0")
    settings = {"OEGATE_PROVIDERS": '["CPUExecutionProvider"]', **dict(pair.split("=", 1) for pair in args.env)}
    if any(not key.startswith("OEGATE_") for key in settings):
        parser.error("--env takes OEGATE_NAME=VALUE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    wait_for_quiet(args.wait_quiet, args.quiet_load)
    server_cpus, client_cpus, pinning = cpu_split(os.cpu_count() or 1, args.server_cpus, args.client_cpus)
    command = shlex.join(["python", "-m", "bench.workers", *(sys.argv[1:] if argv is None else argv)])
    facts = machine_facts(command, pinning, args.connections, args.duration, args.rounds)
    digit = inputs.load_test_digit(0)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="oegate-bench-workers-") as work:
        body_path, script = Path(work) / "body.json", Path(work) / "post.lua"
        body_path.write_bytes(inputs.request_body("v2", digit.values))
        script.write_text(wrk.lua_script(body_path))
        for round_ in range(1, args.rounds + 1):
            order = args.workers if round_ % 2 == 1 else list(reversed(args.workers))
            for workers in order:
                row = measure(
                    workers, round_, body_path=body_path, script=script, label=digit.label,
                    connections=args.connections, duration_s=args.duration, warmup_s=args.warmup,
                    server_cpus=server_cpus, client_cpus=client_cpus, log_dir=Path(work), settings=settings,
                )  # fmt: skip
                logger.info("%s", asdict(row))
                rows.append(row)
    facts["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    write_report(args.out, render(facts, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
