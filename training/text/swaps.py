"""Swaps: OE sentences made from training texts by replacing their nouns with nouns the training split never uses.

Out-of-scope messages are mostly in the corpus's own voice and about something else (`val-heldout-classes`); the
prose OE corpora are about everything but in another voice, and splices (`splices.py`) keep the in-domain words
and break the sentence, which taught the net to trust fluent in-voice text whatever its subject (text round 4). A
swap keeps a training text whole, its voice and its structure, and replaces every noun in it (a word of at least
three letters that WordNet knows mostly as a noun, not a function word) with a common WordNet noun that no training
text contains: "What blood type qualifies as a universal donor?" may become "What harbor type qualifies as
a universal violin?". Only the training split is read; WordNet comes from Debian `wordnet-base`, as the
`wordnet-en` OE group does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data.base import MissingPackageError
from training.text.corpora import WORDNET_DIR, WORDNET_PACKAGE

_WORD = re.compile(r"[A-Za-z]+")
MIN_LETTERS = 3
COMMON_TAGGED = 2  # tagged noun senses a replacement noun needs
# Words WordNet lists as nouns that carry the sentence's grammar, not its subject (it holds "can", "will", "who"),
# and the "don" of "don't" and "won" of "won't".
_FUNCTION_WORDS = """
    about above after again all also and any are because been before being below between both but can cannot
    could did does doing done down during each either else ever every few for from further had has have having
    her here hers herself him himself his how its itself just least less like many may might mine more most much
    must myself neither never nor not now off once one only other ought our ours ourselves out over own same shall
    she should some still such than that the their theirs them themselves then there these they this those
    through too under until upon very was were what when where whether which while who whom whose why will with
    within without would yes yet you your yours yourself yourselves thing things way lot kind sort don won
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())


@functools.cache
def wordnet_nouns(wordnet_dir: Path = WORDNET_DIR) -> frozenset[str]:
    """The single-word, letters-only WordNet lemmas (lower case) that are mostly nouns: in index.noun, with at least
    as many tagged noun senses as tagged senses of any other part of speech ("donor" and "blood", not "love",
    "mean" or "work", which are mostly verbs and keep a sentence's voice)."""
    nouns = _index_entries(wordnet_dir, "noun")
    others = [_index_entries(wordnet_dir, part) for part in ("verb", "adj", "adv")]
    return frozenset(w for w, tagged in nouns.items() if all(tagged >= other.get(w, 0) for other in others))


@functools.cache
def common_nouns(wordnet_dir: Path = WORDNET_DIR) -> tuple[str, ...]:
    """The mostly-noun lemmas with at least COMMON_TAGGED tagged noun senses, sorted: nouns in common use
    ("violin", "harbor"), not the rare ones ("abampere")."""
    tagged = _index_entries(wordnet_dir, "noun")
    return tuple(sorted(w for w in wordnet_nouns(wordnet_dir) if tagged[w] >= COMMON_TAGGED))


def _index_entries(wordnet_dir: Path, part: str) -> dict[str, int]:
    """{lemma: tagged sense count} of index.<part>'s single-word, letters-only lemmas (lower case)."""
    path = wordnet_dir / f"index.{part}"
    if not path.is_file():
        raise MissingPackageError(WORDNET_PACKAGE, str(path), "swaps (oe.swaps)")
    entries: dict[str, int] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):  # the licence header
            continue
        fields = line.split()
        lemma = fields[0]
        if not lemma.isalpha() or not lemma.isascii():
            continue
        pointers = int(fields[3])
        entries[lemma.lower()] = int(fields[5 + pointers])  # lemma pos synset_cnt p_cnt ptrs... sense_cnt tagsense_cnt
    return entries


def is_swappable(word: str, nouns: frozenset[str]) -> bool:
    """Whether a word of a training text is a noun a swap replaces."""
    lower = word.lower()
    return len(lower) >= MIN_LETTERS and lower in nouns and lower not in FUNCTION_WORDS


def _cased_like(word: str, replacement: str) -> str:
    if word.isupper() and len(word) > 1:
        return replacement.upper()
    return replacement.capitalize() if word[0].isupper() else replacement


def swaps(texts: Sequence[str], n: int, seed: int, wordnet_dir: Path = WORDNET_DIR) -> tuple[str, ...]:
    """n swaps of `texts` (the training split): a text with at least one noun, drawn at random, each of its nouns
    replaced by a common WordNet noun no training text contains. Deterministic in `seed`."""
    nouns = wordnet_nouns(wordnet_dir)
    used = {w.lower() for text in texts for w in _WORD.findall(text)}
    pool = [noun for noun in common_nouns(wordnet_dir) if noun not in used and len(noun) >= MIN_LETTERS]
    sources = [text for text in texts if any(is_swappable(w, nouns) for w in _WORD.findall(text))]
    if not sources:
        raise ValueError("swaps need training texts with nouns; none of the training texts has one")
    if not pool:
        raise ValueError("swaps need WordNet nouns that no training text uses; there are none")
    rng = np.random.default_rng([seed, 0x5A4B])
    out: list[str] = []
    for _ in range(n):
        text = sources[int(rng.integers(0, len(sources)))]

        def replace(match: re.Match[str]) -> str:
            word = match.group(0)
            return _cased_like(word, pool[int(rng.integers(0, len(pool)))]) if is_swappable(word, nouns) else word

        out.append(_WORD.sub(replace, text))
    return tuple(out)
