"""The servers under test: how each one is started (pinned to one core with taskset), when it is ready, how it is
stopped, and how many instances and session runs it reports (to get the mean batch size of a load run).

Every server runs one process (one uvicorn worker for the FastAPI ones) and onnxruntime with one intra-op and one
inter-op thread: each is pinned to a single core, where more threads would only take turns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.inputs import Api

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


def results_path(kind: str) -> Path:
    """Where a harness writes its report by default: bench/results/<YYYY-MM-DD-HHMM>-<kind>.md (UTC, now)."""
    return REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%d-%H%M}-{kind}.md"


def write_report(out: Path, text: str) -> None:
    """Write a harness's report (creating its folder) and log where it went."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    logging.getLogger("bench").info("wrote %s", out)


TRITON_PACKAGES = ("nvidia-pytriton", "onnxruntime", "numpy")
TRITON_PYENV_VERSION = "3.12.1"  # PyTriton's Python-backend stub is linked against libpython3.12 (PEERS.md)


@dataclass(frozen=True)
class ServerSpec:
    name: str
    description: str
    apis: tuple[Api, ...]
    kind: str  # "oegate", "baseline" or "triton": how it is started and read
    env: tuple[tuple[str, str], ...] = ()  # extra environment (OEGATE_* settings)
    args: tuple[str, ...] = ()  # extra command-line arguments
    source: Path | None = None  # an oegate checkout to run instead of this one (its own `service` package)


