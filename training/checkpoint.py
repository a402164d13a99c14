"""Checkpoints: written atomically every epoch, so a killed run resumes from its last completed epoch.

The previous epoch's checkpoint is kept beside the latest (`<stage>.previous.pt`): if the latest cannot be read
(a disk that lost it, a file truncated by something other than us), resuming falls back to the previous one with a
warning instead of starting over.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
UNREADABLE = (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError)


def previous_path(path: Path) -> Path:
    """Where the checkpoint before `path` is kept."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file, fsync, then rename: a crash never leaves a truncated checkpoint behind. The
    checkpoint it replaces is kept as `previous_path(path)`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if path.is_file():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except UNREADABLE as e:
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or "net_state" not in state:
        raise ValueError(f"{path} is not an oegate checkpoint")
    return state


def has_checkpoint(path: Path) -> bool:
    return path.is_file() or previous_path(path).is_file()


def load_latest_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, or, if it is missing or unreadable, the previous one (with a warning)."""
    try:
        return load_checkpoint(path)
    except ValueError as latest_error:
        previous = previous_path(path)
        if not previous.is_file():
            raise
        log.warning("%s; falling back to the previous checkpoint %s", latest_error, previous)
        return load_checkpoint(previous)
