"""Pins and rollback: `OEGATE_PIN`, the admin pin/unpin endpoints, and zero failed requests while pinning and
unpinning under concurrent load."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings
from service.shared_pins import SharedPins
from tests.service.conftest import clone_artifact, make_settings

pytestmark = pytest.mark.anyio
ADMIN = "a-long-enough-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
REQUEST = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]}


@pytest.fixture
def three_versions(model_dir: Path, tiny_artifact: Path) -> Path:
    """`tiny` versions 1 (from model_dir), 2 and 3."""
    for version in (2, 3):
        clone_artifact(tiny_artifact, model_dir, "tiny", version)
    return model_dir


def test_pins_are_read_as_name_equals_version_pairs(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OEGATE_PIN", "tiny=2, other-model=10")
    assert Settings(model_dir=model_dir).pin == {"tiny": 2, "other-model": 10}
    monkeypatch.setenv("OEGATE_PIN", "")
    assert Settings(model_dir=model_dir).pin == {}
    for bad in ("tiny", "tiny=latest", "tiny=0", "=2"):
        monkeypatch.setenv("OEGATE_PIN", bad)
        with pytest.raises(ValidationError, match="must be name=version with a positive integer version"):
            Settings(model_dir=model_dir)


async def test_a_pinned_model_serves_its_pin_and_rescans_do_not_move_it(serve: Any, three_versions: Path) -> None:
    async with serve(pin={"tiny": 2}, admin_token=ADMIN) as (app, client):
        assert app.state.components.registry.get("tiny").version == "2"
        reloaded = await client.post("/v1/admin/reload", headers=AUTH)
        assert reloaded.json()["models"] == {"tiny": "2"}
        assert reloaded.json()["pins"] == {"tiny": 2}
        assert (await client.post("/v1/models/tiny/predict", json=REQUEST)).json()["version"] == "2"


async def test_pin_unpin_and_refused_pins_through_the_admin_api(serve: Any, three_versions: Path) -> None:
    async with serve(admin_token=ADMIN) as (app, client):
        registry = app.state.components.registry
        assert registry.get("tiny").version == "3"
        assert (await client.put("/v1/admin/models/tiny/pin", json={"version": 1})).status_code == 401
        pinned = await client.put("/v1/admin/models/tiny/pin", json={"version": 1}, headers=AUTH)
        assert pinned.status_code == 200
        assert pinned.json() == {
            "loaded": [{"name": "tiny", "version": "1", "provider": "CPUExecutionProvider"}],
            "failed": [],
            "models": {"tiny": "1"},
            "pins": {"tiny": 1},
        }
        missing = await client.put("/v1/admin/models/tiny/pin", json={"version": 7}, headers=AUTH)
        assert missing.status_code == 404
        assert missing.json() == {
            "error": "cannot pin model 'tiny' to version 7: no version directory tiny/7 with a card"
        }
        assert (registry.get("tiny").version, dict(registry.pins)) == ("1", {"tiny": 1})  # unchanged
        bad = await client.put("/v1/admin/models/tiny/pin", json={"version": 0}, headers=AUTH)
        assert bad.status_code == 422
        unpinned = await client.delete("/v1/admin/models/tiny/pin", headers=AUTH)
        assert unpinned.status_code == 200
        assert (unpinned.json()["models"], unpinned.json()["pins"]) == ({"tiny": "3"}, {})


async def test_workers_share_pins_through_the_pin_file(three_versions: Path, tmp_path: Path) -> None:
    """Two apps as two workers (service/workers.py) over one pin file: a pin through either one's admin API is
    served at once by it and by the other at its next scan; a refused pin changes the file for neither."""
    pins = tmp_path / "pins.json"
    SharedPins(pins).write({"tiny": 2})  # what the supervisor writes from OEGATE_PIN
    settings = make_settings(three_versions, workers=2, poll_interval_s=60, admin_token=ADMIN)
    first, second = create_app(settings, shared_pins=pins), create_app(settings, shared_pins=pins)
    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        registries = [app.state.components.registry for app in (first, second)]
        transport = httpx.ASGITransport(app=first)
        async with httpx.AsyncClient(transport=transport, base_url="http://oegate.test") as client:
            assert [r.get("tiny").version for r in registries] == ["2", "2"]
            pinned = await client.put("/v1/admin/models/tiny/pin", json={"version": 1}, headers=AUTH)
            assert (pinned.status_code, pinned.json()["models"], pinned.json()["pins"]) == (
                200,
                {"tiny": "1"},
                {"tiny": 1},
            )
            assert [r.get("tiny").version for r in registries] == ["1", "2"]  # the other one: at its next scan
            await registries[1].reload()
            assert [r.get("tiny").version for r in registries] == ["1", "1"]
            missing = await client.put("/v1/admin/models/tiny/pin", json={"version": 7}, headers=AUTH)
            assert missing.status_code == 404 and SharedPins(pins).read() == {"tiny": 1}
        await registries[1].unpin("tiny")  # through the other worker
        await registries[0].reload()
        assert [r.get("tiny").version for r in registries] == ["3", "3"]
        assert SharedPins(pins).read() == {} and [dict(r.pins) for r in registries] == [{}, {}]


async def test_one_of_several_workers_without_a_pin_file_refuses_pins(serve: Any, three_versions: Path) -> None:
    """An app built by hand as one of two workers, without the pin file: a pin would reach it alone."""
    async with serve(workers=2, poll_interval_s=60, pin={"tiny": 2}, admin_token=ADMIN) as (app, client):
        for response in (
            await client.put("/v1/admin/models/tiny/pin", json={"version": 1}, headers=AUTH),
            await client.delete("/v1/admin/models/tiny/pin", headers=AUTH),
        ):
            assert response.status_code == 403
            assert "without a shared pin file" in response.json()["error"]
        registry = app.state.components.registry
        assert (registry.get("tiny").version, dict(registry.pins)) == ("2", {"tiny": 2})


async def test_a_pin_to_a_broken_version_is_refused_and_the_served_one_kept(serve: Any, three_versions: Path) -> None:
    with (three_versions / "tiny" / "2" / "model.onnx").open("ab") as graph:
        graph.write(b"\0")
    async with serve(admin_token=ADMIN) as (app, client):
        refused = await client.put("/v1/admin/models/tiny/pin", json={"version": 2}, headers=AUTH)
        assert refused.status_code == 404
        assert refused.json()["error"].startswith("cannot pin model 'tiny' to version 2: ")
        assert "sha256 mismatch" in refused.json()["error"]
        assert app.state.components.registry.get("tiny").version == "3"
        assert dict(app.state.components.registry.pins) == {}


async def test_pinning_and_unpinning_under_load_fails_no_request(serve: Any, three_versions: Path) -> None:
    """Eight clients predict in a loop while the version is rolled back to 1 and forward to 3 five times; every
    response is 200, and both versions answered."""
    async with serve(admin_token=ADMIN) as (_, client):
        stop = asyncio.Event()
        statuses: Counter[int] = Counter()
        versions: Counter[str] = Counter()

        async def predict_until_stopped() -> None:
            while not stop.is_set():
                response = await client.post("/v1/models/tiny/predict", json=REQUEST)
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    versions[response.json()["version"]] += 1

        clients = [asyncio.ensure_future(predict_until_stopped()) for _ in range(8)]
        for _ in range(5):
            before = sum(statuses.values())
            pinned = await client.put("/v1/admin/models/tiny/pin", json={"version": 1}, headers=AUTH)
            assert pinned.json()["models"] == {"tiny": "1"}
            while sum(statuses.values()) < before + 16:  # let requests run on version 1
                await asyncio.sleep(0.01)
            before = sum(statuses.values())
            unpinned = await client.delete("/v1/admin/models/tiny/pin", headers=AUTH)
            assert unpinned.json()["models"] == {"tiny": "3"}
            while sum(statuses.values()) < before + 16:
                await asyncio.sleep(0.01)
        stop.set()
        await asyncio.gather(*clients)
    assert set(statuses) == {200}, statuses
    assert versions["1"] > 0 and versions["3"] > 0
