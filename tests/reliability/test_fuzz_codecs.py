"""Runs the atheris target tests/reliability/fuzz_codecs.py for a bounded time in its own process (libFuzzer
exits the process when it stops): any exception other than CodecError is a crash and fails the test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import REPO

pytestmark = pytest.mark.slow
RUNS = 300_000
MAX_TOTAL_TIME_S = 20


def test_the_codecs_survive_fuzzed_images_and_texts(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    target = Path(__file__).with_name("fuzz_codecs.py")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    finished = subprocess.run(
        [sys.executable, str(target), f"-runs={RUNS}", f"-max_total_time={MAX_TOTAL_TIME_S}", "-seed=1", str(corpus)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=MAX_TOTAL_TIME_S + 120,
    )
    log = finished.stderr[-4000:]
    assert finished.returncode == 0, log
    assert "Done " in log, log
    print(log.splitlines()[-1])
