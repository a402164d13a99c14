"""The capture store: captured inputs as files, plus one SQLite index (`index.sqlite`), under `capture_dir`.

Layout: `files/<YYYYMMDD>/<id>.<ext>` holds each input as it was received (`.png`/`.jpg` image bytes, `.txt` UTF-8
text, `.npy` float32 [C, H, W] array; `.bin` for image bytes of another kind) and the `captures` table one row per
file, with the client's declared `source` (so curation can cap what one client contributes; an index made before
that column existed gets it, empty, when opened). A `totals` row, kept by triggers, holds the bytes of every indexed
file, so the store's size is one read for any connection (the writer's, and the admin API's in another thread).

Every function here blocks (file and SQLite I/O): the service calls them from the capture writer's thread or a worker
thread, never on the event loop. A file is written under a temporary name and renamed before its row is inserted,
and a row is deleted before its file, so a listed capture always has its file (a crash can leave an unindexed file,
never a row without one). Times are Unix seconds (UTC).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX = "index.sqlite"
FILES = "files"
BUSY_TIMEOUT_MS = 5000  # the writer and an admin request may touch the index at once: wait, don't fail
DELETE_CHUNK = 500  # rows per DELETE ... WHERE id IN (...) (SQLite's host-parameter limit is 32766)

SCHEMA = """
CREATE TABLE IF NOT EXISTS captures (
    id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    anomaly_score REAL NOT NULL,
    threshold REAL NOT NULL,
    label TEXT NOT NULL,
    label_index INTEGER NOT NULL,
    reject INTEGER NOT NULL,
    input_kind TEXT NOT NULL,
    media_type TEXT NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS captures_by_time ON captures (time);
CREATE INDEX IF NOT EXISTS captures_by_model_time ON captures (model, time);
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO totals (id, bytes) VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS captures_added AFTER INSERT ON captures
    BEGIN UPDATE totals SET bytes = bytes + NEW.bytes WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS captures_removed AFTER DELETE ON captures
    BEGIN UPDATE totals SET bytes = bytes - OLD.bytes WHERE id = 0; END;
"""
COLUMNS = (
    "id", "time", "model", "version", "kind", "anomaly_score", "threshold", "label", "label_index", "reject",
    "input_kind", "media_type", "file", "sha256", "bytes", "source",
)  # fmt: skip


@dataclass(frozen=True)
class CaptureRecord:
    """One captured instance's index row, less what the store fills in (file, sha256, bytes)."""

    id: str  # uuid4 hex
    time: float  # Unix seconds
    model: str
    version: str
    kind: str  # rejected | band | control
    anomaly_score: float
    threshold: float
    label: str  # the predicted (most probable) label
    label_index: int
    reject: bool
    input_kind: str  # image | array | text
    media_type: str  # image/png, image/jpeg, application/octet-stream, text/plain; charset=utf-8, application/x-npy
    extension: str  # .png, .jpg, .bin, .txt, .npy
    source: str = ""  # who sent it, from the request's source header (service/capture.py); "" when not given


def connect(directory: Path) -> sqlite3.Connection:
    """A connection to the index (created with its schema if missing; WAL, so readers do not block the writer)."""
    connection = sqlite3.connect(directory / INDEX, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(SCHEMA)
    columns = {row[1] for row in connection.execute("PRAGMA table_info(captures)")}
    if "source" not in columns:  # an index made before captures recorded their source: "" for its rows
        connection.execute("ALTER TABLE captures ADD COLUMN source TEXT NOT NULL DEFAULT ''")
    return connection


@contextlib.contextmanager
def opened(directory: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(directory)
    try:
        yield connection
    finally:
        connection.close()


def total_bytes(connection: sqlite3.Connection) -> int:
    """Bytes of every indexed capture file."""
    return int(connection.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()[0])


def add(directory: Path, connection: sqlite3.Connection, record: CaptureRecord, payload: bytes) -> int:
    """Write `payload` as the record's file, then index it; returns the file's size in bytes."""
    day = time.strftime("%Y%m%d", time.gmtime(record.time))
    relative = f"{FILES}/{day}/{record.id}{record.extension}"
    target = directory / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".tmp-{target.name}")
    with temporary.open("wb") as file:
        file.write(payload)
    os.replace(temporary, target)
    values: dict[str, Any] = {
        "id": record.id, "time": record.time, "model": record.model, "version": record.version,
        "kind": record.kind, "anomaly_score": record.anomaly_score, "threshold": record.threshold,
        "label": record.label, "label_index": record.label_index, "reject": int(record.reject),
        "input_kind": record.input_kind, "media_type": record.media_type, "file": relative,
        "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload), "source": record.source,
    }  # fmt: skip
    try:
        connection.execute(
            f"INSERT INTO captures ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})", values
        )
    except sqlite3.Error:
        target.unlink(missing_ok=True)  # no file without a row
        raise
    return len(payload)


def _where(model: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    """The filter of a time range [since, until) and a model; an empty filter matches every row."""
    clauses: list[str] = []
    params: list[Any] = []
    if model is not None:
        clauses.append("model = ?")
        params.append(model)
    if since is not None:
        clauses.append("time >= ?")
        params.append(since)
    if until is not None:
        clauses.append("time < ?")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_rows(
    connection: sqlite3.Connection, model: str | None, since: float | None, until: float | None, limit: int
) -> list[dict[str, Any]]:
    """Index rows in [since, until) (of `model` if given), newest first, at most `limit`."""
    where, params = _where(model, since, until)
    rows = connection.execute(
        f"SELECT {', '.join(COLUMNS)} FROM captures{where} ORDER BY time DESC, rowid DESC LIMIT ?", [*params, limit]
    )
    return [{**dict(row), "reject": bool(row["reject"])} for row in rows]


def delete_rows(directory: Path, connection: sqlite3.Connection, ids: Sequence[str]) -> int:
    """Delete these rows, then their files; returns the rows this call deleted (another deleter may win some)."""
    files: list[str] = []
    for start in range(0, len(ids), DELETE_CHUNK):
        chunk = list(ids[start : start + DELETE_CHUNK])
        marks = ", ".join("?" * len(chunk))
        deleted = connection.execute(f"DELETE FROM captures WHERE id IN ({marks}) RETURNING file", chunk)
        files += [row[0] for row in deleted]
    for relative in files:
        path = directory / relative
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the day's directory, once empty
            path.parent.rmdir()
    return len(files)


def delete_range(
    directory: Path, connection: sqlite3.Connection, model: str | None, since: float | None, until: float | None
) -> int:
    """Delete every capture in [since, until) (of `model` if given), rows and files; returns how many."""
    where, params = _where(model, since, until)
    ids = [row[0] for row in connection.execute(f"SELECT id FROM captures{where}", params)]
    return delete_rows(directory, connection, ids)


def enforce_retention(
    directory: Path, connection: sqlite3.Connection, now: float, max_bytes: int, max_age_s: float
) -> int:
    """Delete captures older than `max_age_s`, then the oldest ones until the files fit in `max_bytes`; returns how
    many were deleted."""
    deleted = delete_range(directory, connection, None, None, now - max_age_s)
    excess = total_bytes(connection) - max_bytes
    if excess > 0:
        oldest, freed = [], 0
        with contextlib.closing(connection.execute("SELECT id, bytes FROM captures ORDER BY time, rowid")) as rows:
            for row in rows:
                oldest.append(row[0])
                freed += row[1]
                if freed >= excess:
                    break
        deleted += delete_rows(directory, connection, oldest)
    return deleted
