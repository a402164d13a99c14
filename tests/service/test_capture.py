"""Capture (service/capture.py, service/capture_store.py): off by default; when on, sampled inputs are stored as sent
with exact index rows; seeded sampling gives exact counts; a full queue or a failing store drops and counts, never
failing a request; retention by bytes and by age deletes the oldest; the admin API lists and deletes by time range;
the metrics say exactly what happened."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sqlite3
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from service import capture_store
from service.app import create_app
from service.capture import Capture, RawInput, encode_payload
from tests.artifacts import LABELS as IMAGE_LABELS
from tests.service.conftest import b64, clone_artifact, digit_like, make_settings, png_bytes
from tests.text_artifacts import LABELS as TEXT_LABELS

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
TEXTS = ["alpha bravo", "charlie dog", "echo foxtrot", "golf hotel"]


class Clock:
    """A settable clock (Unix seconds) for capture times and retention."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def models(tmp_path: Path, tiny_artifact: Path, text_artifact: Path) -> Path:
    """`strict` (image) and `words` (text) reject everything (threshold 0); `probe` and `open` are `tiny` as is."""
    directory = tmp_path / "models"
    clone_artifact(tiny_artifact, directory, "strict", 1, threshold=0.0)
    clone_artifact(text_artifact, directory, "words", 1, threshold=0.0)
    clone_artifact(tiny_artifact, directory, "probe", 1)
    clone_artifact(tiny_artifact, directory, "open", 1)
    return directory


@contextlib.asynccontextmanager
async def serving(
    models: Path, rng: random.Random | None = None, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Capture]]:
    app = create_app(
        make_settings(models, admin_token=ADMIN, **overrides),
        CollectorRegistry(),
        capture_rng=rng,
        capture_clock=clock or Clock(1_000_000.0),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://oegate.test") as client:
            yield app, client, app.state.components.capture


async def settled(capture: Capture) -> None:
    assert await anyio.to_thread.run_sync(capture.wait_idle, 10.0)


def metric(app: FastAPI, name: str, **labels: str) -> float | None:
    value = app.state.components.metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def rows(directory: Path) -> list[dict[str, Any]]:
    """Every index row, oldest first."""
    with capture_store.opened(directory) as connection:
        return [dict(row) for row in connection.execute("SELECT * FROM captures ORDER BY time, rowid")]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def texts_body(*texts: str) -> dict[str, Any]:
    return {"instances": [{"text": text} for text in texts]}


def v2_binary_images(images: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A V2 BYTES request with Triton's binary tensor extension (4-byte little-endian length, then the bytes)."""
    payload = b"".join(struct.pack("<I", len(image)) + image for image in images)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [len(images)],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(payload)},
                }
            ]
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return header + payload, headers


async def test_capture_is_off_by_default(models: Path, tmp_path: Path) -> None:
    settings = make_settings(models)
    assert settings.capture_dir is None
    before = sorted(path.name for path in tmp_path.iterdir())
    async with serving(models) as (_, client, capture):
        assert not capture.enabled
        png = png_bytes(digit_like(1))
        response = await client.post("/v1/models/strict/predict", json={"instances": [{"image_b64": b64(png)}]})
        assert response.status_code == 200 and response.json()["predictions"][0]["reject"] is True
        assert (await client.post("/v1/models/words/predict", json=texts_body("hello"))).status_code == 200
        listed = await client.get("/v1/admin/captures", headers=AUTH)
        deleted = await client.delete("/v1/admin/captures", headers=AUTH)
        metrics_text = (await client.get("/metrics")).text
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # no directory created anywhere
    assert (listed.status_code, listed.json()) == (404, {"error": "capture is off (OEGATE_CAPTURE_DIR is unset)"})
    assert (deleted.status_code, deleted.json()) == (404, {"error": "capture is off (OEGATE_CAPTURE_DIR is unset)"})
    assert "oegate_captures_total{" not in metrics_text
    assert "oegate_capture_dropped_total{" not in metrics_text
    assert "oegate_capture_store_bytes 0.0" in metrics_text


