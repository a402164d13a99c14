"""One benchmark run: machine facts, then each server started, checked on one request, loaded with wrk at each
concurrency (warm-up, then a measured window with batch counters read on both sides), stopped; then the report.

Working files (request bodies, wrk scripts, server logs) go to `runs/bench/<stamp>/` (git-ignored); the report goes
to `bench/results/<stamp>.md` and `.json`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastapi
import httpx
import numpy as np
import onnxruntime
import uvicorn

from bench import inputs, report, servers, wrk
from bench.inputs import Api
from bench.report import Measurement
from bench.servers import REPO, RunningServer, ServerSpec, ServerUnavailable
from service.settings import Settings

logger = logging.getLogger(__name__)

SERVER_NAMES = ("baseline", "oegate", "oegate-nobatch", "triton")
SCORE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Options:
    connections: tuple[int, ...] = (1, 8, 32, 128)
    duration_s: float = 12.0
    warmup_s: float = 3.0
    rounds: int = 1
    servers: tuple[str, ...] = SERVER_NAMES
    apis: tuple[Api, ...] = inputs.APIS
    server_core: int = 0
    client_core: int = 1
    model_root: Path = REPO / "models"
    model: str = "mnist-oe"
    version: str = "1"
    digit_index: int = 0
    instances: int = 1  # the digit this many times per request (instances, or a V2 tensor's batch)
    triton_venv: Path = Path("/tmp/bench-venv312")
    output_dir: Path = REPO / "bench" / "results"
    work_root: Path = REPO / "runs" / "bench"
    quiet_load: float = 0.5
    wait_quiet_s: float = 0.0
    oegate_env: tuple[tuple[str, str], ...] = ()
    variants: tuple[tuple[str, Path], ...] = ()  # (name, checkout): oegate from another source tree, e.g. main
    command: str = ""

    @property
    def server_names(self) -> tuple[str, ...]:
        return self.servers + tuple(name for name, _ in self.variants)


def server_specs(options: Options) -> dict[str, ServerSpec]:
    """The servers, with oegate's batching defaults (read from its Settings) also given to Triton's batcher."""
    fields = Settings.model_fields
    batch_size, delay_ms = fields["max_batch_size"].default, fields["max_delay_ms"].default
    batching = f"max {batch_size} instances, max delay {delay_ms:g} ms"
    return {
        "baseline": ServerSpec(
            "baseline",
            "bench/baseline_server.py: FastAPI + onnxruntime, one session run per request in the event loop, "
            "no batching, no validation beyond shapes, no logs or metrics; JSON only",
            inputs.JSON_APIS,
            "baseline",
        ),
        "oegate": ServerSpec(
            "oegate",
            f"`python -m service` with its default micro-batching ({batching}), CPU provider, "
            f"onnxruntime 1 intra-op + 1 inter-op thread, default logging (to a file){_env_text(options.oegate_env)}",
            inputs.APIS,
            "oegate",
            env=options.oegate_env,
        ),
        "oegate-nobatch": ServerSpec(
            "oegate-nobatch",
            f"the same with OEGATE_MAX_BATCH_SIZE=1 (every request its own session run){_env_text(options.oegate_env)}",
            inputs.APIS,
            "oegate",
            env=(*options.oegate_env, ("OEGATE_MAX_BATCH_SIZE", "1")),
        ),
        "triton": ServerSpec(
            "triton",
            f"NVIDIA Triton via PyTriton (Python 3.12 venv {options.triton_venv}): Python backend, onnxruntime "
            f"(1 + 1 threads) in a `@batch` function, dynamic batcher ({batching}), V2 HTTP only (JSON and binary)",
            ("v2", "v2-binary"),
            "triton",
            args=("--max-batch-size", str(batch_size), "--max-queue-delay-us", str(round(delay_ms * 1000))),
        ),
    }


def variant_spec(name: str, source: Path, options: Options) -> ServerSpec:
    """oegate as `source` (another checkout, e.g. `git worktree add /tmp/before main`) serves it, with the same
    settings as `oegate`: before/after rows measured in one run, interleaved, by the same harness."""
    commit = _run_text(["git", "-C", str(source), "rev-parse", "--short", "HEAD"])
    commit = commit if commit.isalnum() else "not a git checkout"
    return ServerSpec(
        name,
        f"`python -m service` from {source} (git {commit}), otherwise as oegate{_env_text(options.oegate_env)}",
        inputs.APIS,
        "oegate",
        env=options.oegate_env,
        source=source,
    )


def _env_text(env: tuple[tuple[str, str], ...]) -> str:
    return "".join(f", {key}={value}" for key, value in env)


@dataclass
class _Run:
    options: Options
    work_dir: Path
    model_root: Path
    reference: inputs.Prediction
    label: int
    bodies: dict[Api, Path]
    headers: dict[Api, dict[str, str]]
    scripts: dict[Api, Path]
    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    failed_checks: int = 0


def run(options: Options) -> int:
    """Run the benchmark; 0 if every server measured answered correctly, 1 if one did not."""
    os.sched_setaffinity(0, {options.client_core})  # this process and its httpx calls stay off the server's core
    load_before = _wait_for_quiet(options)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M")
    work_dir = options.work_root / stamp
    work_dir.mkdir(parents=True, exist_ok=True)

    # Every server loads the same copy of the one artifact: oegate serves the newest version it finds, and a training
    # run may publish a new one into `model_root` while we measure.
    source = options.model_root / options.model / options.version
    model_root = work_dir / "models"
    artifact = model_root / options.model / options.version
    shutil.copytree(source, artifact, dirs_exist_ok=True)
    digit = inputs.load_test_digit(options.digit_index)
    reference = inputs.reference_prediction(artifact / "model.onnx", digit.values)
    if reference.label_index != digit.label:
        raise SystemExit(f"the model itself labels {digit.source} as {reference.label_index}, not {digit.label}")
    values = np.repeat(digit.values, options.instances, axis=0)
    bodies, headers, scripts = {}, {}, {}
    for api in options.apis:
        bodies[api] = work_dir / f"body-{api}.bin"
        bodies[api].write_bytes(inputs.request_body(api, values))
        headers[api] = inputs.request_headers(api, values)
        scripts[api] = work_dir / f"wrk-{api}.lua"
        scripts[api].write_text(wrk.lua_script(bodies[api].resolve(), headers[api]))
    state = _Run(options, work_dir, model_root, reference, digit.label, bodies, headers, scripts)
    facts = _machine_facts(options, load_before)
    facts |= {
        "started_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "input": f"{digit.source}, label {digit.label}, pixel / 255 as float32 [1, 1, 28, 28] (native-raw: its PNG)"
        + (f", {n} times per request (float32 [{n}, 1, 28, 28])" if (n := options.instances) > 1 else ""),
        "body_bytes": {api: path.stat().st_size for api, path in bodies.items()},
        "reference": {"label_index": reference.label_index, "anomaly_score": reference.anomaly_score},
        "model": f"{source} (model.onnx sha256 {hashlib.sha256((artifact / 'model.onnx').read_bytes()).hexdigest()})",
    }

    specs = server_specs(options) | {name: variant_spec(name, source, options) for name, source in options.variants}
    names = options.server_names
    for round_ in range(1, options.rounds + 1):
        # Alternate the order so that a slow drift of the machine does not always favour the same servers.
        for name in names if round_ % 2 else reversed(names):
            _measure_server(state, specs[name], facts, round_)
    facts["load_average_after"] = list(os.getloadavg())
    facts["checks"] = state.checks
    descriptions = {name: specs[name].description for name in names}
    md_path, json_path = report.write_results(
        options.output_dir, stamp, facts, descriptions, state.measurements, state.skipped
    )
    print(report.table(report.with_ratios(state.measurements)))
    logger.info("wrote %s and %s (server logs in %s)", md_path, json_path, work_dir)
    return 1 if state.failed_checks else 0


def _measure_server(state: _Run, spec: ServerSpec, facts: dict[str, Any], round_: int) -> None:
    options = state.options
    if spec.name in state.skipped:  # unavailable in an earlier round
        return
    logger.info("round %d/%d: starting %s on core %d", round_, options.rounds, spec.name, options.server_core)
    try:
        with servers.start_server(
            spec,
            model_root=state.model_root,
            model=options.model,
            version=options.version,
            core=options.server_core,
            log_dir=state.work_dir,
            triton_venv=options.triton_venv,
        ) as server:
            if spec.kind == "triton":
                python = options.triton_venv / "bin" / "python"
                versions = servers.package_versions(python, ("nvidia-pytriton", "onnxruntime"))
                facts["versions"] |= {f"triton venv {key}": value for key, value in versions.items()}
                facts["versions"]["triton venv python"] = _run_text([str(python), "--version"]).split()[-1]
                facts["versions"]["tritonserver"] = _triton_version(server)
            for api in (api for api in spec.apis if api in options.apis):
                if _check(state, server, api, round_):
                    for connections in options.connections:
                        state.measurements.append(_measure(state, server, api, connections, round_))
    except ServerUnavailable as e:
        logger.error("%s not measured: %s", spec.name, e)
        state.skipped[spec.name] = str(e).replace("\n", " ")[:1500]


def _check(state: _Run, server: RunningServer, api: Api, round_: int) -> bool:
    """One request: the digit's label, and the anomaly score computed here within SCORE_TOLERANCE."""
    name = f"{server.spec.name} {api}" + (f" (round {round_})" if state.options.rounds > 1 else "")
    response = httpx.post(
        server.url(api),
        content=state.bodies[api].read_bytes(),
        headers=state.headers[api],
        timeout=30.0,
    )
    if response.status_code != 200:
        line = f"{name}: FAILED, HTTP {response.status_code}: {response.text[:300]}"
    else:
        got = inputs.read_reply(api, response.content, response.headers.get(inputs.BINARY_HEADER))
        difference = abs(got.anomaly_score - state.reference.anomaly_score)
        ok = got.label_index == state.label and difference <= SCORE_TOLERANCE
        line = (
            f"{name}: {'ok' if ok else 'FAILED'}, label {got.label_index} (expected {state.label}), "
            f"anomaly_score {got.anomaly_score:.8f} (reference {state.reference.anomaly_score:.8f}, "
            f"|difference| {difference:.1e}, tolerance {SCORE_TOLERANCE:g})"
        )
        if ok:
            state.checks.append(line)
            logger.info("check %s", line)
            return True
    state.checks.append(line)
    state.failed_checks += 1
    state.skipped[name] = line
    logger.error("check %s", line)
    return False


