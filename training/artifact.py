"""Reading a published artifact back: validate the card, verify checksums, run the graph with onnxruntime.

Evaluation and tests use this to run exactly the graph the service runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from training.card import OUTPUT_NAMES, Card, ImageInputSpec, TextInputSpec
from training.text.tokenize import TextTokenizer


class ArtifactError(ValueError):
    """An artifact directory that must not be used: missing files, invalid card, checksum mismatch."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(directory: Path) -> Card:
    """Parse and validate `card.json`, then check every listed file's sha256."""
    card_path = directory / "card.json"
    if not card_path.is_file():
        raise ArtifactError(f"{directory}: no card.json (not an artifact, or not fully published)")
    try:
        card = Card.model_validate(json.loads(card_path.read_text()))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{card_path}: not valid JSON ({e})") from e
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<card>'}: {err['msg']}" for err in e.errors())
        raise ArtifactError(f"{card_path}: invalid card: {problems}") from e
    for name, expected in card.sha256.items():
        file = directory / name
        if not file.is_file():
            raise ArtifactError(f"{directory}: card lists {name} but the file is missing")
        actual = sha256_file(file)
        if actual != expected:
            raise ArtifactError(f"{file}: sha256 mismatch (card {expected[:12]}..., file {actual[:12]}...)")
    return card


@dataclass
class Artifact:
    """A verified artifact with an onnxruntime session over its graph."""

    path: Path
    card: Card
    session: Any
    _tokenizer: TextTokenizer | None = field(default=None, repr=False)

    @property
    def image_input(self) -> ImageInputSpec:
        """The card's input spec, for an image artifact (ArtifactError for a text one)."""
        if not isinstance(self.card.input, ImageInputSpec):
            raise ArtifactError(f"{self.path}: a {self.card.task} artifact, not an image one")
        return self.card.input

    def run(self, images: np.ndarray, batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Run the gate graph on float32 NCHW images in [0, 1]; returns every output, concatenated over batches."""
        expected = self.image_input.shape
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ArtifactError(
                f"{self.path}: expects images of shape (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}"
            )
        images = np.ascontiguousarray(images, dtype=np.float32)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
        for start in range(0, images.shape[0], batch_size):
            outputs = self.session.run(list(OUTPUT_NAMES), {self.image_input.name: images[start : start + batch_size]})
            for name, value in zip(OUTPUT_NAMES, outputs, strict=True):
                parts[name].append(value)
        return {name: np.concatenate(values) for name, values in parts.items()}

    @property
    def text_input(self) -> TextInputSpec:
        """The card's input spec, for a text artifact (ArtifactError for an image one)."""
        if not isinstance(self.card.input, TextInputSpec):
            raise ArtifactError(f"{self.path}: a {self.card.task} artifact, not a text one")
        return self.card.input

    @property
    def tokenizer(self) -> TextTokenizer:
        """The artifact's tokenizer.json with the card's truncation and padding rules (what the service applies)."""
        if self._tokenizer is None:
            spec = self.text_input
            self._tokenizer = TextTokenizer(self.path / spec.tokenizer, spec.max_length)
        return self._tokenizer

    def run_texts(self, texts: Sequence[str], batch_size: int = 128) -> dict[str, np.ndarray]:
        """Run the gate graph on texts, tokenized as the service does; every output, in input order."""
        return run_text_session(self.session, self.tokenizer, texts, batch_size)


def run_text_session(
    session: Any, tokenizer: TextTokenizer, texts: Sequence[str], batch_size: int = 128
) -> dict[str, np.ndarray]:
    """Run a text gate graph (inputs `input_ids`, `attention_mask`) on texts; batches are formed by token length
    (less padding: the mask makes results independent of it) and results come back in input order."""
    ids = tokenizer.encode(texts)
    order = np.argsort([len(row) for row in ids], kind="stable")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
    for start in range(0, len(order), batch_size):
        input_ids, mask = tokenizer.pad([ids[i] for i in order[start : start + batch_size]])
        outputs = session.run(list(OUTPUT_NAMES), {"input_ids": input_ids, "attention_mask": mask})
        for name, value in zip(OUTPUT_NAMES, outputs, strict=True):
            parts[name].append(value)
    result = {}
    for name, values in parts.items():
        joined = np.concatenate(values) if values else np.empty((0,), dtype=np.float32)
        restored = np.empty_like(joined)
        restored[order] = joined
        result[name] = restored
    return result


EXACT_INT8 = "session.x64quantprecision"  # the service's entry of the same name (service/runtime.py) says why


def session_options() -> ort.SessionOptions:
    """Options for every onnxruntime session training opens on a graph it publishes or reads: errors-only logging,
    and int8 GEMM exact on CPUs without VNNI, as the service runs it, so the threshold is calibrated, and the
    evaluation measured, on the outputs the service will give on any CPU."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry(EXACT_INT8, "1")
    return options


def load_artifact(directory: str | Path, providers: list[str] | None = None) -> Artifact:
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such artifact directory")
    card = read_card(directory)
    session = ort.InferenceSession(
        str(directory / "model.onnx"), sess_options=session_options(), providers=providers or ["CPUExecutionProvider"]
    )
    outputs = [o.name for o in session.get_outputs()]
    if outputs != list(OUTPUT_NAMES):
        raise ArtifactError(f"{directory}: graph outputs {outputs}, card promises {list(OUTPUT_NAMES)}")
    return Artifact(path=directory, card=card, session=session)
