"""Registry robustness: a model directory removed mid-scan, a slow non-atomic publish, and the unload policy for
a served version whose directory is removed."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.errors import ModelNotReadyError
from service.metrics import Metrics
from service.registry import Registry, scan_versions
from tests.service.conftest import clone_artifact, make_settings

pytestmark = pytest.mark.anyio


def make_registry(model_dir: Path, **overrides: object) -> tuple[Registry, CollectorRegistry]:
    collector = CollectorRegistry()
    return Registry(make_settings(model_dir, **overrides), Metrics(collector)), collector


def value(collector: CollectorRegistry, name: str, **labels: str) -> float:
    found = collector.get_sample_value(name, labels)
    return 0.0 if found is None else found


@pytest.fixture
def vanishing(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Directories listed here are removed right after their parent is listed (a removal racing the scan)."""
    doomed: list[Path] = []
    original = Path.iterdir

    def iterdir(self: Path) -> Iterator[Path]:
        entries = list(original(self))
        for path in doomed:
            if path.parent == self and path.exists():
                shutil.rmtree(path)
        return iter(entries)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    yield doomed


def test_a_model_directory_removed_mid_scan_is_skipped(
    tmp_path: Path, tiny_artifact: Path, vanishing: list[Path]
) -> None:
    clone_artifact(tiny_artifact, tmp_path, "alpha", 1)
    clone_artifact(tiny_artifact, tmp_path, "beta", 1)
    vanishing.append(tmp_path / "alpha")
    assert scan_versions(tmp_path) == {"beta": [(1, tmp_path / "beta" / "1")]}


async def test_a_removal_during_a_rescan_does_not_abort_it(
    tmp_path: Path, tiny_artifact: Path, vanishing: list[Path]
) -> None:
    clone_artifact(tiny_artifact, tmp_path, "alpha", 1)
    registry, collector = make_registry(tmp_path)
    await registry.start()
    clone_artifact(tiny_artifact, tmp_path, "beta", 1)
    clone_artifact(tiny_artifact, tmp_path, "gamma", 1)
    vanishing.append(tmp_path / "beta")
    report = await registry.reload()
    assert report.loaded == [{"name": "gamma", "version": "1", "provider": "CPUExecutionProvider"}]
    assert report.failed == []
    assert sorted(registry.models) == ["alpha", "gamma"]
    assert value(collector, "oegate_model_load_failures_total", model="beta") == 0.0
    await registry.close()


async def test_a_slow_non_atomic_publish_is_never_counted_as_a_failure(tmp_path: Path, tiny_artifact: Path) -> None:
    """Files appear one by one in a non-hidden version directory, the card last, with rescans in between."""
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, collector = make_registry(tmp_path)
    await registry.start()
    published = clone_artifact(tiny_artifact, tmp_path / "staging", "tiny", 2)
    target = tmp_path / "tiny" / "2"
    target.mkdir()
    graph = (published / "model.onnx").read_bytes()
    for end in (len(graph) // 3, 2 * len(graph) // 3, len(graph)):  # a copy in progress
        (target / "model.onnx").write_bytes(graph[:end])
        report = await registry.reload()
        assert (report.loaded, report.failed) == ([], [])
    shutil.copy(published / "card.json", target / "card.json")
    report = await registry.reload()
    assert report.loaded == [{"name": "tiny", "version": "2", "provider": "CPUExecutionProvider"}]
    assert value(collector, "oegate_model_load_failures_total", model="tiny") == 0.0
    await registry.close()


async def test_a_failure_is_counted_once_per_card_while_the_other_files_keep_changing(
    tmp_path: Path, tiny_artifact: Path
) -> None:
    """The card first, then the graph in pieces: each scan retries (the files changed), one failure is counted."""
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, collector = make_registry(tmp_path)
    await registry.start()
    published = clone_artifact(tiny_artifact, tmp_path / "staging", "tiny", 2)
    target = tmp_path / "tiny" / "2"
    target.mkdir()
    shutil.copy(published / "card.json", target / "card.json")
    graph = (published / "model.onnx").read_bytes()
    for end in (len(graph) // 3, 2 * len(graph) // 3):
        (target / "model.onnx").write_bytes(graph[:end])
        report = await registry.reload()
        assert [(f["version"], "sha256 mismatch" in f["reason"]) for f in report.failed] == [("2", True)]
    assert value(collector, "oegate_model_load_failures_total", model="tiny") == 1.0
    (target / "model.onnx").write_bytes(graph)
    report = await registry.reload()
    assert [entry["version"] for entry in report.loaded] == ["2"]
    assert value(collector, "oegate_model_load_failures_total", model="tiny") == 1.0
    await registry.close()


async def test_a_removed_served_version_is_unloaded_and_the_newest_remaining_one_served(
    tmp_path: Path, tiny_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for version in (1, 2, 3):
        clone_artifact(tiny_artifact, tmp_path, "tiny", version)
    registry, collector = make_registry(tmp_path)
    await registry.start()
    three = registry.get("tiny")
    assert three.version == "3"
    shutil.rmtree(tmp_path / "tiny" / "3")
    with caplog.at_level(logging.WARNING, logger="service.registry"):
        report = await registry.reload()
    assert [entry["version"] for entry in report.loaded] == ["2"]
    assert registry.get("tiny").version == "2"
    assert value(collector, "oegate_model_unloads_total", model="tiny", reason="removed") == 1.0
    [record] = [r for r in caplog.records if r.getMessage() == "model version unloaded: its directory was removed"]
    assert (record.__dict__["model"], record.__dict__["version"], record.__dict__["now_serving"]) == ("tiny", "3", "2")
    cpu = "CPUExecutionProvider"
    assert collector.get_sample_value("oegate_model_info", {"model": "tiny", "version": "3", "provider": cpu}) is None
    assert value(collector, "oegate_model_info", model="tiny", version="2", provider="CPUExecutionProvider") == 1.0
    for _ in range(20):  # the removed version's retirement task runs (no lease holds it)
        await asyncio.sleep(0)
    assert three.batcher.closing
    # Every version removed: the model is not served, not ready, and its requests get 503.
    shutil.rmtree(tmp_path / "tiny" / "2")
    shutil.rmtree(tmp_path / "tiny" / "1")
    await registry.reload()
    assert not registry.ready()
    with pytest.raises(ModelNotReadyError):
        registry.get("tiny")
    assert value(collector, "oegate_model_unloads_total", model="tiny", reason="removed") == 2.0
    await registry.close()


async def test_a_missing_model_directory_unloads_nothing(tmp_path: Path, tiny_artifact: Path) -> None:
    models = tmp_path / "models"
    clone_artifact(tiny_artifact, models, "tiny", 1)
    registry, collector = make_registry(models)
    await registry.start()
    served = registry.get("tiny")
    models.rename(tmp_path / "unmounted")  # a lost mount, not a decision to unload everything
    await registry.reload()
    assert registry.get("tiny") is served
    assert value(collector, "oegate_model_unloads_total", model="tiny", reason="removed") == 0.0
    await registry.close()
