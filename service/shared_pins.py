"""Pins shared by the worker processes of one service (`OEGATE_WORKERS` > 1): a pin made through the admin API in
one worker reaches the others at their next poll.

The supervisor (service/workers.py) writes `OEGATE_PIN` into a JSON file (`{"name": version}`) in its temporary
state directory at start; each worker's registry reads the file at every scan (service/registry.py) and serves
what it says. A pin or unpin is a read-modify-write of the file under an exclusive `flock` (two workers pinning
two models at once both take effect), written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class SharedPins:
    """The pin file of one service's workers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    def read(self) -> dict[str, int]:
        """The pins now ({} before the first write)."""
        try:
            return {name: int(version) for name, version in json.loads(self.path.read_text()).items()}
        except FileNotFoundError:
            return {}

    def write(self, pins: dict[str, int]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(pins, sort_keys=True))
        os.replace(temporary, self.path)

    def set(self, name: str, version: int | None) -> int | None:
        """Pin `name` to `version` (None: unpin it); returns its previous pin."""
        import fcntl  # POSIX only, as workers are (SO_REUSEPORT): one process, which never gets here, runs anywhere

        with self._lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            pins = self.read()
            previous = pins.pop(name, None)
            if version is not None:
                pins[name] = version
            self.write(pins)
        return previous
