"""`python -m bench.attack`: the reliability issue's attack against the real service, measured.

The issue's target: under its item-1 attack, and at 4x the load the service sustains, the service's RSS stays under
a documented bound, a lone normal request still completes within 1 s, and excess requests get a fast 503.

For each attacker concurrency level, a fresh `python -m service` (default settings, default models in models/) is
started pinned to one core, and for `--seconds` seconds:
- N attacker connections send, back to back, in turn: the decode bomb (multipart, 64 copies of a 65 KB 4096x4096
  RGBA PNG: 422 from the first header), the largest allowed image request (multipart, 16 noisy 1024x1024 PNGs:
  about 1 MB, exactly the request pixel budget, all decoded and downscaled), 64 valid 28x28 PNGs (native JSON) and
  64 texts of `max_text_chars` characters for the text model; they run in a child process of their own, so their
  client-side CPU does not delay the lone client's clock;
- one lone client sends one MNIST digit to mnist-oe every 0.5 s and records its latency and status;
- the service's RSS (VmRSS in /proc/<pid>/status) is sampled every 100 ms.

python -m bench.attack                                   # 20 s at 8, 40 and 160 attackers
python -m bench.attack --seconds 5 --connections 8 --out /tmp/attack.md   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import multiprocessing
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.attack_report import LevelResult, Outcomes, render, verdicts
from bench.inputs import load_test_digit
from bench.servers import REPO, _stop, _wait_ready, free_port, results_path, write_report

logger = logging.getLogger(__name__)

IMAGE_MODEL, TEXT_MODEL = "mnist-oe", "topics-oe"
LONE_INTERVAL_S = 0.5
RSS_INTERVAL_S = 0.1
REQUEST_TIMEOUT_S = 60.0  # far above any answer the service should give; a timeout is counted, not hidden


@dataclass(frozen=True)
class AttackRequest:
    kind: str  # a short name for the report
    path: str
    body: bytes
    content_type: str


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def multipart_body(files: list[bytes], boundary: str = "oegate-attack-boundary") -> tuple[bytes, str]:
    """A multipart/form-data body with one `image` part per file, and its content type (built once: encoding 4 MB
    bodies per request would cost the attackers more than it costs the service to refuse them)."""
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{i}.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def attack_requests(text_chars: int = 4096, instances: int = 64) -> list[AttackRequest]:
    """The four attacker requests, in the order each attacker cycles through them."""
    bomb = png(Image.new("RGBA", (4096, 4096)))  # ~65 KB, 16.7 M pixels
    rng = np.random.default_rng(0)
    large = []
    for _ in range(16):  # 16 x 1024^2 = the default OEGATE_MAX_REQUEST_PIXELS; ~64 KB of noise each
        pixels = np.zeros((1024, 1024), np.uint8)
        pixels[:256, :256] = rng.integers(0, 256, (256, 256), dtype=np.uint8)
        large.append(png(Image.fromarray(pixels)))
    digit = png(Image.fromarray(load_test_digit(0).pixels))
    words = "the quick brown fox asks the computer about science and politics "
    text = (words * (text_chars // len(words) + 1))[:text_chars]
    image_path, text_path = f"/v1/models/{IMAGE_MODEL}/predict", f"/v1/models/{TEXT_MODEL}/predict"
    bomb_body, bomb_type = multipart_body([bomb] * instances)
    large_body, large_type = multipart_body(large)
    small = json.dumps({"instances": [{"image_b64": base64.b64encode(digit).decode()}] * instances}).encode()
    texts = json.dumps({"instances": [{"text": text}] * instances}).encode()
    return [
        AttackRequest(f"bomb: {instances} x 4096^2 RGBA PNG", image_path, bomb_body, bomb_type),
        AttackRequest("large: 16 x 1024^2 PNG", image_path, large_body, large_type),
        AttackRequest(f"small: {instances} x 28^2 PNG", image_path, small, "application/json"),
        AttackRequest(f"texts: {instances} x {text_chars} chars", text_path, texts, "application/json"),
    ]


def lone_body() -> bytes:
    digit = png(Image.fromarray(load_test_digit(0).pixels))
    return json.dumps({"instances": [{"image_b64": base64.b64encode(digit).decode()}]}).encode()


def parse_vm_rss(status_text: str) -> int | None:
    """Resident set size in bytes from the text of /proc/<pid>/status (`VmRSS:  123456 kB`); None if absent (a
    process that has exited, or a kernel thread)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    return None


