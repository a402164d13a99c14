"""`python -m training probe` (training/evaluation/probes.py): real-world inputs read from files as the service would
see them, scored against each artifact's validation split; probes made here from small files written by the test."""

from __future__ import annotations

import array
import contextlib
import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.card import ImageInputSpec
from service.codecs.image import decode_image
from training.artifact import load_artifact
from training.cli import main
from training.evaluation import probes as probes_module
from training.evaluation.probes import Probe, probe_artifact, probe_images, probe_texts
from training.evaluation.validate import validation_run

REPO = Path(__file__).resolve().parents[3]
MNIST_OE = REPO / "models" / "mnist-oe" / "5"
TOPICS_OE = REPO / "models" / "topics-oe" / "2"


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU gettext catalogue (the layout of CPython's Tools/i18n/msgfmt.py), UTF-8 header included."""
    messages = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(messages)
    ids = strs = b""
    table: list[tuple[int, int, int, int]] = []
    for key in keys:
        k, v = key.encode(), messages[key].encode()
        table.append((len(ids), len(k), len(strs), len(v)))
        ids, strs = ids + k + b"\0", strs + v + b"\0"
    key_start = 7 * 4 + 16 * len(keys)
    value_start = key_start + len(ids)
    offsets = [x for o1, l1, _, _ in table for x in (l1, o1 + key_start)]
    offsets += [x for _, _, o2, l2 in table for x in (l2, o2 + value_start)]
    header = struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 7 * 4, 7 * 4 + len(keys) * 8, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.array("i", offsets).tobytes() + ids + strs)


@pytest.fixture
def text_probes(tmp_path: Path) -> dict[str, Probe]:
    licences = tmp_path / "licenses"
    licences.mkdir()
    (licences / "A").write_text("Permission is hereby granted, free of charge.\nTo any person obtaining a copy! Short.")
    (licences / "B").write_text("THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND.")
    library = tmp_path / "lib"
    library.mkdir()
    (library / "mod.py").write_text(
        '"""Tools for parsing configuration files.\n\nA second paragraph is left out."""\n\n'
        'class Reader:\n    """Read one section at a time from the stream."""\n\n'
        'def parse(text):\n    """Return the parsed mapping. Raise on bad input please."""\n'
    )
    (library / "broken.py").write_text("def (:\n")  # not Python: skipped
    locale = tmp_path / "locale"
    write_mo(
        locale / "de" / "LC_MESSAGES" / "app.mo", {"Could not open the file": "Die Datei konnte nicht geöffnet werden"}
    )
    write_mo(locale / "en_GB" / "LC_MESSAGES" / "app.mo", {"Choose a colour scheme now": "Choose a colour scheme now"})
    (locale / "fr" / "LC_MESSAGES").mkdir(parents=True)
    (locale / "fr" / "LC_MESSAGES" / "bad.mo").write_bytes(b"not a catalogue")  # skipped
    return {
        "licenses": Probe("licenses", "text", (licences,), "base-files"),
        "docstrings": Probe("docstrings", "text", (library,), "python3"),
        "ui-messages-en": Probe("ui-messages-en", "text", (locale,), "gettext catalogues"),
        "ui-messages-translated": Probe("ui-messages-translated", "text", (locale,), "gettext catalogues"),
    }


def test_text_probes_read_sentences_docstrings_and_catalogues(text_probes: dict[str, Probe]) -> None:
    assert sorted(probe_texts(text_probes["licenses"], 10, seed=0)) == [
        "Permission is hereby granted, free of charge.",  # "Short." has fewer than 4 words
        "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND.",
        "To any person obtaining a copy!",
    ]
    assert sorted(probe_texts(text_probes["docstrings"], 10, seed=0)) == [
        "Raise on bad input please.",
        "Read one section at a time from the stream.",
        "Return the parsed mapping.",  # first paragraphs only; the broken module is skipped
        "Tools for parsing configuration files.",
    ]
    assert sorted(probe_texts(text_probes["ui-messages-en"], 10, seed=0)) == [
        "Choose a colour scheme now",
        "Could not open the file",
    ]
    # Translations of the non-English catalogues only; the unreadable catalogue is skipped.
    assert probe_texts(text_probes["ui-messages-translated"], 10, seed=0) == ["Die Datei konnte nicht geöffnet werden"]


def test_samples_are_seeded_and_capped(text_probes: dict[str, Probe]) -> None:
    every = probe_texts(text_probes["docstrings"], 10, seed=0)
    two = probe_texts(text_probes["docstrings"], 2, seed=0)
    assert len(two) == 2 and set(two) <= set(every) and two == probe_texts(text_probes["docstrings"], 2, seed=0)
    assert {tuple(probe_texts(text_probes["docstrings"], 2, seed=s)) for s in range(6)} != {tuple(two)}


