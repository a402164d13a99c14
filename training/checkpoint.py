"""Checkpoints: written atomically every epoch, so a killed run resumes from its last completed epoch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file, fsync, then rename: a crash never leaves a truncated checkpoint behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "net_state" not in state:
        raise ValueError(f"{path} is not an oegate checkpoint")
    return state
