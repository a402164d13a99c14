"""Leave-one-source-out: each pool group is held out of OE in turn and scored as anomalies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.training.test_pipeline_validation_only import _tiny_digits
from training.cli import main
from training.data.cache import CACHE_ENV_VAR, save_npz_atomic
from training.evaluation.report_sections import loso_table
from training.image.pool import build as pool_build
from training.image.pool.build import POOL_FORMAT, pool_path


def _grouped_pool(cache: Path, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    monkeypatch.setenv(CACHE_ENV_VAR, str(cache))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(90, 1, 28, 28), dtype=np.uint8)
    images[60:] //= 8  # the third group is dark: a different kind of image from the other two
    groups = np.repeat(np.arange(3, dtype=np.int16), 30)
    manifest = {"format": POOL_FORMAT, "groups": ["bright", "also-bright", "dark"], "recipe": "crops"}
    save_npz_atomic(pool_path((1, 28, 28)), {"images": images, "groups": groups}, manifest)
    return groups


def _loso_argv(run_dir: Path, data: Path, groups: str, *settings: str) -> list[str]:
    """`loso` on the tiny digits with one-epoch twins, plus `--set` for each of `settings`."""
    argv = [
        "loso",
        "--set", f"data.in_distribution='npz:{data}'",
        "--set", "net.arch='convnet'", "--set", "net.standardize=false",
        "--set", "baseline.epochs=1", "--set", "baseline.batch_size=50",
        "--set", "oe.epochs=1", "--set", "oe.batch_size=50",
        "--set", f"run.run_dir='{run_dir}'",
    ]  # fmt: skip
    for setting in settings:
        argv += ["--set", setting]
    return [*argv, "--groups", groups]


@pytest.mark.slow
def test_loso_holds_out_each_group_and_scores_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _grouped_pool(tmp_path / "cache", monkeypatch)
    data = _tiny_digits(tmp_path / "digits.npz")
    argv = _loso_argv(tmp_path / "run", data, "bright,dark")
    assert main(argv) == 0
    result = json.loads((tmp_path / "run" / "loso" / "loso.json").read_text())
    assert list(result["groups"]) == ["bright", "dark"]
    for name, row in result["groups"].items():
        assert row["group_images"] == 30 and row["pool_without_group"] == 60, name
        for twin in ("oe", "baseline"):
            figures = row[twin]
            assert all(0.0 <= figures[key] <= 1.0 for key in ("auroc", "fpr95", "accepted_fraction"))
    assert (tmp_path / "run" / "loso" / "dark" / "checkpoints" / "oe.pt").is_file()  # one OE run per group
    summary = result["summary"]["oe"]
    aurocs = [row["oe"]["auroc"] for row in result["groups"].values()]
    assert summary["worst_auroc"] == min(aurocs) and summary["mean_auroc"] == pytest.approx(np.mean(aurocs))
    table = (tmp_path / "run" / "loso" / "loso.md").read_text()
    assert "| dark | 30 |" in table and "**mean** (worst)" in table

    assert main([*argv[:-1], "nosuch"]) == 2  # an unknown group is named


@pytest.mark.slow
def test_loso_holds_out_the_drawn_scribbles_and_scores_them_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _grouped_pool(tmp_path / "cache", monkeypatch)
    mixed = pool_path((1, 28, 28), "mixed")
    pool_path((1, 28, 28)).rename(mixed)  # the scribbles pool is the mixed recipe's cache plus the drawn group
    monkeypatch.setattr(pool_build, "SCRIBBLE_SAMPLES", 30)
    data = _tiny_digits(tmp_path / "digits.npz")
    argv = _loso_argv(tmp_path / "run", data, "scribbles", "data.outlier_pool='default-scribbles'", "oe.fragments=10")
    assert main(argv) == 0
    row = json.loads((tmp_path / "run" / "loso" / "loso.json").read_text())["groups"]["scribbles"]
    assert row["group_images"] == 30 and row["pool_without_group"] == 90 + 10  # fragments stay in every LOSO run
    # Drawn samples have no source pictures: the whole view is the held-out samples themselves.
    assert row["whole_images"] == 30 and row["whole_oe"] == row["oe"] and row["whole_baseline"] == row["baseline"]


@pytest.mark.slow
def test_loso_draws_the_configured_glyph_count_and_holds_the_glyphs_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _grouped_pool(tmp_path / "cache", monkeypatch)
    pool_path((1, 28, 28)).rename(pool_path((1, 28, 28), "mixed"))
    monkeypatch.setattr(pool_build, "SCRIBBLE_SAMPLES", 30)
    asked: list[int] = []

    def fake_glyphs(n: int, seed: int, scripts: list[str] | None = None) -> np.ndarray:
        asked.append(n)
        return np.random.default_rng(n).integers(0, 64, size=(n, 1, 28, 28), dtype=np.uint8)

    monkeypatch.setattr(pool_build, "font_glyphs", fake_glyphs)
    data = _tiny_digits(tmp_path / "digits.npz")
    settings = ["data.outlier_pool='default-glyphs-wide'", "data.glyph_samples=20", "oe.fragments=0"]
    argv = _loso_argv(tmp_path / "run", data, "glyphs-wide", *settings)
    assert main(argv) == 0
    assert asked == [20]  # data.glyph_samples reaches the drawn group
    row = json.loads((tmp_path / "run" / "loso" / "loso.json").read_text())["groups"]["glyphs-wide"]
    assert row["group_images"] == 20 and row["pool_without_group"] == 90 + 30


def test_loso_table_rows_and_summary() -> None:
    row = lambda a, f, acc: {"auroc": a, "fpr95": f, "accepted_fraction": acc, "threshold": 0.5}  # noqa: E731
    result = {
        "oe_epochs": 2, "pool": "default", "threshold_method": "pac", "acceptance_target": 0.95,
        "held_out_samples_per_group": 2000, "in_distribution": "mnist:val (10000 images)",
        "groups": {
            "arcade": {
                "group_images": 1234, "pool_without_group": 9,
                "baseline": row(0.9, 0.4, 0.3), "oe": row(0.99, 0.05, 0.01),
            },
        },
        "summary": {
            "baseline": {"mean_auroc": 0.9, "worst_auroc": 0.9, "mean_fpr95": 0.4, "mean_accepted_fraction": 0.3,
                         "worst_accepted_fraction": 0.3},
            "oe": {"mean_auroc": 0.99, "worst_auroc": 0.99, "mean_fpr95": 0.05, "mean_accepted_fraction": 0.01,
                   "worst_accepted_fraction": 0.01},
        },
    }  # fmt: skip
    table = loso_table(result)
    assert "| arcade | 1,234 | 90.00 -> 99.00 | 40.00 -> 5.00 | 30.00 -> 1.00 |" in table
    assert "| **mean** (worst) | | 90.00 -> 99.00 (99.00) | 40.00 -> 5.00 | 30.00 -> 1.00 (1.00) |" in table
    assert "pictures whole" not in table  # no whole-picture figures recorded
    assert "OE fine-tuned 2 epochs" in table and "pac rule at 95% acceptance" in table
