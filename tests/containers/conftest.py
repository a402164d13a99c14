"""Helpers for the container tests: the images `make test-container` builds, run on a real Docker engine.

These tests skip unless OEGATE_CONTAINER_TESTS=1 (set by `deploy/docker/test-container.sh`, which first starts an
engine when none answers and builds the images), so `make test` never builds or runs images. DOCKER names the client
(default `docker`); OEGATE_IMAGE, OEGATE_TRAIN_IMAGE and OEGATE_PROMETHEUS_IMAGE the images.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest

from tests.e2e.server import REPO

DOCKER = os.environ.get("DOCKER", "docker")
SERVICE_IMAGE = os.environ.get("OEGATE_IMAGE", "oegate:latest")
TRAIN_IMAGE = os.environ.get("OEGATE_TRAIN_IMAGE", "oegate-train:latest")
PROMETHEUS_IMAGE = os.environ.get("OEGATE_PROMETHEUS_IMAGE", "oegate-prometheus:latest")
RUNTIME_UID = 10001  # the Dockerfile's `oegate` user
# Compose project of tests/containers/test_compose.py; the OE pool volume is created under its name so that the
# compose train job finds the pool the first training job built (`data build-pool` takes minutes).
COMPOSE_PROJECT = "oegate-ctest"
POOL_VOLUME = f"{COMPOSE_PROJECT}_data-cache"

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("OEGATE_CONTAINER_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="builds and runs images: `make test-container` (sets OEGATE_CONTAINER_TESTS=1)")
    for item in items:
        if "tests/containers/" in item.nodeid:
            item.add_marker(skip)


def docker(*args: str, timeout_s: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs the docker client; on failure (with `check`) the assertion shows its output."""
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, logs: Callable[[], str] | None = None) -> T:
    """Polls `probe` until it returns something other than None (exceptions count as not yet); on a timeout the
    failure carries the tail of `logs()` (the container's own output: why it never became ready)."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (httpx.HTTPError, OSError) as error:
            last_error, value = error, None
        if value is not None:
            return value
        time.sleep(0.5)
    tail = f"\n--- its logs ---\n{logs()}" if logs is not None else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last error: {last_error}){tail}")


@dataclass
class Container:
    name: str

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict[str, object]:
        import json

        state: dict[str, object] = json.loads(docker("inspect", "--format", "{{json .State}}", self.name).stdout)
        return state


def container_logs(name: str, lines: int = 40) -> str:
    """The last `lines` of a container's output (stdout and stderr)."""
    result = docker("logs", "--tail", str(lines), name, check=False)
    return result.stdout + result.stderr


@contextmanager
def container(name: str, run_args: list[str]) -> Iterator[Container]:
    """`docker run -d --name NAME ...`; removed (forcibly) on exit, whatever state it is in."""
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--name", name, *run_args)
    try:
        yield Container(name)
    finally:
        docker("rm", "-f", name, check=False)


def run_training(args: list[str], mounts: list[str], timeout_s: float = 1800.0) -> str:
    """A training command in the train image, to completion, with no network at all; returns its output."""
    volumes = [word for mount in mounts for word in ("-v", mount)]
    result = docker("run", "--rm", "--network", "none", *volumes, TRAIN_IMAGE, *args, timeout_s=timeout_s)
    return result.stdout + result.stderr


@pytest.fixture(scope="session")
def pool_volume() -> Iterator[str]:
    """A named volume holding the default OE pool (`default-mixed`), built by the train image from its Debian
    packages; labelled as compose's own `data-cache` volume of COMPOSE_PROJECT."""
    docker("volume", "rm", "-f", POOL_VOLUME, check=False)
    docker(
        "volume", "create",
        "--label", f"com.docker.compose.project={COMPOSE_PROJECT}",
        "--label", "com.docker.compose.volume=data-cache",
        "--label", "com.docker.compose.version=1.29.2",
        POOL_VOLUME,
    )  # fmt: skip
    try:
        # A fresh named volume takes the image's /app/data-cache ownership (the runtime user), so it is writable.
        run_training(["data", "build-pool", "--recipe", "mixed"], [f"{POOL_VOLUME}:/app/data-cache"])
        yield POOL_VOLUME
    finally:
        docker("volume", "rm", "-f", POOL_VOLUME, check=False)


def owned_copy(source: Path, target: Path) -> Path:
    """A copy of `source` owned by the images' runtime user, for bind mounts it writes into (we are root)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".tmp-*"))
    for path in [target, *target.rglob("*")]:
        os.chown(path, RUNTIME_UID, RUNTIME_UID)
    return target


def owned_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    os.chown(path, RUNTIME_UID, RUNTIME_UID)
    return path


@pytest.fixture(scope="session")
def digit_and_noise() -> tuple[np.ndarray, int, np.ndarray]:
    """MNIST test digit 0 (a 7) as uint8 [28, 28] with its label, and clip(N(0.5, 0.5^2)) noise (seed 0)."""
    from tests.e2e.conftest import gaussian_noise
    from training.data.registry import load_in_distribution

    mnist = load_in_distribution("mnist")
    assert mnist.test.labels is not None
    return mnist.test.images[0, 0], int(mnist.test.labels[0]), gaussian_noise(0)


def committed_models() -> Path:
    return REPO / "models"


def _newest_committed(name: str) -> int:
    return max(int(p.name) for p in (REPO / "models" / name).iterdir() if p.name.isdigit())


LIVE_VERSION = str(_newest_committed("mnist-oe"))
"""The mnist-oe version the image serves out of the box (the newest committed one)."""
NEXT_VERSION = str(_newest_committed("mnist-oe") + 1)
"""The version a training job in these tests publishes and promotes."""
TEXT_LIVE_VERSION = str(_newest_committed("topics-oe"))
"""The topics-oe version the image serves out of the box."""
