from pathlib import Path

import numpy as np
import pytest
import torch

from training import train as train_module
from training.config import OEConfig, OptimConfig
from training.data.base import ImageSet, as_float
from training.image.nets import NetConfig, build_net
from training.train import Normalizer, train_stage


def _toy_data(seed: int = 0) -> tuple[ImageSet, ImageSet, np.ndarray]:
    """Two classes told apart by which half of the image is bright, plus a uniform-noise outlier pool."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 96)
    images = rng.integers(0, 60, (96, 1, 8, 8)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 0, :, 4 * y : 4 * y + 4] += 180
    outliers = rng.integers(0, 256, (64, 1, 8, 8)).astype(np.uint8)
    return ImageSet(images[:64], labels[:64]), ImageSet(images[64:], labels[64:]), outliers


def _run(run_dir: Path, epochs: int, resume: bool, outliers: np.ndarray | None = None) -> torch.nn.Module:
    train, val, _ = _toy_data()
    torch.manual_seed(0)
    net = build_net(NetConfig(width=4, dropout=0.5), 1, 2, 8, 8)
    cfg = (
        OEConfig(epochs=epochs, batch_size=16, lr=0.05)
        if outliers is not None
        else OptimConfig(epochs=epochs, batch_size=16)
    )
    train_stage(
        stage="oe" if outliers is not None else "baseline",
        net=net,
        normalize=Normalizer.fit(train.images),
        train=train,
        val=val,
        cfg=cfg,
        run_dir=run_dir,
        seed=0,
        extra_state={},
        outliers=outliers,
        resume=resume,
    )
    return net


class _KilledError(Exception):
    pass


@pytest.mark.parametrize("with_outliers", [False, True], ids=["baseline", "oe"])
def test_resumed_run_equals_uninterrupted_run(
    tmp_path: Path, with_outliers: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _toy_data()[2] if with_outliers else None
    straight = _run(tmp_path / "straight", epochs=3, resume=False, outliers=pool)

    # Kill the second run right after its first checkpoint is on disk.
    real_save = train_module.save_checkpoint

    def save_then_die(path: Path, state: dict[str, object]) -> None:
        real_save(path, state)
        raise _KilledError

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(_KilledError):
        _run(tmp_path / "killed", epochs=3, resume=False, outliers=pool)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    stage = "oe" if with_outliers else "baseline"
    assert torch.load(tmp_path / "killed" / "checkpoints" / f"{stage}.pt", weights_only=False)["epoch"] == 1

    with pytest.raises(FileExistsError, match="--resume"):
        _run(tmp_path / "killed", epochs=3, resume=False, outliers=pool)
    resumed = _run(tmp_path / "killed", epochs=3, resume=True, outliers=pool)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    history = torch.load(tmp_path / "killed" / "checkpoints" / f"{stage}.pt", weights_only=False)["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_training_learns_the_toy_task(tmp_path: Path) -> None:
    net = _run(tmp_path, epochs=5, resume=False)
    train, val, _ = _toy_data()
    with torch.no_grad():
        logits = net.eval()(Normalizer.fit(train.images)(torch.from_numpy(val.images / np.float32(255))))
    assert val.labels is not None
    assert float((logits.argmax(1).numpy() == val.labels).mean()) == 1.0


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = _run(tmp_path / "straight", epochs=3, resume=False)
    real_save, saves = train_module.save_checkpoint, []

    def save_twice_then_die(path: Path, state: dict[str, object]) -> None:
        real_save(path, state)
        saves.append(path)
        if len(saves) == 2:
            raise _KilledError

    monkeypatch.setattr(train_module, "save_checkpoint", save_twice_then_die)
    with pytest.raises(_KilledError):
        _run(tmp_path / "broken", epochs=3, resume=False)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    latest = tmp_path / "broken" / "checkpoints" / "baseline.pt"
    previous = tmp_path / "broken" / "checkpoints" / "baseline.previous.pt"
    assert torch.load(previous, weights_only=False)["epoch"] == 1
    latest.write_bytes(latest.read_bytes()[:100])  # epoch 2's checkpoint truncated behind our back
    with caplog.at_level("WARNING", logger="training.checkpoint"):
        resumed = _run(tmp_path / "broken", epochs=3, resume=True)
    assert "falling back to the previous checkpoint" in caplog.text and "cannot be read" in caplog.text
    state = torch.load(latest, weights_only=False)
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]  # epoch 2 redone from epoch 1's checkpoint
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # the same weights as the uninterrupted run
    latest.write_bytes(b"")
    previous.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        _run(tmp_path / "broken", epochs=4, resume=True)


def test_oe_batches_hold_ratio_times_the_outliers_each_seen_once_per_cycle_at_the_configured_weight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val, _ = _toy_data()
    # 48 outliers, each one flat grey of its own level, so a batch row tells which outlier it is.
    levels = np.arange(48, dtype=np.uint8) * 5 + 3
    outliers = np.broadcast_to(levels[:, None, None, None], (48, 1, 8, 8)).copy()
    normalize = Normalizer.fit(train.images)
    net = build_net(NetConfig(width=4, dropout=0.5), 1, 2, 8, 8)
    # Each training forward pass's first pixel per row, and per loss call: rows, in-distribution rows, lambda, inputs.
    inputs: list[list[float]] = []
    seen: list[tuple[int, int, float, list[float]]] = []
    real_loss = train_module.outlier_exposure_loss

    def recording_loss(logits: torch.Tensor, targets: torch.Tensor, oe_weight: float = 0.5) -> torch.Tensor:
        seen.append((logits.shape[0], targets.shape[0], oe_weight, inputs[-1]))
        return real_loss(logits, targets, oe_weight)

    net.register_forward_pre_hook(lambda _, args: inputs.append(args[0][:, 0, 0, 0].tolist()) if net.training else None)
    monkeypatch.setattr(train_module, "outlier_exposure_loss", recording_loss)
    cfg = OEConfig(epochs=2, batch_size=16, lr=0.05, outlier_batch_ratio=0.75, weight=0.3)
    train_stage(
        stage="oe", net=net, normalize=normalize, train=train, val=val, cfg=cfg, run_dir=tmp_path, seed=0,
        extra_state={}, outliers=outliers,
    )  # fmt: skip
    assert len(seen) == 2 * 4  # 64 training images in batches of 16, two epochs
    assert all((rows, n_in, weight) == (16 + 12, 16, 0.3) for rows, n_in, weight, _ in seen)
    expected = sorted(float(v) for v in normalize(torch.from_numpy(as_float(outliers)))[:, 0, 0, 0])
    for epoch in range(2):  # 4 steps x 12 outliers: every outlier exactly once per epoch
        rows = [value for _, _, _, batch in seen[4 * epoch : 4 * epoch + 4] for value in batch[16:]]
        assert sorted(rows) == pytest.approx(expected)
