"""The reviewer's labels file: the source of truth for what captures go into the next training run.

One line per capture, `ID LABEL  # note`, where LABEL is
- `outlier`: the input is not in-distribution; it joins the OE outlier pool;
- `in-distribution:<class>`: the input is a valid `<class>` (the gate rejected a valid input, or a control); it
  joins the labelled training data;
- `discard`: never used.
Blank lines and `#` comments are kept. A capture without a line is unlabelled and never used. `label` rewrites
lines in place (keeping their notes and the file's order) and appends new ones, so the file stays small to diff
and can be committed beside the config that retrains with it. A later line for the same id wins.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

OUTLIER = "outlier"
DISCARD = "discard"
IN_DISTRIBUTION = "in-distribution:"
HEADER = (
    "# oegate capture labels (python -m training captures label): `ID LABEL  # note`, one per line.\n"
    "# LABEL: outlier (to the OE pool) | in-distribution:<class> (to the training data) | discard\n"
)
ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class Label:
    """A parsed label: `outlier`, `discard` or `in-distribution:<class>` (`class_name` set)."""

    text: str

    def __post_init__(self) -> None:
        if self.text not in (OUTLIER, DISCARD) and not (
            self.text.startswith(IN_DISTRIBUTION) and self.text[len(IN_DISTRIBUTION) :].strip()
        ):
            raise ValueError(f"label {self.text!r} must be outlier, discard or in-distribution:<class>")

    @property
    def class_name(self) -> str | None:
        return self.text[len(IN_DISTRIBUTION) :] if self.text.startswith(IN_DISTRIBUTION) else None


def _parse_line(line: str, where: str) -> tuple[str, str, str] | None:
    """(id, label, note) of a label line; None for a blank or comment line."""
    body, _, note = line.partition("#")
    fields = body.split()
    if not fields:
        return None
    if len(fields) != 2 or not ID_PATTERN.match(fields[0]):
        raise ValueError(f"{where}: expected `ID LABEL  # note`, got {line.strip()!r}")
    try:
        Label(fields[1])
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    return fields[0], fields[1], note.strip()


def read_labels(path: Path) -> dict[str, Label]:
    """id -> label from the file (empty if it does not exist); ValueError naming the line of a malformed one."""
    if not path.is_file():
        return {}
    labels: dict[str, Label] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parsed = _parse_line(line, f"{path}:{number}")
        if parsed is not None:
            labels[parsed[0]] = Label(parsed[1])
    return labels


def write_labels(path: Path, updates: Mapping[str, tuple[Label, str]]) -> tuple[int, int]:
    """Set `id -> (label, note)` in the file: existing lines are rewritten in place (their own note kept when they
    have one), new ids appended in the given order. Returns (changed, added)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else HEADER.splitlines()
    seen: set[str] = set()
    changed = 0
    for index, line in enumerate(lines):
        parsed = _parse_line(line, f"{path}:{index + 1}")
        if parsed is None or parsed[0] not in updates:
            continue
        capture_id, old, note = parsed
        label, default_note = updates[capture_id]
        seen.add(capture_id)
        if old != label.text:
            changed += 1
        lines[index] = f"{capture_id} {label.text}  # {note or default_note}".rstrip(" #")
    added = [capture_id for capture_id in updates if capture_id not in seen]
    for capture_id in added:
        label, note = updates[capture_id]
        lines.append(f"{capture_id} {label.text}  # {note}".rstrip(" #"))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.replace(path)
    return changed, len(added)


def labels_digest(path: Path) -> str:
    """sha256 of the labels file as read (recorded in the card, so a run names the exact review it used)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
