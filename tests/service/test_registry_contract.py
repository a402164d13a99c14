"""The registry's smaller promises: what a failed load reports and logs, leases counted one by one, 503 versus 404
for names it knows, per-model batch metrics, named background tasks, and a poller that survives a failed scan.
Nothing here waits on the clock: the loop is given turns with `asyncio.sleep(0)`."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import anyio.to_thread
import numpy as np
import pytest

from service.errors import ModelNotReadyError, NotFoundError
from tests.service.conftest import clone_artifact
from tests.service.test_registry import corrupt, make_registry

pytestmark = pytest.mark.anyio

IMAGE = np.zeros((1, 1, 28, 28), np.float32)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_failed_load_is_reported_and_logged_with_its_model_and_version(
    tmp_path: Path, tiny_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt(clone_artifact(tiny_artifact, tmp_path, "tiny", 3))
    registry, _ = make_registry(tmp_path)
    with caplog.at_level(logging.ERROR, logger="service.registry"):
        report = await registry.start()
    (failed,) = report.failed
    assert set(failed) == {"name", "version", "reason"}
    assert (failed["name"], failed["version"]) == ("tiny", "3")
    assert "sha256 mismatch" in failed["reason"]
    skipped = [r for r in caplog.records if r.getMessage().startswith("skipping model version: ")]
    assert len(skipped) == 1
    assert skipped[0].getMessage() == f"skipping model version: {failed['reason']}"
    assert (skipped[0].model, skipped[0].version) == ("tiny", "3")  # type: ignore[attr-defined]
    await registry.close()


async def test_a_version_is_served_from_its_own_directory(tmp_path: Path, tiny_artifact: Path) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 4)
    registry, _ = make_registry(tmp_path)
    await registry.start()
    model = registry.get("tiny")
    assert (model.path, model.name, model.version, model.provider) == (
        tmp_path / "tiny" / "4",
        "tiny",
        "4",
        "CPUExecutionProvider",
    )
    await registry.close()


async def test_a_version_is_retired_only_after_its_last_lease(tmp_path: Path, tiny_artifact: Path) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, _ = make_registry(tmp_path)
    await registry.start()
    async with registry.lease("tiny") as first:
        async with registry.lease("tiny", "1") as second:
            assert first is second
            clone_artifact(tiny_artifact, tmp_path, "tiny", 2)
            await registry.reload()
            await settle()
            assert "retire:tiny/1" in {task.get_name() for task in asyncio.all_tasks()}
            assert not first.batcher.closing  # two leases held
        await settle()
        assert not first.batcher.closing  # one lease still held: it may still submit
        assert (await first.batcher.submit(IMAGE))["probs"].shape == (1, 10)
    await settle()
    assert first.batcher.closing  # the last lease left
    assert registry.get("tiny").version == "2"
    await registry.close()


async def test_known_or_required_names_without_a_version_are_503_and_others_404(
    tmp_path: Path, tiny_artifact: Path
) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    corrupt(clone_artifact(tiny_artifact, tmp_path, "broken", 1))
    registry, _ = make_registry(tmp_path, required_models=["tiny", "ghost"])
    await registry.start()
    assert registry.required == {"tiny", "ghost"}
    assert not registry.ready()
    for name in ("ghost", "broken"):  # required but never found; found but not required
        with pytest.raises(ModelNotReadyError, match=f"^model '{name}' has no loadable version"):
            registry.get(name)
    with pytest.raises(NotFoundError, match=r"^model 'other' not found$"):
        registry.get("other")
    await registry.close()


async def test_batch_metrics_are_labelled_with_the_model(tmp_path: Path, tiny_artifact: Path) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, collector = make_registry(tmp_path)
    await registry.start()
    await registry.get("tiny").batcher.submit(np.zeros((3, 1, 28, 28), np.float32))
    assert collector.get_sample_value("oegate_inference_batch_size_sum", {"model": "tiny"}) == 3.0
    assert collector.get_sample_value("oegate_inference_batch_size_count", {"model": "tiny"}) == 1.0
    assert collector.get_sample_value("oegate_inference_duration_seconds_count", {"model": "tiny"}) == 1.0
    await registry.close()


async def test_the_poller_logs_a_failed_scan_and_keeps_polling(
    tmp_path: Path, tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, _ = make_registry(tmp_path)
    await registry.start()
    scans: list[int] = []
    second_scan = asyncio.Event()

    async def flaky_reload() -> None:
        scans.append(len(scans))
        if len(scans) == 1:
            raise OSError("model directory unreadable")
        second_scan.set()

    monkeypatch.setattr(registry, "reload", flaky_reload)
    with caplog.at_level(logging.ERROR, logger="service.registry"):
        poller = asyncio.ensure_future(registry.poll(0.0))
        await asyncio.wait_for(second_scan.wait(), 5.0)
        poller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poller
    failed = [r for r in caplog.records if r.getMessage() == "model directory rescan failed"]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert str(failed[0].exc_info[1]) == "model directory unreadable"
    assert len(scans) >= 2
    await registry.close()


async def test_a_loaded_version_is_logged_with_its_model_version_provider_and_path(
    tmp_path: Path, tiny_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 2)
    registry, _ = make_registry(tmp_path)
    with caplog.at_level(logging.INFO, logger="service.registry"):
        await registry.start()
    (loaded,) = [r for r in caplog.records if r.getMessage() == "model version loaded"]
    assert (loaded.model, loaded.version, loaded.provider, loaded.path) == (  # type: ignore[attr-defined]
        "tiny",
        "2",
        "CPUExecutionProvider",
        str(tmp_path / "tiny" / "2"),
    )
    await registry.close()


async def test_the_batching_delay_is_taken_in_milliseconds(
    tmp_path: Path, tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_delay_ms = 500 is 0.5 s on the loop's clock, here one the test moves: 0.4999 s later the lone request
    is still waiting for company, at 0.5 s it runs."""
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, _ = make_registry(tmp_path, max_delay_ms=500.0, max_batch_size=2)
    await registry.start()
    now = [1000.0]
    monkeypatch.setattr(asyncio.get_running_loop(), "time", lambda: now[0])
    request = asyncio.ensure_future(registry.get("tiny").batcher.submit(IMAGE))
    await settle()
    batcher = registry.get("tiny").batcher
    now[0] += 0.4999
    await settle()
    assert not request.done() and batcher.depth == 1  # still gathering: the batch has not been taken
    now[0] += 0.0001
    for _ in range(200):  # the expired wait fires on the loop's next turn; the run itself is a thread hop
        if request.done():
            break
        await asyncio.sleep(0)
        await asyncio.to_thread(lambda: None)
    assert (await request)["probs"].shape == (1, 10)
    monkeypatch.undo()
    await registry.close()