def _measure(state: _Run, server: RunningServer, api: Api, connections: int, round_: int) -> Measurement:
    options = state.options
    url, script = server.url(api), state.scripts[api]
    core = options.client_core
    if options.warmup_s > 0:
        wrk.run_wrk(url, script, connections=connections, duration_s=options.warmup_s, core=core)
    before, cpu_before = server.batch_counters(), server.cpu_seconds()
    result = wrk.run_wrk(url, script, connections=connections, duration_s=options.duration_s, core=core)
    after, cpu_after = server.batch_counters(), server.cpu_seconds()
    cpu_ms = None
    if cpu_before is not None and cpu_after is not None and result.requests > 0:
        cpu_ms = (cpu_after - cpu_before) * 1000 / result.requests
    measurement = Measurement(
        server=server.spec.name,
        api=api,
        connections=connections,
        requests_per_s=result.requests_per_s,
        latency_p50_ms=result.latency_p50_ms,
        latency_p99_ms=result.latency_p99_ms,
        latency_mean_ms=result.latency_mean_ms,
        requests=result.requests,
        errors=result.errors,
        duration_s=result.duration_s,
        mean_batch_size=servers.mean_batch_size(before, after),
        round=round_,
        cpu_ms_per_request=cpu_ms,
    )
    logger.info(
        "%s %s c=%d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, mean batch %s, CPU %s ms/req, errors %d",
        server.spec.name,
        api,
        connections,
        measurement.requests_per_s,
        measurement.latency_p50_ms,
        measurement.latency_p99_ms,
        "-" if measurement.mean_batch_size is None else f"{measurement.mean_batch_size:.2f}",
        "-" if cpu_ms is None else f"{cpu_ms:.3f}",
        measurement.errors,
    )
    return measurement


