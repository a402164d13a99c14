"""The labels file (reviewer-editable, rewritten in place) and the near-duplicate keys (dHash, normalized text)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.captures.dedup import dhash, exact_groups, hamming, near_duplicate_groups, text_key
from training.captures.labels import HEADER, Label, read_labels, write_labels


def test_labels_are_parsed_and_bad_ones_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("# review of week 48\n\na1 outlier  # a letter\nb2 in-distribution:7\nc3 discard\na1 discard\n")
    labels = read_labels(path)
    assert {key: label.text for key, label in labels.items()} == {
        "a1": "discard",
        "b2": "in-distribution:7",
        "c3": "discard",
    }
    assert labels["b2"].class_name == "7" and labels["c3"].class_name is None
    assert read_labels(tmp_path / "missing.txt") == {}
    for line, message in (
        ("a1 maybe", "label 'maybe' must be outlier, discard or in-distribution:<class>"),
        ("a1 in-distribution:", "label 'in-distribution:' must be outlier, discard or in-distribution:<class>"),
        ("a1 outlier extra", "expected `ID LABEL  # note`, got 'a1 outlier extra'"),
    ):
        path.write_text(f"x outlier\n{line}\n")
        with pytest.raises(ValueError) as error:
            read_labels(path)
        assert str(error.value) == f"{path}:2: {message}"


def test_write_labels_rewrites_in_place_keeps_notes_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    assert write_labels(path, {"a1": (Label("outlier"), "first"), "b2": (Label("discard"), "")}) == (0, 2)
    assert path.read_text() == HEADER + "a1 outlier  # first\nb2 discard\n"
    path.write_text(path.read_text().replace("# first", "# reviewer: a Hangul letter") + "# end of review\n")
    changed = write_labels(path, {"a1": (Label("in-distribution:4"), "auto"), "c3": (Label("outlier"), "auto")})
    assert changed == (1, 1)
    assert path.read_text() == (
        HEADER + "a1 in-distribution:4  # reviewer: a Hangul letter\nb2 discard\n# end of review\nc3 outlier  # auto\n"
    )


def test_dhash_is_the_sign_of_horizontal_differences() -> None:
    ramp = np.tile(np.arange(0, 252, 28, dtype=np.uint8), (8, 1))[None]  # 9 x 8, brighter to the right
    assert ramp.shape == (1, 8, 9)
    assert dhash(ramp) == 2**64 - 1  # every right neighbour is brighter: all 64 bits set
    assert dhash(ramp[:, :, ::-1].copy()) == 0
    assert hamming(0b1011, 0b0001) == 2


def test_near_duplicates_survive_rescaling_and_noise_but_not_other_pictures() -> None:
    rng = np.random.default_rng(0)
    base = np.zeros((1, 28, 28), np.uint8)
    base[0, 4:24, 6:12] = 255
    base[0, 10:14, 6:22] = 200
    noisy = np.clip(base.astype(int) + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
    other = base[:, :, ::-1].copy()
    hashes = [dhash(base), dhash(noisy), dhash(other), dhash(base)]
    assert hamming(hashes[0], hashes[1]) <= 4 < hamming(hashes[0], hashes[2])
    assert near_duplicate_groups(hashes) == [0, 0, 2, 0]
    assert near_duplicate_groups(hashes, max_distance=0)[2] == 2


def test_text_keys_ignore_case_punctuation_spacing_and_unicode_forms() -> None:
    keys = [text_key(t) for t in ("Hello,  World!", "hello world", "ＨＥＬＬＯ world.", "hello there")]
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert exact_groups(keys) == [0, 0, 0, 3]
