"""User text files: CSV / JSONL labelled data, plain-text OE corpora, sentence splitting, the sealed test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.data.base import DataError, SealedSplitError
from training.text.data import (
    keep_sentences,
    load_labelled_texts,
    read_labelled_file,
    read_text_corpus,
    split_sentences,
)

ROWS = [(f"utterance number {i} about {topic}", topic) for topic in ("b-topic", "a-topic") for i in range(20)]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["id,text,label"] + [f'{i},"{text}",{label}' for i, (text, label) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("writer, name", [(write_csv, "data.csv"), (write_jsonl, "data.jsonl")])
def test_round_trip_sorted_labels_stratified_split(tmp_path: Path, writer, name: str) -> None:
    data = load_labelled_texts(writer(tmp_path / name, ROWS), seed=3, val_fraction=0.1, test_fraction=0.2)
    assert data.class_names == ("a-topic", "b-topic")  # sorted, not first appearance
    assert (len(data.train), len(data.val), len(data.test)) == (28, 4, 8)
    for split, per_class in ((data.train, 14), (data.val, 2), (data.test, 4)):
        assert split.labels is not None
        assert np.bincount(split.labels).tolist() == [per_class, per_class]
        for text, label in zip(split.texts, split.labels, strict=True):
            assert text.endswith(data.class_names[label])
    everything = data.train.texts + data.val.texts + data.test.texts
    assert sorted(everything) == sorted(text for text, _ in ROWS)


def test_split_is_deterministic_under_a_seed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", ROWS)
    first, again, other = (load_labelled_texts(path, seed=s) for s in (1, 1, 2))
    assert first.val.texts == again.val.texts and first.test.texts == again.test.texts
    assert first.val.texts != other.val.texts


def test_explicit_test_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", ROWS)
    test = write_jsonl(tmp_path / "test.jsonl", [("held out a", "a-topic"), ("held out b", "b-topic")])
    data = load_labelled_texts(path, test_path=test, seed=0, val_fraction=0.1)
    assert data.test.texts == ("held out a", "held out b")
    assert data.test.labels is not None and data.test.labels.tolist() == [0, 1]
    assert (len(data.train), len(data.val)) == (36, 4)
    bad = write_jsonl(tmp_path / "bad.jsonl", [("x y", "c-topic")])
    with pytest.raises(DataError, match=r"label\(s\) c-topic do not occur"):
        load_labelled_texts(path, test_path=bad)


def test_held_out_classes_leave_every_split(tmp_path: Path) -> None:
    rows = ROWS + [(f"utterance number {i} about c-topic", "c-topic") for i in range(10)]
    path = write_csv(tmp_path / "d.csv", rows)
    data = load_labelled_texts(path, seed=0, val_fraction=0.1, test_fraction=0.2, held_out_classes=["c-topic"])
    assert data.class_names == ("a-topic", "b-topic")
    assert sorted(data.held_out) == sorted(t for t, label in rows if label == "c-topic")
    assert sorted(data.train.texts + data.val.texts + data.test.texts) == sorted(t for t, _ in ROWS)
    assert "10 texts of c-topic held out" in data.description
    assert load_labelled_texts(path, seed=0).held_out == ()
    test = write_jsonl(tmp_path / "t.jsonl", [("test a", "a-topic"), ("test c", "c-topic"), ("test b", "b-topic")])
    with_test = load_labelled_texts(path, test_path=test, held_out_classes=("c-topic",))
    assert with_test.test.texts == ("test a", "test b") and with_test.test.labels is not None
    assert with_test.test.labels.tolist() == [0, 1] and len(with_test.held_out) == 10
    with pytest.raises(DataError, match="held-out class\\(es\\) z-topic do not occur"):
        load_labelled_texts(path, held_out_classes=["z-topic"])


def test_sealed_test_split_refuses_reads(tmp_path: Path) -> None:
    sealed = load_labelled_texts(write_csv(tmp_path / "d.csv", ROWS)).sealed()
    assert len(sealed.test) == 8
    with pytest.raises(SealedSplitError, match=r"test split of .* is sealed"):
        _ = sealed.test.texts
    with pytest.raises(SealedSplitError):
        _ = sealed.test.labels
    assert len(sealed.train.texts) == 28


@pytest.mark.parametrize(
    "content, message",
    [
        ("id,text\n1,hello\n", r"missing column\(s\) label"),
        ("text,label\n   ,a\n", "line 2: empty text"),
        ("text,label\nsome text,\n", "line 2: empty label"),
        ("text,label\n", "no rows"),
    ],
)
def test_csv_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_labelled_file(path)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "a b", "label": "x"}', "{broken"], "line 2: not valid JSON"),
        (['{"text": "a b", "label": "x"}', "", "[1, 2]"], "line 3: expected a JSON object"),
        (['{"text": "a b"}'], r"line 1: missing field\(s\) label"),
        (['{"text": 5, "label": "x"}'], "line 1: 'text' and 'label' must be strings"),
        (['{"text": " ", "label": "x"}'], "line 1: empty text"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_labelled_file(path)


def test_file_errors(tmp_path: Path) -> None:
    latin = tmp_path / "d.csv"
    latin.write_bytes(b"text,label\ncaf\xe9 au lait,a\n")
    with pytest.raises(DataError, match=r"not valid UTF-8 \(line 2"):
        read_labelled_file(latin)
    one = write_csv(tmp_path / "one.csv", [("only one label here", "a")] * 2)
    with pytest.raises(DataError, match="only one label \\('a'\\)"):
        load_labelled_texts(one)
    with pytest.raises(DataError, match=r"expected a \.csv or \.jsonl"):
        read_labelled_file(tmp_path / "d.txt")
    with pytest.raises(DataError, match="is not a file"):
        read_labelled_file(tmp_path / "absent.csv")


def test_split_sentences_and_filter() -> None:
    text = 'Mr. Smith went to Washington. He said "Stop!" Then J. Doe left at 3 p.m. today. 1990 was a year? Yes.'
    assert split_sentences(text) == [
        "Mr. Smith went to Washington.",
        'He said "Stop!"',
        "Then J. Doe left at 3 p.m. today.",
        "1990 was a year?",
        "Yes.",
    ]
    long = " ".join(["word"] * 61)
    assert keep_sentences(["Too short here.", "This one is long enough.", "THIS ONE IS LONG ENOUGH.", long]) == [
        "This one is long enough."
    ]


def test_text_corpus_file_and_directory(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("First sentence has five words. Tiny one.\nSecond line is another document here.\n")
    assert read_text_corpus(corpus) == ["First sentence has five words.", "Second line is another document here."]
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("A document split\nover two lines. And a second sentence here.")
    (folder / "sub" / "a.txt").write_text("The nested file comes later in order.")
    assert read_text_corpus(folder) == [
        "A document split over two lines.",
        "And a second sentence here.",
        "The nested file comes later in order.",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.txt files"):
        read_text_corpus(tmp_path / "empty")
    short = tmp_path / "short.txt"
    short.write_text("Hi. Ok.\n")
    with pytest.raises(DataError, match="no sentence of 4 to 60 words"):
        read_text_corpus(short)
