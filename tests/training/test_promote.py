"""Promotion from the staging area into the served model directory: verified, atomic, never overwriting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training.artifact import ArtifactError, load_artifact
from training.cli import main
from training.config import load_config
from training.export import ArtifactExistsError
from training.promote import promote


def _staged(tiny_artifact: Path, tmp_path: Path, version: int = 1) -> Path:
    staged = tmp_path / "staging" / "tiny" / str(version)
    shutil.copytree(tiny_artifact, staged)
    card = json.loads((staged / "card.json").read_text())
    card["version"] = version
    (staged / "card.json").write_text(json.dumps(card))
    return staged


def test_training_publishes_to_staging_by_default() -> None:
    assert load_config(None).export.models_dir == Path("staging")


def test_promote_copies_a_verified_version_into_models(tiny_artifact: Path, tmp_path: Path) -> None:
    _staged(tiny_artifact, tmp_path)
    served = promote("tiny", 1, staging=tmp_path / "staging", models=tmp_path / "models")
    assert served == tmp_path / "models" / "tiny" / "1"
    assert load_artifact(served).card.name == load_artifact(tiny_artifact).card.name
    assert (served / "model.onnx").read_bytes() == (tiny_artifact / "model.onnx").read_bytes()
    assert sorted(p.name for p in (tmp_path / "models" / "tiny").iterdir()) == ["1"]  # no temporary left behind
    with pytest.raises(ArtifactExistsError, match="served versions are immutable"):
        promote("tiny", 1, staging=tmp_path / "staging", models=tmp_path / "models")


def test_promote_refuses_a_corrupt_or_missing_staged_version(tiny_artifact: Path, tmp_path: Path) -> None:
    staged = _staged(tiny_artifact, tmp_path, version=2)
    with (staged / "model.onnx").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        promote("tiny", 2, staging=tmp_path / "staging", models=tmp_path / "models")
    assert not (tmp_path / "models").exists()
    with pytest.raises(ArtifactError, match="no such artifact directory"):
        promote("tiny", 7, staging=tmp_path / "staging", models=tmp_path / "models")


def test_promote_command(tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _staged(tiny_artifact, tmp_path)
    argv = ["promote", "tiny", "1", "--staging", str(tmp_path / "staging"), "--models", str(tmp_path / "models")]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "models" / "tiny" / "1")
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def _with_promotion(staged: Path, passed: bool, compared_version: int) -> None:
    """Give a staged card the promotion record `pipeline --with-captures` writes (card.json is not checksummed)."""
    card = json.loads((staged / "card.json").read_text())
    check = {"check": "captures: outliers rejected", "candidate": 0.5, "live": 0.48, "requirement": ">= live + 0.05"}
    card["evaluation"]["promotion"] = {
        "rule": {"tolerance": 0.01, "min_capture_gain": 0.05, "min_heldout_outliers": 10},
        "live": {"path": "models/tiny/1", "name": "tiny", "version": compared_version},
        "checks": [{**check, "passed": passed}],
        "passed": passed,
    }
    (staged / "card.json").write_text(json.dumps(card))


def test_promote_refuses_a_version_whose_promotion_rule_failed_unless_forced(
    tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_promotion(_staged(tiny_artifact, tmp_path, version=2), passed=False, compared_version=1)
    argv = ["promote", "tiny", "2", "--staging", str(tmp_path / "staging"), "--models", str(tmp_path / "models")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'staging' / 'tiny' / '2'} is not promoted: captures: outliers rejected: candidate 0.5 vs "
        f"live 0.48 (needs >= live + 0.05) (see {tmp_path / 'staging' / 'tiny' / '2' / 'comparison.md'}; --force to "
        "promote anyway)\n"
    )
    assert not (tmp_path / "models" / "tiny" / "2").exists()
    assert main([*argv, "--force"]) == 0
    assert (tmp_path / "models" / "tiny" / "2" / "card.json").is_file()


def test_promote_accepts_a_passed_rule_but_refuses_a_stale_comparison(tiny_artifact: Path, tmp_path: Path) -> None:
    _with_promotion(_staged(tiny_artifact, tmp_path, version=2), passed=True, compared_version=1)
    _with_promotion(_staged(tiny_artifact, tmp_path, version=4), passed=True, compared_version=1)
    staging, models = tmp_path / "staging", tmp_path / "models"
    assert promote("tiny", 2, staging=staging, models=models) == models / "tiny" / "2"
    # Version 4 was compared with version 1, but 2 is served now: its comparison says nothing about 2.
    with pytest.raises(ValueError, match="it was compared with version 1, but version 2 is served now"):
        promote("tiny", 4, staging=staging, models=models)
    assert promote("tiny", 4, staging=staging, models=models, force=True) == models / "tiny" / "4"
