"""Progress of long loops: a live bar in a terminal, a log line every N seconds everywhere else.

A tqdm bar writes carriage returns, so in a log file, `docker logs` or a Kubernetes pod log it becomes one ever
longer line (or one line per redraw). Outside a terminal we log instead: `baseline 3/10: 400/1000 batch (40%),
52.1 batch/s, ETA 11 s, loss 0.123` every `OEGATE_PROGRESS_SECONDS` seconds (default 30), plus nothing else; the epoch's
result line follows from the training loop.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)
INTERVAL_ENV = "OEGATE_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def format_seconds(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


class Progress:
    """Iterate over range(total) with progress shown (module doc); `note(**values)` sets the shown postfix."""

    def __init__(self, total: int, desc: str, unit: str = "batch", *, terminal: bool | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.interval = _interval()
        self._postfix: dict[str, Any] = {}
        self._bar: tqdm[int] | None = None

    def note(self, **values: Any) -> None:
        self._postfix = values
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)  # redraws follow tqdm's mininterval

    def __iter__(self) -> Iterator[int]:
        if self.terminal:
            self._bar = tqdm(range(self.total), desc=self.desc, leave=False, unit=self.unit)
            try:
                yield from self._bar
            finally:
                self._bar.close()
            return
        started = last = time.monotonic()
        for step in range(self.total):
            yield step
            now = time.monotonic()
            if now - last >= self.interval and step + 1 < self.total:
                last = now
                log.info("%s", self.line(step + 1, now - started))

    def line(self, done: int, elapsed: float) -> str:
        """`desc: done/total unit (pct%), rate unit/s, ETA t[, postfix]`."""
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        extra = "".join(f", {key} {value}" for key, value in self._postfix.items())
        eta_text = format_seconds(eta) if eta != float("inf") else "unknown"
        return (
            f"{self.desc}: {done}/{self.total} {self.unit} ({100 * done / max(1, self.total):.0f}%), "
            f"{rate:.1f} {self.unit}/s, ETA {eta_text}{extra}"
        )
