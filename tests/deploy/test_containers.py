"""The Dockerfile and docker-compose.yml, checked without a Docker engine: hadolint, the stage layout, the build
context, the HEALTHCHECK run against a real server, and `docker-compose config`'s resolved view of the stack."""

from __future__ import annotations

import json
import os
import re
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    DOCKERFILE,
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    Stage,
    dockerfile_stages,
    load_yaml,
    run,
    venv_tool,
)
from tests.e2e.server import REPO, free_port, service_process

DOCKER_COMPOSE = "/usr/bin/docker-compose"


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {stage.name: stage for stage in dockerfile_stages()}


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, REPO / "deploy" / "docker" / "prometheus.Dockerfile"])
def test_hadolint_finds_nothing_in_the_dockerfiles(dockerfile: Path) -> None:
    # JSON output lists findings of every severity (style and info included), whatever the failure threshold.
    result = run([venv_tool("hadolint"), "--no-color", "--format", "json", str(dockerfile)])
    assert (result.returncode, json.loads(result.stdout or "null")) == (0, []), result.stdout + result.stderr


def test_the_service_is_the_default_target_and_train_a_named_one() -> None:
    names = [stage.name for stage in dockerfile_stages()]
    assert names == ["base", "train", "service"]  # `docker build` without --target builds the last stage


@pytest.mark.parametrize("target", ["service", "train"])
def test_targets_run_as_a_non_root_numeric_user(stages: dict[str, Stage], target: str) -> None:
    uid, gid = stages[target].user()
    assert uid != 0 and gid not in (None, 0)
    # The base stage creates that user, so file ownership and `id` agree with the numbers.
    useradd = " ".join(stages["base"].arguments("RUN"))
    assert f"--uid {uid}" in useradd and f"--gid {gid}" in useradd


def test_the_service_stage_listens_where_its_healthcheck_asks(stages: dict[str, Stage]) -> None:
    service = stages["service"]
    env = {**stages["base"].env(), **service.env()}
    assert service.arguments("EXPOSE") == [env["OEGATE_PORT"]]
    assert env["OEGATE_HOST"] == "0.0.0.0"  # reachable from outside the container
    command = service.healthcheck_command()
    assert "/v2/health/ready" in command[-1] and "OEGATE_PORT" in command[-1]
    assert stages["train"].arguments("HEALTHCHECK") == []


