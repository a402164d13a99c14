"""Reading the service's capture stores (`index.sqlite` plus `files/`) from the training side, read-only.

Training never imports the service: the index is plain SQLite (service/capture_store.py documents its columns), so
this module queries it with the standard library. An index written before captures recorded their source reads
with `source = ""`.

A capture directory is one store, or a directory whose immediate subdirectories are stores: a store has one writer,
so N service replicas write N stores (on Kubernetes, `/captures/<pod name>`). Their captures are read as one list;
ids are uuid4, so they are unique across stores (a repeated id is refused: the labels file could not say which one
it means), and each capture remembers the store its file lives in. Subdirectories without an index (a replica that
never started capturing, a volume's `lost+found`) are skipped.

The index may sit on a read-only mount (the retrain Job's view of the captures volume). SQLite opens a WAL-mode
index read-only only if its `-wal` and `-shm` files exist or can be created: they exist while the service is
writing; after the service closed the store cleanly they are gone, everything is in the main file, and the index is
opened `immutable` instead.
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
    store: Path  # the store directory that holds the file

    @property
    def path(self) -> Path:
        """The captured input's file."""
        return self.store / self.file

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


def stores(directory: Path) -> list[Path]:
    """The stores of a capture directory: `[directory]` if it is a store, else its subdirectories that are stores
    (sorted by name); ValueError if it is neither."""
    if (directory / INDEX).is_file():
        return [directory]
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a capture directory (no such directory)")
    found = sorted(child for child in directory.iterdir() if child.is_dir() and (child / INDEX).is_file())
    if not found:
        raise ValueError(
            f"{directory} is neither a capture store (no {INDEX}; is OEGATE_CAPTURE_DIR this directory?) nor a "
            f"directory of stores (no subdirectory holds an {INDEX})"
        )
    return found


def _connect(index: Path) -> sqlite3.Connection:
    """Read-only; `immutable` when SQLite cannot open a cleanly closed WAL index read-only (module doc)."""
    uri = index.resolve().as_uri()
    connection = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    try:
        connection.execute("PRAGMA schema_version").fetchone()
    except sqlite3.OperationalError as e:
        connection.close()
        if index.with_name(index.name + "-wal").exists():
            raise ValueError(f"{index}: cannot be read while its writer's log is unreadable here ({e})") from e
        connection = sqlite3.connect(f"{uri}?immutable=1", uri=True)
    return connection


@contextlib.contextmanager
def opened(directory: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to one store's index; ValueError if there is none."""
    index = directory / INDEX
    if not index.is_file():
        raise ValueError(f"{directory} is not a capture store (no {INDEX}; is OEGATE_CAPTURE_DIR this directory?)")
    connection = _connect(index)
    connection.row_factory = sqlite3.Row
    try:
        yield connection
    finally:
        connection.close()


def _capture(row: sqlite3.Row, store: Path) -> Capture:
    return Capture(
        id=row["id"], time=float(row["time"]), model=row["model"], version=row["version"], kind=row["kind"],
        anomaly_score=float(row["anomaly_score"]), threshold=float(row["threshold"]), label=row["label"],
        reject=bool(row["reject"]), input_kind=row["input_kind"], file=row["file"], sha256=row["sha256"],
        source=row["source"], store=store,
    )  # fmt: skip


def read_captures(directory: Path, where: Filter | None = None) -> list[Capture]:
    """The captures matching `where` in the capture directory's stores, oldest first (ties by store, then insertion
    order); ValueError if two stores hold the same id."""
    captures: list[Capture] = []
    for store in stores(directory):
        captures += _read_store(store, where or Filter())
    captures.sort(key=lambda capture: capture.time)  # stable: ties keep store and insertion order
    first: dict[str, Path] = {}
    for capture in captures:
        if first.setdefault(capture.id, capture.store) != capture.store:
            raise ValueError(
                f"capture {capture.id} is in two stores, {first[capture.id]} and {capture.store} (a copied store?): "
                "its label would be ambiguous"
            )
    return captures


def store_name(capture: Capture, directory: Path) -> str:
    """Which store of `directory` holds the capture: its subdirectory's name, "." when `directory` is the store."""
    return "." if capture.store == directory else capture.store.name


def _read_store(directory: Path, where: Filter) -> list[Capture]:
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
    captures = [_capture(row, directory) for row in rows]
    if where.ids is not None:
        wanted = set(where.ids)
        captures = [capture for capture in captures if capture.id in wanted]
    return captures