def _wait_for_quiet(options: Options) -> list[float]:
    """Wait (up to `wait_quiet_s`) for the 1-minute load average to drop below `quiet_load`; return the last one."""
    deadline = time.monotonic() + options.wait_quiet_s
    while (load := os.getloadavg())[0] >= options.quiet_load and time.monotonic() < deadline:
        logger.info("1-minute load average %.2f >= %.2f: waiting", load[0], options.quiet_load)
        time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
    return list(load)


def _triton_version(server: RunningServer) -> str:
    try:
        return str(httpx.get(f"{server.base_url}/v2", timeout=5.0).json()["version"])
    except (httpx.HTTPError, KeyError, ValueError):
        return "?"


def _run_text(command: list[str]) -> str:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError as e:
        return f"unavailable ({e})"
    return (completed.stdout + completed.stderr).strip()


def _machine_facts(options: Options, load_before: list[float]) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "?")
    meminfo = Path("/proc/meminfo").read_text().split()
    memory_kib = int(meminfo[meminfo.index("MemTotal:") + 1])
    commit = _run_text(["git", "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], capture_output=True, check=False).returncode != 0
    facts: dict[str, Any] = {
        "command": options.command,
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": memory_kib / 2**20,
        "kernel": platform.release(),
        "load_average_before": load_before,
        "server_core": options.server_core,
        "client_core": options.client_core,
        "connections": list(options.connections),
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "rounds": options.rounds,
        "git": f"{commit}{' with uncommitted changes to tracked files' if dirty else ''}",
        "versions": {
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "fastapi": fastapi.__version__,
            "uvicorn": uvicorn.__version__,
            "numpy": np.__version__,
            "wrk": _run_text(["wrk", "--version"]).splitlines()[0].split(" Copyright")[0].removeprefix("wrk "),
        },
    }
    if load_before[0] >= options.quiet_load:
        facts["under_load"] = (
            f"the 1-minute load average was {load_before[0]:.2f} (>= {options.quiet_load:g}) when the run started, "
            "so other work shared the cores: compare rows within this run only"
        )
    return facts


def command_line() -> str:
    return shlex.join(["python", "-m", "bench", *sys.argv[1:]])
