from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from service.card import ArtifactError, Card, ImageInputSpec, TextInputSpec, read_verified_card, sha256_file
from tests.service.conftest import clone_artifact
from training.artifact import read_card as training_read_card
from training.card import Card as TrainingCard


def test_service_and_training_cards_agree_on_a_real_exported_artifact(tiny_artifact: Path) -> None:
    service_card = read_verified_card(tiny_artifact, "tiny", 1)
    training_card = training_read_card(tiny_artifact)
    assert service_card.name == training_card.name == "tiny"
    assert service_card.version == training_card.version == 1
    assert service_card.task == training_card.task == "image"
    assert service_card.labels == training_card.labels == [str(i) for i in range(10)]
    assert service_card.num_classes == training_card.num_classes == 10
    assert service_card.input.name == training_card.input.name == "input"
    assert service_card.input.shape == training_card.input.shape == (1, 28, 28)
    assert service_card.input.value_range == training_card.input.value_range == (0.0, 1.0)
    assert service_card.outputs == training_card.outputs
    assert service_card.temperature == training_card.temperature == 1.7
    assert service_card.threshold.value == training_card.threshold.value
    assert service_card.threshold.acceptance_target == training_card.threshold.acceptance_target == 0.95
    assert service_card.sha256 == training_card.sha256
    assert service_card.created_at == training_card.created_at


def _edit(directory: Path, **changes: object) -> None:
    card = json.loads((directory / "card.json").read_text())
    for key, value in changes.items():
        if value is None:
            del card[key]
        else:
            card[key] = value
    (directory / "card.json").write_text(json.dumps(card))


def test_unknown_card_fields_are_ignored(tmp_path: Path, tiny_artifact: Path) -> None:
    directory = clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    _edit(directory, added_by_a_newer_trainer={"anything": [1, 2]})
    assert read_verified_card(directory, "tiny", 1).name == "tiny"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": None}, "invalid card: labels: Field required"),
        ({"num_classes": 9}, "num_classes=9 but 10 labels"),
        ({"schema_version": 2}, "card schema 2 is newer than this service understands (1)"),
        ({"task": "audio"}, "invalid card: task: Input should be 'image' or 'text'"),
        ({"task": "text"}, "task 'text' with a 'image' input spec"),
        ({"threshold": {"value": "NaN"}}, "invalid card: threshold.value: Input should be a finite number"),
        ({"outputs": ["probs"]}, "outputs must be ['logits', 'probs', 'kl_uniform', 'anomaly_score', 'confidence']"),
        ({"sha256": {"../model.onnx": "0" * 64}}, "'../model.onnx': must be a plain file name"),
        ({"sha256": {"card.txt": "0" * 64}}, "sha256 must list model.onnx"),
        ({"version": 2}, "card is for tiny/2, found in tiny/1"),
    ],
)
def test_invalid_cards_are_refused_with_the_reason(
    tmp_path: Path, tiny_artifact: Path, changes: dict[str, object], message: str
) -> None:
    directory = clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    _edit(directory, **changes)
    with pytest.raises(ArtifactError) as caught:
        read_verified_card(directory, "tiny", 1)
    assert message in str(caught.value)


def test_checksum_mismatch_is_refused(tmp_path: Path, tiny_artifact: Path) -> None:
    directory = clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    with (directory / "model.onnx").open("ab") as f:
        f.write(b"\0")
    expected = json.loads((directory / "card.json").read_text())["sha256"]["model.onnx"]
    actual = sha256_file(directory / "model.onnx")
    with pytest.raises(ArtifactError) as caught:
        read_verified_card(directory, "tiny", 1)
    # Twelve hex digits of each, enough to tell the two apart in a log line.
    assert str(caught.value).endswith(f"model.onnx: sha256 mismatch (card {expected[:12]}..., file {actual[:12]}...)")


