"""Progress outside a terminal: log lines with rate and ETA, never carriage returns."""

from __future__ import annotations

import pytest

from training import progress as progress_module
from training.progress import Progress, format_seconds


def test_outside_a_terminal_it_logs_lines_with_rate_and_eta(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = iter(float(t) for t in range(100))  # one second per call: a fake clock, no waiting
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    monkeypatch.setenv(progress_module.INTERVAL_ENV, "3")
    bar = Progress(10, "oe 2/5", terminal=False)
    with caplog.at_level("INFO", logger="training.progress"):
        for step in bar:
            bar.note(loss=f"{0.5 / (step + 1):.3f}")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "oe 2/5: 3/10 batch (30%), 1.0 batch/s, ETA 7 s, loss 0.167",
        "oe 2/5: 6/10 batch (60%), 1.0 batch/s, ETA 4 s, loss 0.083",
        "oe 2/5: 9/10 batch (90%), 1.0 batch/s, ETA 1 s, loss 0.056",
    ]
    assert "\r" not in capsys.readouterr().err


def test_line_and_seconds_formats() -> None:
    bar = Progress(1000, "baseline 1/10", terminal=False)
    assert bar.line(250, 5.0) == "baseline 1/10: 250/1000 batch (25%), 50.0 batch/s, ETA 15 s"
    assert bar.line(0, 0.0).endswith("0.0 batch/s, ETA unknown")
    assert [format_seconds(s) for s in (0, 59.4, 61, 3600, 3725)] == [
        "0 s",
        "59 s",
        "1 min 01 s",
        "1 h 00 min",
        "1 h 02 min",
    ]


def test_in_a_terminal_it_is_a_tqdm_bar(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Progress(3, "x", terminal=True)
    assert list(bar) == [0, 1, 2]
    assert "x" in capsys.readouterr().err
