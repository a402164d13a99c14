"""Reading the service's store from the training side, curation (near-duplicates, cap per source, held-back slice)
and the `captures` commands."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.card import ImageInputSpec as ServiceImageSpec
from service.codecs.image import decode_image
from tests.training.captures.conftest import add, png, stripes
from training.captures.curate import CurationConfig, curate, holdout_position, image_arrays
from training.captures.inputs import image_pixels
from training.captures.store import Filter, read_captures
from training.cli import main

SHAPE = (1, 28, 28)


def test_image_pixels_match_the_services_decoding() -> None:
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA")
    for image in (rgba, rgba.convert("RGB"), Image.fromarray(stripes(3))):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        spec = ServiceImageSpec.model_validate(
            {"name": "input", "dtype": "float32", "layout": "NCHW", "channels": 1, "height": 28, "width": 28,
             "mean": [0.0], "std": [1.0]}
        )  # fmt: skip
        served = decode_image(data, spec, 10**8)
        ours = image_pixels(data, SHAPE)
        assert ours.shape == served.shape == SHAPE
        assert np.array_equal(ours.astype(np.float32) / np.float32(255.0), served)


def test_read_captures_filters_by_model_decision_source_time_and_ids(tmp_path: Path) -> None:
    add(tmp_path, "a", png(stripes(0)), time=100.0, source="kiosk", reject=True)
    add(tmp_path, "b", png(stripes(1)), time=200.0, source="app", reject=False)
    add(tmp_path, "c", png(stripes(2)), time=300.0, source="kiosk", reject=False, model="other")
    ids = lambda where: [c.id for c in read_captures(tmp_path, where)]  # noqa: E731
    assert ids(Filter()) == ["a", "b", "c"]
    assert ids(Filter(model="digits")) == ["a", "b"]
    assert ids(Filter(decision="accepted")) == ["b", "c"]
    assert ids(Filter(source="kiosk", since=150.0)) == ["c"]
    assert ids(Filter(until=300.0, ids=["b", "c"])) == ["b"]
    with pytest.raises(ValueError, match="decision must be one of rejected, accepted"):
        Filter(decision="maybe")
    with pytest.raises(ValueError, match="is not a capture directory"):
        read_captures(tmp_path / "nowhere")


def test_curation_removes_near_duplicates_caps_sources_and_holds_back_by_hash(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    sent = [add(store, f"n{i}", png(stripes(i)), time=float(i), source="noisy") for i in range(30)]
    sent += [add(store, f"q{i}", png(stripes(100 + i)), time=100.0 + i, source="quiet") for i in range(6)]
    dup = stripes(100)
    dup[0, 0] = 9  # one pixel changed: a near-duplicate of q0
    sent.append(add(store, "dup", png(dup), time=200.0, source="quiet"))
    sent.append(add(store, "digit", png(stripes(500)), time=201.0, source="quiet", reject=True))
    sent.append(add(store, "skip", png(stripes(501)), time=202.0, source="quiet"))
    labels = tmp_path / "labels.txt"
    lines = [f"{s.id} outlier" for s in sent if s.id not in ("digit", "skip")]
    labels.write_text("\n".join([*lines, "digit in-distribution:3", "skip discard", "gone outlier"]) + "\n")
    cfg = CurationConfig(per_source_cap=10, holdout_percent=30.0)
    curated = curate(store, labels, "digits", cfg, shape=SHAPE, class_names=[str(d) for d in range(10)])
    used = curated.train + curated.heldout
    by_source = {source: [c for c, _ in used if c.source == source] for source in ("noisy", "quiet")}
    # noisy: 30 distinct, capped to the 10 with the smallest content hashes; quiet: q0-q5 and the digit (dup gone)
    expected_noisy = sorted((c for c in read_captures(store) if c.source == "noisy"), key=lambda c: c.sha256)[:10]
    assert sorted(c.id for c in by_source["noisy"]) == sorted(c.id for c in expected_noisy)
    assert sorted(c.id for c in by_source["quiet"]) == sorted([f"q{i}" for i in range(6)] + ["digit"])
    for capture, _ in curated.heldout:
        assert holdout_position(capture.sha256) < 30.0
    for capture, _ in curated.train:
        assert holdout_position(capture.sha256) >= 30.0
    counts = curated.summary["counts"]
    assert counts["near_duplicates_removed"] == 1 and counts["over_source_cap"] == 20 and counts["discarded"] == 1
    assert counts["labels_in_file"] == 40 and counts["labels_without_capture"] == 1
    assert sum(counts["train"].values()) + sum(counts["heldout"].values()) == 17
    assert curated.summary["sources"] == {"noisy": 10, "quiet": 7}
    assert curated.summary["window_utc"] == ["1970-01-01T00:00:00Z", "1970-01-01T00:03:21Z"]
    assert curated.summary["heldout_sha256"] == sorted(c.sha256 for c, _ in curated.heldout)
    again = curate(store, labels, "digits", cfg, shape=SHAPE, class_names=[str(d) for d in range(10)])
    assert again.summary == curated.summary  # deterministic: the same review always curates the same way
    outliers, valid, valid_labels = image_arrays(used, SHAPE, [str(d) for d in range(10)])
    assert (len(outliers), len(valid), valid_labels.tolist()) == (16, 1, [3])
    assert np.array_equal(valid[0, 0], stripes(500))


def test_curation_refuses_unknown_classes(tmp_path: Path) -> None:
    add(tmp_path, "a", png(stripes(0)), time=1.0)
    (tmp_path / "labels.txt").write_text("a in-distribution:Z\n")
    with pytest.raises(ValueError, match=r"in-distribution labels \['Z'\] are not classes of digits"):
        curate(tmp_path, tmp_path / "labels.txt", "digits", CurationConfig(), shape=SHAPE, class_names=["0", "1"])


def test_label_by_rule_list_and_sample_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add(tmp_path, "a", png(stripes(0)), time=100.0, source="kiosk", reject=True)
    add(tmp_path, "b", png(stripes(1)), time=200.0, source="app", reject=True)
    add(tmp_path, "c", png(stripes(2)), time=300.0, source="kiosk", reject=False)
    add(tmp_path, "t", b"Hello | world", time=400.0, input_kind="text", model="words")
    store = str(tmp_path)
    assert main(["captures", "label", store, "--decision", "rejected", "--source", "kiosk", "--as", "outlier"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'labels.txt'}: 1 added, 0 changed to outlier\n"
    assert main(["captures", "label", store, "--ids", "a,c", "--as", "discard"]) == 0
    assert "1 added, 0 changed to discard, 1 already labelled kept (--overwrite to relabel)" in capsys.readouterr().out
    lines = (tmp_path / "labels.txt").read_text().splitlines()
    assert lines[2:] == [
        "a outlier  # rejected 0.9000 as 3, kiosk, 1970-01-01T00:01:40Z",
        "c discard  # accepted 0.9000 as 3, kiosk, 1970-01-01T00:05:00Z",
    ]
    assert main(["captures", "label", store, "--model", "digits", "--as", "maybe"]) == 2
    assert "label 'maybe' must be outlier" in capsys.readouterr().err
    assert main(["captures", "list", store, "--model", "digits", "--unlabelled"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out[1:-1]] == ["b"] and out[-1] == "# 1 captures"
    assert main(["captures", "list", store, "--json", "--source", "kiosk"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(row["id"], row["label_review"]) for row in listed] == [("a", "outlier"), ("c", "discard")]
    review = tmp_path / "review"
    assert main(["captures", "sample", store, "--count", "2", "--seed", "1", "--out", str(review)]) == 0
    index = (review / "sample.tsv").read_text().splitlines()
    assert len(index) == 3 and index[0].startswith("n\tid\tdecision")
    sampled = [line.split("\t")[1] for line in index[1:]]
    assert len(sampled) == 2 and set(sampled) <= {"a", "b", "c", "t"}
    if set(sampled) - {"t"}:
        with Image.open(review / "sample.png") as sheet:
            assert sheet.size == (12 * 84, 100)
    assert main(["captures", "sample", store, "--model", "words", "--out", str(tmp_path / "texts")]) == 0
    table = (tmp_path / "texts" / "sample.md").read_text().splitlines()
    assert table[2] == "| 0 | rejected | 0.9000 | 3 |  | Hello \\| world |"