def test_a_file_is_hashed_whole_whatever_its_size(tmp_path: Path) -> None:
    content = bytes(range(256)) * ((3 << 20) // 256 + 7)  # over three of the 1 MiB blocks it is read in
    (tmp_path / "blob").write_bytes(content)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(content).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_missing_and_unparseable_cards_are_refused(tmp_path: Path, tiny_artifact: Path) -> None:
    directory = clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    (directory / "card.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"card\.json: not valid JSON"):
        read_verified_card(directory, "tiny", 1)
    (directory / "card.json").unlink()
    with pytest.raises(ArtifactError, match=r"no card\.json"):
        read_verified_card(directory, "tiny", 1)


def test_a_listed_file_that_is_missing_is_refused(tmp_path: Path, tiny_artifact: Path) -> None:
    directory = clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    (directory / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"card lists model\.onnx but the file is missing"):
        read_verified_card(directory, "tiny", 1)


def test_service_and_training_cards_agree_on_the_text_artifact(text_artifact: Path) -> None:
    service_card = read_verified_card(text_artifact, "words", 1)
    training_card = TrainingCard.model_validate_json((text_artifact / "card.json").read_text())
    assert service_card.task == training_card.task == "text"
    assert isinstance(service_card.input, TextInputSpec)
    assert (
        service_card.input.model_dump()
        == training_card.input.model_dump()
        == {
            "kind": "text",
            "names": ("input_ids", "attention_mask"),
            "dtype": "int64",
            "tokenizer": "tokenizer.json",
            "max_length": 16,
            "truncation": "truncate",
            "pad_token_id": 0,
        }
    )
    assert service_card.sha256 == training_card.sha256
    assert sorted(service_card.sha256) == ["model.onnx", "tokenizer.json"]


def test_an_image_card_written_before_input_kinds_is_still_an_image_card(tmp_path: Path, tiny_artifact: Path) -> None:
    directory = clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    card = json.loads((directory / "card.json").read_text())
    del card["input"]["kind"]
    (directory / "card.json").write_text(json.dumps(card))
    assert read_verified_card(directory, "tiny", 1).input.kind == "image"


@pytest.mark.parametrize(
    ("input_changes", "card_changes", "message"),
    [
        ({}, {"task": "image"}, "task 'image' with a 'text' input spec"),
        ({"max_length": 2}, {}, "invalid card: input.text.max_length: Input should be greater than 2"),
        ({"truncation": "refuse"}, {}, "invalid card: input.text.truncation: Input should be 'truncate'"),
        ({"names": ["ids", "mask"]}, {}, "invalid card: input.text.names[0]: Input should be 'input_ids'"),
        ({"pad_token_id": -1}, {}, "invalid card: input.text.pad_token_id: Input should be greater than or equal to 0"),
        ({"kind": "audio"}, {}, "invalid card: input: Input tag 'audio' found using _input_kind() does not match"),
    ],
)
def test_invalid_text_cards_are_refused_with_the_reason(
    tmp_path: Path, text_artifact: Path, input_changes: dict[str, object], card_changes: dict[str, object], message: str
) -> None:
    directory = clone_artifact(text_artifact, tmp_path, "words", 1)
    card = json.loads((directory / "card.json").read_text())
    card["input"].update(input_changes)
    card.update(card_changes)
    (directory / "card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError) as caught:
        read_verified_card(directory, "words", 1)
    assert message in str(caught.value)


def test_summary_is_what_v1_models_shows_of_each_kind(tiny_artifact: Path, text_artifact: Path) -> None:
    image = read_verified_card(tiny_artifact, "tiny", 1)
    assert image.summary() == {
        "task": "image",
        "labels": [str(i) for i in range(10)],
        "threshold": image.threshold.value,
        "acceptance_target": 0.95,
        "temperature": 1.7,
        "input": {"name": "input", "shape": [1, 28, 28], "value_range": (0.0, 1.0)},
        "evaluation": image.evaluation,
        "created_at": image.created_at.isoformat(),
    }
    assert image.evaluation and isinstance(image.threshold.value, float)
    text = read_verified_card(text_artifact, "words", 1)
    summary = text.summary()
    assert summary["task"] == "text" and summary["labels"] == text.labels
    assert summary["input"] == {
        "kind": "text",
        "max_length": 16,
        "truncation": "truncate",
        "tokenizer": "tokenizer.json",
    }


def test_a_card_built_from_parsed_input_specs_keeps_their_kind(tiny_artifact: Path, text_artifact: Path) -> None:
    """Cards are also built in code from spec objects (not dicts): the discriminator reads the object's `kind`."""
    for directory, name in ((tiny_artifact, "tiny"), (text_artifact, "words")):
        parsed = read_verified_card(directory, name, 1)
        rebuilt = Card.model_validate({**parsed.model_dump(), "input": parsed.input})
        assert rebuilt == parsed
        assert type(rebuilt.input) is (TextInputSpec if name == "words" else ImageInputSpec)
