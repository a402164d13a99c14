"""`python -m training`: argument errors, bad input as one `error:` line with exit status 2, Ctrl-C as 130.
Nothing here trains: every command fails (or lists) before any data is read."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from training import cli


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["finetune-oe"],  # --baseline is required
        ["export", "--name", "x"],  # --checkpoint is required
        ["data"],
        ["data", "build-pool", "--per-image", "many"],
    ],
)
def test_argument_errors_exit_with_status_2_and_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    assert "usage: python -m training" in capsys.readouterr().err


def test_every_command_is_registered() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"pipeline", "train", "finetune-oe", "export", "data", "evaluate"} <= set(commands.choices)


@pytest.mark.parametrize("command", ["pipeline", "train"])
def test_a_missing_config_file_is_one_error_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    status, out, err = run([command, "--config", str(missing)], capsys)
    assert (status, out, err) == (2, "", f"error: config file {missing} not found\n")


def test_invalid_toml_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[run\nname = 1\n")
    status, out, err = run(["train", "--config", str(config)], capsys)
    assert (status, out) == (2, "")
    assert err.startswith(f"error: {config}: invalid TOML (") and err.count("\n") == 1


def test_an_override_into_a_value_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["train", "--set", "run.name='a'", "--set", "run.name.part=1"], capsys)
    assert (status, err) == (2, "error: override 'run.name.part=1': name is not a section\n")


def test_an_unknown_config_field_is_refused_before_training(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["finetune-oe", "--baseline", "x.pt", "--set", "nosuch.field=1"], capsys)
    assert (status, out) == (2, "")
    assert err.startswith("error: ") and "nosuch" in err


def test_export_of_a_missing_or_foreign_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.pt"
    assert run(["export", "--checkpoint", str(missing), "--name", "x"], capsys) == (
        2,
        "",
        f"error: checkpoint {missing} not found\n",
    )
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": []}, foreign)
    assert run(["export", "--checkpoint", str(foreign), "--name", "x"], capsys) == (
        2,
        "",
        f"error: {foreign} is not an oegate checkpoint\n",
    )


@pytest.mark.parametrize("shape", ["1,28", "1,28,28,1", "28"])
def test_build_pool_needs_three_dimensions(shape: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["data", "build-pool", "--shape", shape], capsys)
    assert (status, out, err) == (2, "", f"error: --shape must be C,H,W, got {shape!r}\n")


def test_data_list_prints_the_registered_names(capsys: pytest.CaptureFixture[str]) -> None:
    from training.data.registry import describe_data_specs

    status, out, err = run(["data", "list"], capsys)
    assert (status, out, err) == (0, describe_data_specs() + "\n", "")


def test_the_command_line_is_recorded_and_ctrl_c_says_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str] = []

    def interrupted(args: argparse.Namespace) -> int:
        seen.append(args.command_line)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_list_data", interrupted)
    status, _, err = run(["data", "list"], capsys)
    assert status == 130
    assert err == "interrupted: rerun the same command with --resume to continue from the last checkpoint\n"
    assert seen == ["python -m training data list"]


def test_other_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(cli, "_cmd_list_data", broken)
    with pytest.raises(RuntimeError, match="a bug, not bad input"):
        cli.main(["data", "list"])
