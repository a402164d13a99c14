"""Text data types and user text files: labelled CSV / JSONL in-distribution data and plain-text OE corpora.

The text twins of `training/data/base.py`: a `TextSet` (texts and optional int64 labels) and a
`TextInDistribution` split three ways, whose `sealed()` copy refuses to show its test split, as the image side does.

User in-distribution data (`csv:PATH`, `jsonl:PATH`):
- CSV: a header row with `text` and `label` columns (other columns are ignored); UTF-8 (a BOM is allowed).
- JSONL: one JSON object per line with string fields `text` and `label`; blank lines are skipped.
- Whitespace inside a text is collapsed to single spaces; an empty text or label is an error naming its row.
- Label order is the sorted unique label names (independent of row order, like torchvision's ImageFolder), so the
  same file always gives the same class indices.
- `held_out_classes` (names of labels) leave every split: their texts become `held_out`, the `val-heldout-classes`
  validation set (a measure of out-of-scope detection in the data's own voice); an explicit test file drops their
  rows.
- Splits are stratified and seeded (`training/data/splits.py`): `val_fraction` and `test_fraction` of each class;
  with an explicit test file, only val is carved and every test label must be a training label.

User OE corpora (`text:PATH`): a UTF-8 file with one document per line, or a directory whose `*.txt` files
(recursively, sorted) are each one document; each document is split into sentences (`split_sentences`), sentences
of `MIN_SENTENCE_WORDS`..`MAX_SENTENCE_WORDS` words are kept, and exact duplicates are dropped.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from training.data.base import DataError, Sealed
from training.data.splits import stratified_split

MIN_SENTENCE_WORDS = 4
MAX_SENTENCE_WORDS = 60
# Abbreviations whose period does not end a sentence (lower-cased, without the period).
_ABBREVIATION_LIST = """mr mrs ms dr prof st jr sr vs etc e.g i.e fig gen gov sen rep lt col capt sgt u.s u.k inc ltd co
corp jan feb mar apr jun jul aug sep sept oct nov dec approx ca cf al"""
ABBREVIATIONS = frozenset(_ABBREVIATION_LIST.split())
# A candidate sentence end: terminal punctuation, optional closing quotes/brackets, whitespace, then a capital (Latin
# or Cyrillic), digit or opening quote.
_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9À-ÖØ-ÞЁА-Я])")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TextSet:
    """Texts (whitespace-collapsed strings) and optional int64 labels, one per text."""

    texts: tuple[str, ...]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)


class SealedTextSet(Sealed, TextSet):  # `labels`: a refusing property over the dataclass field
    """The sealed twin of TextSet (`training/data/base.py: Sealed`)."""

    @property
    def texts(self) -> tuple[str, ...]:
        raise self.refuse()


@dataclass(frozen=True)
class TextInDistribution:
    """A labelled text data set split three ways. `val` is never trained on: it tunes temperature and threshold."""

    name: str
    class_names: tuple[str, ...]
    train: TextSet
    val: TextSet
    test: TextSet
    description: str
    held_out: tuple[str, ...] = field(default=())
    """Texts of the classes held out of every split (`held_out_classes`): the `val-heldout-classes` validation set,
    out-of-scope inputs in the in-distribution voice. Empty unless classes were held out."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sealed(self) -> TextInDistribution:
        """The same data with the test split sealed (readable size, unreadable texts and labels)."""
        return replace(self, test=SealedTextSet(len(self.test), f"test split of {self.name}"))


