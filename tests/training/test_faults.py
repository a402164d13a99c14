"""Faults in training, for real: SIGKILL mid-epoch then --resume, and SIGKILL while publishing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from training.artifact import load_artifact

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _digits(path: Path, n_train: int = 3000) -> Path:
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        return images, labels

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(n_train), split(200), split(50)
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
    return path


def _train_argv(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "training", "train",
        "--set", f"data.in_distribution='npz:{data}'",
        "--set", "net.arch='convnet'", "--set", "net.standardize=false",
        "--set", "baseline.epochs=4", "--set", "baseline.batch_size=50", "--set", "baseline.lr=0.05",
        "--set", "run.threads=1", "--set", "export.enabled=false",
        "--set", f"run.run_dir='{run_dir}'",
        *extra,
    ]  # fmt: skip


def _wait_for(path: Path, process: subprocess.Popen[bytes], limit: float = 300.0) -> None:
    deadline = time.monotonic() + limit  # a bound on a hang, not a timing assertion
    while not path.is_file():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    data = _digits(tmp_path / "digits.npz")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(_train_argv(data, tmp_path / "straight"), cwd=REPO, env=env, check=True, capture_output=True)

    killed = subprocess.Popen(_train_argv(data, tmp_path / "killed"), cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoints" / "baseline.pt"
    _wait_for(checkpoint, killed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert torch.load(checkpoint, weights_only=False)["epoch"] < 4  # killed mid-run, not after it

    resume = [*_train_argv(data, tmp_path / "killed"), "--resume"]
    subprocess.run(resume, cwd=REPO, env=env, check=True, capture_output=True)
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "baseline.pt", weights_only=False)
    resumed = torch.load(checkpoint, weights_only=False)
    assert resumed["epoch"] == straight["epoch"] == 4
    for name, value in straight["net_state"].items():
        assert torch.equal(value, resumed["net_state"][name]), name
    assert [h["val_accuracy"] for h in resumed["history"]] == [h["val_accuracy"] for h in straight["history"]]


def test_sigkill_while_publishing_never_leaves_a_loadable_half_artifact(tmp_path: Path) -> None:
    data = _digits(tmp_path / "digits.npz", n_train=300)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = _train_argv(data, tmp_path / "run", "--set", "baseline.epochs=1")
    subprocess.run(argv, cwd=REPO, env=env, check=True, capture_output=True)
    checkpoint = tmp_path / "run" / "checkpoints" / "baseline.pt"
    models = tmp_path / "models"
    export = [
        sys.executable, "-m", "training", "export", "--checkpoint", str(checkpoint), "--name", "tiny",
        "--set", f"export.models_dir='{models}'",
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(export, cwd=REPO, env=env, check=True, capture_output=True)
    full = time.monotonic() - started  # one whole export, so the kills below land at points inside one

    def visible() -> list[Path]:
        return sorted(v for v in (models / "tiny").iterdir() if not v.name.startswith("."))

    assert [v.name for v in visible()] == ["1"]
    rng = np.random.default_rng(0)
    killed = 0
    for _ in range(5):
        process = subprocess.Popen(export, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.05, 0.95)) * full)  # where it dies is what varies
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait()
        for version in visible():  # a hidden .tmp-* directory is a half-written version the service skips
            assert load_artifact(version).card.name == "tiny"  # every visible version is whole
    assert killed >= 1
    assert len(visible()) <= 6
