from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.errors import ModelNotReadyError, NotFoundError, ServiceError
from service.metrics import Metrics
from service.registry import Registry
from tests.service.conftest import clone_artifact, make_settings

pytestmark = pytest.mark.anyio


def make_registry(model_dir: Path, **overrides: object) -> tuple[Registry, CollectorRegistry]:
    collector = CollectorRegistry()
    return Registry(make_settings(model_dir, **overrides), Metrics(collector)), collector


def failures(collector: CollectorRegistry, model: str) -> float:
    value = collector.get_sample_value("oegate_model_load_failures_total", {"model": model})
    return 0.0 if value is None else value


def corrupt(version_dir: Path) -> None:
    with (version_dir / "model.onnx").open("ab") as f:
        f.write(b"\0")


async def test_the_newest_valid_version_is_served(tmp_path: Path, tiny_artifact: Path) -> None:
    for version in (1, 2):
        clone_artifact(tiny_artifact, tmp_path, "tiny", version)
    registry, collector = make_registry(tmp_path)
    report = await registry.start()
    assert report.loaded == [{"name": "tiny", "version": "2", "provider": "CPUExecutionProvider"}]
    assert registry.get("tiny").version == "2"
    assert registry.ready()
    labels = {"model": "tiny", "version": "2", "provider": "CPUExecutionProvider"}
    assert collector.get_sample_value("oegate_model_info", labels) == 1.0
    await registry.close()


async def test_staging_and_non_version_directories_are_ignored(tmp_path: Path, tiny_artifact: Path) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    shutil.copytree(tmp_path / "tiny" / "1", tmp_path / "tiny" / ".tmp-2-abcd1234")
    for name in ("latest", "03", "0"):
        shutil.copytree(tmp_path / "tiny" / "1", tmp_path / "tiny" / name)
    shutil.copytree(tmp_path / "tiny", tmp_path / ".hidden-model")
    registry, collector = make_registry(tmp_path)
    report = await registry.start()
    assert [entry["version"] for entry in report.loaded] == ["1"]
    assert report.failed == []
    assert set(registry.models) == {"tiny"}
    assert failures(collector, "tiny") == 0.0
    await registry.close()


async def test_a_bad_newest_version_is_skipped_counted_once_and_the_older_one_served(
    tmp_path: Path, tiny_artifact: Path
) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    corrupt(clone_artifact(tiny_artifact, tmp_path, "tiny", 2))
    registry, collector = make_registry(tmp_path)
    report = await registry.start()
    assert registry.get("tiny").version == "1"
    assert [(f["version"], "sha256 mismatch" in f["reason"]) for f in report.failed] == [("2", True)]
    assert failures(collector, "tiny") == 1.0
    again = await registry.reload()  # unchanged: neither retried nor counted again
    assert (again.loaded, again.failed) == ([], [])
    assert failures(collector, "tiny") == 1.0
    await registry.close()


async def test_a_half_written_version_never_replaces_the_served_one(tmp_path: Path, tiny_artifact: Path) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, collector = make_registry(tmp_path)
    await registry.start()
    served = registry.get("tiny")
    half = tmp_path / "tiny" / "2"
    half.mkdir()
    shutil.copy(tiny_artifact / "model.onnx", half / "model.onnx")  # no card.json yet: not published, no failure
    report = await registry.reload()
    assert (report.loaded, report.failed) == ([], [])
    assert registry.get("tiny") is served
    assert failures(collector, "tiny") == 0.0
    shutil.copy(tiny_artifact / "card.json", half / "card.json")  # finished, but its card says version 1
    report = await registry.reload()
    assert "card is for tiny/1, found in tiny/2" in report.failed[0]["reason"]
    assert failures(collector, "tiny") == 1.0
    await registry.close()


async def test_reload_swaps_in_a_new_version_and_retires_the_old_one(tmp_path: Path, tiny_artifact: Path) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, collector = make_registry(tmp_path)
    await registry.start()
    old = registry.get("tiny")
    clone_artifact(tiny_artifact, tmp_path, "tiny", 2, threshold=0.5)
    report = await registry.reload()
    assert report.loaded == [{"name": "tiny", "version": "2", "provider": "CPUExecutionProvider"}]
    new = registry.get("tiny")
    assert (new.version, new.card.threshold.value) == ("2", 0.5)
    for _ in range(20):  # let the retirement task run (no lease holds version 1); no wall-clock wait
        await asyncio.sleep(0)
    assert old.batcher.closing and not new.batcher.closing  # retired by the swap, before the registry closes
    with pytest.raises(ServiceError, match=r"^model tiny/1: batcher is not running$"):
        await old.batcher.submit(np.zeros((1, 1, 28, 28), np.float32))
    assert (await new.batcher.submit(np.zeros((1, 1, 28, 28), np.float32)))["probs"].shape == (1, 10)
    await registry.close()
    assert new.batcher.closing
    old_labels = {"model": "tiny", "version": "1", "provider": "CPUExecutionProvider"}
    assert collector.get_sample_value("oegate_model_info", old_labels) is None


async def test_lookup_errors_and_readiness(tmp_path: Path, tiny_artifact: Path) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    corrupt(clone_artifact(tiny_artifact, tmp_path, "broken", 1))
    registry, _ = make_registry(tmp_path)
    await registry.start()
    assert registry.required == {"tiny", "broken"}  # default: every model found at start
    assert not registry.ready()
    with pytest.raises(ModelNotReadyError, match=r"^model 'broken' has no loadable version \(see the service logs\)$"):
        registry.get("broken")
    with pytest.raises(NotFoundError, match=r"^model 'nope' not found$"):
        registry.get("nope")
    with pytest.raises(NotFoundError, match=r"^model 'tiny' version '7' is not loaded \(serving version 1\)$"):
        registry.get("tiny", "7")
    await registry.close()

    only_tiny, _ = make_registry(tmp_path, required_models=["tiny"])
    await only_tiny.start()
    assert only_tiny.ready()
    await only_tiny.close()


async def test_a_missing_model_directory_is_not_ready_but_does_not_crash(tmp_path: Path) -> None:
    registry, _ = make_registry(tmp_path / "does-not-exist")
    report = await registry.start()
    assert (report.loaded, report.failed, registry.ready()) == ([], [], False)
    await registry.close()
