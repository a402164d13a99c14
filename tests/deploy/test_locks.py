"""The images' locks (requirements/*.lock) pin every dependency pyproject.toml declares: the images install from
the locks alone (`--no-deps --require-hashes`), so a dependency added to pyproject.toml without `make lock` would
be missing from the image and the service would fail at import inside the container only."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
NOT_IN_CPU_IMAGES = {"onnxruntime-gpu"}  # the CPU images take onnxruntime's CPU build (requirements/cpu-runtime.in)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pinned(lock: str) -> dict[str, str]:
    text = (REPO / "requirements" / lock).read_text()
    return {m[1].lower(): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", text, re.MULTILINE)}


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("service.lock", PROJECT["dependencies"]),
        ("train.lock", [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["train"]]),
    ],
)
def test_every_declared_dependency_is_pinned_with_hashes(lock: str, requirements: list[str]) -> None:
    pinned = _pinned(lock)
    missing = sorted({_name(r) for r in requirements} - NOT_IN_CPU_IMAGES - set(pinned))
    assert not missing, f"{missing} are in pyproject.toml but not in requirements/{lock}: run `make lock`"
    assert pinned["onnxruntime"] and "onnxruntime-gpu" not in pinned


def test_the_train_lock_pins_torchs_cpu_build() -> None:
    assert _pinned("train.lock")["torch"].endswith("+cpu")
