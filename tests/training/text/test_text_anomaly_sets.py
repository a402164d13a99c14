"""The text anomaly sets' own logic, beyond what the packaged corpora tests read: de-duplication, the even draw's
bounds, the length draw, the streams that make each validation set the one earlier rounds were scored on, and the
errors' wording."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from training.data.base import DataError
from training.text import anomalies, corpora
from training.text.anomalies import load_text_anomalies, load_text_validation_anomalies, text_anomaly_set_size
from training.text.data import TextInDistribution, TextSet

TEST_SET_LIST = "valid: near-ood, fortunes, healthtweets, debates-2016, non-english"


@pytest.fixture(scope="module")
def chatterbot() -> TextInDistribution:
    return corpora.load_text_in_distribution("chatterbot-en", seed=0)


def _tiny(train: tuple[str, ...]) -> TextInDistribution:
    labels = np.zeros(len(train), dtype=np.int64)
    one = TextSet(("a val text here",), np.zeros(1, dtype=np.int64))
    return TextInDistribution("tiny", ("only",), TextSet(train, labels), one, one, "tiny")


def test_unique_collapses_whitespace_drops_empties_and_keeps_first_order() -> None:
    texts = ["b  a", " c\n", "b a", "", "  \t", "c", "a"]
    assert anomalies._unique(texts) == ("b a", "c", "a")


def test_the_even_draw_takes_zero_to_all_texts_and_nothing_beyond() -> None:
    by_language = {"xx": ("x1", "x2", "x3"), "yy": ("y1",)}
    assert anomalies._evenly(by_language, 0, 0) == ()
    everything = anomalies._evenly(by_language, 4, 0)
    assert sorted(everything) == ["x1", "x2", "x3", "y1"]
    assert {everything[0][0], everything[1][0]} == {"x", "y"}  # the languages take turns from the first text on
    for bad in (5, -1):
        with pytest.raises(DataError, match=f"anomaly set 'non-english': asked for {bad} samples but only 4 exist"):
            anomalies._evenly(by_language, bad, 0)
    assert anomalies._evenly({}, 0, 0) == ()
    assert load_text_anomalies("non-english", size=0, seed=0) == ()


def test_test_set_errors_name_the_set_and_list_the_valid_ones() -> None:
    with pytest.raises(DataError, match=f"unknown text anomaly set 'gaussian'; {TEST_SET_LIST}$"):
        load_text_anomalies("gaussian", size=1, seed=0)
    with pytest.raises(DataError, match=f"unknown text anomaly set 'gaussian'; {TEST_SET_LIST}$"):
        text_anomaly_set_size("gaussian")
    size = text_anomaly_set_size("healthtweets")
    with pytest.raises(DataError, match=f"^anomaly set 'healthtweets': asked for {size + 1} samples but only"):
        load_text_anomalies("healthtweets", size=size + 1, seed=0)


def test_validation_set_errors_and_the_empty_draw(chatterbot: TextInDistribution) -> None:
    with pytest.raises(DataError, match="unknown text validation set 'val-nothing'; valid: val-shuffled, val-random-"):
        load_text_validation_anomalies("val-nothing", chatterbot, size=1, seed=0)
    with pytest.raises(DataError, match=r"^val-chars: cannot make -1 samples$"):
        load_text_validation_anomalies("val-chars", chatterbot, size=-1, seed=0)
    for name in ("val-chars", "val-random-words", "val-shuffled", "val-oe-heldout"):
        assert load_text_validation_anomalies(name, chatterbot, size=0, seed=0) == ()


def test_lengths_are_drawn_from_every_training_text_and_at_least_one_word() -> None:
    data = _tiny(("one", "two words", "three words here", ""))  # the empty text counts as one word
    counts = anomalies._lengths(data, 400, np.random.default_rng(0))
    assert sorted(set(counts.tolist())) == [1, 2, 3]
    assert np.mean(counts == 1) > 0.4  # "one" and "": half the draws
    texts = load_text_validation_anomalies("val-random-words", data, size=200, seed=0)
    assert sorted({len(t.split()) for t in texts}) == [1, 2, 3]
    assert {w for t in texts for w in t.split()} == {"one", "two", "words", "three", "here"}  # the first one too


def test_random_character_words_are_one_to_ten_characters_of_the_whole_alphabet(chatterbot: TextInDistribution) -> None:
    texts = load_text_validation_anomalies("val-chars", chatterbot, size=300, seed=0)
    lengths = {len(word) for t in texts for word in t.split()}
    assert lengths == set(range(1, 11))
    assert set("".join(texts).replace(" ", "")) == set(anomalies.RANDOM_CHARACTERS)


def test_shuffled_texts_can_draw_the_first_validation_text() -> None:
    data = dataclasses.replace(
        _tiny(("a training text",)), val=TextSet(("first", "second"), np.zeros(2, dtype=np.int64))
    )
    texts = load_text_validation_anomalies("val-shuffled", data, size=50, seed=0)
    assert set(texts) == {"first", "second"}


# The validation sets every round in reports/*/choices.md was scored on: the same names, seeds and data give the same
# texts. A change here changes what "val-..." means and makes earlier rounds' figures incomparable with new ones: make
# it only on purpose, and say so in choices.md.
DIGESTS = {
    "val-shuffled": "7768466d96d6a400",
    "val-random-words": "89ae5827796491a9",
    "val-chars": "c5d393a786aff956",
    "val-oe-heldout": "c20a13e8fb19d0fb",
    "val-oe-heldout-parliament-de": "7a625fb087ce8be2",
}


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_validation_sets_are_the_ones_earlier_rounds_were_scored_on(name: str, chatterbot: TextInDistribution) -> None:
    texts = load_text_validation_anomalies(name, chatterbot, size=20, seed=0)
    assert hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16] == DIGESTS[name]


def test_the_held_out_classes_set_is_the_one_earlier_rounds_were_scored_on() -> None:
    held = corpora.load_chatterbot(seed=0, val_fraction=0.15, test_fraction=0.2, held_out_classes=["humor", "gossip"])
    texts = load_text_validation_anomalies("val-heldout-classes", held, size=20, seed=0)
    assert hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16] == "fda7bb58230b444f"
