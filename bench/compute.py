"""`python -m bench.compute`: compute-bound serving against the physical limit, batching off, and Triton.

python -m bench.compute                                  # wrn and text, 64 connections, 10 s rows, 1 round
python -m bench.compute --rounds 2 --models wrn          # two interleaved rounds of the image model only
python -m bench.compute --duration 1 --warmup 0 --sweep-seconds 0.3 --batch-sizes 1,4 --servers oegate \\
    --wrn-depth 10 --wrn-widen 1 --connections 4 --out /tmp/c.md      # smoke

For each model (`bench/compute_models.py`: an untrained WRN-16-4 exported for this run, the int8 text artifact),
everything pinned to `--server-core` with onnxruntime at 1 intra-op + 1 inter-op thread (as `python -m bench`):
(a) `inprocess`: the service's own `Runtime` (same session options) called in this process on pre-built batches of
    the request's instance, at each `--batch-sizes` (the physical limit is the best of them; p99 is per run);
(b) `oegate`: `python -m service` with its default micro-batching, wrk at `--connections` from `--client-core`;
(c) `oegate-nobatch`: the same with OEGATE_MAX_BATCH_SIZE=1;
(d) `triton`: NVIDIA Triton via PyTriton on the same model.onnx (image model only: it has no tokenizer), its dynamic
    batcher at oegate's batch limits.
Each server's first answer is checked against the in-process run (anomaly score within 1e-4). Req/s of (b), (c),
(d) are compared with (a)'s instances/s; p99 is beside each. Rounds alternate the order of the servers.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import onnxruntime

from bench import servers, wrk
from bench.compute_models import MODEL_NAMES, Workload, build_wrn, text_workload
from bench.inputs import read_prediction
from bench.servers import ServerSpec, ServerUnavailable, group_cpu_seconds, results_path, write_report
from service.card import read_verified_card
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger(__name__)
SERVER_NAMES = ("oegate", "oegate-nobatch", "triton")
SCORE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Row:
    model: str
    server: str  # "inprocess" or a server name
    round: int
    per_s: float  # instances/s (in-process) or requests/s (one instance each)
    p50_ms: float
    p99_ms: float
    batch: float | None  # batch size (in-process) or mean batch size read from the server's counters
    errors: int = 0
    per_cpu_s: float = 0.0  # the same per CPU-second of the process(es) doing the work


def inprocess(workload: Workload, batch_sizes: tuple[int, ...], seconds: float, core: int) -> list[Row]:
    """(a): the service's Runtime, 1 + 1 threads, pinned to `core`, run back to back on each batch size."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        card = read_verified_card(workload.directory, workload.name, int(workload.version))
        runtime = Runtime(workload.directory / "model.onnx", card, ["CPUExecutionProvider"], 1, 1)
        rows = []
        for size in batch_sizes:
            batch = workload.batch(size)
            runtime.run(batch)  # warm-up: first-run allocations
            times: list[float] = []
            deadline, cpu_started = time.perf_counter() + seconds, time.process_time()
            while time.perf_counter() < deadline or len(times) < 3:
                started = time.perf_counter()
                runtime.run(batch)
                times.append(time.perf_counter() - started)
            per_cpu_s = size * len(times) / (time.process_time() - cpu_started)
            per_s = size * len(times) / sum(times)
            p50, p99 = (1e3 * float(np.percentile(times, q)) for q in (50, 99))
            rows.append(Row(workload.model, "inprocess", 0, per_s, p50, p99, float(size), per_cpu_s=per_cpu_s))
        return rows
    finally:
        os.sched_setaffinity(0, previous)


def reference_score(workload: Workload) -> float:
    card = read_verified_card(workload.directory, workload.name, int(workload.version))
    runtime = Runtime(workload.directory / "model.onnx", card, ["CPUExecutionProvider"], 1, 1)
    return float(runtime.run(workload.batch(1))["anomaly_score"][0])


def admission(connections: int) -> tuple[str, str]:
    """OEGATE_MAX_REQUESTS_IN_FLIGHT above the connection count: the default (64) equals the 64 connections, and a
    connection's next request can arrive before the previous one has left the admission count (503s)."""
    return (
        "OEGATE_MAX_REQUESTS_IN_FLIGHT",
        str(max(Settings.model_fields["max_requests_in_flight"].default, 2 * connections)),
    )


def server_specs(connections: int) -> dict[str, ServerSpec]:
    fields = Settings.model_fields
    batch_size, delay_ms = fields["max_batch_size"].default, fields["max_delay_ms"].default
    admit = admission(connections)
    return {
        "oegate": ServerSpec("oegate", "python -m service, default batching", ("native", "v2"), "oegate", env=(admit,)),
        "oegate-nobatch": ServerSpec(
            "oegate-nobatch",
            "OEGATE_MAX_BATCH_SIZE=1",
            ("native", "v2"),
            "oegate",
            env=(admit, ("OEGATE_MAX_BATCH_SIZE", "1")),
        ),
        "triton": ServerSpec(
            "triton",
            "PyTriton",
            ("v2",),
            "triton",
            args=("--max-batch-size", str(batch_size), "--max-queue-delay-us", str(round(delay_ms * 1000))),
        ),
    }


