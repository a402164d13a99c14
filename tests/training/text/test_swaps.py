"""Swaps: training texts with their nouns replaced by common nouns the training split never uses
(training/text/swaps.py), read from a small WordNet index written here."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from training.data.base import MissingPackageError
from training.text import pipeline as text_pipeline
from training.text.config import load_text_config
from training.text.data import TextSet
from training.text.swaps import common_nouns, is_swappable, swaps, wordnet_nouns

# lemma: (tagged noun senses, tagged verb senses). "love" is mostly a verb; "who" a function word; "ox" too short;
# "violin" and "harbor" are common nouns, "abampere" a rare one (one tagged sense), "donor" a noun the texts use.
NOUNS = {
    "blood": (5, 0), "donor": (3, 0), "type": (4, 1), "love": (2, 9), "who": (3, 0), "ox": (2, 0),
    "violin": (2, 0), "harbor": (3, 1), "abampere": (1, 0), "gallery": (4, 0), "new_york": (5, 0), "guard": (2, 2),
    "gem": (2, 0),
}  # fmt: skip
TEXTS = ("What blood type qualifies as a universal donor?", "I love you, who are you?", "Blood is red.")


def _index_line(lemma: str, part: str, tagged: int) -> str:
    return f"{lemma} {part} 1 2 @ ~ 1 {tagged} 00001234  "  # two pointer symbols, then sense_cnt and tagsense_cnt


@pytest.fixture
def wordnet(tmp_path: Path) -> Path:
    header = "  1 This software and database is being provided to you, the LICENSEE, by  "
    (tmp_path / "index.noun").write_text(
        "\n".join([header, *(_index_line(w, "n", n) for w, (n, _) in NOUNS.items())]) + "\n", encoding="latin-1"
    )
    (tmp_path / "index.verb").write_text(
        "\n".join([header, *(_index_line(w, "v", v) for w, (_, v) in NOUNS.items() if v)]) + "\n"
    )
    for part in ("adj", "adv"):
        (tmp_path / f"index.{part}").write_text(header + "\n")
    return tmp_path


def test_nouns_are_lemmas_wordnet_knows_mostly_as_nouns(wordnet: Path) -> None:
    nouns = wordnet_nouns(wordnet)
    assert "love" not in nouns and "new_york" not in nouns  # mostly a verb; not one letters-only word
    assert {"blood", "donor", "type", "harbor", "abampere", "who", "ox"} <= nouns
    assert "guard" in nouns  # as many tagged noun senses as verb senses: a tie keeps it a noun
    assert common_nouns(wordnet) == (
        "blood", "donor", "gallery", "gem", "guard", "harbor", "ox", "type", "violin", "who"
    )  # fmt: skip
    assert is_swappable("Blood", nouns) and is_swappable("DONOR", nouns) and is_swappable("gem", nouns)
    assert not is_swappable("who", nouns) and not is_swappable("ox", nouns) and not is_swappable("love", nouns)


def test_a_swap_replaces_every_noun_with_a_common_noun_no_training_text_uses(wordnet: Path) -> None:
    out = swaps(TEXTS, 200, seed=0, wordnet_dir=wordnet)
    assert len(out) == 200
    unused = {"gallery", "gem", "guard", "harbor", "violin"}  # common, not in TEXTS; "abampere" rare, "ox" short
    seen: set[str] = set()
    for text in out:
        words = re.findall(r"[A-Za-z]+", text)
        if words[0] == "I":  # the second text has no noun to swap: it is never a source
            pytest.fail(f"a text without nouns was used: {text}")
        if words[1] == "is":  # "Blood is red." -> "<Noun> is red."
            assert words[0] in {w.capitalize() for w in unused} and words[2] == "red", text
            seen.add(words[0].lower())
            continue
        # "What blood type qualifies as a universal donor?": blood, type and donor swapped, the rest kept
        assert words[0] == "What" and words[3:6] == ["qualifies", "as", "a"] and words[6] == "universal", text
        assert {words[1], words[2], words[7]} <= unused, text
        assert text.endswith("?")
        seen.update((words[1], words[2], words[7]))
    assert seen == unused  # every unused common noun turns up
    assert swaps(TEXTS, 30, seed=4, wordnet_dir=wordnet) == swaps(TEXTS, 30, seed=4, wordnet_dir=wordnet)
    assert swaps(TEXTS, 30, seed=4, wordnet_dir=wordnet) != swaps(TEXTS, 30, seed=5, wordnet_dir=wordnet)


def test_swaps_keep_the_case_of_the_word_they_replace(wordnet: Path) -> None:
    out = swaps(("BLOOD donor",), 50, seed=0, wordnet_dir=wordnet)
    for text in out:
        first, second = text.split()
        assert first.isupper() and second.islower(), text


def test_swaps_need_nouns_replacements_and_wordnet(wordnet: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="none of the training texts has one"):
        swaps(("I love you", "who are you"), 5, seed=0, wordnet_dir=wordnet)
    with pytest.raises(ValueError, match="no training text uses; there are none"):
        swaps(("blood type donor gallery gem guard harbor violin ox who",), 5, seed=0, wordnet_dir=wordnet)
    with pytest.raises(MissingPackageError, match="wordnet-base"):
        swaps(TEXTS, 5, seed=0, wordnet_dir=tmp_path / "nowhere")


def test_the_pipeline_adds_the_configured_swaps_after_the_corpus(
    wordnet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_swaps = swaps
    monkeypatch.setattr(
        text_pipeline, "swaps", lambda texts, n, seed: real_swaps(texts, n, seed=seed, wordnet_dir=wordnet)
    )
    cfg = load_text_config(None, ["oe.swaps=7", "run.seed=3"])
    train = TextSet(TEXTS, np.arange(3))
    ctx: Any = SimpleNamespace(cfg=cfg, data=SimpleNamespace(train=train))
    corpus = text_pipeline.with_derived_sentences(ctx, ("one", "two"))
    assert corpus[:2] == ("one", "two") and len(corpus) == 9
    assert corpus[2:] == real_swaps(TEXTS, 7, seed=3, wordnet_dir=wordnet)
    assert load_text_config(None).oe.swaps == 0
    none: Any = SimpleNamespace(cfg=load_text_config(None), data=ctx.data)  # off by default
    assert text_pipeline.with_derived_sentences(none, ("one",)) == ("one",)
