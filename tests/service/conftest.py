"""Service test fixtures: per-test model directories cloned from the session's tiny artifact, and an in-process
client that runs the app's lifespan (httpx.ASGITransport does not)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.text_artifacts import publish_tiny_text


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def clone_artifact(source: Path, models_dir: Path, name: str, version: int, **card_changes: Any) -> Path:
    """Publish a copy of `source` as `models_dir/name/version` the way training does (staging dir + rename), with
    the card's name and version rewritten and `card_changes` applied (e.g. threshold=0.5). The sha256 covers
    model.onnx only, so edited cards stay valid."""
    staging = models_dir / name / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    shutil.copytree(source, staging)
    card = json.loads((staging / "card.json").read_text())
    card.update(name=name, version=version)
    if "threshold" in card_changes:
        card["threshold"]["value"] = card_changes.pop("threshold")
    card.update(card_changes)
    (staging / "card.json").write_text(json.dumps(card))
    target = models_dir / name / str(version)
    os.rename(staging, target)
    return target


@pytest.fixture(scope="session")
def text_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny text artifact per session (tests/text_artifacts.py); copy it before modifying."""
    return publish_tiny_text(tmp_path_factory.mktemp("text-models"))


@pytest.fixture
def model_dir(tmp_path: Path, tiny_artifact: Path) -> Path:
    """A model directory serving `tiny` version 1."""
    models = tmp_path / "models"
    clone_artifact(tiny_artifact, models, "tiny", 1)
    return models


def make_settings(model_dir: Path, **overrides: Any) -> Settings:
    """Test settings: CPU only, no polling, short batching delay; `overrides` win."""
    values: dict[str, Any] = {
        "model_dir": model_dir,
        "providers": ["CPUExecutionProvider"],
        "poll_interval_s": 0,
        "max_delay_ms": 1.0,
        "intra_op_threads": 1,
        "inter_op_threads": 1,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, raise_app_exceptions: bool = True
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A fresh app (fresh metrics registry) with its lifespan running, and a client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://oegate.test") as client:
            yield app, client


@pytest.fixture
def serve(model_dir: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]:
    """`async with serve(**setting_overrides) as (app, client)`, over `model_dir` unless overridden."""

    def start(**overrides: Any) -> contextlib.AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
        raise_app_exceptions = overrides.pop("raise_app_exceptions", True)
        return running(make_settings(overrides.pop("model_dir", model_dir), **overrides), raise_app_exceptions)

    return start


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 [H, W] (L), [H, W, 3] (RGB), [H, W, 4] (RGBA) or uint16 [H, W] -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def digit_like(seed: int) -> np.ndarray:
    """A deterministic uint8 28x28 test image (a bright blob on black)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((28, 28), np.uint8)
    top, left = rng.integers(4, 14, size=2)
    image[top : top + 10, left : left + 6] = rng.integers(128, 256, size=(10, 6), dtype=np.uint8)
    return image


@pytest.fixture
def blocked_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Runtime.run blocks until `release` is set, setting `started` when it does, so a test can hold a session run
    (to fill the queue, or swap versions under it); once released, runs go straight through."""
    started, release = threading.Event(), threading.Event()
    original = Runtime.run

    def run(self: Runtime, images: np.ndarray) -> dict[str, np.ndarray]:
        if not release.is_set():
            started.set()
            release.wait(10)
        return original(self, images)

    monkeypatch.setattr(Runtime, "run", run)
    yield started, release
    release.set()
