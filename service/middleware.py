"""HTTP middleware (pure ASGI): request ids, access logs and latency metrics; admission of predict/infer requests
(the in-flight bound); the request body's size limit, read deadline and Content-Encoding (gzip, deflate) decoding."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import zlib
from dataclasses import dataclass

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.admission import current_lane
from service.errors import OverloadedError
from service.limits import WorkLimits
from service.logs import request_id_var
from service.metrics import Metrics

logger = logging.getLogger("service.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # whole-string match: `$` would let a trailing newline in


class RequestContextMiddleware:
    """Gives each request an id (the client's `X-Request-ID` if sane, else a new one) that every log line of the
    request carries and the response echoes; logs one access line and observes the request latency by route
    template (bounded: never the raw path) and status class."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else os.urandom(16).hex()  # uuid4's randomness, no UUID
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            model = self.metrics.model_label(scope.get("path_params", {}).get("name"))
            self.metrics.request_duration.labels(route, f"{status // 100}xx", model).observe(seconds)
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )
            request_id_var.reset(token)


async def send_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer `{"error": message}` with `status` straight from a middleware (outside the app's error handlers)."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


ADMITTED_PATHS = re.compile(r"/v1/models/[^/]+(?:/versions/[^/]+)?/predict|/v2/models/[^/]+(?:/versions/[^/]+)?/infer")
"""The paths whose POST requests count against the in-flight bound (the native predict and V2 infer routes)."""


class InFlightLimitMiddleware:
    """Admits predict/infer requests within the cost-weighted in-flight bound (`limits.admission`); the next one gets
    503 with Retry-After and `{"error": ...}` at once, before its body is read (service/admission.py states the
    policy). The request's lane is set in `current_lane` for the code that serves it."""

    def __init__(self, app: ASGIApp, limits: WorkLimits, metrics: Metrics) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not ADMITTED_PATHS.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        admission = self.limits.admission
        headers = Headers(scope=scope)
        encoded = headers.get("content-encoding", "identity").strip().lower() not in ("identity", "")
        ticket = admission.ticket(headers.get("content-length"), encoded)
        if not admission.try_admit(ticket):
            error = OverloadedError(
                f"the server is overloaded ({admission.refusal(ticket)}); retry after {self.limits.retry_after_s} s",
                retry_after_s=self.limits.retry_after_s,
            )
            self.metrics.record_error(error.reason)
            headers_out = [(key.lower().encode(), value.encode()) for key, value in error.headers.items()]
            await send_error(send, error.status_code, error.message, headers_out)
            return
        token = current_lane.set(ticket.lane)
        released = False

        def release_once() -> None:
            nonlocal released
            if not released:
                released = True
                admission.release(ticket)

        async def send_releasing(message: Message) -> None:
            # Released before the last body message goes out: a client sends its next request as soon as it has the
            # answer, and that request must not find this one still counted (64 connections against a bound of 64
            # would otherwise get 503s).
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                release_once()
            await send(message)

        try:
            await self.app(scope, receive, send_releasing)
        finally:
            current_lane.reset(token)
            release_once()


class _BodyRejectedError(Exception):
    """Raised from `receive` to stop whoever reads a body that is over the limit or cannot be decoded."""


@dataclass(frozen=True)
class _Rejection:
    status: int
    message: str
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


CONTENT_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""`Content-Encoding` values a request body may have, with their zlib window bits (`deflate` is the zlib format,
RFC 9110 section 8.4.1.2, as tritonclient and browsers send it)."""


class _Decompressor:
    """Incremental gzip/deflate decoding that never produces more than `limit` bytes in all (the zip-bomb guard):
    each call asks zlib for at most the bytes left under the limit, plus one to see it passed."""

    def __init__(self, encoding: str, limit: int) -> None:
        self._wbits = CONTENT_ENCODINGS[encoding]
        self._gzip = encoding == "gzip"
        self._stream = zlib.decompressobj(self._wbits)
        self._limit = limit
        self.size = 0

    def feed(self, data: bytes) -> bytes:
        """Decoded bytes of `data`; raises OverflowError past the limit, zlib.error on corrupt data."""
        decoded = []
        pending = data
        while pending:
            if self._stream.eof:  # concatenated gzip members are one body (RFC 1952); deflate has one stream
                if not self._gzip:
                    raise zlib.error("data after the end of the deflate stream")
                self._stream = zlib.decompressobj(self._wbits)
            out = self._stream.decompress(pending, self._limit - self.size + 1)
            self.size += len(out)
            if self.size > self._limit:
                raise OverflowError
            decoded.append(out)
            pending = self._stream.unused_data if self._stream.eof else self._stream.unconsumed_tail
        return b"".join(decoded)

    def finish(self) -> None:
        if not self._stream.eof:
            raise zlib.error("the compressed body ends before its stream does")


class BodySizeLimitMiddleware:
    """Answers 413 `{"error": ...}` for bodies over `max_bytes`: at once from Content-Length, or as soon as the
    streamed (e.g. chunked) body passes the limit, without ever buffering more than one chunk beyond it.

    A body with `Content-Encoding: gzip` or `deflate` is decoded here, as it streams in, and the app sees the plain
    body; the limit applies to the compressed and to the decoded size, and decoding stops as soon as the latter
    passes it (a zip bomb is a 413 after at most `max_bytes` of output, never a hang). A corrupt compressed body is
    a 400 and any other encoding a 415, both before the app could misread the body as JSON.

    The whole body must arrive within `timeout_s` of the request's start (uvicorn has no body-read deadline): a
    client that sends it slower (or stops halfway) gets 408 with `Connection: close`, and its connection is closed."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send, self._too_large())
            return
        encoding = headers.get("content-encoding", "identity").strip().lower()
        decompressor: _Decompressor | None = None
        if encoding in CONTENT_ENCODINGS:
            decompressor = _Decompressor(encoding, self.max_bytes)
            # The app sees the decoded body: without the encoding, and without the compressed length.
            scope = dict(scope)
            scope["headers"] = [
                (key, value) for key, value in scope["headers"] if key not in (b"content-encoding", b"content-length")
            ]
        elif encoding not in ("identity", ""):
            supported = ", ".join([*CONTENT_ENCODINGS, "identity"])
            message = f"Content-Encoding {encoding!r} is not supported (use one of: {supported})"
            await self._reject(scope, send, _Rejection(415, message, "unsupported_media_type"))
            return
        received = 0
        rejection: _Rejection | None = None
        started = False
        body_complete = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal received, rejection, body_complete
            if body_complete:  # later receives only wait for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                message_text = f"the request body did not arrive within {self.timeout_s:g} s"
                rejection = _Rejection(408, message_text, "request_timeout", ((b"connection", b"close"),))
                raise _BodyRejectedError from None
            if message["type"] == "http.request":
                body_complete = not message.get("more_body", False)
                body = message.get("body", b"")
                received += len(body)
                if received > self.max_bytes:
                    rejection = self._too_large()
                    raise _BodyRejectedError
                if decompressor is not None:
                    try:
                        body = decompressor.feed(body)
                        if not message.get("more_body", False):
                            decompressor.finish()
                    except OverflowError:
                        rejection = self._too_large(decoded=True)
                        raise _BodyRejectedError from None
                    except zlib.error as e:
                        rejection = _Rejection(400, f"the {encoding} body cannot be decoded: {e}", "bad_request")
                        raise _BodyRejectedError from None
                    message = {**message, "body": body}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejection is not None and not started:
                return  # whatever the app made of the interrupted body, the answer is the rejection
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if rejection is None:
                raise
        if rejection is not None and not started:
            await self._reject(scope, send, rejection)

    def _too_large(self, decoded: bool = False) -> _Rejection:
        what = "decompressed request body" if decoded else "request body"
        return _Rejection(413, f"{what} is larger than the limit of {self.max_bytes} bytes", "payload_too_large")

    async def _reject(self, scope: Scope, send: Send, rejection: _Rejection) -> None:
        self.metrics.record_error(rejection.reason, scope.get("path_params", {}).get("name"))
        await send_error(send, rejection.status, rejection.message, list(rejection.headers))
