"""`python -m bench.memory`: the service's memory with the default models, idle and under load, per process; and
the size of every artifact.

python -m bench.memory                                     # 1 and 2 workers, 10 s of load each
python -m bench.memory --seconds 1 --workers 2 --out /tmp/m.md   # smoke

For each worker count, a fresh `python -m service` (`OEGATE_WORKERS=N`, CPU provider, other settings default) over
the default model directory (models/: every model's newest version) is started, and every loaded model answers one
request (so each session has run once). Then, per process of the service (the process itself, or the supervisor,
each worker and multiprocessing's resource tracker; bench/processes.py):
- idle: RSS and PSS after those first requests;
- under load: `--seconds` of three wrk clients at once, `--connections` each: one digit per V2 JSON request and 64
  digits per V2 JSON request (the default `max_instances`) to mnist-oe, and 16 texts per native request to
  topics-oe; then the peak RSS (VmHWM: the process's high-water mark, load included) and the PSS after the load.
The sum of PSS over processes is the service's real footprint; the sum of RSS counts shared library pages once per
process. Artifact sizes are the bytes of each `models/NAME/VERSION` directory and of its `model.onnx`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from bench import inputs, wrk
from bench.processes import ProcessMemory, ServiceTree, service_tree
from bench.servers import REPO, results_path, write_report

logger = logging.getLogger(__name__)

IMAGE_MODEL, TEXT_MODEL = "mnist-oe", "topics-oe"
TEXT = "The committee approved the budget for the new railway line after a long debate about its cost. "
MIB = 1024 * 1024


@dataclass(frozen=True)
class Load:
    name: str
    path: str
    body: bytes


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    directory_bytes: int
    model_bytes: int


@dataclass(frozen=True)
class Measurement:
    workers: int
    idle: list[ProcessMemory]
    loaded: list[ProcessMemory]
    requests: dict[str, int]  # load name -> requests answered in the window
    errors: dict[str, int]


def v2_digits(values: np.ndarray, count: int) -> bytes:
    """`count` copies of one digit (float32 [1, 1, 28, 28]) as one V2 JSON FP32 tensor [count, 1, 28, 28]."""
    data = ",".join(np.format_float_positional(v, unique=True, trim="-") for v in np.tile(values.reshape(-1), count))
    shape = ",".join(str(n) for n in (count, *values.shape[1:]))
    return f'{{"inputs":[{{"name":"input","shape":[{shape}],"datatype":"FP32","data":[{data}]}}]}}'.encode()


def loads(values: np.ndarray) -> list[Load]:
    texts = {"instances": [{"text": TEXT * (1 + i % 3)} for i in range(16)]}
    return [
        Load("1 digit, V2", f"/v2/models/{IMAGE_MODEL}/infer", inputs.request_body("v2", values)),
        Load("64 digits, V2", f"/v2/models/{IMAGE_MODEL}/infer", v2_digits(values, 64)),
        Load("16 texts, native", f"/v1/models/{TEXT_MODEL}/predict", json.dumps(texts).encode()),
    ]


def artifacts(model_root: Path) -> list[Artifact]:
    found = []
    for version_dir in sorted(model_root.glob("*/*")):
        if version_dir.is_dir() and version_dir.name.isdigit():
            size = sum(path.stat().st_size for path in version_dir.rglob("*") if path.is_file())
            model = version_dir / "model.onnx"
            found.append(
                Artifact(version_dir.parent.name, version_dir.name, size, model.stat().st_size if model.exists() else 0)
            )
    return found


def warm_up(tree: ServiceTree, values: np.ndarray) -> None:
    """One request to every loaded model (image models get a digit, text models a text)."""
    with httpx.Client(base_url=tree.base_url, timeout=60.0) as client:
        for model in client.get("/v1/models").json()["models"]:
            if model.get("task") == "text":
                body = {"instances": [{"text": TEXT}]}
            else:
                body = {"instances": [{"array": values[0].tolist()}]}
            client.post(f"/v1/models/{model['name']}/predict", json=body).raise_for_status()


def measure(workers: int, seconds: float, connections: int, work: Path, values: np.ndarray) -> Measurement:
    settings = {"OEGATE_PROVIDERS": '["CPUExecutionProvider"]'}
    with service_tree(workers, work / f"service-{workers}.log", None, settings) as tree:
        warm_up(tree, values)
        idle = tree.memory()
        processes = []
        for index, load in enumerate(loads(values)):
            body, script = work / f"body-{index}.json", work / f"post-{index}.lua"
            body.write_bytes(load.body)
            script.write_text(wrk.lua_script(body))
            command = wrk.wrk_command(
                tree.base_url + load.path, script, connections=connections, duration_s=seconds,
                core=f"0-{(os.cpu_count() or 1) - 1}",
            )  # fmt: skip
            processes.append((load, subprocess.Popen(command, stdout=subprocess.PIPE, text=True)))
        requests, errors = {}, {}
        for load, process in processes:
            stdout, _ = process.communicate(timeout=seconds + 120)
            result = wrk.parse_output(stdout)
            requests[load.name], errors[load.name] = result.requests, result.errors
        loaded = tree.memory()
    return Measurement(workers, idle, loaded, requests, errors)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


def render(facts: dict[str, str], measurements: list[Measurement], found: list[Artifact]) -> str:
    lines = ["# oegate memory: RSS and PSS with the default models, idle and under load", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    for m in measurements:
        lines += ["", f"## OEGATE_WORKERS={m.workers}", ""]
        lines += [
            "| process | idle RSS MiB | idle PSS MiB | peak RSS MiB (VmHWM) | PSS after load MiB |",
            "|---|---:|---:|---:|---:|",
        ]
        after = {p.pid: p for p in m.loaded}
        for idle in m.idle:
            load = after.get(idle.pid)
            lines.append(
                f"| {idle.role} | {_mib(idle.rss)} | {_mib(idle.pss)} | "
                f"{_mib(load.peak_rss if load else None)} | {_mib(load.pss if load else None)} |"
            )
        idle_pss = [p.pss for p in m.idle]
        load_pss = [p.pss for p in m.loaded]
        lines.append(
            f"| **all** | {_mib(sum(p.rss for p in m.idle))} | "
            f"{_mib(sum(p or 0 for p in idle_pss) if None not in idle_pss else None)} | "
            f"{_mib(sum(p.peak_rss for p in m.loaded))} (sum of peaks) | "
            f"{_mib(sum(p or 0 for p in load_pss) if None not in load_pss else None)} |"
        )
        answered = ", ".join(f"{name}: {count} requests, {m.errors[name]} errors" for name, count in m.requests.items())
        lines += ["", f"Load: {answered}."]
    lines += [
        "",
        "## Artifacts",
        "",
        "| model | version | directory bytes | model.onnx bytes |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {a.name} | {a.version} | {a.directory_bytes:,} | {a.model_bytes:,} |" for a in found]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=lambda t: [int(p) for p in t.split(",")], default=[1, 2])
    parser.add_argument("--seconds", type=int, default=10, help="load window, whole seconds (default 10)")
    parser.add_argument("--connections", type=int, default=8, help="connections per wrk client (default 8)")
    default_out = results_path("memory")
    parser.add_argument("--out", type=Path, default=default_out, help="Markdown results")
    args = parser.parse_args(argv)
    if args.seconds < 1 or min(args.workers) < 1:
        parser.error("--seconds and --workers must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    values = inputs.load_test_digit(0).values
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    facts = {
        "command": f"`{shlex.join(['python', '-m', 'bench.memory', *(sys.argv[1:] if argv is None else argv)])}`",
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} x {cpu_model}, Linux {platform.release()}, Python {platform.python_version()}",
        "git": commit.stdout.strip() or "?",
        "load average before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "service": "`python -m service`, OEGATE_WORKERS=N, CPU provider, other settings default, models/ "
        "(each model's newest version), not pinned",
        "load": f"{args.seconds} s of three wrk clients at once, {args.connections} connections each: "
        + "; ".join(load.name for load in loads(values)),
    }
    measurements = []
    with tempfile.TemporaryDirectory(prefix="oegate-bench-memory-") as work:
        for workers in args.workers:
            logger.info("measuring %d worker(s)", workers)
            measurements.append(measure(workers, args.seconds, args.connections, Path(work), values))
    facts["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    write_report(args.out, render(facts, measurements, artifacts(REPO / "models")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