class RssSampler:
    """Reads a process's RSS every `interval_s` seconds in a thread; `peak` and `samples` (bytes) once stopped."""

    def __init__(self, status_path: Path, interval_s: float = RSS_INTERVAL_S) -> None:
        self.status_path, self.interval_s = status_path, interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = parse_vm_rss(self.status_path.read_text())
            except OSError:
                rss = None
            if rss is not None:
                self.samples.append(rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


async def _attacker(
    client: httpx.AsyncClient,
    requests: list[AttackRequest],
    start: int,
    deadline: float,
    outcomes: dict[str, Outcomes],
) -> None:
    turn = start
    while time.monotonic() < deadline:
        request = requests[turn % len(requests)]
        turn += 1
        began = time.monotonic()
        try:
            headers = {"content-type": request.content_type}
            status = str((await client.post(request.path, content=request.body, headers=headers)).status_code)
        except httpx.HTTPError as e:
            status = type(e).__name__
        outcomes[request.kind].record(status, time.monotonic() - began)


async def attack(
    base_url: str,
    connections: int,
    seconds: float,
    requests: list[AttackRequest],
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Outcomes]:
    """`connections` attackers cycling through `requests` (each from a different one) for `seconds`; what each kind
    of request got."""
    outcomes = {request.kind: Outcomes() for request in requests}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S, transport=transport)
    async with client:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_attacker(client, requests, i, deadline, outcomes) for i in range(connections)))
    return outcomes


def _attack_process(
    base_url: str,
    connections: int,
    seconds: float,
    instances: int,
    ready: EventType,
    results: Queue[dict[str, Outcomes]],
) -> None:
    requests = attack_requests(instances=instances)  # built before `ready`, so that the measured window is all attack
    ready.set()
    results.put(asyncio.run(attack(base_url, connections, seconds, requests)))


def lone_client(base_url: str, deadline: float, interval_s: float = LONE_INTERVAL_S) -> Outcomes:
    """One normal one-image request every `interval_s` seconds (on its own connection) until `deadline`."""
    outcomes = Outcomes()
    body, path = lone_body(), f"/v1/models/{IMAGE_MODEL}/predict"
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        next_at = time.monotonic()
        while next_at < deadline:
            began = time.monotonic()
            try:
                status = str(client.post(path, content=body, headers={"content-type": "application/json"}).status_code)
            except httpx.HTTPError as e:
                status = type(e).__name__
            outcomes.record(status, time.monotonic() - began)
            next_at += interval_s
            time.sleep(max(0.0, next_at - time.monotonic()))
    return outcomes