async def test_version_zero_is_not_a_version(tmp_path: Path, tiny_artifact: Path) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    (tmp_path / "tiny" / "1").rename(tmp_path / "tiny" / "0")
    registry, _ = make_registry(tmp_path)
    report = await registry.start()
    assert (report.loaded, report.failed, dict(registry.models)) == ([], [], {})
    await registry.close()


async def test_missing_required_models_are_logged_at_start(
    tmp_path: Path, tiny_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, _ = make_registry(tmp_path, required_models=["tiny", "zeta", "ghost"])
    with caplog.at_level(logging.ERROR, logger="service.registry"):
        await registry.start()
    assert [r.getMessage() for r in caplog.records] == ["required models not loaded: ['ghost', 'zeta']"]
    await registry.close()


async def test_a_reload_swaps_every_changed_model_even_after_an_unchanged_one(
    tmp_path: Path, tiny_artifact: Path
) -> None:
    clone_artifact(tiny_artifact, tmp_path, "alpha", 1)
    clone_artifact(tiny_artifact, tmp_path, "beta", 1)
    registry, collector = make_registry(tmp_path)
    await registry.start()
    old_beta = registry.get("beta")
    clone_artifact(tiny_artifact, tmp_path, "beta", 2)  # alpha (first) is unchanged
    await registry.reload()
    await settle()
    assert registry.get("beta").version == "2"
    assert old_beta.batcher.closing
    info = {"model": "beta", "provider": "CPUExecutionProvider"}
    assert collector.get_sample_value("oegate_model_info", {**info, "version": "2"}) == 1.0
    assert collector.get_sample_value("oegate_model_info", {**info, "version": "1"}) is None
    await registry.close()


async def test_queue_depth_is_reported_per_model(
    tmp_path: Path, tiny_artifact: Path, blocked_runtime: tuple[threading.Event, threading.Event]
) -> None:
    started, release = blocked_runtime
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, collector = make_registry(tmp_path, max_batch_size=1)
    await registry.start()
    batcher = registry.get("tiny").batcher
    first = asyncio.ensure_future(batcher.submit(IMAGE))
    assert await anyio.to_thread.run_sync(started.wait, 30)
    queued = [asyncio.ensure_future(batcher.submit(IMAGE)) for _ in range(2)]
    await settle()
    assert collector.get_sample_value("oegate_queue_depth", {"model": "tiny"}) == 2.0
    release.set()
    await asyncio.gather(first, *queued)
    assert collector.get_sample_value("oegate_queue_depth", {"model": "tiny"}) == 0.0
    await registry.close()


async def test_close_waits_for_versions_still_being_retired(tmp_path: Path, tiny_artifact: Path) -> None:
    clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    registry, _ = make_registry(tmp_path)
    await registry.start()
    async with registry.lease("tiny") as old:
        clone_artifact(tiny_artifact, tmp_path, "tiny", 2)
        await registry.reload()
        closing = asyncio.ensure_future(registry.close())
        await settle()
        assert not closing.done()  # version 1 is retiring, held by this lease
        assert not old.batcher.closing
    await asyncio.wait_for(closing, 30)
    assert old.batcher.closing
