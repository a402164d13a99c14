"""Slow clients against a real `python -m service` process (raw sockets): the body read deadline (408), the
header deadline (connection closed), and a graceful shutdown that ends within its timeout while a slow client
is still sending.

Times here are lower bounds (a deadline never fires early) and generous upper bounds (it fires at all), never
measurements."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.server import REPO, free_port, service_process, wait_until_ready

pytestmark = pytest.mark.slow
DEADLINE_S = 1.0
SLACK_S = 15.0  # a loaded 2-core CI machine may be slow to answer; the deadline itself is checked from below
PARTIAL_PREDICT = (
    b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: oegate\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n"
)


def service_env(model_dir: Path, **settings: str) -> dict[str, str]:
    return {
        "OEGATE_MODEL_DIR": str(model_dir),
        "OEGATE_PROVIDERS": '["CPUExecutionProvider"]',
        "OEGATE_POLL_INTERVAL_S": "0",
        "OEGATE_INTRA_OP_THREADS": "1",
        **{f"OEGATE_{key.upper()}": value for key, value in settings.items()},
    }


@contextmanager
def connected(base_url: str) -> Iterator[socket.socket]:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=SLACK_S) as sock:
        yield sock


def read_until_closed(sock: socket.socket, limit_s: float) -> bytes:
    """Everything the server sends until it closes the connection (or `limit_s` passes: then a test fails)."""
    sock.settimeout(limit_s)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_body_slower_than_the_deadline_gets_408_and_the_connection_is_closed(tmp_path: Path, model_dir: Path) -> None:
    env = service_env(model_dir, body_timeout_s=str(DEADLINE_S))
    with service_process(env, tmp_path / "service.log") as base_url:
        # A body that stops halfway.
        with connected(base_url) as sock:
            started = time.monotonic()
            sock.sendall(PARTIAL_PREDICT + b'{"instances": [')
            answer = read_until_closed(sock, SLACK_S)
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in answer.lower()
        assert answer.endswith(b'{"error": "the request body did not arrive within 1 s"}')
        assert waited >= DEADLINE_S
        # A body trickled in one byte at a time, each well within the deadline: the deadline is on the whole body.
        with connected(base_url) as sock:
            started = time.monotonic()
            sock.sendall(PARTIAL_PREDICT)
            sock.settimeout(0.2)
            answer = b""
            while not answer and time.monotonic() - started < SLACK_S:
                try:
                    sock.sendall(b" ")
                    answer = sock.recv(65536)
                except TimeoutError:
                    continue
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert time.monotonic() - started >= DEADLINE_S


def test_headers_slower_than_the_deadline_close_the_connection(tmp_path: Path, model_dir: Path) -> None:
    env = service_env(model_dir, header_timeout_s=str(DEADLINE_S))
    with service_process(env, tmp_path / "service.log") as base_url:
        with connected(base_url) as sock:  # headers that never end
            started = time.monotonic()
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: oegate\r\n")
            assert read_until_closed(sock, SLACK_S) == b""  # closed without a response
            assert time.monotonic() - started >= DEADLINE_S
        with connected(base_url) as sock:  # a connection that never sends a byte
            started = time.monotonic()
            assert read_until_closed(sock, SLACK_S) == b""
            assert time.monotonic() - started >= DEADLINE_S
        with connected(base_url) as sock:  # complete headers in time: answered, and kept alive for the next one
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: oegate\r\n\r\n")
            sock.settimeout(SLACK_S)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_sigterm_with_a_slow_client_connected_exits_within_the_graceful_timeout(
    tmp_path: Path, model_dir: Path
) -> None:
    """A request whose body never finishes (body deadline 60 s) is in flight when SIGTERM comes: uvicorn waits
    `timeout_graceful_shutdown_s` (2 s) for it, cancels it, runs the lifespan shutdown and exits."""
    graceful_s = 2
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OEGATE_")},
        **service_env(model_dir, body_timeout_s="60", timeout_graceful_shutdown_s=str(graceful_s), port=str(port)),
    }
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_ready(process, f"{base_url}/v2/health/ready", log_path, 60.0, "service")
            with connected(base_url) as sock:
                sock.sendall(PARTIAL_PREDICT + b'{"instances": [')
                time.sleep(0.5)  # let the request reach the app (a lower bound; the test holds either way)
                signalled = time.monotonic()
                process.send_signal(signal.SIGTERM)
                returncode = process.wait(timeout=graceful_s + SLACK_S)
                exited_after = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log_path.read_text()
    assert returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output
    assert exited_after < graceful_s + SLACK_S
    print(f"exited {exited_after:.2f} s after SIGTERM (graceful timeout {graceful_s} s)")
