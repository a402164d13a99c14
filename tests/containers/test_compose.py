"""docker-compose.yml run for real with Debian's docker-compose: `up` starts the service and Prometheus (which
scrapes it) from the local images, and `--profile train run train` trains a version that `promote` makes live and
the running service then serves. Grafana is left out: its image has no local build and there is no registry."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.containers.conftest import (
    COMPOSE_PROJECT,
    DOCKER,
    LIVE_VERSION,
    NEXT_VERSION,
    PROMETHEUS_IMAGE,
    TEXT_LIVE_VERSION,
    wait_for,
)
from tests.e2e.server import REPO, free_port

DOCKER_COMPOSE = os.environ.get("DOCKER_COMPOSE", "docker-compose")


@dataclass
class Stack:
    env: dict[str, str]
    service_url: str
    prometheus_url: str

    def compose(self, *args: str, timeout_s: float = 300.0) -> str:
        command = [DOCKER_COMPOSE, "-f", str(REPO / "docker-compose.yml"), "-p", COMPOSE_PROJECT, *args]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False)
        assert result.returncode == 0, f"{' '.join(command)}: {result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """`docker-compose up -d service prometheus` on free host ports; `down` and its volumes removed afterwards (the
    OE pool volume, shared with test_images, is the session fixture's to remove)."""
    service_port, prometheus_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OEGATE_", "COMPOSE_"))},
        "OEGATE_HTTP_PORT": str(service_port),
        "PROMETHEUS_PORT": str(prometheus_port),
        "PROMETHEUS_IMAGE": PROMETHEUS_IMAGE,
    }
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    stack = Stack(env, f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{prometheus_port}")
    try:
        stack.compose("up", "-d", "--no-build", "service", "prometheus")
        yield stack
    finally:
        stack.compose("down", "--timeout", "30")
        for volume in ("models", "staging", "runs"):
            subprocess.run([DOCKER, "volume", "rm", "-f", f"{COMPOSE_PROJECT}_{volume}"], capture_output=True)


def test_compose_up_serves_the_committed_models(stack: Stack) -> None:
    ready = lambda: httpx.get(f"{stack.service_url}/v2/health/ready").status_code == 200 or None  # noqa: E731
    wait_for(ready, 120, "the service", lambda: stack.compose("logs", "--tail", "40", "service"))
    models = {model["name"]: model["version"] for model in httpx.get(f"{stack.service_url}/v1/models").json()["models"]}
    assert models == {
        "mnist-oe": LIVE_VERSION,
        "mnist-baseline": LIVE_VERSION,
        "topics-oe": TEXT_LIVE_VERSION,
        "topics-baseline": TEXT_LIVE_VERSION,
    }


def test_prometheus_scrapes_the_service_by_its_compose_name(stack: Stack) -> None:
    def scraped() -> list[dict[str, object]] | None:
        query = {"query": 'up{job="oegate"}'}
        result: list[dict[str, object]] = httpx.get(f"{stack.prometheus_url}/api/v1/query", params=query).json()[
            "data"
        ]["result"]
        return result if result and result[0]["value"][1] == "1" else None  # type: ignore[index]

    (sample,) = wait_for(scraped, 90, "Prometheus' first successful scrape of service:8000")
    assert sample["metric"] == {"__name__": "up", "instance": "service:8000", "job": "oegate"}
    rules = httpx.get(f"{stack.prometheus_url}/api/v1/rules").json()["data"]["groups"]
    assert rules, "deploy/prometheus/alerts.yml was not loaded"


@pytest.mark.slow
def test_a_train_profile_job_is_promoted_and_served(stack: Stack, pool_volume: str) -> None:
    # pool_volume is this project's `data-cache` volume, with the OE pool already built in it.
    stack.compose(
        "--profile", "train", "run", "--rm", "train",
        "pipeline", "--config", "configs/mnist5k-quick.toml",
        "--set", "export.name='mnist-oe'", "--set", "export.baseline_name='mnist-baseline'",
        "--set", f"export.version={NEXT_VERSION}", "--set", "export.models_dir='/app/staging'",
        timeout_s=1800,
    )  # fmt: skip
    assert httpx.get(f"{stack.service_url}/v1/models/mnist-oe").json()["version"] == LIVE_VERSION  # staged, not live
    stack.compose("--profile", "train", "run", "--rm", "train", "promote", "mnist-oe", NEXT_VERSION)

    def served_version() -> str | None:
        version: str = httpx.get(f"{stack.service_url}/v1/models/mnist-oe").json()["version"]
        return version if version == NEXT_VERSION else None

    wait_for(served_version, 60, f"the service to load mnist-oe {NEXT_VERSION} (compose polls every 10 s)")
    metrics = httpx.get(f"{stack.service_url}/metrics").text
    assert (
        f'oegate_model_info{{model="mnist-oe",provider="CPUExecutionProvider",version="{NEXT_VERSION}"}} 1.0' in metrics
    )