async def test_rejected_images_and_texts_are_stored_as_sent_with_exact_index_rows(models: Path, tmp_path: Path) -> None:
    store = tmp_path / "captures"
    clock = Clock(1_700_000_000.25)
    pngs = [png_bytes(digit_like(seed)) for seed in range(4)]
    array = (np.arange(784, dtype=np.float32).reshape(1, 28, 28) / 784.0).tolist()
    v2_body, v2_headers = v2_binary_images([pngs[2]])
    sent: list[tuple[str, str, bytes, str, str]] = [  # model, input kind, stored bytes, media type, extension
        ("strict", "image", pngs[0], "image/png", ".png"),
        ("strict", "image", pngs[1], "image/png", ".png"),
        ("strict", "image", pngs[2], "image/png", ".png"),
        ("strict", "array", b"", "application/x-npy", ".npy"),
        ("words", "text", TEXTS[0].encode(), "text/plain; charset=utf-8", ".txt"),
        ("words", "text", "naïve café ☕".encode(), "text/plain; charset=utf-8", ".txt"),
        ("words", "text", TEXTS[1].encode(), "text/plain; charset=utf-8", ".txt"),
    ]
    async with serving(models, clock=clock, capture_dir=store, capture_models="strict,words") as (app, client, cap):
        responses = [
            await client.post("/v1/models/strict/predict", json={"instances": [{"image_b64": b64(pngs[0])}]}),
            await client.post("/v1/models/strict/predict", files=[("image", ("a.png", pngs[1], "image/png"))]),
            await client.post("/v2/models/strict/infer", content=v2_body, headers=v2_headers),
            await client.post("/v1/models/strict/predict", json={"instances": [{"array": array}]}),
            await client.post("/v1/models/words/predict", json=texts_body(TEXTS[0], "naïve café ☕")),
        ]
        v2_text = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXTS[1]]}]}
        responses.append(await client.post("/v2/models/words/infer", json=v2_text))
        assert [response.status_code for response in responses] == [200] * 6
        await settled(cap)
        stored = rows(store)
        assert metric(app, "oegate_captures_total", model="strict", kind="rejected") == 4.0
        assert metric(app, "oegate_captures_total", model="words", kind="rejected") == 3.0
        assert metric(app, "oegate_capture_dropped_total", reason="queue_full") == 0.0
    outcomes = []  # (anomaly_score, label) per instance, in the order sent
    for index, response in enumerate(responses):
        if index in (2, 5):  # V2: outputs by name
            outputs = {output["name"]: output["data"] for output in response.json()["outputs"]}
            names = IMAGE_LABELS if index == 2 else TEXT_LABELS
            outcomes += [(s, names[i]) for s, i in zip(outputs["anomaly_score"], outputs["label_index"], strict=True)]
        else:
            outcomes += [(p["anomaly_score"], p["label"]) for p in response.json()["predictions"]]
    assert len(stored) == len(outcomes) == 7
    for row, (model, input_kind, data, media_type, extension), (score, label) in zip(
        stored, sent, outcomes, strict=True
    ):
        path = store / row["file"]
        content = path.read_bytes()
        if input_kind == "array":
            assert np.array_equal(np.load(path), np.asarray(array, dtype=np.float32))
            data = content
        assert content == data
        assert row == {
            "id": row["id"], "time": 1_700_000_000.25, "model": model, "version": "1", "kind": "rejected",
            "anomaly_score": score, "threshold": 0.0, "label": label,
            "label_index": (IMAGE_LABELS if model == "strict" else TEXT_LABELS).index(label), "reject": 1,
            "input_kind": input_kind, "media_type": media_type, "file": f"files/20231114/{row['id']}{extension}",
            "sha256": sha256(data), "bytes": len(data), "source": "",
        }  # fmt: skip
    store_bytes = sum(row["bytes"] for row in stored)
    assert sorted(path.name for path in (store / "files" / "20231114").iterdir()) == sorted(
        f"{row['id']}{Path(row['file']).suffix}" for row in stored
    )
    assert metric(app, "oegate_capture_store_bytes") == float(store_bytes)