@contextmanager
def service_process(
    core: int | None, log_path: Path, settings: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """`python -m service` from the repository root with default settings (no OEGATE_* variable but the port and
    `settings`), pinned to `core` if given; yields its base URL and pid once ready, then stops it."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OEGATE_")}
    env |= {**(settings or {}), "OEGATE_PORT": str(port)}
    command = [sys.executable, "-m", "service"]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]  # taskset execs: the pid is the service's
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_ready(process, f"{base_url}/v2/health/ready", log_path, timeout_s=180.0)
            yield base_url, process.pid
        finally:
            _stop(process, signal.SIGTERM)


def run_level(
    connections: int,
    seconds: float,
    server_core: int | None,
    log_dir: Path,
    settings: dict[str, str] | None = None,
    instances: int = 64,
) -> LevelResult:
    """A fresh service, one warm-up request of each kind, then `seconds` of attack with the lone client."""
    log_path = log_dir / f"service-{connections}.log"
    with service_process(server_core, log_path, settings) as (base_url, pid):
        status_path = Path(f"/proc/{pid}/status")
        rss_ready = parse_vm_rss(status_path.read_text()) or 0
        with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
            for request in attack_requests(instances=instances):
                client.post(request.path, content=request.body, headers={"content-type": request.content_type})
        rss_idle = parse_vm_rss(status_path.read_text()) or 0
        context = multiprocessing.get_context("spawn")
        ready, results = context.Event(), context.Queue()
        attackers = context.Process(
            target=_attack_process, args=(base_url, connections, seconds, instances, ready, results), daemon=True
        )
        with RssSampler(status_path) as rss:
            attackers.start()
            if not ready.wait(120):
                raise RuntimeError("the attacker process did not start")
            lone = lone_client(base_url, time.monotonic() + seconds)
            outcomes: dict[str, Outcomes] = results.get(timeout=REQUEST_TIMEOUT_S + 60)
            attackers.join(timeout=60)
    refusals = refusal_seconds(log_path.read_text(errors="replace"))  # the log is complete once the service stopped
    return LevelResult(connections, seconds, rss_ready, rss_idle, rss.peak, lone, outcomes, refusals)


def refusal_seconds(log_text: str) -> list[float]:
    """The duration of each 503 answered by the service, in seconds, from its JSON access log lines
    (`{"message": "request", "status": 503, "duration_ms": ...}`); other lines are skipped."""
    seconds = []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("message") == "request" and record.get("status") == 503:
            seconds.append(float(record["duration_ms"]) / 1000)
    return seconds


def machine_facts(
    command: str,
    seconds: float,
    server_core: int | None,
    client_core: int | None,
    settings: dict[str, str],
    instances: int = 64,
) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return {
        "command": f"`{command}`",
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} x {cpu_model}, Linux {platform.release()}, Python {platform.python_version()}",
        "load average before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "git": commit.stdout.strip() or "?",
        "settings": ", ".join(f"{key}={value}" for key, value in settings.items()) or "the defaults (no OEGATE_* set)",
        "service": "`python -m service` (OEGATE_PORT set; other settings above), default models in models/ "
        f"(mnist-baseline, mnist-oe, topics-baseline, topics-oe), pinned to core {server_core}"
        if server_core is not None
        else "`python -m service`, unpinned",
        "clients": f"attackers (one process, httpx async, one connection each) and the lone client (one request to "
        f"{IMAGE_MODEL} every {LONE_INTERVAL_S:g} s, its own connection) on core {client_core}; "
        f"RSS (VmRSS) sampled every {RSS_INTERVAL_S * 1000:.0f} ms",
        "window": f"{seconds:g} s per level, a fresh service per level after one warm-up request of each kind",
        "attacker requests, in turn": "; ".join(request.kind for request in attack_requests(instances=instances)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="attack window per level (default 20)")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[8, 40, 160],
        help="attacker levels, comma-separated (default 8,40,160)",
    )
    parser.add_argument("--server-core", type=int, default=0, help="core the service is pinned to; -1: unpinned")
    parser.add_argument("--client-core", type=int, default=1, help="core the clients are pinned to; -1: unpinned")
    parser.add_argument(
        "--instances",
        type=int,
        default=64,
        help="images or texts per attacker request (default 64, the issue's; lower to fit a lowered max_instances)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="OEGATE_NAME=VALUE",
        help="a setting for the service (repeatable; default: none, the service's defaults)",
    )
    default_out = results_path("attack")
    parser.add_argument("--out", type=Path, default=default_out, help="Markdown results (bench/results/...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the progress
    server_core = None if args.server_core < 0 else args.server_core
    client_core = None if args.client_core < 0 else args.client_core
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})  # the attacker process inherits it; the service is pinned by taskset
    command = shlex.join(["python", "-m", "bench.attack", *(sys.argv[1:] if argv is None else argv)])
    settings = dict(pair.split("=", 1) for pair in args.env)
    if any(not key.startswith("OEGATE_") for key in settings):
        parser.error("--env takes OEGATE_NAME=VALUE")
    facts = machine_facts(command, args.seconds, server_core, client_core, settings, args.instances)
    results = []
    with tempfile.TemporaryDirectory(prefix="oegate-attack-") as log_dir:
        for connections in args.connections:
            logger.info("%d attackers for %g s", connections, args.seconds)
            results.append(run_level(connections, args.seconds, server_core, Path(log_dir), settings, args.instances))
            logger.info("%s", verdicts(results[-1:]))
    facts["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    write_report(args.out, render(facts, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
