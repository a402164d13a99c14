from pathlib import Path

import pytest
from pydantic import ValidationError

from training.config import PipelineConfig, load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    assert isinstance(load_config(path), PipelineConfig)


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(CONFIGS / "mnist-oe.toml", ["oe.epochs=3", "data.in_distribution=mnist5k", "oe.weight=0.25"])
    assert cfg.oe.epochs == 3
    assert cfg.oe.weight == 0.25
    assert cfg.data.in_distribution == "mnist5k"
    assert cfg.export.name == "mnist-oe"
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("run.name=plain-word") == (["run", "name"], "plain-word")


def test_typo_in_a_config_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[oe]\nepocs = 3\n")
    with pytest.raises(ValidationError, match=r"oe\.epocs"):
        load_config(path)
    with pytest.raises(ValidationError, match=r"baseline\.lr"):
        load_config(None, ["baseline.lr=-1"])
    with pytest.raises(ValueError, match=r"section\.field=value"):
        load_config(None, ["no-equals-sign"])
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_baseline_and_oe_names_must_differ() -> None:
    with pytest.raises(ValidationError, match="must differ"):
        load_config(None, ["export.name=same", "export.baseline_name=same"])