def collapse_whitespace(text: str) -> str:
    """`text` with every run of whitespace replaced by one space, and stripped."""
    return _WHITESPACE.sub(" ", text).strip()


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` by a regex: a split after . ! ? (and closing quotes) before a capital or digit.

    No split after a known abbreviation (`ABBREVIATIONS`) or a single capital initial ("J. Smith"). Simple and
    deterministic; good enough for an OE corpus, where an occasional bad split costs nothing.
    """
    text = collapse_whitespace(text)
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        words = text[start : match.start()].rsplit(" ", 1)
        last = words[-1].lower()
        if match.group().startswith(".") and (last in ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    if start < len(text):
        sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def keep_sentences(sentences: list[str], *, seen: set[str] | None = None) -> list[str]:
    """Sentences of `MIN_SENTENCE_WORDS`..`MAX_SENTENCE_WORDS` words, first occurrences only (case-folded).

    `seen` (updated in place) carries the duplicates check across calls, so several sources dedupe together.
    """
    seen = set() if seen is None else seen
    kept: list[str] = []
    for sentence in sentences:
        key = sentence.casefold()
        if not MIN_SENTENCE_WORDS <= len(sentence.split()) <= MAX_SENTENCE_WORDS or key in seen:
            continue
        seen.add(key)
        kept.append(sentence)
    return kept


def _read_utf8(path: Path, what: str) -> str:
    if not path.is_file():
        raise DataError(f"{what}: {path} is not a file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{what}: {path} is not valid UTF-8 (line {line}, byte {error.start}); re-save it as UTF-8"
        ) from error


def _checked_row(text: object, label: object, where: str, what: str) -> tuple[str, str]:
    if not isinstance(text, str) or not isinstance(label, str):
        raise DataError(f"{what}: {where}: 'text' and 'label' must be strings")
    text, label = collapse_whitespace(text), label.strip()
    if not text:
        raise DataError(f"{what}: {where}: empty text")
    if not label:
        raise DataError(f"{what}: {where}: empty label")
    return text, label


def read_labelled_file(path: Path) -> tuple[list[str], list[str]]:
    """(texts, label names) of a CSV (`.csv`) or JSONL (`.jsonl`, `.json`) file, in file order; see module doc."""
    what = f"labelled text file {path}"
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise DataError(f"{what}: expected a .csv or .jsonl file, got '{path.suffix}'")
    content = _read_utf8(path, what)
    rows: list[tuple[str, str]] = []
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(content, newline=""))
        missing = [column for column in ("text", "label") if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{what}: missing column(s) {', '.join(missing)}; found {reader.fieldnames or 'none'}")
        for record in reader:
            # line_num is the line the record ended on: the header is line 1.
            rows.append(_checked_row(record["text"], record["label"], f"line {reader.line_num}", what))
    else:
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{what}: line {number}: not valid JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise DataError(f"{what}: line {number}: expected a JSON object with 'text' and 'label'")
            missing = [key for key in ("text", "label") if key not in record]
            if missing:
                raise DataError(f"{what}: line {number}: missing field(s) {', '.join(missing)}")
            rows.append(_checked_row(record["text"], record["label"], f"line {number}", what))
    if not rows:
        raise DataError(f"{what}: no rows")
    return [text for text, _ in rows], [label for _, label in rows]


def _subset(texts: list[str], labels: np.ndarray, indices: np.ndarray) -> TextSet:
    return TextSet(tuple(texts[i] for i in indices), labels[indices])


def split_labelled(
    name: str,
    texts: list[str],
    labels: np.ndarray,
    class_names: tuple[str, ...],
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    description: str,
) -> TextInDistribution:
    """A stratified, seeded train / val / test split (`val_fraction`, `test_fraction` of each class)."""
    if not 0.0 < val_fraction < 1.0 or not 0.0 < test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"{name}: need 0 < val_fraction, test_fraction and a sum < 1, got {val_fraction}, {test_fraction}"
        )
    val, test, train = stratified_split(labels, [val_fraction, test_fraction], seed)
    return TextInDistribution(
        name,
        class_names,
        _subset(texts, labels, train),
        _subset(texts, labels, val),
        _subset(texts, labels, test),
        description,
    )


def hold_out(
    texts: list[str], names: list[str], held_out_classes: tuple[str, ...] | list[str], what: str
) -> tuple[list[str], list[str], tuple[str, ...]]:
    """(texts, names) without the `held_out_classes`, and the held-out texts; an unknown class name is an error."""
    held = set(held_out_classes)
    unknown = sorted(held - set(names))
    if unknown:
        raise DataError(f"{what}: held-out class(es) {', '.join(unknown)} do not occur; labels: {sorted(set(names))}")
    kept = [i for i, name in enumerate(names) if name not in held]
    return (
        [texts[i] for i in kept],
        [names[i] for i in kept],
        tuple(t for t, n in zip(texts, names, strict=True) if n in held),
    )


def load_labelled_texts(
    path: Path,
    *,
    test_path: Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    held_out_classes: tuple[str, ...] | list[str] = (),
) -> TextInDistribution:
    """A user's labelled text file (CSV or JSONL, see module doc) split train / val / test.

    With `test_path`, that file is the test split and `val_fraction` of each class of `path` is carved for val.
    `held_out_classes` leave every split and become `held_out` (module doc).
    """
    texts, names = read_labelled_file(path)
    texts, names, held_texts = hold_out(texts, names, held_out_classes, f"labelled text file {path}")
    class_names = tuple(sorted(set(names)))
    if len(class_names) < 2:
        raise DataError(f"labelled text file {path}: only one label ('{class_names[0]}'); a classifier needs two")
    index = {label: i for i, label in enumerate(class_names)}
    labels = np.array([index[label] for label in names], np.int64)
    description = f"{len(texts)} labelled texts from {path}, {len(class_names)} classes"
    if held_texts:
        description += f" ({len(held_texts)} texts of {', '.join(sorted(set(held_out_classes)))} held out)"
    if test_path is None:
        split = split_labelled(
            str(path),
            texts,
            labels,
            class_names,
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            description=description,
        )
        return replace(split, held_out=held_texts)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{path}: val_fraction must be in (0, 1), got {val_fraction}")
    test_texts, test_names = read_labelled_file(test_path)
    held = set(held_out_classes)
    test_rows = [i for i, name in enumerate(test_names) if name not in held]
    test_texts, test_names = [test_texts[i] for i in test_rows], [test_names[i] for i in test_rows]
    unknown = sorted(set(test_names) - set(class_names))
    if unknown:
        raise DataError(f"test file {test_path}: label(s) {', '.join(unknown)} do not occur in {path}")
    val, train = stratified_split(labels, [val_fraction], seed)
    test = TextSet(tuple(test_texts), np.array([index[label] for label in test_names], np.int64))
    return TextInDistribution(
        str(path),
        class_names,
        _subset(texts, labels, train),
        _subset(texts, labels, val),
        test,
        f"{description}; test split from {test_path}",
        held_texts,
    )


def read_text_corpus(path: Path) -> list[str]:
    """A user OE corpus as sentences: one document per line of a file, or one per `*.txt` file of a directory."""
    what = f"text corpus {path}"
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{what}: no .txt files in the directory")
        documents = [_read_utf8(file, what) for file in files]
    elif path.is_file():
        documents = _read_utf8(path, what).splitlines()
    else:
        raise DataError(f"{what}: no such file or directory")
    seen: set[str] = set()
    sentences = [s for document in documents for s in keep_sentences(split_sentences(document), seen=seen)]
    if not sentences:
        raise DataError(f"{what}: no sentence of {MIN_SENTENCE_WORDS} to {MAX_SENTENCE_WORDS} words after splitting")
    return sentences
