"""The Grafana dashboard (deploy/grafana/dashboards/oegate.json), checked without Grafana (no Debian package, no
PyPI or npm distribution of the server): its JSON model, that every PromQL expression names only series the service
exports or the alert rules record, and that a real Prometheus scraping a real service accepts every expression and
answers the key panels after some traffic."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import ANOMALY_SCORE_BUCKETS
from tests.deploy.conftest import GRAFANA_DIR, PROMETHEUS_DIR, load_yaml, prometheus_process, wait_for
from tests.e2e.server import service_process
from tests.service.conftest import clone_artifact, make_settings, running

DASHBOARD = GRAFANA_DIR / "dashboards" / "oegate.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24
# What Grafana puts in place of its own variables when it sends a query; `$model` and `$version` are the dashboard's.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# Metrics the service exports that the dashboard leaves out, and why.
NOT_ON_THE_DASHBOARD = {
    # A version leaving service without a replacement shows in the served-versions table; the counter has no
    # series until it happens. (Family names: a counter's family drops `_total`.)
    "oegate_model_unloads",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    model: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return model


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in panels(dashboard) if panel["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def label_values_selector(query: str) -> str:
    """`label_values(SELECTOR, label)` -> SELECTOR (the series whose label values a variable lists)."""
    match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
    assert match, f"not a label_values(selector, label) query: {query}"
    return match[1]


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable's series selector."""
    found = [
        (f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in query_panels(dashboard)
        for target in panel["targets"]
    ]
    found += [
        (f"variable {name}", label_values_selector(variable["query"]["query"]))
        for name, variable in variables(dashboard).items()
        if variable["type"] == "query"
    ]
    return found


def substitute(expr: str, model: str, version: str = ".*") -> str:
    """The query Grafana would send for `model` (a model's name, or `.*` for All) and `version`."""
    for variable, value in {**GRAFANA_INTERVALS, "$model": model, "$version": version}.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a variable the tests do not know is left in {expr}"
    return expr


PROMQL_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"})
PROMQL_WORDS |= {"unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions or aggregations (followed by
    `(`), keywords, label names (inside `{...}` or a `by (...)`-style list), durations or string contents."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # range and subquery durations
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])[a-zA-Z_:][\w:]*", text):
        following = text[match.end() :].lstrip()
        if match[0].lower() not in PROMQL_WORDS and not following.startswith("("):
            names.add(match[0])
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('rate(oegate_predictions_total{outcome="rejected"}[5m])', {"oegate_predictions_total"}),
        ("1 - max by (model, version) (oegate_model_acceptance_target)", {"oegate_model_acceptance_target"}),
        (
            "histogram_quantile(0.99, sum by (le) (rate(oegate_anomaly_score_bucket[1m])))",
            {"oegate_anomaly_score_bucket"},
        ),
        (
            "oegate:reject_ratio:rate5m / on (model, version) oegate:expected_reject_ratio",
            {
                "oegate:reject_ratio:rate5m",
                "oegate:expected_reject_ratio",
            },
        ),
        ('x{route=~".*/(predict|infer)", le="1e-3"} offset 15m > bool 1e3 unless y', {"x", "y"}),
        ('sum by (reason, model) (oegate_request_errors_total{model=~"(a|b)|none"})', {"oegate_request_errors_total"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_dashboard_is_a_grafana_dashboard_model(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "oegate-overview" and len(dashboard["uid"]) <= 40  # Grafana's uid limit
    assert dashboard["title"] and dashboard["schemaVersion"] >= 39
    assert "id" not in dashboard or dashboard["id"] is None  # an id would clash with the instance's own
    all_panels = list(panels(dashboard))
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(grid) and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, f"{panel['title']} leaves the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    for panel in query_panels(dashboard):
        assert panel["title"] and panel.get("description"), f"panel {panel['id']} needs a title and a description"
        assert panel["type"] in {"timeseries", "heatmap", "stat", "table"}
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        if panel["type"] == "heatmap":
            # Grafana reads Prometheus buckets as a heatmap only from `format: heatmap` (sorted by `le`, de-cumulated).
            assert all(target["format"] == "heatmap" for target in panel["targets"]), panel["title"]
            assert panel["options"]["calculate"] is False, panel["title"]


def test_every_panel_queries_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    templating = variables(dashboard)
    datasource = templating["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for panel in query_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, f"{panel['title']} {target['refId']}"
    for name in ("model", "version"):
        variable = templating[name]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE
        assert variable["query"]["query"].startswith("label_values(") and variable["query"]["query"].endswith(
            f", {name})"
        )
        # All is the regex `.*`, which every query uses with `=~`.
        assert variable["includeAll"] is True and variable["allValue"] == ".*"
    for where, expr in expressions(dashboard):
        for selector in re.findall(r"\w+=~?\"[^\"]*\$(?:model|version)[^\"]*\"", expr):
            assert "=~" in selector, f"{where}: a multi-value variable needs =~, not = ({selector})"


def exported_families_and_samples(text: str) -> tuple[set[str], set[str]]:
    """Metric family names and sample names (histograms' `_bucket`, `_sum`, `_count`; counters' `_total`) of an
    exposition."""
    families = list(text_string_to_metric_families(text))
    return {family.name for family in families}, {sample.name for family in families for sample in family.samples}


def recording_rules() -> set[str]:
    groups = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def served_models(tmp_path: Path, tiny_artifact: Path) -> Path:
    """lenient (accepts everything), strict (rejects everything) and broken (a graph that fails its checksum, so the
    load-failure counter has a series)."""
    models = tmp_path / "models"
    clone_artifact(tiny_artifact, models, "lenient", 1, threshold=1.0)
    clone_artifact(tiny_artifact, models, "strict", 1, threshold=0.0)
    with (clone_artifact(tiny_artifact, models, "broken", 1) / "model.onnx").open("ab") as graph:
        graph.write(b"\0")
    return models


@pytest.mark.anyio
async def test_every_expression_names_only_series_the_service_exports(
    dashboard: dict[str, Any], tmp_path: Path, tiny_artifact: Path
) -> None:
    instances = [{"array": np.zeros((1, 28, 28)).tolist()}] * 3
    settings = make_settings(served_models(tmp_path, tiny_artifact), capture_dir=tmp_path / "captures")
    async with running(settings) as (_, client):
        for model in ("lenient", "strict"):
            assert (await client.post(f"/v1/models/{model}/predict", json={"instances": instances})).status_code == 200
        assert (await client.post("/v1/models/nope/predict", json={"instances": instances})).status_code == 404
        # Capture counts a sample once its writer thread has stored it, shortly after the response.
        for _ in range(500):
            exposition = (await client.get("/metrics")).text
            if "oegate_captures_total{" in exposition:
                break
            await asyncio.sleep(0.01)
    families, samples = exported_families_and_samples(exposition)
    known = samples | recording_rules()
    used: set[str] = set()
    for where, expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        assert names <= known, f"{where}: {sorted(names - known)} are neither exported nor recorded"
        used |= names
    # A histogram has no series under its bare name: only its _bucket, _sum and _count.
    assert "oegate_anomaly_score" not in samples and "oegate_anomaly_score_bucket" in samples
    # Every metric of the service is on the dashboard, directly or through a recording rule, unless listed above.
    rule_inputs = {
        name
        for group in load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
        for rule in group["rules"]
        if rule.get("record") in used
        for name in metric_names(rule["expr"])
    }
    # (prometheus_client also exports each counter's and histogram's creation time as a `_created` gauge.)
    oegate_families = {name for name in families if name.startswith("oegate_") and not name.endswith("_created")}
    shown = {family for family in oegate_families for name in used | rule_inputs if name.startswith(family)}
    assert oegate_families - shown == NOT_ON_THE_DASHBOARD


def query_result(prometheus: httpx.Client, expr: str) -> list[dict[str, Any]]:
    """An instant query's result list; a PromQL error (a 400 with status "error") fails with Prometheus' message."""
    response = prometheus.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body.get('error', body)}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def instant_values(prometheus: httpx.Client, expr: str) -> list[float]:
    return [float(item["value"][1]) for item in query_result(prometheus, expr)]


Answers = dict[str, list[list[dict[str, Any]]]]
"""Panel title -> each target's instant-query result."""
EMPTY_WHEN_HEALTHY = {"Server errors and refusals"}  # the capture panel's drops too, but its other series fill it
"""Panels that may show nothing after the traffic below (no 500s, no 503s); every other panel must show numbers."""


def shows_numbers(answers: Answers) -> bool:
    return all(
        result and not any(np.isnan(float(item["value"][1])) for item in result)
        for title, results in answers.items()
        if title not in EMPTY_WHEN_HEALTHY
        for result in results
    )


@pytest.mark.slow
@pytest.mark.needs_apt("prometheus")
def test_prometheus_answers_every_dashboard_query(
    dashboard: dict[str, Any], tmp_path: Path, tiny_artifact: Path
) -> None:
    env = {
        "OEGATE_MODEL_DIR": str(served_models(tmp_path, tiny_artifact)),
        "OEGATE_PROVIDERS": '["CPUExecutionProvider"]',
        "OEGATE_POLL_INTERVAL_S": "0",
        "OEGATE_INTRA_OP_THREADS": "1",
        "OEGATE_REQUIRED_MODELS": '["lenient", "strict"]',  # ready without broken, which never loads
        "OEGATE_CAPTURE_DIR": str(tmp_path / "captures"),  # the strict model's rejections fill the capture panel
    }
    (tmp_path / "prometheus").mkdir()
    rng = np.random.default_rng(0)
    with service_process(env, tmp_path / "service.log") as service_url:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
            "scrape_configs": [
                {
                    "job_name": "oegate",  # as in deploy/prometheus/prometheus.yml: the memory panel selects it
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [service_url.removeprefix("http://")]}],
                }
            ],
        }
        with (
            prometheus_process(config, tmp_path / "prometheus") as prometheus_url,
            httpx.Client(base_url=prometheus_url, timeout=5.0) as prometheus,
            httpx.Client(base_url=service_url, timeout=30.0) as service,
        ):
            deadline = time.monotonic() + 90.0
            # Counters start at zero when a version loads; a scrape of them first gives rate() its starting point.
            wait_for(
                lambda: query_result(prometheus, "oegate_predictions_total"),
                lambda series: len(series) == 4,
                deadline,
                "zero-valued prediction counters",
            )
            # Two rounds: a histogram's (and an error counter's) series appears at its first observation, already
            # counting it, and rate() sees no rise in a series' first sample; the second round is what rate() sees.
            for round_number in (1, 2):
                for model in ("lenient", "strict"):
                    body = {"instances": [{"array": rng.random((1, 28, 28)).tolist()} for _ in range(20)]}
                    assert service.post(f"/v1/models/{model}/predict", json=body).status_code == 200
                assert service.post("/v1/models/nope/predict", json=body).status_code == 404
                total = 40.0 * round_number
                wait_for(
                    lambda: instant_values(prometheus, "sum(oegate_predictions_total)"),
                    lambda totals: totals == [total],  # noqa: B023 (called before the loop moves on)
                    deadline,
                    f"round {round_number}'s predictions scraped",
                )

            def answers(model: str) -> Answers:
                return {
                    panel["title"]: [
                        query_result(prometheus, substitute(target["expr"], model)) for target in panel["targets"]
                    ]
                    for panel in query_panels(dashboard)
                }

            # Each panel shows numbers once Prometheus has two scrapes after the traffic and has run the rules
            # (before that, rates are 0 / 0 = NaN).
            for_one_model, for_all_models = wait_for(
                lambda: (answers("strict"), answers(".*")),
                lambda found: all(shows_numbers(answers) for answers in found),
                deadline,
                "every panel's queries answered with numbers",
            )
            for name, variable in variables(dashboard).items():
                if variable["type"] == "query":
                    selector = substitute(label_values_selector(variable["query"]["query"]), ".*")
                    assert query_result(prometheus, selector), f"variable {name} would list nothing"

    def by_model(result: list[dict[str, Any]]) -> dict[str, float]:
        return {item["metric"]["model"]: round(float(item["value"][1]), 6) for item in result}

    rejected, expected = for_all_models["Reject rate vs expected"]
    assert by_model(rejected) == {"lenient": 0.0, "strict": 1.0}
    assert by_model(expected) == {"lenient": 0.05, "strict": 0.05}  # the tiny artifact's card: 95% acceptance
    assert by_model(for_one_model["Reject rate vs expected"][0]) == {"strict": 1.0}  # $model selects
    (ratio_over_expected,) = for_all_models["Reject rate over the expected rate (5m)"]
    assert by_model(ratio_over_expected) == {"lenient": 0.0, "strict": 20.0}
    (buckets,) = for_all_models["Anomaly score distribution"]
    assert {item["metric"]["le"] for item in buckets} == {str(bound) for bound in ANOMALY_SCORE_BUCKETS} | {"+Inf"}
    *quantiles, threshold = for_all_models["Anomaly score quantiles vs threshold"]
    assert by_model(threshold) == {"lenient": 1.0, "strict": 0.0}
    assert all(0.0 < float(item["value"][1]) <= 1.0 for result in quantiles for item in result)
    # All models: the two served ones, and `none` for the predict request that named an unknown model.
    latency = for_all_models["Request latency (predict / infer)"]
    assert all(set(by_model(result)) == {"lenient", "strict", "none"} for result in latency)
    (errors,) = for_all_models["Errors by reason and model"]
    assert {(item["metric"]["reason"], item["metric"]["model"]) for item in errors} == {("not_found", "none")}
    (failures,) = for_all_models["Model load failures"]
    assert by_model(failures) == {"broken": 1.0}
