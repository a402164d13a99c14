"""Reading the service's capture store (`index.sqlite` plus `files/`) from the training side, read-only.

Training never imports the service: the index is plain SQLite (service/capture_store.py documents its columns), so
this module queries it with the standard library. An index written before captures recorded their source reads
with `source = ""`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

INDEX = "index.sqlite"
DECISIONS = ("rejected", "accepted")
KINDS = ("rejected", "band", "control")


@dataclass(frozen=True)
class Capture:
    """One index row: a captured instance, its file and what the live gate decided about it."""

    id: str
    time: float  # Unix seconds, UTC
    model: str
    version: str
    kind: str  # rejected | band | control (how the service sampled it)
    anomaly_score: float
    threshold: float
    label: str  # the predicted class
    reject: bool
    input_kind: str  # image | array | text
    file: str  # relative to the store directory
    sha256: str
    source: str

    @property
    def decision(self) -> str:
        return "rejected" if self.reject else "accepted"

    @property
    def time_utc(self) -> str:
        return dt.datetime.fromtimestamp(self.time, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Filter:
    """Which captures a command works on; every unset field matches everything. Times are [since, until)."""

    model: str | None = None
    decision: str | None = None  # rejected | accepted
    kind: str | None = None  # rejected | band | control
    source: str | None = None
    since: float | None = None
    until: float | None = None
    ids: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.decision is not None and self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {self.decision!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


@contextlib.contextmanager
def opened(directory: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the store's index; ValueError if there is none."""
    index = directory / INDEX
    if not index.is_file():
        raise ValueError(f"{directory} is not a capture store (no {INDEX}; is OEGATE_CAPTURE_DIR this directory?)")
    connection = sqlite3.connect(f"{index.resolve().as_uri()}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        yield connection
    finally:
        connection.close()


def _capture(row: sqlite3.Row) -> Capture:
    return Capture(
        id=row["id"], time=float(row["time"]), model=row["model"], version=row["version"], kind=row["kind"],
        anomaly_score=float(row["anomaly_score"]), threshold=float(row["threshold"]), label=row["label"],
        reject=bool(row["reject"]), input_kind=row["input_kind"], file=row["file"], sha256=row["sha256"],
        source=row["source"],
    )  # fmt: skip


def read_captures(directory: Path, where: Filter | None = None) -> list[Capture]:
    """The captures matching `where`, oldest first (ties by insertion order)."""
    where = where or Filter()
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (("model", where.model), ("kind", where.kind), ("source", where.source)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.decision is not None:
        clauses.append("reject = ?")
        params.append(1 if where.decision == "rejected" else 0)
    if where.since is not None:
        clauses.append("time >= ?")
        params.append(where.since)
    if where.until is not None:
        clauses.append("time < ?")
        params.append(where.until)
    with opened(directory) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(captures)")}
        source = "source" if "source" in columns else "'' AS source"
        query = (
            f"SELECT id, time, model, version, kind, anomaly_score, threshold, label, reject, input_kind, file, "
            f"sha256, {source} FROM captures"
            + (" WHERE " + " AND ".join(clauses) if clauses else "")
            + " ORDER BY time, rowid"
        )
        rows = connection.execute(query, params).fetchall()
    captures = [_capture(row) for row in rows]
    if where.ids is not None:
        wanted = set(where.ids)
        captures = [capture for capture in captures if capture.id in wanted]
    return captures
