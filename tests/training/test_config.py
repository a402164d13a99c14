from pathlib import Path

import pytest
from pydantic import ValidationError

from training.config import PipelineConfig, is_text_config, load_config, parse_override, read_raw_config
from training.text.config import TextPipelineConfig, load_text_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    if is_text_config(read_raw_config(path)):
        assert isinstance(load_text_config(path), TextPipelineConfig)
        with pytest.raises(ValueError, match="unknown config field 'task'"):
            load_config(path)  # the image pipeline refuses a text config by name
    else:
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
    with pytest.raises(ValueError, match=r"unknown config field 'oe\.epocs' \(did you mean 'oe\.epochs'\?\)"):
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


def test_test_anomaly_sets_are_refused_in_the_pipeline_config() -> None:
    with pytest.raises(ValueError, match="'gaussian' is not a validation anomaly set"):
        load_config(None, ["data.val_anomalies=['val-uniform', 'gaussian']"])
    with pytest.raises(ValueError, match=r"data\.eval_anomalies / data\.eval_anomaly_samples are now"):
        load_config(None, ["data.eval_anomalies=['gaussian']"])
    cfg = load_config(None, ["data.val_anomalies=['val-jigsaw', 'npy:/data/held_out.npy']"])
    assert cfg.data.val_anomalies == ["val-jigsaw", "npy:/data/held_out.npy"]


def test_oe_weight_decay_defaults_to_the_baselines() -> None:
    assert load_config(None, ["baseline.weight_decay=1e-4"]).oe.weight_decay == 1e-4
    assert load_config(None, ["baseline.weight_decay=1e-4", "oe.weight_decay=0.0"]).oe.weight_decay == 0.0
    assert load_config(None, []).calibration.threshold_method == "conformal"
    with pytest.raises(ValueError, match="threshold_method"):
        load_config(None, ["calibration.threshold_method=quantile"])


def test_unknown_fields_suggest_the_closest_name() -> None:
    with pytest.raises(ValueError, match=r"unknown config field 'oe\.epoch' \(did you mean 'oe\.epochs'\?\)"):
        load_config(None, ["oe.epoch=3"])
    with pytest.raises(ValueError, match=r"unknown config field 'calibraton' \(did you mean 'calibration'\?\)"):
        load_config(None, ["calibraton.delta=0.1"])
    with pytest.raises(ValueError, match=r"unknown config field 'zzz'; valid here: run, data, net"):
        load_config(None, ["zzz.a=1"])


def test_comma_lists_and_plain_strings_in_overrides() -> None:
    cfg = load_config(None, ["data.val_anomalies=val-uniform, val-jigsaw", "data.outlier_pool_exclude=arcade"])
    assert cfg.data.val_anomalies == ["val-uniform", "val-jigsaw"]
    assert cfg.data.outlier_pool_exclude == ["arcade"]
    assert load_config(None, ["data.in_distribution=mnist5k"]).data.in_distribution == "mnist5k"


def test_config_show_prints_every_field_with_its_documentation(capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    assert main(["config", "show", "--config", str(CONFIGS / "mnist-oe.toml"), "--set", "oe.epochs=3"]) == 0
    out = capsys.readouterr().out
    sections = [line for line in out.splitlines() if line.startswith("[")]
    assert sections == [
        "[run]", "[data]", "[net]", "[baseline]", "[oe]", "[calibration]", "[export]", "[captures]", "[promotion]"
    ]  # fmt: skip
    oe = out[out.index("[oe]") : out.index("[calibration]")]
    assert "epochs = 3\n#   Passes over the in-distribution training split (each paired with outlier" in oe
    assert 'threshold_method = "pac"' in out and "# run_dir is unset" in out
    for section in PipelineConfig.model_fields:
        for name in type(getattr(PipelineConfig(), section)).model_fields:
            assert f"\n{name} = " in out or f"# {name} is unset" in out, name


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("python -m training (oegate ")
