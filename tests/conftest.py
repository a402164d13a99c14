"""Fixtures shared by every test package."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.artifacts import publish_tiny


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One published random-weight artifact per session (exporting takes seconds); copy it before modifying."""
    return publish_tiny(tmp_path_factory.mktemp("models"))


@pytest.fixture
def copy_artifact(tmp_path: Path) -> Callable[[Path, str, int], Path]:
    def copy(source: Path, name: str, version: int) -> Path:
        target = tmp_path / "models" / name / str(version)
        shutil.copytree(source, target)
        return target

    return copy
