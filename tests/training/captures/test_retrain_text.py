"""Retraining a text model with captures, end to end on a tiny text model: train and promote version 1, capture
texts into two stores (two replicas) with the service's store code, label them, retrain, compare and promote."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.text_artifacts import publish_tiny_text
from tests.training.captures.conftest import add
from tests.training.text.test_text_pipeline import TOPICS, write_config, write_user_data
from training.artifact import load_artifact
from training.captures.compare import pool_record
from training.captures.retrain_text import _live_text_checkpoint
from training.captures.store import read_captures
from training.cli import main
from training.promote import PromotionRefusedError, promote
from training.text.config import load_text_config
from training.text.pipeline import prepare_text

MODEL = "topics-oe"
WEATHER = ["rain", "cloud", "storm", "wind", "thunder", "drizzle", "fog", "sunshine", "hail", "breeze", "frost"]


def weather_texts(count: int, seed: int) -> list[str]:
    """A topic version 1 never saw: distinct sentences of weather words."""
    rng = np.random.default_rng(seed)
    return [f"{' '.join(rng.choice(WEATHER, size=7))} report {i}" for i in range(count)]


@pytest.mark.slow
def test_a_text_model_retrains_on_captures_from_two_replicas(tmp_path: Path) -> None:
    config = write_config(tmp_path, *write_user_data(tmp_path))
    staging = ["--set", f"export.models_dir='{tmp_path / 'staging'}'"]
    with contextlib.redirect_stdout(io.StringIO()):  # the baseline twin as text versions 1 and 2 were published
        assert main(["pipeline", "--config", str(config), *staging, "--set", "oe.matched_twin=false"]) == 0
    twin = load_artifact(tmp_path / "staging" / "topics-baseline" / "1").card.training
    assert (twin["stage"], twin["matched_fine_tune"]) == ("baseline", None)
    assert not (tmp_path / "run" / "checkpoints" / "matched.pt").exists()
    promote(MODEL, 1, staging=tmp_path / "staging", models=tmp_path / "models")
    live = load_artifact(tmp_path / "models" / MODEL / "1")

    # Two replicas' stores: weather texts from a kiosk (the new kind), cooking texts from the app.
    captures = tmp_path / "captures"
    rng = np.random.default_rng(1)
    cooking = [" ".join(rng.choice(TOPICS["cooking"], size=6)) + f" step {i}" for i in range(8)]
    for i, text in enumerate(weather_texts(48, seed=2)):
        replica = captures / ("oegate-a" if i % 2 else "oegate-b")
        replica.mkdir(parents=True, exist_ok=True)
        add(replica, f"w{i:02d}", text.encode(), time=100.0 + i, source="kiosk", model=MODEL, input_kind="text")
    for i, text in enumerate(cooking):
        add(captures / "oegate-a", f"c{i}", text.encode(), time=200.0 + i, source="app", model=MODEL, input_kind="text")
    root = str(captures)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["captures", "label", root, "--source", "kiosk", "--as", "outlier"]) == 0
        assert main(["captures", "label", root, "--source", "app", "--as", "in-distribution:cooking"]) == 0

    argv = [
        "pipeline", "--config", str(config), "--with-captures", root, "--served-models", str(tmp_path / "models"),
        *staging, "--set", f"run.run_dir='{tmp_path / 'run-2'}'", "--set", "oe.epochs=2",
        "--set", "promotion.min_heldout_outliers=5",
    ]  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    candidate_dir = tmp_path / "staging" / MODEL / "2"
    assert out.getvalue().splitlines()[:2] == [str(candidate_dir), str(candidate_dir / "comparison.md")]
    candidate = load_artifact(candidate_dir)
    card = candidate.card
    assert card.task == "text" and "comparison.md" in card.sha256
    # Version 1's own checkpoint, exported and int8-quantized as it was, reproduces the live graph: fine-tuned from it.
    assert card.training["start"]["kind"] == "live-checkpoint", card.training["start"]
    assert "exported and quantized" in card.training["start"]["note"]

    curation = card.training["captures"]
    counts = curation["counts"]
    train_outliers, heldout_outliers = counts["train"]["outlier"], counts["heldout"]["outlier"]
    train_valid = counts["train"].get("in-distribution:cooking", 0)
    assert (
        train_outliers + heldout_outliers == 48
        and train_valid + counts["heldout"].get("in-distribution:cooking", 0) == 8
    )
    assert curation["stores"] == {"oegate-a": 32, "oegate-b": 24}
    # Outlier captures joined the OE corpus (80 sentences), repeated to about a quarter of it; valid ones the texts.
    repeats = math.ceil(0.25 * 80 / (0.75 * train_outliers))
    assert card.training["captures_corpus"] == pool_record(80, train_outliers, repeats, train_valid)
    assert card.training["data"]["oe_corpus_samples"] == 80 + repeats * train_outliers
    assert card.training["data"]["train_samples"] == 117 + train_valid

    promotion = card.evaluation["promotion"]
    assert promotion["live"] == {"path": str(tmp_path / "models" / MODEL / "1"), "name": MODEL, "version": 1}
    assert promotion["candidate"]["captures"]["outliers"] == heldout_outliers >= 5
    assert promotion["candidate"]["threshold"] == card.threshold.value
    assert promotion["live_figures"]["threshold"] == live.card.threshold.value
    # The figures are the served graphs' own: rescore the held-back weather texts with each.
    heldout_hashes = set(curation["heldout_sha256"])
    heldout = [
        c.path.read_text() for c in read_captures(captures) if c.sha256 in heldout_hashes and c.source == "kiosk"
    ]
    assert len(heldout) == heldout_outliers
    for artifact, figures in ((candidate, promotion["candidate"]), (live, promotion["live_figures"])):
        scores = artifact.run_texts(heldout)["anomaly_score"]
        rejected = float(np.mean(scores >= np.float32(artifact.card.threshold.value)))
        assert figures["captures"]["outliers_rejected"] == pytest.approx(rejected)
    before, after = (f["captures"]["outliers_rejected"] for f in (promotion["live_figures"], promotion["candidate"]))
    print(f"\n{heldout_outliers} held-back weather texts rejected: v1 {before:.3f}, v2 {after:.3f}")
    assert after >= before + 0.05  # the new kind, never trained on in these held-back texts, is caught more often
    comparison = (candidate_dir / "comparison.md").read_text()
    assert ("Promotion rule: PASSED" in comparison) == promotion["passed"]
    assert "- stores: {'oegate-a': 32, 'oegate-b': 24}" in comparison
    if promotion["passed"]:
        assert promote(MODEL, 2, staging=tmp_path / "staging", models=tmp_path / "models").is_dir()
    else:
        with pytest.raises(PromotionRefusedError):
            promote(MODEL, 2, staging=tmp_path / "staging", models=tmp_path / "models")
    assert json.loads((tmp_path / "run-2" / "config.json").read_text())["captures"]["holdout_percent"] == 25.0

    # Without version 1's run directory the whole config is retrained (baseline, then OE), and the card says why.
    shutil.rmtree(tmp_path / "run")
    argv = [*argv, "--set", f"run.run_dir='{tmp_path / 'run-3'}'", "--live", str(tmp_path / "models" / MODEL / "1")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    start = load_artifact(tmp_path / "staging" / MODEL / "3").card.training["start"]
    assert start == {
        "kind": "scratch",
        "note": "retrained from scratch: the live version's checkpoint "
        f"{tmp_path / 'run' / 'checkpoints' / 'oe.pt'} is not on this machine",
    }


def test_without_the_live_text_checkpoint_the_reason_is_given(tmp_path: Path) -> None:
    live = publish_tiny_text(tmp_path / "models")
    card = json.loads((live / "card.json").read_text())
    ctx = prepare_text(load_text_config(write_config(tmp_path, *write_user_data(tmp_path))), "test", record=False)
    for training, reason in (
        ({"stage": "oe"}, "the live card names no run directory or stage"),
        (
            {"run_dir": str(tmp_path / "gone"), "stage": "oe"},
            f"the live version's checkpoint {tmp_path / 'gone' / 'checkpoints' / 'oe.pt'} is not on this machine",
        ),
    ):
        card["training"] = training
        (live / "card.json").write_text(json.dumps(card))
        assert _live_text_checkpoint(load_artifact(live), ctx) == (None, reason)
