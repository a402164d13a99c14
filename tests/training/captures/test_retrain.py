"""Retraining with captures, the parts that need no training run (the whole loop: tests/e2e/test_flywheel.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training.artifact import load_artifact
from training.captures.retrain import _live_checkpoint, newest_version
from training.cli import main
from training.config import load_config
from training.pipeline import prepare


def test_newest_version_is_the_highest_number(tmp_path: Path) -> None:
    for name in ("1", "10", "9", ".tmp-11-abc", "notes"):
        (tmp_path / "m" / name).mkdir(parents=True)
    assert newest_version(tmp_path, "m") == tmp_path / "m" / "10"
    with pytest.raises(ValueError, match="no served version of other under"):
        newest_version(tmp_path, "other")


def test_without_the_live_checkpoint_the_reason_is_given(tiny_artifact: Path, tmp_path: Path) -> None:
    live = tmp_path / "tiny" / "1"
    shutil.copytree(tiny_artifact, live)
    card = json.loads((live / "card.json").read_text())
    overrides = ["data.in_distribution=mnist5k", "data.val_anomalies=val-uniform", f"run.run_dir='{tmp_path / 'run'}'"]
    cfg = load_config(None, overrides)
    ctx = prepare(cfg, "test", record=False)
    for training, reason in (
        ({}, "the live card names no run directory or stage"),
        (
            {"run_dir": str(tmp_path / "gone"), "stage": "oe"},
            f"the live version's checkpoint {tmp_path / 'gone' / 'checkpoints' / 'oe.pt'} is not on this machine",
        ),
    ):
        card["training"] = training
        (live / "card.json").write_text(json.dumps(card))
        assert _live_checkpoint(load_artifact(live), ctx) == (None, None, reason)


def test_with_captures_refuses_a_live_version_of_the_other_modality(
    tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["pipeline", "--config", "configs/topics-oe.toml", "--with-captures", str(tmp_path), "--live"]
    assert main([*argv, str(tiny_artifact)]) == 2
    assert f"error: {tiny_artifact} is an image model, and the config is a text config" in capsys.readouterr().err


def test_the_live_version_must_be_of_the_configs_modality_and_name(tiny_artifact: Path, tmp_path: Path) -> None:
    from tests.text_artifacts import publish_tiny_text
    from training.captures.compare import live_version

    text_artifact = publish_tiny_text(tmp_path)

    assert live_version(tiny_artifact, "image", "tiny").card.name == "tiny"
    with pytest.raises(ValueError, match=f"^{text_artifact} is a text model, and the config is an image config$"):
        live_version(text_artifact, "image", "tiny")
    with pytest.raises(ValueError, match=f"^{tiny_artifact} is an image model, and the config is a text config$"):
        live_version(tiny_artifact, "text", "tiny")
    with pytest.raises(ValueError, match=r"the live version is 'tiny' but export.name is 'other'.*export.name=tiny\)$"):
        live_version(tiny_artifact, "image", "other")
