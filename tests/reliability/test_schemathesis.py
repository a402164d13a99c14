"""Hostile input from the API description: schemathesis generates requests for every operation of the app's
OpenAPI schema (in-process ASGI, lifespan running in schemathesis's event loop) and runs all its checks on each
response. Bounded: `MAX_EXAMPLES` per operation, no shrinking in the first pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from service.app import create_app
from tests.service.conftest import clone_artifact, make_settings

ADMIN = "a-long-enough-admin-token"
MAX_EXAMPLES = 10


@pytest.fixture
def app(tmp_path: Path, tiny_artifact: Path) -> Iterator[FastAPI]:
    clone_artifact(tiny_artifact, tmp_path / "models", "tiny", 1)
    # Capture on, so that its admin routes (list, delete) meet generated queries with a real store behind them.
    yield create_app(make_settings(tmp_path / "models", admin_token=ADMIN, capture_dir=tmp_path / "captures"))
    asgi.shutdown_lifespans()


# A well-formed request with unusable content (bytes that are no image, a model's wrong shape) is a documented 422:
# schema-valid data may still be refused with it, or with 503 (model not ready, overloaded).
CONFIG = {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "422", "503"]}}}


def test_every_operation_survives_generated_requests(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=SchemathesisConfig.from_dict(CONFIG))
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
            database=None,
            derandomize=True,  # the same examples on every run: CI failures reproduce
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate()

        try:
            run()
        except BaseException as e:  # report every operation's failure, not just the first
            failures[operation.label] = str(e)[:2000]
    assert operations >= 20
    assert failures == {}, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