def test_a_text_artifact_is_scored_against_its_validation_split(text_probes: dict[str, Probe], tmp_path: Path) -> None:
    missing = Probe("ui-icons", "image", (tmp_path / "none",), "adwaita-icon-theme")  # another task's probe
    empty = Probe("licenses", "text", (tmp_path / "none",), "base-files")
    result = probe_artifact(TOPICS_OE, [text_probes["licenses"], missing], samples=10, seed=0)
    assert result["artifact"] == "topics-oe/2" and result["task"] == "text" and list(result["probes"]) == ["licenses"]
    figures = result["probes"]["licenses"]
    artifact = load_artifact(TOPICS_OE)
    texts = probe_texts(text_probes["licenses"], 10, seed=0)
    scores = artifact.run_texts(texts)["anomaly_score"]
    threshold = np.float32(artifact.card.threshold.value)
    assert figures["n"] == 3
    assert figures["accepted_fraction"] == pytest.approx(float(np.mean(scores < threshold)))
    in_scores = validation_run(artifact)[1]["anomaly_score"]
    assert len(in_scores) == artifact.card.training["data"]["val_samples"] == 189  # the validation split, not test
    # AUROC: the share of (validation, probe) pairs ranked the right way round (ties half), computed here.
    pairs = (scores[None, :] > in_scores[:, None]) + 0.5 * (scores[None, :] == in_scores[:, None])
    assert figures["auroc"] == pytest.approx(float(pairs.mean()))
    skipped = probe_artifact(TOPICS_OE, [empty], samples=10, seed=0)["probes"]["licenses"]
    assert skipped == {"skipped": f"no inputs under {tmp_path / 'none'} (base-files)"}


def test_image_probes_decode_files_as_the_service_does(tmp_path: Path) -> None:
    root = tmp_path / "icons"
    (root / "sub").mkdir(parents=True)
    icon = np.zeros((16, 16, 4), np.uint8)
    icon[4:12, 4:12] = (250, 120, 30, 255)  # an opaque orange square on a transparent ground
    Image.fromarray(icon, "RGBA").save(root / "a.png")
    Image.fromarray(np.full((40, 30, 3), 90, np.uint8)).save(root / "sub" / "b.jpg", quality=95)
    (root / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # does not decode: skipped
    probe = Probe("ui-icons", "image", (root,), "adwaita-icon-theme")
    spec = load_artifact(MNIST_OE).image_input
    images = probe_images(probe, spec, samples=10, seed=0)
    service_spec = ImageInputSpec.model_validate(spec.model_dump(mode="json"))
    expected = {
        name: decode_image((root / name).read_bytes(), service_spec, 1 << 20) for name in ("a.png", "sub/b.jpg")
    }
    assert images.shape == (2, 1, 28, 28) and images.dtype == np.float32
    matched = sorted(name for image in images for name, e in expected.items() if np.array_equal(image, e))
    assert matched == ["a.png", "sub/b.jpg"]
    assert float(expected["a.png"][0, 0, 0]) == 0.0  # transparency composited on black, as uploads are
    assert len(probe_images(probe, spec, samples=1, seed=0)) == 1
    inputs: dict[object, object] = {}
    result = probe_artifact(MNIST_OE, [probe], samples=10, seed=0, inputs=inputs)["probes"]["ui-icons"]
    for path in [p for p in root.rglob("*") if p.is_file()]:
        path.unlink()  # a second artifact in one command reuses the decoded sample
    assert probe_artifact(MNIST_OE, [probe], samples=10, seed=0, inputs=inputs)["probes"]["ui-icons"] == result
    scores = load_artifact(MNIST_OE).run(images)["anomaly_score"]
    threshold = np.float32(load_artifact(MNIST_OE).card.threshold.value)
    assert result["n"] == 2 and result["accepted_fraction"] == pytest.approx(float(np.mean(scores < threshold)))


def test_the_command_prints_one_row_per_probe_and_refuses_mixed_tasks(
    text_probes: dict[str, Probe], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(probes_module, "PROBES", (text_probes["licenses"], text_probes["ui-messages-translated"]))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["probe", "--artifact", str(TOPICS_OE), "--samples", "5"]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"| probe | topics-oe/2 (`{TOPICS_OE}`) |" and lines[1] == "|---|---:|"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| licenses", "| ui-messages-translated"]
    assert lines[3].endswith("(n 1) |")
    assert main(["probe", "--artifact", str(TOPICS_OE), "--artifact", str(MNIST_OE)]) == 2
    assert "probe artifacts of one task at a time" in capsys.readouterr().err
    assert main(["probe", "--artifact", str(TOPICS_OE), "--samples", "0"]) == 2
    assert "--samples must be at least 1, got 0" in capsys.readouterr().err