async def test_band_and_control_sampling_with_a_seeded_rng_gives_exact_counts(models: Path, tmp_path: Path) -> None:
    store = tmp_path / "captures"
    images = [png_bytes(digit_like(seed)) for seed in range(40)]
    body = {"instances": [{"image_b64": b64(image)} for image in images]}
    overrides = {
        "capture_dir": store, "capture_models": ["open"], "capture_rejected_rate": 1.0, "capture_band_rate": 0.5,
        "capture_control_rate": 0.25, "allow_threshold_override": True,
    }  # fmt: skip
    async with serving(models, rng=random.Random(7), **overrides) as (app, client, capture):
        probe = await client.post("/v1/models/probe/predict", json=body)  # not captured: gives the scores
        scores = [p["anomaly_score"] for p in probe.json()["predictions"]]
        ordered = sorted(scores)
        # 10 rejected, then 15 in the band and 15 controls (the band's edge between two scores, never on one)
        threshold, band = ordered[30], ordered[30] - (ordered[14] + ordered[15]) / 2
        response = await client.post("/v1/models/open/predict", json={**body, "threshold": threshold})
        assert response.status_code == 200
        await settled(capture)
        stored = rows(store)
        counts = {
            kind: metric(app, "oegate_captures_total", model="open", kind=kind) or 0.0
            for kind in ("rejected", "band", "control")
        }
    # With the default band (0.05): the kinds from the response, then Random(7)'s draws for band and controls.
    assert [p["anomaly_score"] for p in response.json()["predictions"]] == scores
    kinds = ["rejected" if s >= threshold else ("band" if s >= threshold - 0.05 else "control") for s in scores]
    expected_rng = random.Random(7)
    kept = [
        i
        for i, kind in enumerate(kinds)
        if kind == "rejected" or expected_rng.random() < {"band": 0.5, "control": 0.25}[kind]
    ]
    assert [row["sha256"] for row in stored] == [sha256(images[i]) for i in kept]
    assert [row["kind"] for row in stored] == [kinds[i] for i in kept]
    expected = {kind: float(sum(kinds[i] == kind for i in kept)) for kind in ("rejected", "band", "control")}
    assert counts == expected
    assert [kinds.count(kind) for kind in ("rejected", "band", "control")] == [10, 30, 0]  # scores lie close
    # The same with a wider band: 15 band instances and 15 controls, each drawn once, in order.
    store2 = tmp_path / "captures-2"
    async with serving(models, rng=random.Random(11), **{**overrides, "capture_dir": store2, "capture_band": band}) as (
        app,
        client,
        capture,
    ):
        response = await client.post("/v1/models/open/predict", json={**body, "threshold": threshold})
        await settled(capture)
        stored = rows(store2)
        counts = {
            kind: metric(app, "oegate_captures_total", model="open", kind=kind) or 0.0
            for kind in ("rejected", "band", "control")
        }
    kinds = ["rejected" if s >= threshold else ("band" if s >= threshold - band else "control") for s in scores]
    assert [kinds.count(kind) for kind in ("rejected", "band", "control")] == [10, 15, 15]
    expected_rng = random.Random(11)
    kept = [
        i
        for i, kind in enumerate(kinds)
        if kind == "rejected" or expected_rng.random() < {"band": 0.5, "control": 0.25}[kind]
    ]
    assert [row["sha256"] for row in stored] == [sha256(images[i]) for i in kept]
    assert counts == {kind: float(sum(kinds[i] == kind for i in kept)) for kind in ("rejected", "band", "control")}


