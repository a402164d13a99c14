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
        # One allocation over 1 GiB (a decompression bomb getting through) fails the run; the process as a whole
        # may grow past libFuzzer's default 2 GiB RSS limit over a long run (seen once at 2.6 GB on a loaded
        # machine), which is the fuzzer's and the interpreter's bookkeeping, not a codec fault.
        [
            sys.executable,
            str(target),
            f"-runs={RUNS}",
            f"-max_total_time={MAX_TOTAL_TIME_S}",
            "-seed=1",
            "-rss_limit_mb=4096",
            "-malloc_limit_mb=1024",
            # Crash/OOM reproducers go to the test's temp dir (libFuzzer's default is the working directory: the repo).
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
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
