"""Run `python -m service` as a real uvicorn process on a free port, or an app in a thread, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float, what: str) -> None:
    """Poll `url` until it answers 200; fail with `process`'s log if it exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s} s:\n{log_path.read_text()}")
        time.sleep(0.1)


@contextmanager
def service_process(env: dict[str, str], log_path: Path, startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Start the service from the repository root with `env` (OEGATE_* settings) added to the environment; yield
    its base URL once `/v2/health/ready` answers 200; stop it with SIGTERM and check it shuts down gracefully."""
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OEGATE_")},
        "OEGATE_PORT": str(port),
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(process, f"{base_url}/v2/health/ready", log_path, startup_timeout_s, "service")
            yield base_url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                returncode = process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why it stopped.
    assert returncode in (0, -signal.SIGTERM), log_path.read_text()
    assert "Application shutdown complete." in log_path.read_text()


@contextmanager
def app_in_thread(app: Any) -> Iterator[str]:
    """Serve the ASGI `app` with uvicorn on a free port in a thread of this process; yields "127.0.0.1:PORT"."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