async def test_rates_of_zero_capture_nothing_and_other_models_are_not_captured(models: Path, tmp_path: Path) -> None:
    store = tmp_path / "captures"
    overrides = {"capture_dir": store, "capture_models": ["words"], "capture_rejected_rate": 0.0}
    async with serving(models, rng=random.Random(0), **overrides) as (app, client, capture):
        image = {"instances": [{"image_b64": b64(png_bytes(digit_like(0)))}]}
        assert (await client.post("/v1/models/strict/predict", json=image)).status_code == 200  # not a captured model
        assert (await client.post("/v1/models/words/predict", json=texts_body(*TEXTS))).status_code == 200  # rate 0
        await settled(capture)
        assert rows(store) == []
        assert metric(app, "oegate_captures_total", model="words", kind="rejected") is None
        assert metric(app, "oegate_capture_store_bytes") == 0.0


async def test_a_full_queue_drops_and_counts_and_never_fails_a_request(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "captures"
    started, release = threading.Event(), threading.Event()
    original = capture_store.add

    def slow_add(*args: Any) -> int:
        started.set()
        release.wait(10)
        return original(*args)

    monkeypatch.setattr(capture_store, "add", slow_add)
    async with serving(models, capture_dir=store, capture_queue_size=2) as (app, client, capture):
        assert (await client.post("/v1/models/words/predict", json=texts_body(TEXTS[0]))).status_code == 200
        assert await anyio.to_thread.run_sync(started.wait, 10)  # the writer holds the first sample
        response = await client.post("/v1/models/words/predict", json=texts_body(*TEXTS))
        assert response.status_code == 200 and len(response.json()["predictions"]) == 4
        assert metric(app, "oegate_capture_dropped_total", reason="queue_full") == 3.0  # 1 writing + 1 queued fit
        release.set()
        await settled(capture)
        assert [row["sha256"] for row in rows(store)] == [sha256(TEXTS[0].encode())] * 2
        assert metric(app, "oegate_captures_total", model="words", kind="rejected") == 2.0
    # The queue's byte bound: an image larger than it is dropped at once.
    async with serving(models, capture_dir=tmp_path / "small", capture_queue_bytes=64) as (app, client, capture):
        image = {"instances": [{"image_b64": b64(png_bytes(digit_like(0)))}]}
        assert (await client.post("/v1/models/strict/predict", json=image)).status_code == 200
        assert (await client.post("/v1/models/words/predict", json=texts_body("short"))).status_code == 200
        await settled(capture)
        assert metric(app, "oegate_capture_dropped_total", reason="queue_full") == 1.0
        assert metric(app, "oegate_captures_total", model="words", kind="rejected") == 1.0


async def test_a_failing_store_drops_and_counts_and_never_fails_a_request(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_add(*args: Any) -> int:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(capture_store, "add", broken_add)
        async with serving(models, capture_dir=tmp_path / "captures") as (app, client, capture):
            for _ in range(3):
                response = await client.post("/v1/models/words/predict", json=texts_body(*TEXTS[:2]))
                assert response.status_code == 200
            await settled(capture)
            assert metric(app, "oegate_capture_dropped_total", reason="store_error") == 6.0
            assert metric(app, "oegate_captures_total", model="words", kind="rejected") is None
            assert rows(tmp_path / "captures") == []
    # A capture directory that cannot be created (a regular file is in its way): the same, and the admin API says so.
    blocked = tmp_path / "not-a-directory"
    blocked.write_bytes(b"")
    async with serving(models, capture_dir=blocked / "captures") as (app, client, capture):
        response = await client.post(
            "/v1/models/strict/predict", json={"instances": [{"array": np.zeros((1, 28, 28)).tolist()}] * 2}
        )
        assert response.status_code == 200
        await settled(capture)
        assert metric(app, "oegate_capture_dropped_total", reason="store_error") == 2.0
        listed = await client.get("/v1/admin/captures", headers=AUTH)
    assert (listed.status_code, listed.json()) == (200, {"captures": [], "count": 0})


async def test_retention_by_bytes_deletes_the_oldest(models: Path, tmp_path: Path) -> None:
    store = tmp_path / "captures"
    clock = Clock(5_000.0)
    size = len(TEXTS[0].encode())
    assert all(len(text.encode()) == size for text in TEXTS[:2]) and len(TEXTS[2].encode()) == size + 1
    async with serving(models, clock=clock, capture_dir=store, capture_max_bytes=2 * size + 1) as (app, client, cap):
        for second, text in enumerate(TEXTS[:3]):
            clock.now = 5_000.0 + second
            assert (await client.post("/v1/models/words/predict", json=texts_body(text))).status_code == 200
            await settled(cap)
        kept = rows(store)
        assert [row["sha256"] for row in kept] == [sha256(TEXTS[1].encode()), sha256(TEXTS[2].encode())]
        assert metric(app, "oegate_capture_store_bytes") == float(2 * size + 1)
        assert metric(app, "oegate_captures_total", model="words", kind="rejected") == 3.0
        # One input larger than the whole store is never written.
        too_large = "x" * (2 * size + 2)
        assert (await client.post("/v1/models/words/predict", json=texts_body(too_large))).status_code == 200
        await settled(cap)
        assert metric(app, "oegate_capture_dropped_total", reason="too_large") == 1.0
        assert len(rows(store)) == 2
    files = sorted(path.name for path in store.glob("files/*/*"))
    assert files == sorted(Path(row["file"]).name for row in kept)


async def test_retention_by_age_deletes_what_is_older(models: Path, tmp_path: Path) -> None:
    store = tmp_path / "captures"
    clock = Clock(1_000.0)
    async with serving(models, clock=clock, capture_dir=store, capture_max_age_s=600.0) as (app, client, capture):
        for now, text in ((1_000.0, TEXTS[0]), (1_400.0, TEXTS[1]), (1_700.0, TEXTS[2])):
            clock.now = now
            assert (await client.post("/v1/models/words/predict", json=texts_body(text))).status_code == 200
            await settled(capture)
        # At 1700 the cutoff is 1100: the capture of 1000 went, 1400 and 1700 stay.
        assert [row["time"] for row in rows(store)] == [1_400.0, 1_700.0]
        assert metric(app, "oegate_capture_store_bytes") == float(len(TEXTS[1]) + len(TEXTS[2]))
    assert len(list(store.glob("files/*/*"))) == 2


def test_store_retention_by_age_and_bytes_on_the_index(tmp_path: Path) -> None:
    """The store's own retention, without the service: age first, then the oldest beyond the byte bound."""
    tmp_path.mkdir(exist_ok=True)
    with capture_store.opened(tmp_path) as connection:
        for index in range(5):
            record = capture_store.CaptureRecord(
                id=f"c{index}", time=100.0 * index, model="m", version="1", kind="rejected", anomaly_score=0.5,
                threshold=0.1, label="a", label_index=0, reject=True, input_kind="text",
                media_type="text/plain; charset=utf-8", extension=".txt",
            )  # fmt: skip
            assert capture_store.add(tmp_path, connection, record, b"x" * 10) == 10
        assert capture_store.total_bytes(connection) == 50
        # now 450, max age 300: times 0 and 100 go (< 150); then 30 bytes left, bound 20: time 200 goes.
        assert capture_store.enforce_retention(tmp_path, connection, 450.0, 20, 300.0) == 3
        assert [row["id"] for row in capture_store.list_rows(connection, None, None, None, 10)] == ["c4", "c3"]
        assert capture_store.total_bytes(connection) == 20
    assert sorted(path.name for path in tmp_path.glob("files/*/*")) == ["c3.txt", "c4.txt"]


async def test_admin_lists_and_deletes_captures_by_time_range(models: Path, tmp_path: Path) -> None:
    store = tmp_path / "captures"
    clock = Clock(0.0)
    async with serving(models, clock=clock, capture_dir=store) as (app, client, capture):
        for now, model in ((100.0, "words"), (200.0, "words"), (300.0, "strict"), (400.0, "words")):
            clock.now = now
            if model == "words":
                body = texts_body(TEXTS[int(now) // 100 - 1])
            else:
                body = {"instances": [{"image_b64": b64(png_bytes(digit_like(3)))}]}
            assert (await client.post(f"/v1/models/{model}/predict", json=body)).status_code == 200
        await settled(capture)

        async def listed(**params: Any) -> list[float]:
            response = await client.get("/v1/admin/captures", params=params, headers=AUTH)
            assert response.status_code == 200, response.text
            assert response.json()["count"] == len(response.json()["captures"])
            return [row["time"] for row in response.json()["captures"]]

        assert await listed() == [400.0, 300.0, 200.0, 100.0]
        assert await listed(since=200, until=400) == [300.0, 200.0]
        assert await listed(since="1970-01-01T00:03:20Z") == [400.0, 300.0, 200.0]
        assert await listed(until="1970-01-01T00:05:00") == [200.0, 100.0]  # no offset: UTC
        assert await listed(model="words") == [400.0, 200.0, 100.0]
        assert await listed(limit=2) == [400.0, 300.0]
        assert await listed(model="nope") == []
        row = (await client.get("/v1/admin/captures", params={"limit": 1}, headers=AUTH)).json()["captures"][0]
        assert row["time_utc"] == "1970-01-01T00:06:40Z"
        assert (row["model"], row["kind"], row["input_kind"], row["reject"]) == ("words", "rejected", "text", True)
        assert row["sha256"] == sha256(TEXTS[3].encode()) and row["bytes"] == len(TEXTS[3])

        for params, status, error in (
            ({"since": 300, "until": 300}, 422, "must be before until"),
            ({"limit": 0}, 422, "limit: Input should be greater than or equal to 1"),
            ({"since": "yesterday"}, 422, "since: Input should be a valid datetime"),
        ):
            response = await client.get("/v1/admin/captures", params=params, headers=AUTH)
            assert response.status_code == status and error in response.json()["error"]
        assert (await client.get("/v1/admin/captures")).status_code == 401
        assert (await client.delete("/v1/admin/captures", headers={"Authorization": "Bearer wrong"})).status_code == 401

        bytes_before = metric(app, "oegate_capture_store_bytes")
        deleted = await client.delete("/v1/admin/captures", params={"since": 150, "until": 350}, headers=AUTH)
        assert (deleted.status_code, deleted.json()) == (200, {"deleted": 2})
        assert await listed() == [400.0, 100.0]
        assert metric(app, "oegate_capture_store_bytes") == bytes_before - len(TEXTS[1]) - len(png_bytes(digit_like(3)))
        deleted = await client.delete("/v1/admin/captures", params={"model": "words", "until": 150}, headers=AUTH)
        assert deleted.json() == {"deleted": 1}
        assert (await client.delete("/v1/admin/captures", headers=AUTH)).json() == {"deleted": 1}
        assert await listed() == []
        assert metric(app, "oegate_capture_store_bytes") == 0.0
    assert list(store.glob("files/*/*")) == []


def test_capture_settings_are_validated(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert make_settings(models, capture_models="a, b").capture_models == ["a", "b"]
    assert make_settings(models, capture_models='["a","b"]').capture_models == ["a", "b"]
    for overrides, message in (
        ({"capture_dir": models / "captures"}, "must lie outside model_dir"),
        ({"capture_dir": tmp_path}, "must lie outside model_dir"),
        ({"capture_models": "a,,b"}, "no name may be empty"),
        ({"capture_rejected_rate": 1.5}, "less than or equal to 1"),
        ({"capture_band_rate": -0.1}, "greater than or equal to 0"),
        ({"capture_max_bytes": 0}, "greater than or equal to 1"),
        ({"capture_max_age_s": 0}, "greater than 0"),
    ):
        with pytest.raises(ValidationError, match=message):
            make_settings(models, **overrides)


def test_the_index_is_plain_sqlite(tmp_path: Path) -> None:
    """Anyone (the curation side, an auditor) reads the index with the standard library alone."""
    with capture_store.opened(tmp_path):
        pass
    connection = sqlite3.connect(tmp_path / capture_store.INDEX)
    columns = [row[1] for row in connection.execute("PRAGMA table_info(captures)")]
    connection.close()
    assert tuple(columns) == capture_store.COLUMNS


async def test_v2_fp32_arrays_are_stored_as_the_model_got_them(models: Path, tmp_path: Path) -> None:
    store = tmp_path / "captures"
    arrays = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    payload = arrays.astype("<f4").tobytes()
    tensor = {"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 6272}}
    header = json.dumps({"inputs": [tensor]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    async with serving(models, capture_dir=store) as (app, client, capture):
        response = await client.post("/v2/models/strict/infer", content=header + payload, headers=headers)
        assert response.status_code == 200
        await settled(capture)
        assert metric(app, "oegate_captures_total", model="strict", kind="rejected") == 2.0
    stored = rows(store)
    assert [row["input_kind"] for row in stored] == ["array", "array"]
    for row, array in zip(stored, arrays, strict=True):
        loaded = np.load(store / row["file"])
        assert loaded.dtype == np.float32 and np.array_equal(loaded, array)
        assert row["sha256"] == sha256((store / row["file"]).read_bytes())


async def test_each_capture_records_the_source_its_request_declared(models: Path, tmp_path: Path) -> None:
    store = tmp_path / "captures"
    png = png_bytes(digit_like(2))
    v2_body, v2_headers = v2_binary_images([png])
    declared = ["scanner-7", "app:eu@2.1", "bad source", "x" * 65, None]
    async with serving(models, capture_dir=store, capture_models="strict") as (_, client, capture):
        for source in declared:
            headers = {} if source is None else {"X-OEGate-Source": source}
            body = {"instances": [{"image_b64": b64(png)}]}
            assert (await client.post("/v1/models/strict/predict", json=body, headers=headers)).status_code == 200
        response = await client.post(
            "/v2/models/strict/infer", content=v2_body, headers={**v2_headers, "X-OEGate-Source": "v2-client"}
        )
        assert response.status_code == 200
        await settled(capture)
    # Plain names are kept as sent; anything else (a space, past 64 characters, absent) is stored as "".
    assert [row["source"] for row in rows(store)] == ["scanner-7", "app:eu@2.1", "", "", "", "v2-client"]


def test_an_index_made_before_sources_gains_the_column_with_empty_values(tmp_path: Path) -> None:
    old_schema = capture_store.SCHEMA.replace(",\n    source TEXT NOT NULL DEFAULT ''", "")
    assert "source" not in old_schema
    connection = sqlite3.connect(tmp_path / capture_store.INDEX)
    connection.executescript(old_schema)
    old_columns = [c for c in capture_store.COLUMNS if c != "source"]
    connection.execute(
        f"INSERT INTO captures ({', '.join(old_columns)}) VALUES ({', '.join('?' * len(old_columns))})",
        ["c0", 1.0, "m", "1", "rejected", 0.5, 0.1, "a", 0, 1, "text", "text/plain", "files/x/c0.txt", "00", 1],
    )
    connection.commit()
    connection.close()
    with capture_store.opened(tmp_path) as upgraded:
        [row] = capture_store.list_rows(upgraded, None, None, None, 10)
    assert (row["id"], row["source"]) == ("c0", "")


def test_stored_files_are_named_by_what_they_hold() -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"rest of a jpeg"
    assert encode_payload(RawInput("image", jpeg)) == (jpeg, "image/jpeg", ".jpg")
    assert encode_payload(RawInput("image", b"GIF89a")) == (b"GIF89a", "application/octet-stream", ".bin")
    assert encode_payload(RawInput("text", "é")) == ("é".encode(), "text/plain; charset=utf-8", ".txt")


async def test_samples_queued_at_shutdown_are_stored_before_the_app_stops(models: Path, tmp_path: Path) -> None:
    store = tmp_path / "captures"
    async with serving(models, capture_dir=store) as (app, client, _):
        assert (await client.post("/v1/models/words/predict", json=texts_body(*TEXTS))).status_code == 200
    assert sorted(row["sha256"] for row in rows(store)) == sorted(sha256(text.encode()) for text in TEXTS)
    assert metric(app, "oegate_captures_total", model="words", kind="rejected") == 4.0
