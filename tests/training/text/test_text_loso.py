"""Text leave-one-source-out: each group of a packaged OE corpus is left out of OE in turn and its held-out slice
scored; a reference run on the whole corpus is scored on the same sentences."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from tests.training.text.test_text_pipeline import forbidden_test_sets, write_config, write_user_data
from training.calibrate import choose_threshold, fit_temperature
from training.cli import main
from training.evaluation.metrics import detection_figures
from training.evaluation.report_sections import loso_summary, loso_table
from training.pipeline import anomaly_scores
from training.text import corpora
from training.text import loso as text_loso
from training.text.config import load_text_config
from training.text.loso import HELD_OUT_SAMPLES, _TextGate, held_out_texts
from training.text.pipeline import prepare_text, text_net_from_checkpoint

# Two fake corpus groups of different sizes and kinds, so that a run that trained on the wrong group shows up in the
# corpus sizes the result records.
GROUPS = {
    "fake-letters": tuple(f"{' '.join(['alpha', 'beta', 'gamma'][i % 3] for _ in range(5))} {i}" for i in range(300)),
    "fake-numbers": tuple(f"one two three four item {i} of the list" for i in range(500)),
}


@pytest.fixture
def fake_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """A packaged recipe `fake` of the two groups above, in place of the real corpus."""
    monkeypatch.setitem(corpora.OE_RECIPES, "fake", tuple(GROUPS))
    monkeypatch.setattr(corpora, "ALL_OE_GROUPS", (*corpora.ALL_OE_GROUPS, *GROUPS))
    monkeypatch.setattr(corpora, "oe_group_sentences", lambda group: GROUPS[group])


def _trained_on(group: str) -> int:
    return sum(not corpora.is_oe_heldout(s) for s in GROUPS[group])


def _held_out(group: str) -> list[str]:
    return [s for s in GROUPS[group] if corpora.is_oe_heldout(s)]


def test_held_out_texts_are_the_groups_held_out_slice(fake_recipe: None) -> None:
    for group in GROUPS:
        texts = held_out_texts(group, seed=0)
        assert 0 < len(texts) < HELD_OUT_SAMPLES and sorted(texts) == sorted(_held_out(group))
        assert texts == held_out_texts(group, seed=0)


def _row(auroc: float, fpr95: float, accepted: float) -> dict[str, float]:
    return {"auroc": auroc, "fpr95": fpr95, "accepted_fraction": accepted, "threshold": 0.5}


def test_text_loso_table_shows_baseline_oe_ratio_and_the_reference_run() -> None:
    rows = {
        "news-en": {
            "group_texts": 900, "corpus_without_group": 80000,
            "baseline": _row(0.80, 0.60, 0.70), "oe": _row(0.90, 0.24, 0.20), "in_pool_oe": _row(0.99, 0.02, 0.01),
        },
        "faker-lorem": {
            "group_texts": 120, "corpus_without_group": 90000,
            "baseline": _row(0.70, 0.50, 0.60), "oe": _row(0.96, 0.30, 0.10), "in_pool_oe": _row(1.0, 0.0, 0.0),
        },
    }  # fmt: skip
    summary = loso_summary(rows)
    assert summary["oe"]["worst_auroc"] == 0.90 and summary["oe"]["mean_fpr95"] == pytest.approx(0.27)
    assert summary["in_pool_oe"]["mean_auroc"] == pytest.approx(0.995)
    assert summary["baseline"]["worst_accepted_fraction"] == 0.70
    three = rows | {"wordnet-en": {"baseline": _row(0.9, 0.1, 0.9), "oe": _row(0.99, 0.01, 0.60)}}
    assert loso_summary(three)["oe"]["mean_accepted_fraction"] == pytest.approx(0.30)  # (0.20 + 0.10 + 0.60) / 3
    result = {
        "task": "text", "pool": "default-wordnet", "corpus_sentences": 100000, "oe_epochs": 2,
        "threshold_method": "pac", "acceptance_target": 0.95, "held_out_samples_per_group": 1000,
        "in_distribution": "chatterbot-en:val (189 texts)", "groups": rows, "summary": summary,
    }  # fmt: skip
    lines = loso_table(result).splitlines()
    assert "`default-wordnet` minus the left-out group" in lines[0] and "100,000 sentences" in lines[0]
    assert (
        lines[4] == "| news-en | 900 | 80.00 -> 90.00 (99.00) | 60.00 -> 24.00 (2.00) | 0.40 | 70.00 -> 20.00 (1.00) |"
    )
    assert (
        lines[5]
        == "| faker-lorem | 120 | 70.00 -> 96.00 (100.00) | 50.00 -> 30.00 (0.00) | 0.60 | 60.00 -> 10.00 (0.00) |"
    )
    assert lines[6] == (
        "| **mean** (worst) | | 75.00 -> 93.00 (99.50); worst 90.00 | 55.00 -> 27.00 (1.00) | 0.49 | "
        "65.00 -> 15.00 (0.50); worst 20.00 |"
    )
    rows["faker-lorem"]["baseline"]["fpr95"] = 0.0  # a ratio over a zero baseline FPR95 is not a division error
    assert "| 0.00 -> 30.00 (0.00) | inf |" in loso_table(result | {"summary": loso_summary(rows)})


@pytest.mark.slow
def test_text_loso_leaves_each_group_out_and_scores_its_held_out_slice(tmp_path: Path, fake_recipe: None) -> None:
    config = write_config(tmp_path, *write_user_data(tmp_path))
    argv = ["loso", "--config", str(config), "--set", "data.oe_corpus='fake'", "--set", "oe.batch_size=8"]
    out = io.StringIO()
    with forbidden_test_sets(), contextlib.redirect_stdout(out):
        assert main(argv) == 0
    loso_dir = tmp_path / "run" / "loso"
    assert out.getvalue().strip() == str(loso_dir / "loso.json")
    result = json.loads((loso_dir / "loso.json").read_text())
    assert result["task"] == "text" and result["pool"] == "fake" and result["oe_epochs"] == 1
    assert result["corpus_sentences"] == _trained_on("fake-letters") + _trained_on("fake-numbers")
    assert list(result["groups"]) == ["fake-letters", "fake-numbers"]
    for name, row in result["groups"].items():
        other = next(g for g in GROUPS if g != name)
        assert row["corpus_without_group"] == _trained_on(other), name  # trained without the left-out group
        assert row["group_texts"] == len(_held_out(name)), name
        for twin in ("oe", "baseline", "in_pool_oe"):
            assert all(0.0 <= row[twin][key] <= 1.0 for key in ("auroc", "fpr95", "accepted_fraction")), twin
        # The baseline and the reference run are one net each: their threshold is the same in every row.
        assert row["in_pool_oe"]["threshold"] != row["oe"]["threshold"]
        assert (loso_dir / name / "checkpoints" / "oe.pt").is_file()  # one OE run per group
    rows = list(result["groups"].values())
    assert rows[0]["baseline"]["threshold"] == rows[1]["baseline"]["threshold"]
    # The baseline column is the matched twin (oe.matched_twin, the default), as the pipeline publishes it.
    assert result["baseline_twin"] == "matched"
    matched = loso_dir / "matched-twin" / "checkpoints" / "matched.pt"
    overrides = argv[4::2]  # the values of argv's --set options
    ctx = prepare_text(load_text_config(config, overrides), "test", resume=True, record=False)
    for path, same in ((matched, True), (tmp_path / "run" / "checkpoints" / "baseline.pt", False)):
        gate = _TextGate.fit(ctx, text_net_from_checkpoint(path, ctx))
        assert bool(gate.threshold == rows[0]["baseline"]["threshold"]) == same, path
    assert rows[0]["in_pool_oe"]["threshold"] == rows[1]["in_pool_oe"]["threshold"]
    assert (loso_dir / "whole-corpus" / "checkpoints" / "oe.pt").is_file()  # the reference run on the whole corpus
    summary = result["summary"]["oe"]
    assert summary["mean_auroc"] == pytest.approx(np.mean([row["oe"]["auroc"] for row in rows]))
    assert "| fake-numbers | " in (loso_dir / "loso.md").read_text()

    # Resumed with one group only: the checkpoints are reused and only that group is reported.
    assert main([*argv, "--resume", "--groups", "fake-numbers"]) == 0
    assert list(json.loads((loso_dir / "loso.json").read_text())["groups"]) == ["fake-numbers"]


def test_text_loso_refuses_unknown_groups_and_a_corpus_without_groups(
    tmp_path: Path, fake_recipe: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, *write_user_data(tmp_path))
    assert main(["loso", "--config", str(config), "--set", "data.oe_corpus='fake'", "--groups", "nosuch"]) == 2
    assert "unknown OE corpus group(s) nosuch; groups: fake-letters, fake-numbers" in capsys.readouterr().err
    assert main(["loso", "--config", str(config)]) == 2  # the config's corpus is a user's text file
    assert "LOSO needs a packaged OE corpus with source groups" in capsys.readouterr().err


def test_a_loso_gate_scores_at_its_fitted_temperature_and_pac_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures of one net: KL scores of its logits over the temperature fitted on the validation split, the
    threshold by the config's rule on those scores (the served gate's recipe, on the torch net)."""
    rng = np.random.default_rng(0)
    val_texts = tuple(f"val {i}" for i in range(80))
    labels = rng.integers(0, 3, 80)
    logits = {t: torch.tensor(rng.normal(0, 1, 3) + 4.0 * np.eye(3)[labels[i]]) for i, t in enumerate(val_texts)}
    logits |= {f"odd {i}": torch.tensor(rng.normal(0, 0.5, 3)) for i in range(40)}
    monkeypatch.setattr(
        text_loso, "predict_text_logits", lambda net, tok, texts: torch.stack([logits[t] for t in texts])
    )
    cfg = SimpleNamespace(calibration=SimpleNamespace(acceptance_target=0.9, threshold_method="pac", delta=0.1))
    val = SimpleNamespace(texts=val_texts, labels=labels)
    ctx: Any = SimpleNamespace(cfg=cfg, tokenizer=None, data=SimpleNamespace(val=val))
    gate = text_loso._TextGate.fit(ctx, net=None)  # type: ignore[arg-type]
    val_logits = torch.stack([logits[t] for t in val_texts])
    temperature = fit_temperature(val_logits, torch.from_numpy(labels))
    assert gate.temperature == pytest.approx(temperature) and temperature != pytest.approx(1.0, abs=0.05)
    val_scores = anomaly_scores(val_logits / temperature)
    assert gate.threshold == choose_threshold(val_scores, 0.9, "pac", 0.1).value
    odd = tuple(f"odd {i}" for i in range(40))
    odd_scores = anomaly_scores(torch.stack([logits[t] for t in odd]) / temperature)
    expected = detection_figures(val_scores, odd_scores, gate.threshold)
    figures = gate.figures(ctx, odd)
    assert figures == {key: expected[key] for key in ("auroc", "fpr95", "accepted_fraction")} | {
        "threshold": gate.threshold
    }