@pytest.mark.slow
def test_the_healthcheck_command_passes_on_a_ready_server_and_fails_without_one(
    stages: dict[str, Stage], model_dir: Path, tmp_path: Path
) -> None:
    command = stages["service"].healthcheck_command()
    assert command[0] == "python"
    argv = [sys.executable, *command[1:]]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    settings = {"OEGATE_MODEL_DIR": str(model_dir), "OEGATE_PROVIDERS": '["CPUExecutionProvider"]'}
    with service_process(settings, tmp_path / "service.log") as url:
        healthy = run(argv, env={**env, "OEGATE_PORT": url.rsplit(":", 1)[1]})
    unhealthy = run(argv, env={**env, "OEGATE_PORT": str(free_port())})
    assert healthy.returncode == 0, healthy.stderr
    assert unhealthy.returncode != 0 and "Connection refused" in unhealthy.stderr


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in (REPO / ".dockerignore").read_text().splitlines())
    return [line.lstrip("/") for line in lines if line and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: a pattern matches it or one of its parent folders."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch(prefix, pattern) for prefix in prefixes for pattern in patterns)


def test_every_copied_path_exists_and_is_in_the_build_context(stages: dict[str, Stage]) -> None:
    patterns = [p for p in dockerignore_patterns() if not p.startswith("!")]
    sources = []
    for stage in stages.values():
        for args in stage.arguments("COPY"):
            words = [word for word in args.split() if not word.startswith("--")]
            sources += words[:-1]
    assert {"service", "training", "models", "pyproject.toml"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: missing from the repository"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for local_state in (".git", ".venv", "runs", "data-cache", "tests", "models/mnist-oe/.tmp-2-abcd1234"):
        assert ignored(local_state, patterns), f"{local_state} would be sent to the Docker daemon"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as docker-compose 1.29 resolves it (defaults filled in, paths absolute, env interpolated)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OEGATE_", "COMPOSE_"))}
    result = run([DOCKER_COMPOSE, "-f", "docker-compose.yml", "config"], env=env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (source, "ro" or "rw") of a resolved compose service's volumes: `source:target:mode`
    strings (docker-compose 1.x) or long-syntax mappings (Compose v2)."""
    result = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, mode = volume.split(":")
        else:
            source, target = volume["source"], volume["target"]
            mode = "ro" if volume.get("read_only") else "rw"
        result[target] = (source, mode)
    return result


@pytest.mark.needs_apt("docker-compose")
def test_compose_runs_the_service_prometheus_and_grafana_and_trains_on_demand(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"service", "prometheus", "grafana", "train"}
    assert services["train"]["profiles"] == ["train"]
    assert not any("profiles" in services[name] for name in ("service", "prometheus", "grafana"))
    stage_names = {stage.name for stage in dockerfile_stages()}
    assert services["service"]["build"]["target"] == "service" and "service" in stage_names
    assert services["train"]["build"]["target"] == "train" and "train" in stage_names
    assert services["service"]["build"]["args"] == {"CUDA": "0"}  # CPU unless OEGATE_CUDA=1
    assert [int(port["target"]) for port in services["service"]["ports"]] == [8000]


@pytest.mark.needs_apt("docker-compose")
def test_service_and_train_share_the_models_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    model_dir = services["service"]["environment"]["OEGATE_MODEL_DIR"]
    assert mounts(services["service"])[model_dir] == ("models", "rw")
    # The train image's WORKDIR is /app and training publishes into models/ under it.
    assert mounts(services["train"])["/app/models"] == ("models", "rw")
    assert model_dir == "/app/models" and "models" in compose["volumes"]


@pytest.mark.needs_apt("docker-compose")
def test_prometheus_loads_the_projects_scrape_config_and_rules(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    volumes = mounts(prometheus)
    by_source = {source: (target, mode) for target, (source, mode) in volumes.items()}
    config_target, config_mode = by_source[str(PROMETHEUS_DIR / "prometheus.yml")]
    rules_target, rules_mode = by_source[str(PROMETHEUS_DIR / "alerts.yml")]
    assert (config_mode, rules_mode) == ("ro", "ro")
    assert f"--config.file={config_target}" in prometheus["command"]
    scrape_config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert scrape_config["rule_files"] == [rules_target]
    (job,) = scrape_config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["service:8000"]}]  # compose's service name and container port
    assert prometheus["depends_on"]["service"]["condition"] == "service_started"


@pytest.mark.needs_apt("docker-compose")
def test_grafana_is_provisioned_with_the_projects_datasource_and_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    repository, _, tag = grafana["image"].rpartition(":")
    assert repository == "grafana/grafana-oss" and re.fullmatch(r"\d+\.\d+\.\d+", tag), "pin a release, not latest"
    assert [int(port["target"]) for port in grafana["ports"]] == [3000]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_started"
    by_source = {source: (target, mode) for target, (source, mode) in mounts(grafana).items()}
    # Grafana reads provisioning/{datasources,dashboards}/*.yml under this path; the provider then loads the
    # dashboards from where compose mounts them.
    assert by_source[str(GRAFANA_DIR / "provisioning")] == ("/etc/grafana/provisioning", "ro")
    dashboards_target, dashboards_mode = by_source[str(GRAFANA_DIR / "dashboards")]
    assert dashboards_mode == "ro"
    (provider,) = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "oegate.yml")["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == dashboards_target
    environment = grafana["environment"]
    assert environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{dashboards_target}/oegate.json"
    assert (GRAFANA_DIR / "dashboards" / "oegate.json").is_file()
    # Anonymous visitors may look, not edit.
    assert (environment["GF_AUTH_ANONYMOUS_ENABLED"], environment["GF_AUTH_ANONYMOUS_ORG_ROLE"]) == ("true", "Viewer")
    # The data source points at compose's Prometheus (service name, container port) and knows its scrape interval.
    (datasource,) = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    prometheus_port = {int(port["target"]) for port in compose["services"]["prometheus"]["ports"]}
    assert datasource["url"] == "http://prometheus:9090" and prometheus_port == {9090}
    scrape_interval = load_yaml(PROMETHEUS_DIR / "prometheus.yml")["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape_interval
