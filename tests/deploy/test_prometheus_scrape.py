"""A real Prometheus (Debian's) scrapes a real service process with the project's rules loaded, and sees exactly the
predictions the service answered: counts, the accepted/rejected split, the reject-ratio recording rule and the
reject-rate alert pending."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.deploy.conftest import PROMETHEUS_DIR, prometheus_process, query, wait_for
from tests.e2e.server import service_process
from tests.service.conftest import clone_artifact

pytestmark = [pytest.mark.slow, pytest.mark.needs_apt("prometheus")]


def test_prometheus_sees_exactly_the_predictions_the_service_answered(tmp_path: Path, tiny_artifact: Path) -> None:
    models = tmp_path / "models"
    clone_artifact(tiny_artifact, models, "lenient", 1, threshold=1.0)  # anomaly_score < 1: accepts every instance
    clone_artifact(tiny_artifact, models, "strict", 1, threshold=0.0)  # rejects every instance
    env = {
        "OEGATE_MODEL_DIR": str(models),
        "OEGATE_PROVIDERS": '["CPUExecutionProvider"]',
        "OEGATE_POLL_INTERVAL_S": "0",
        "OEGATE_INTRA_OP_THREADS": "1",
    }
    (tmp_path / "prometheus").mkdir()
    rng = np.random.default_rng(0)
    with service_process(env, tmp_path / "service.log") as service_url:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
            "scrape_configs": [
                {
                    "job_name": "oegate",
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
            deadline = time.monotonic() + 30.0
            # The zero-valued counters (created when a version loads) are scraped before any prediction, so the
            # rates below have a starting point.
            wait_for(
                lambda: query(prometheus, "oegate_predictions_total"),
                lambda series: len(series) == 4 and set(series.values()) == {0.0},
                deadline,
                "zero-valued prediction counters of 2 models x 2 outcomes",
            )
            # Enough predictions (180 per model, 60 per request) to pass the alerts' traffic guard of 0.3/s over 5m.
            outcomes: Counter[str] = Counter()
            for model in ["lenient"] * 3 + ["strict"] * 3:
                body = {"instances": [{"array": rng.random((1, 28, 28)).tolist()} for _ in range(60)]}
                response = service.post(f"/v1/models/{model}/predict", json=body)
                assert response.status_code == 200, response.text
                outcomes.update("rejected" if p["reject"] else "accepted" for p in response.json()["predictions"])
            assert outcomes == {"accepted": 180, "rejected": 180}

            total = wait_for(
                lambda: query(prometheus, "sum(oegate_predictions_total)"),
                lambda vector: vector == {frozenset(): 360.0},
                deadline,
                "sum(oegate_predictions_total)",
            )
            by_outcome = query(prometheus, "sum by (outcome) (oegate_predictions_total)")
            ratio = wait_for(
                lambda: query(prometheus, "oegate:reject_ratio:rate5m"),
                lambda vector: len(vector) == 2 and not any(np.isnan(list(vector.values()))),
                deadline,
                "the recording rule oegate:reject_ratio:rate5m",
            )
            # Evaluated right after the recording rule, in the same group.
            alerts = wait_for(
                lambda: prometheus.get("/api/v1/alerts").json()["data"]["alerts"],
                lambda found: len(found) == 2,
                deadline,
                "alerts",
            )
            rules = prometheus.get("/api/v1/rules").json()["data"]["groups"]

    assert total == {frozenset(): 360.0}
    assert by_outcome == {frozenset({("outcome", k)}): float(v) for k, v in outcomes.items()}
    name = ("__name__", "oegate:reject_ratio:rate5m")
    version = ("version", "1")
    assert ratio == {
        frozenset({name, ("model", "lenient"), version}): 0.0,
        frozenset({name, ("model", "strict"), version}): 1.0,
    }
    # Both cards expect 5% rejects: 100% is too many, 0% too few; both alerts pend (they fire after 10 / 30 min).
    assert sorted((a["labels"]["alertname"], a["labels"]["model"], a["state"]) for a in alerts) == [
        ("OegateRejectRateHigh", "strict", "pending"),
        ("OegateRejectRateLow", "lenient", "pending"),
    ]
    assert [(rule["name"], rule["health"]) for group in rules for rule in group["rules"]] == [
        ("oegate:predictions:rate5m", "ok"),
        ("oegate:reject_ratio:rate5m", "ok"),
        ("oegate:expected_reject_ratio", "ok"),
        ("OegateRejectRateHigh", "ok"),
        ("OegateRejectRateLow", "ok"),
        ("OegateModelLoadFailures", "ok"),
        ("OegateLatencyHigh", "ok"),
        ("OegateServerErrors", "ok"),
        ("OegateOverloaded", "ok"),
        ("OegateTargetDown", "ok"),
    ]