def drain(server: servers.RunningServer, poll_s: float = 0.5, timeout_s: float = 120.0) -> None:
    """Wait until the server has finished the requests wrk abandoned when its warm-up ended (its batch counters
    stop moving), so the measured window does not start behind a queue of work nobody waits for."""
    deadline, last = time.monotonic() + timeout_s, server.batch_counters()
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        now = server.batch_counters()
        if now == last:
            return
        last = now


def measure_server(
    workload: Workload, spec: ServerSpec, args: argparse.Namespace, work_dir: Path, expected: float, round_: int
) -> Row:
    body_path = work_dir / f"{workload.model}.body"
    script = work_dir / f"{workload.model}.lua"
    body_path.write_bytes(workload.body)
    script.write_text(wrk.lua_script(body_path))
    with servers.start_server(
        spec, model_root=workload.model_root, model=workload.name, version=workload.version,
        core=args.server_core, log_dir=work_dir, triton_venv=args.triton_venv,
    ) as server:  # fmt: skip
        url = server.url(workload.api)
        answer = httpx.post(url, content=workload.body, headers={"Content-Type": "application/json"}, timeout=60)
        answer.raise_for_status()
        score = read_prediction(workload.api, answer.json()).anomaly_score
        if abs(score - expected) > SCORE_TOLERANCE:
            raise RuntimeError(f"{spec.name} answered anomaly_score {score}, in-process {expected}")
        if args.warmup > 0:
            wrk.run_wrk(url, script, connections=args.connections, duration_s=args.warmup, core=args.client_core)
            drain(server)
        before, cpu_before = server.batch_counters(), group_cpu_seconds(server.pid)
        result = wrk.run_wrk(url, script, connections=args.connections, duration_s=args.duration, core=args.client_core)
        after, cpu = server.batch_counters(), group_cpu_seconds(server.pid) - cpu_before
    answered = result.requests - result.errors  # successful answers only
    return Row(
        workload.model, spec.name, round_, answered / result.duration_s, result.latency_p50_ms,
        result.latency_p99_ms, servers.mean_batch_size(before, after), result.errors,
        per_cpu_s=answered / cpu if cpu > 0 else 0.0,
    )  # fmt: skip


def measure(args: argparse.Namespace, work_dir: Path) -> tuple[list[Row], dict[str, str]]:
    os.sched_setaffinity(0, {args.client_core})
    workloads: list[Workload] = []
    for model in args.models:
        if model == "wrn":
            workloads.append(build_wrn(work_dir / "models", args.wrn_depth, args.wrn_widen))
        else:
            workloads.append(text_workload())
    facts = machine_facts(args, workloads)
    specs = server_specs(args.connections)
    rows: list[Row] = []
    for workload in workloads:
        expected = reference_score(workload)
        names = [name for name in args.servers if not (name == "triton" and workload.api != "v2")]
        for round_ in range(args.rounds):
            rows += [
                Row(r.model, r.server, round_, r.per_s, r.p50_ms, r.p99_ms, r.batch, per_cpu_s=r.per_cpu_s)
                for r in inprocess(workload, args.batch_sizes, args.sweep_seconds, args.server_core)
            ]
            for name in names if round_ % 2 == 0 else names[::-1]:
                try:
                    rows.append(measure_server(workload, specs[name], args, work_dir, expected, round_))
                    log.info("%s", rows[-1])
                except ServerUnavailable as e:
                    log.warning("%s unavailable: %s", name, e)
                    facts[f"{name} ({workload.model})"] = f"not measured: {str(e)[:300]}"
    facts["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return rows, facts


def machine_facts(args: argparse.Namespace, workloads: list[Workload]) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    fields = Settings.model_fields
    return {
        "command": f"`{shlex.join(['python', '-m', 'bench.compute', *args.argv])}`",
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} x {cpu_model}, Linux {platform.release()}",
        "pinning": f"in-process runs and every server on core {args.server_core} (taskset), onnxruntime 1 intra-op "
        f"+ 1 inter-op thread; wrk (1 thread, {args.connections} connections) and this script on core "
        f"{args.client_core}",
        "versions": f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, numpy "
        f"{np.__version__}",
        "oegate settings": f"max_batch_size {fields['max_batch_size'].default}, max_delay_ms "
        f"{fields['max_delay_ms'].default} (defaults); {'='.join(admission(args.connections))} (default "
        f"{fields['max_requests_in_flight'].default}: with as many connections as admissions, a connection's next "
        "request can arrive before its previous one has left the count, and gets 503)",
        "rates": "successful answers per second (wrk's requests minus its errors); errors are counted beside",
        "load average before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "git": commit.stdout.strip() or "?",
        **{f"model {w.model}": w.description for w in workloads},
        "rows": f"{args.warmup:g} s warm-up + {args.duration:g} s measured per server; in-process "
        f"{args.sweep_seconds:g} s per batch size",
    }


