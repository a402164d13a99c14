"""deploy/prometheus: promtool validates the rules and the scrape config and runs the rules' unit tests
(alerts_test.yml), and every metric and label the rules select is one the service really exports."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.errors import ServiceError
from tests.deploy.conftest import PROMETHEUS_DIR, PROMTOOL, load_yaml, run
from tests.service.conftest import clone_artifact, make_settings, running

ALERTS = PROMETHEUS_DIR / "alerts.yml"
SERVICE_ERROR_REASONS = {cls.reason for cls in (ServiceError, *ServiceError.__subclasses__())} | {"internal"}
SELECTOR = re.compile(r"\b(oegate_[a-z0-9_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


@pytest.mark.needs_apt("prometheus")
def test_promtool_accepts_the_rules() -> None:
    result = run([PROMTOOL, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


@pytest.mark.needs_apt("prometheus")
def test_the_rules_unit_tests_pass() -> None:
    # Reject rate against the card's expected rate, both directions, with a traffic guard; load failures, p99
    # latency, 500s, 503s and a target that stops answering.
    result = run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.needs_apt("prometheus")
def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    # The config names the rules by their path inside the Prometheus container; point it at the repository's file.
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(ALERTS)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def rule_expressions() -> list[str]:
    return [rule["expr"] for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def test_the_rules_select_metrics_by_name() -> None:
    # A guard for the test below: it must see every rule's metrics.
    names = {name for expr in rule_expressions() for name, _ in SELECTOR.findall(expr)}
    assert names == {
        "oegate_predictions_total",
        "oegate_model_acceptance_target",
        "oegate_model_load_failures_total",
        "oegate_request_duration_seconds_bucket",
        "oegate_request_duration_seconds_count",
        "oegate_request_errors_total",
    }


@pytest.mark.anyio
async def test_every_metric_and_label_the_rules_use_is_exported(
    tmp_path: Path, model_dir: Path, tiny_artifact: Path
) -> None:
    # A broken version too, so the load-failure counter has a sample.
    with (clone_artifact(tiny_artifact, model_dir, "broken", 1) / "model.onnx").open("ab") as graph:
        graph.write(b"\0")  # a checksum mismatch (a directory without card.json is not a failure, not counted)
    body = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]}
    async with running(make_settings(model_dir)) as (_, client):
        assert (await client.post("/v1/models/tiny/predict", json=body)).status_code == 200
        assert (await client.post("/v1/models/nosuch/predict", json=body)).status_code == 404  # an error counted
        exposition = (await client.get("/metrics")).text
    exported: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            exported.setdefault(sample.name, []).append(sample.labels)

    for expr in rule_expressions():
        selected = SELECTOR.findall(expr)
        for name, matchers in selected:
            assert name in exported, f"{name} (in {expr!r}) is not exported"
            for label, operator, value in MATCHER.findall(matchers):
                assert operator in ("=", "=~"), f"{name}: only = and =~ matchers are checked here"
                values = {labels.get(label) for labels in exported[name]}
                if label == "reason":  # error reasons the service can count; this test does not provoke each
                    values |= SERVICE_ERROR_REASONS
                matches = [
                    v for v in values if v is not None and (v == value if operator == "=" else re.fullmatch(value, v))
                ]
                assert matches, f"{name}{{{label}{operator}{value!r}}}: exported values are {values}"
        for grouping in GROUPING.findall(expr):
            for label in (label.strip() for label in grouping.split(",")):
                for name, _ in selected:
                    assert all(label in labels for labels in exported[name]), f"{name} has no label {label!r}"
