"""The pin file workers share (service/shared_pins.py): read-modify-writes under a lock lose no pin."""

from __future__ import annotations

import threading
from pathlib import Path

from service.shared_pins import SharedPins


def test_pins_set_and_unset_return_the_previous_pin(tmp_path: Path) -> None:
    pins = SharedPins(tmp_path / "pins.json")
    assert pins.read() == {}
    assert pins.set("a", 2) is None
    assert pins.set("a", 1) == 2
    assert pins.set("b", 3) is None
    assert pins.read() == {"a": 1, "b": 3}
    assert pins.set("a", None) == 1
    assert pins.read() == {"b": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pins.json", "pins.json.lock"]  # no temporary left


def test_concurrent_pins_of_different_models_all_take_effect(tmp_path: Path) -> None:
    # Each thread opens the lock file itself, as each worker process does: flock serialises them.
    path = tmp_path / "pins.json"
    start = threading.Barrier(16)

    def pin(index: int) -> None:
        start.wait()
        for version in range(1, 11):
            SharedPins(path).set(f"model-{index}", version)

    threads = [threading.Thread(target=pin, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert SharedPins(path).read() == {f"model-{index}": 10 for index in range(16)}
