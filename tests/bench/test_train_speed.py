"""The training-speed benchmark runs end to end on tiny data (no timing is asserted), and the reference-style loop's
transforms do what torchvision's do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import train_speed
from bench.reference_oe import random_horizontal_flip, to_tensor
from training.config import load_config
from training.data.base import as_float
from training.image.nets import build_net


def _tiny_digits(path: Path) -> Path:
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):  # a bright bar whose row encodes the class
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        return images, labels

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(200), split(100), split(20)
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
    return path


def test_to_tensor_matches_the_loops_pixel_scaling() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8)
    tensor = to_tensor(Image.fromarray(pixels, mode="L"))
    assert tensor.shape == (1, 28, 28) and tensor.dtype == torch.float32
    np.testing.assert_array_equal(tensor.numpy(), as_float(pixels[None]))


def test_random_horizontal_flip_flips_about_half_the_time() -> None:
    torch.manual_seed(0)
    image = Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28) % 251, mode="L")
    flipped = [np.array(random_horizontal_flip(image)) for _ in range(400)]
    mirrored = sum(np.array_equal(f, np.array(image)[:, ::-1]) for f in flipped)
    unchanged = sum(np.array_equal(f, np.array(image)) for f in flipped)
    assert mirrored + unchanged == 400
    assert 150 < mirrored < 250  # binomial(400, 1/2): mean 200, sd 10


@pytest.mark.slow
# The reference's 1 + 3 loader workers are more than torch suggests for 2 cores: its own choice, kept on purpose.
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_train_speed_runs_both_loops_and_reports_them(tmp_path: Path) -> None:
    data = _tiny_digits(tmp_path / "digits.npz")
    np.save(tmp_path / "pool.npy", np.random.default_rng(1).integers(0, 256, size=(300, 28, 28), dtype=np.uint8))
    out = tmp_path / "speed.md"
    argv = [
        "--set", f"data.in_distribution='npz:{data}'", "--set", f"data.outlier_pool='npy:{tmp_path / 'pool.npy'}'",
        "--set", "data.val_anomalies=val-uniform,val-jigsaw", "--val-anomaly-samples", "30",
        "--epochs", "1", "--rounds", "2", "--threads", "1", "--out", str(out),
    ]  # fmt: skip
    assert train_speed.main(argv) == 0
    lines = out.read_text().splitlines()
    rounds = [line.split(" | ") for line in lines if line.startswith(("| 0 |", "| 1 |"))]
    # Two rounds of each loop, alternating which goes first, on seeds run.seed + round.
    assert [(row[0], row[1], row[2]) for row in rounds] == [
        ("| 0", "0", "ours"), ("| 0", "0", "reference"), ("| 1", "1", "reference"), ("| 1", "1", "ours"),
    ]  # fmt: skip
    assert sum(line.startswith("| ours |") for line in lines) == 1  # one summary row per loop
    assert sum(line.startswith("| reference |") for line in lines) == 1
    assert any(line.startswith("**ours / reference: ") and "per CPU-second" in line for line in lines)
    assert any("train 200 images" in line and "300 images" in line for line in lines)


def test_both_loops_see_the_whole_split_once_per_epoch(tmp_path: Path) -> None:
    data = _tiny_digits(tmp_path / "digits.npz")
    np.save(tmp_path / "pool.npy", np.random.default_rng(1).integers(0, 256, size=(300, 28, 28), dtype=np.uint8))
    args = train_speed.parse_args([
        "--set", f"data.in_distribution='npz:{data}'", "--set", f"data.outlier_pool='npy:{tmp_path / 'pool.npy'}'",
    ])  # fmt: skip
    cfg = load_config(args.config, [*args.set, "oe.epochs=2"])
    digits = train_speed.load_data(cfg, 120)
    pool = np.load(tmp_path / "pool.npy")[:, None]
    net = build_net(cfg.net, 1, 10, 28, 28)
    # 120 digits at batch 50: steps of 50, 50 and 20, twice.
    assert train_speed.run_reference(net, cfg, digits, pool, seed=0, in_workers=0, out_workers=0, test_workers=0) == 240
    assert train_speed.run_ours(net, cfg, digits, pool, seed=0) == 240
