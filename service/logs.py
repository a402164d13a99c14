"""Structured logging: one JSON object per line, carrying the request id of the request being served."""

from __future__ import annotations

import datetime as dt
import json
import logging
from contextvars import ContextVar

import orjson

request_id_var: ContextVar[str | None] = ContextVar("oegate_request_id", default=None)
"""The id of the request this task is serving (set by the request middleware), or None."""

# Standard LogRecord attributes are not repeated; uvicorn's ANSI-coloured duplicate of its message is dropped.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...process fields, "request_id"?, ...extra fields, "exception"?}`
    per record; the process fields (e.g. `worker` and `pid` in a worker process) are the same on every line."""

    def __init__(self, process_fields: dict[str, object] | None = None) -> None:
        super().__init__()
        self._process_fields = dict(process_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._process_fields,
        }
        request_id = request_id_var.get()
        if request_id is not None:
            payload["request_id"] = request_id
        payload.update({k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(payload, default=str).decode()  # one line per request: the fast encoder
        except TypeError:  # what orjson refuses and json writes (an int beyond 64 bits, NaN as a key...)
            return json.dumps(payload, default=str)


def configure_logging(level: str, process_fields: dict[str, object] | None = None) -> None:
    """Send every logger (ours and uvicorn's) to stderr as JSON lines, each carrying `process_fields`. Called once
    per process, by `python -m service` (and by each worker, with its index and pid)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(process_fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings (Pillow's, for one) become JSON log lines, not raw stderr text
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