def _best(sweep: list[Row], key: str) -> tuple[float, float]:
    """(best median rate over the sweep's batch sizes, that batch size) for `key` ("per_s" or "per_cpu_s")."""
    best, size_at = 0.0, 0.0
    for size in sorted({r.batch for r in sweep if r.batch is not None}):
        rate = statistics.median(getattr(r, key) for r in sweep if r.batch == size)
        if rate > best:
            best, size_at = rate, size
    return best, size_at


def render(rows: list[Row], facts: dict[str, str]) -> str:
    lines = ["# Compute-bound serving: in-process limit, oegate with and without batching, Triton", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        sweep = [r for r in mine if r.server == "inprocess"]
        lines += ["", f"## {model}", "", "(a) in-process by batch size (medians over rounds; p50 / p99 per run):", ""]
        lines += ["| batch | instances/s | instances per CPU-s | p50 ms | p99 ms |", "|---:|---:|---:|---:|---:|"]
        for size in sorted({r.batch for r in sweep if r.batch is not None}):
            at = [r for r in sweep if r.batch == size]
            lines.append(
                f"| {size:.0f} | {statistics.median(r.per_s for r in at):,.0f} | "
                f"{statistics.median(r.per_cpu_s for r in at):,.0f} | {statistics.median(r.p50_ms for r in at):.2f} | "
                f"{statistics.median(r.p99_ms for r in at):.2f} |"
            )
        best, best_size = _best(sweep, "per_s")
        best_cpu, best_cpu_size = _best(sweep, "per_cpu_s")
        lines += ["", "| row | answers/s | vs (a) | per CPU-s | vs (a) | p50 ms | p99 ms | mean batch | errors |"]
        lines += ["|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines.append(
            f"| (a) in-process, best batch {best_size:.0f} (per CPU-s: {best_cpu_size:.0f}) | {best:,.0f} | 1.00x | "
            f"{best_cpu:,.0f} | 1.00x | | | | |"
        )
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for server in SERVER_NAMES:
            at = [r for r in mine if r.server == server]
            if not at:
                continue
            wall[server] = statistics.median(r.per_s for r in at)
            cpu[server] = statistics.median(r.per_cpu_s for r in at)
            batches = [r.batch for r in at if r.batch is not None]
            batch = f"{statistics.median(batches):.1f}" if batches else "?"
            lines.append(
                f"| {server} | {wall[server]:,.0f} | {wall[server] / best:.2f}x | {cpu[server]:,.0f} | "
                f"{cpu[server] / best_cpu:.2f}x | {statistics.median(r.p50_ms for r in at):.1f} | "
                f"{statistics.median(r.p99_ms for r in at):.1f} | {batch} | {sum(r.errors for r in at)} |"
            )
        for other in ("oegate-nobatch", "triton"):
            if "oegate" in wall and other in wall:
                lines.append(
                    f"\noegate / {other}: **{wall['oegate'] / wall[other]:.2f}x** answers/s, "
                    f"**{cpu['oegate'] / cpu[other]:.2f}x** per CPU-second"
                )
    return "\n".join(lines) + "\n"


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(part) for part in text.split(","))
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"positive comma-separated integers expected, got {text!r}")
    return sizes


def _names(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names or any(name not in allowed for name in names):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}, got {text!r}")
    return names


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compute", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--models", type=lambda t: _names(t, MODEL_NAMES), default=MODEL_NAMES, help=",".join(MODEL_NAMES))
    add("--servers", type=lambda t: _names(t, SERVER_NAMES), default=SERVER_NAMES, help=",".join(SERVER_NAMES))
    add("--connections", type=int, default=64, help="wrk connections (default %(default)s)")
    add("--duration", type=int, default=10, help="measured seconds per server, whole (default %(default)s)")
    add("--warmup", type=int, default=3, help="warm-up seconds per server, whole (default %(default)s)")
    add("--sweep-seconds", type=float, default=2.0, help="in-process seconds per batch size (default %(default)s)")
    add("--batch-sizes", type=_sizes, default=(1, 2, 4, 8, 16, 32, 64), help="in-process sweep (default 1..64)")
    add("--rounds", type=int, default=1, help="interleaved rounds (median; default 1)")
    add("--wrn-depth", type=int, default=16, help="WRN depth, 6n + 4 (default %(default)s)")
    add("--wrn-widen", type=int, default=4, help="WRN widen factor (default %(default)s)")
    add("--server-core", type=int, default=0)
    add("--client-core", type=int, default=1)
    add("--triton-venv", type=Path, default=Path("/tmp/bench-venv312"), help="PyTriton's Python 3.12 venv")
    add("--out", type=Path, default=None, help="report path (default bench/results/<stamp>-compute.md)")
    args = parser.parse_args(argv)
    if args.server_core == args.client_core:
        parser.error("--server-core and --client-core must differ")
    if args.rounds < 1 or args.connections < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--rounds, --connections and --duration must be >= 1, --warmup >= 0")
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="bench-compute-") as work:
        rows, facts = measure(args, Path(work))
    text = render(rows, facts)
    print(text)
    write_report(args.out or results_path("compute"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