class ServerUnavailable(RuntimeError):  # noqa: N818 - reads as a reason in the report
    """The server could not be set up or started; the run goes on without it and the report says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    spec: ServerSpec
    base_url: str
    model: str
    metrics_url: str | None
    pid: int = 0  # the server's process, leader of its own process group (0: not known)

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) used so far by the server's processes (its process group: Triton's children
        too), or None if unknown."""
        return None if self.pid == 0 else group_cpu_seconds(self.pid)

    def url(self, api: Api) -> str:
        if api in ("native", "native-raw"):
            return f"{self.base_url}/v1/models/{self.model}/predict"
        return f"{self.base_url}/v2/models/{self.model}/infer"

    def batch_counters(self) -> tuple[float, float] | None:
        """(instances inferred, session runs) so far, or None for a server that does not batch (the baseline)."""
        if self.metrics_url is None:
            return None
        text = httpx.get(self.metrics_url, timeout=10.0).text
        if self.spec.kind == "oegate":
            return (
                metric_value(text, "oegate_inference_batch_size_sum", model=self.model),
                metric_value(text, "oegate_inference_batch_size_count", model=self.model),
            )
        return (
            metric_value(text, "nv_inference_count", model=self.model),
            metric_value(text, "nv_inference_exec_count", model=self.model),
        )


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels...}` (other labels ignored) in Prometheus text `text`, exactly as written there
    (prometheus_client's parser would rename Triton's counters to `..._total`); 0 if the series does not exist yet."""
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        found = dict(_LABEL.findall(match["labels"] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match["value"])
    return 0.0


def group_cpu_seconds(process_group: int, proc: Path = Path("/proc")) -> float:
    """User + system CPU seconds of the live processes in `process_group`, from `proc`/<pid>/stat (utime and
    stime, fields 14 and 15, in clock ticks). Divided by the requests answered in a window, it is the server's CPU
    per request: a figure that other work on a loaded machine moves much less than req/s."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended while we looked
            continue
        if int(fields[2]) == process_group:  # fields[0] is field 3 (state): pgrp is field 5
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def mean_batch_size(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """Instances per session run between two `batch_counters` readings; 1 for a server that does not batch."""
    if before is None or after is None:
        return 1.0
    runs = after[1] - before[1]
    return (after[0] - before[0]) / runs if runs > 0 else None


def triton_python(venv: Path) -> Path:
    """The venv's python with PyTriton importable, creating the venv (pyenv's Python 3.12) if needed."""
    python = venv / "bin" / "python"
    if python.exists() and _run([str(python), "-c", "import pytriton, onnxruntime"]).returncode == 0:
        return python
    logger.info("creating the PyTriton venv %s (Python %s from pyenv)", venv, TRITON_PYENV_VERSION)
    steps = [
        ["python3.12", "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", *TRITON_PACKAGES],
    ]
    for step in steps:
        completed = _run(step, env={**os.environ, "PYENV_VERSION": TRITON_PYENV_VERSION}, timeout=1200)
        if completed.returncode != 0:
            raise ServerUnavailable(f"`{' '.join(step)}` failed: {completed.stderr.strip()[-500:]}")
    return python


def python_libdir(python: Path) -> str:
    """Where libpython of `python` lives: the PyTriton stub needs it on LD_LIBRARY_PATH."""
    completed = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"])
    return completed.stdout.strip()


def package_versions(python: Path, packages: tuple[str, ...]) -> dict[str, str]:
    code = "import sys, importlib.metadata as m; print(' '.join(m.version(p) for p in sys.argv[1:]))"
    completed = _run([str(python), "-c", code, *packages])
    return dict(zip(packages, completed.stdout.split(), strict=False))


def _run(
    command: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(command, 1, "", str(e))


@contextmanager
def start_server(
    spec: ServerSpec, *, model_root: Path, model: str, version: str, core: int, log_dir: Path, triton_venv: Path
) -> Iterator[RunningServer]:
    """Start `spec` pinned to `core`, yield it once it serves `model`, then stop it (its whole process group)."""
    port = free_port()
    artifact = model_root / model / version
    env = {key: value for key, value in os.environ.items() if not key.startswith("OEGATE_")}
    metrics_url: str | None = None
    stop_signal = signal.SIGTERM
    if spec.kind == "oegate":
        command = [sys.executable, "-m", "service"]
        env |= {
            "OEGATE_PORT": str(port),
            "OEGATE_MODEL_DIR": str(model_root),
            "OEGATE_PROVIDERS": '["CPUExecutionProvider"]',
            "OEGATE_INTRA_OP_THREADS": "1",
            "OEGATE_INTER_OP_THREADS": "1",
        }
        ready_path = "/v2/health/ready"
        metrics_url = f"http://127.0.0.1:{port}/metrics"
    elif spec.kind == "baseline":
        command = [sys.executable, "-m", "bench.baseline_server", "--model-dir", str(artifact), "--port", str(port)]
        ready_path = "/v2/health/ready"
    else:
        python = triton_python(triton_venv)
        grpc_port, metrics_port = free_port(), free_port()
        command = [str(python), str(REPO / "bench" / "triton_server.py"), "--model-dir", str(artifact)]
        command += ["--http-port", str(port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [python_libdir(python), env.get("LD_LIBRARY_PATH")]))
        ready_path = f"/v2/models/{model}/ready"  # /v2/health/ready answers before the model is loaded
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        stop_signal = signal.SIGINT  # PyTriton shuts Triton down cleanly on SIGINT
    command += spec.args
    env |= dict(spec.env)
    if spec.source is not None:  # `python -m service` imports the checkout's package: its directory comes first
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(spec.source), env.get("PYTHONPATH")]))
    base_url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"{spec.name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["taskset", "-c", str(core), *command],
            cwd=spec.source or REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Triton's children are stopped with it
        )
        try:
            _wait_ready(process, base_url + ready_path, log_path, timeout_s=180.0)
            yield RunningServer(spec, base_url, model, metrics_url, process.pid)
        finally:
            _stop(process, stop_signal)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServerUnavailable(f"exited with {process.returncode} before it was ready; log tail:\n{tail}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"not ready after {timeout_s:g} s (see {log_path})")
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes], stop_signal: signal.Signals) -> None:
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            logger.warning("server pid %d did not stop in 30 s; killing its process group", process.pid)
    # The group is the one this module created for the server: stragglers (e.g. tritonserver) go with it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
