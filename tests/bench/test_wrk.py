"""The wrk Lua script and the parsing of the summary line it prints."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.wrk import RESULT_MARKER, lua_script, lua_string, parse_output, wrk_command

WRK_OUTPUT = f"""Running 2s test @ http://127.0.0.1:8000/v2/models/mnist-oe/infer
  1 threads and 8 connections
{RESULT_MARKER}{{"requests": 2500, "duration_us": 2000000, "bytes": 10, "latency_p50_us": 1500, \
"latency_p99_us": 7250, "latency_mean_us": 1712.5, "latency_max_us": 9000, "errors_connect": 0, "errors_read": 1, \
"errors_write": 0, "errors_status": 3, "errors_timeout": 2}}
"""


def test_parse_output_reads_the_summary_line() -> None:
    result = parse_output(WRK_OUTPUT)
    assert result.requests == 2500 and result.duration_s == 2.0 and result.requests_per_s == 1250.0
    assert (result.latency_p50_ms, result.latency_p99_ms, result.latency_mean_ms) == (1.5, 7.25, 1.7125)
    assert result.latency_max_ms == 9.0
    assert result.errors == 6


def test_parse_output_without_a_summary_fails_loudly() -> None:
    with pytest.raises(ValueError, match="no BENCH_RESULT line"):
        parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_lua_string_needs_no_escaping() -> None:
    assert lua_string('/tmp/a "b"\\c') == '[[/tmp/a "b"\\c]]'
    assert lua_string("/tmp/x]]y") == "[=[/tmp/x]]y]=]"


def test_wrk_command_pins_one_thread_to_the_client_core() -> None:
    command = wrk_command("http://h/p", Path("s.lua"), connections=32, duration_s=12, core=1)
    assert command[:3] == ["taskset", "-c", "1"]
    assert command[command.index("--threads") + 1] == "1"
    assert command[command.index("--connections") + 1] == "32"
    assert command[command.index("--duration") + 1] == "12s"
    assert command[-1] == "http://h/p"


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the servers under test
    bodies: list[tuple[str, str, bytes]] = []  # noqa: RUF012 - filled by the server thread, read by the test
    binary_headers: list[str | None] = []  # noqa: RUF012 - the same

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Recorder.bodies.append((self.path, self.headers["Content-Type"], body))
        _Recorder.binary_headers.append(self.headers.get("Inference-Header-Content-Length"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:  # quiet: no line per request on stderr
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # wrk drops its connections mid-request when its time is up


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.bodies.clear()
    _Recorder.binary_headers.clear()
    server = _QuietServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2/models/m/infer"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.needs_apt("wrk")
def test_the_lua_script_makes_wrk_post_the_body_file(tmp_path: Path, recorder: str) -> None:
    body = b'{"inputs": [{"name": "input", "data": [0.5]}]}'
    (tmp_path / "body.json").write_bytes(body)
    script = tmp_path / "bench.lua"
    script.write_text(lua_script(tmp_path / "body.json"))
    completed = subprocess.run(
        ["wrk", "--threads", "1", "--connections", "1", "--duration", "1s", "--script", str(script), recorder],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result = parse_output(completed.stdout)
    assert 0 < result.requests <= len(_Recorder.bodies) <= result.requests + 1  # + the one cut off at the end
    assert result.errors == 0
    assert set(_Recorder.bodies) == {("/v2/models/m/infer", "application/json", body)}


@pytest.mark.needs_apt("wrk")
def test_the_lua_script_sends_the_given_headers(tmp_path: Path, recorder: str) -> None:
    body = b'{"inputs":[]}\x00\x01binary'
    (tmp_path / "body.bin").write_bytes(body)
    script = tmp_path / "bench.lua"
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "13"}
    script.write_text(lua_script(tmp_path / "body.bin", headers))
    completed = subprocess.run(
        ["wrk", "--threads", "1", "--connections", "1", "--duration", "1s", "--script", str(script), recorder],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert parse_output(completed.stdout).errors == 0
    assert set(_Recorder.bodies) == {("/v2/models/m/infer", "application/octet-stream", body)}
    assert set(_Recorder.binary_headers) == {"13"}
