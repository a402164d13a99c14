"""Splices: OE sentences recombined from training texts of different classes (training/text/splices.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from training.text import pipeline as text_pipeline
from training.text.config import load_text_config
from training.text.data import TextSet
from training.text.splices import splices

# Class k's texts use only the words of class k, so a splice's words say which texts it was cut from.
TEXTS = tuple(f"a{i} b{i} c{i} d{i} e{i} f{i} g{i} h{i} i{i} j{i}" for i in range(12))
LABELS = np.arange(12) % 3


def _source(word: str) -> int:
    return int(word[1:])


def test_a_splice_is_the_head_of_one_text_and_the_tail_of_a_text_of_another_class() -> None:
    out = splices(TEXTS, LABELS, 300, seed=0)
    assert len(out) == 300 and len(set(out)) > 250
    for text in out:
        words = text.split()
        first, second = _source(words[0]), _source(words[-1])
        assert LABELS[first] != LABELS[second]
        head = [w for w in words if _source(w) == first]
        tail = [w for w in words if _source(w) == second]
        assert head + tail == words  # the head's words, then the tail's, nothing else
        assert head == TEXTS[first].split()[: len(head)]  # a prefix of the first text
        assert tail == TEXTS[second].split()[-len(tail) :]  # a suffix of the second
        assert 3 <= len(head) <= 7 and 3 <= len(tail) <= 7  # 30-70% of ten words


def test_splices_are_seeded() -> None:
    assert splices(TEXTS, LABELS, 20, seed=1) == splices(TEXTS, LABELS, 20, seed=1)
    assert splices(TEXTS, LABELS, 20, seed=1) != splices(TEXTS, LABELS, 20, seed=2)


def test_short_texts_keep_a_word_each_and_unlabelled_texts_pair_two_different_texts() -> None:
    out = splices(("hi", "yes", "no"), None, 50, seed=0)
    assert all(len(text.split()) == 2 and text.split()[0] != text.split()[1] for text in out)
    one_class = splices(("hi", "yes"), np.zeros(2, dtype=np.int64), 10, seed=0)  # one class: another text
    assert set(one_class) <= {"hi yes", "yes hi"}
    with pytest.raises(ValueError, match="at least 2"):
        splices(("alone",), None, 1, seed=0)


def test_config_bounds_splices() -> None:
    assert load_text_config(None).oe.splices == 0  # off by default
    assert load_text_config(None, ["oe.splices=5"]).oe.splices == 5
    with pytest.raises(ValidationError, match=r"oe\.splices"):
        load_text_config(None, ["oe.splices=-1"])


def test_the_oe_corpus_gets_splices_of_the_training_split_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_pipeline, "load_text_oe_corpus", lambda *args, **kwargs: ("an outlier sentence",))
    data = SimpleNamespace(oe_corpus="default", oe_corpus_limit=None, oe_corpus_exclude=())

    def ctx(count: int) -> Any:
        cfg = SimpleNamespace(data=data, oe=SimpleNamespace(splices=count, swaps=0), run=SimpleNamespace(seed=3))
        return SimpleNamespace(cfg=cfg, data=SimpleNamespace(train=TextSet(TEXTS, LABELS)))

    corpus = text_pipeline.load_corpus(ctx(7))
    assert corpus == ("an outlier sentence", *splices(TEXTS, LABELS, 7, seed=3))
    assert text_pipeline.load_corpus(ctx(0)) == ("an outlier sentence",)
