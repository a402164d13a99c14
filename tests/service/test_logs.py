"""Log hygiene: warnings become JSON log lines; a request id with a trailing newline is not echoed."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from service.logs import configure_logging
from service.middleware import _REQUEST_ID


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logging.captureWarnings(False)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_warnings_are_logged_as_json(restored_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("palette images with transparency expressed in bytes", UserWarning, stacklevel=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines, "the warning went nowhere"
    record = json.loads(lines[-1])  # one JSON object, not a raw 'file:line: UserWarning' text line
    assert record["logger"] == "py.warnings" and "palette images" in record["message"]


def test_a_worker_names_itself_on_every_line(restored_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", {"worker": 1, "pid": 4242})
    logging.getLogger("service.test").info("hello", extra={"model": "m"})
    record = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert (record["message"], record["worker"], record["pid"], record["model"]) == ("hello", 1, 4242, "m")


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123", True), ("a" * 128, True), ("a" * 129, False), ("abc\n", False), ("", False), ("a b", False)],
)
def test_request_ids_are_matched_whole(given: str, kept: bool) -> None:
    assert (_REQUEST_ID.fullmatch(given) is not None) is kept


@pytest.mark.anyio
@pytest.mark.parametrize(("given", "echoed"), [(b"abc-123", "abc-123"), (b"abc\n", None), (b"x" * 129, None)])
async def test_the_middleware_echoes_only_a_whole_sane_request_id(given: bytes, echoed: str | None) -> None:
    from prometheus_client import CollectorRegistry

    from service.metrics import Metrics
    from service.middleware import RequestContextMiddleware

    async def ok(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"x-request-id", given)]}
    await RequestContextMiddleware(ok, Metrics(CollectorRegistry()))(scope, receive, send)  # type: ignore[arg-type]
    headers = dict(sent[0]["headers"])  # type: ignore[call-overload]
    answered = headers[b"x-request-id"].decode()
    if echoed is None:
        assert answered != given.decode() and len(answered) == 32  # a fresh random 32-hex-digit id instead
    else:
        assert answered == echoed
