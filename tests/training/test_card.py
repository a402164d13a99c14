"""The training side's card model: the text input spec and its consistency rules."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from training.card import Card, ImageInputSpec, TextInputSpec

DIGEST = "0" * 64


def _card(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "topics",
        "version": 1,
        "task": "text",
        "labels": ["food", "sports"],
        "num_classes": 2,
        "input": {"kind": "text", "max_length": 64, "pad_token_id": 0},
        "temperature": 1.0,
        "threshold": {
            "value": 0.5,
            "acceptance_target": 0.95,
            "calibration_split": "val",
            "calibration_samples": 10,
            "calibration_acceptance": 0.9,
        },
        "sha256": {"model.onnx": DIGEST, "tokenizer.json": DIGEST},
        "created_at": dt.datetime(2026, 11, 30, tzinfo=dt.UTC).isoformat(),
    }
    base.update(overrides)
    return base


def test_a_text_card_parses_into_the_text_spec() -> None:
    card = Card.model_validate(_card())
    assert isinstance(card.input, TextInputSpec)
    assert card.input.names == ("input_ids", "attention_mask")
    assert (card.input.dtype, card.input.tokenizer, card.input.truncation) == ("int64", "tokenizer.json", "truncate")
    assert (card.input.max_length, card.input.pad_token_id) == (64, 0)
    # The JSON round trip keeps the discriminated input.
    assert Card.model_validate_json(card.model_dump_json()) == card


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "image"}, "task 'image' with a 'text' input spec"),
        ({"sha256": {"model.onnx": DIGEST}}, "sha256 must list tokenizer.json"),
        ({"input": {"kind": "text", "max_length": 2, "pad_token_id": 0}}, "greater than 2"),
        ({"input": {"kind": "text", "max_length": 64, "pad_token_id": -1}}, "greater than or equal to 0"),
        ({"input": {"kind": "sound", "max_length": 64}}, "does not match any of the expected tags"),
    ],
)
def test_inconsistent_text_cards_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Card.model_validate(_card(**overrides))


def test_an_image_card_with_a_text_task_is_refused() -> None:
    image = ImageInputSpec(channels=1, height=28, width=28, mean=[0.1], std=[0.3]).model_dump()
    with pytest.raises(ValidationError, match="task 'text' with a 'image' input spec"):
        Card.model_validate(_card(input=image))
    assert isinstance(Card.model_validate(_card(input=image, task="image")).input, ImageInputSpec)
