"""From labelled captures to what a retraining run may use: near-duplicates out, a cap per source, a held-back slice.

Steps, in this order, on the captures of one model that the labels file marks `outlier` or `in-distribution:<class>`
(`discard` and unlabelled captures are never read):
1. near-duplicates removed (dedup.py): the earliest capture of a look-alike group is kept, so a client that sends
   the same picture a thousand times contributes it once;
2. at most `per_source_cap` captures per source (the `source` the service recorded; "" is one source too), the
   kept ones chosen by content hash (deterministic and unrelated to time or order of arrival);
3. the held-back slice: a capture whose content sha256, read as a number, falls in the lowest `holdout_percent`
   of the range is held back. It is never trained on; retraining scores it for both the candidate and the live
   version. The split depends on the content alone, so the same review always splits the same way, and a later
   review cannot move a held-back capture into training.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.captures.dedup import DEFAULT_MAX_DISTANCE, dhash, exact_groups, near_duplicate_groups, text_key
from training.captures.inputs import Shape, capture_pixels, capture_text
from training.captures.labels import OUTLIER, Label, labels_digest, read_labels
from training.captures.store import Capture, Filter, read_captures, store_name


class CurationConfig(BaseModel):
    """How labelled captures become training and held-back data (the `[captures]` section of a config)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    holdout_percent: float = Field(default=25.0, gt=0.0, lt=100.0)
    """Share of the curated captures held back by content hash: never trained on, scored for candidate and live."""
    per_source_cap: int = Field(default=1000, ge=1)
    """Most captures one source contributes (after near-duplicate removal), so one client cannot dominate."""
    max_hash_distance: int = Field(default=DEFAULT_MAX_DISTANCE, ge=0, le=64)
    """Images whose 64-bit dHashes differ in at most this many bits are near-duplicates (texts: equal normalized
    text)."""
    outlier_share: float = Field(default=0.25, gt=0.0, lt=1.0)
    """Retraining: the `outlier` captures are repeated until they make up about this share of the OE pool."""


def holdout_position(sha256: str) -> float:
    """Where a content hash falls in [0, 100): its first 64 bits as a fraction of 2^64, in percent."""
    return int(sha256[:16], 16) / 2**64 * 100.0


@dataclass
class Curated:
    """The curated captures of one model: what training may use, what is held back, and the record of both."""

    train: list[tuple[Capture, Label]] = field(default_factory=list)
    heldout: list[tuple[Capture, Label]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _content_keys(captures: list[Capture], shape: Shape | None, max_distance: int) -> list[int]:
    """For each capture, the index of the capture it duplicates (itself when it is the first of its kind)."""
    if captures and captures[0].input_kind == "text":
        return exact_groups([text_key(capture_text(c)) for c in captures])
    if shape is None:
        raise ValueError("image captures need the model's input shape to be compared")
    hashes = [dhash(capture_pixels(c, shape)) for c in captures]
    return near_duplicate_groups(hashes, max_distance)


def curate(
    directory: Path,
    labels_path: Path,
    model: str,
    cfg: CurationConfig,
    *,
    shape: Shape | None,
    class_names: list[str] | None = None,
) -> Curated:
    """Apply the module's steps to `model`'s labelled captures in the capture directory `directory` (one store or a
    directory of stores; labels from `labels_path`)."""
    labels = read_labels(labels_path)
    if not labels:
        raise ValueError(f"{labels_path}: no labels (label captures with `python -m training captures label`)")
    captures = read_captures(directory, Filter(model=model))
    known = {capture.id for capture in captures}
    labelled = [(c, labels[c.id]) for c in captures if c.id in labels and labels[c.id].text != "discard"]
    unknown_classes = sorted(
        {label.class_name for _, label in labelled if label.class_name is not None} - set(class_names or [])
    )
    if class_names is not None and unknown_classes:
        raise ValueError(f"{labels_path}: in-distribution labels {unknown_classes} are not classes of {model}")
    kinds = {capture.input_kind for capture, _ in labelled}
    if len(kinds) > 1 and "text" in kinds:
        raise ValueError(f"{model}'s captures mix texts and images: {sorted(kinds)}")

    groups = _content_keys([c for c, _ in labelled], shape, cfg.max_hash_distance)
    unique = [item for index, item in enumerate(labelled) if groups[index] == index]
    by_source: dict[str, list[tuple[Capture, Label]]] = {}
    for item in sorted(unique, key=lambda item: item[0].sha256):
        by_source.setdefault(item[0].source, []).append(item)
    kept_ids = {c.id for items in by_source.values() for c, _ in items[: cfg.per_source_cap]}
    kept = [item for item in unique if item[0].id in kept_ids]  # back in time order
    result = Curated()
    for item in kept:
        held = holdout_position(item[0].sha256) < cfg.holdout_percent
        (result.heldout if held else result.train).append(item)

    def counts(items: list[tuple[Capture, Label]]) -> dict[str, int]:
        return dict(sorted(Counter(label.text for _, label in items).items()))

    times = [c.time for c, _ in kept]
    result.summary = {
        "store": str(directory),
        "labels_file": str(labels_path),
        "labels_sha256": labels_digest(labels_path),
        "model": model,
        "window_utc": [_utc(min(times)), _utc(max(times))] if times else None,
        "rule": cfg.model_dump(mode="json"),
        "counts": {
            "labels_in_file": len(labels),
            "labels_without_capture": len(set(labels) - known),
            "labelled_captures": len([c for c in captures if c.id in labels]),
            "discarded": len([c for c in captures if c.id in labels and labels[c.id].text == "discard"]),
            "near_duplicates_removed": len(labelled) - len(unique),
            "over_source_cap": len(unique) - len(kept),
            "train": counts(result.train),
            "heldout": counts(result.heldout),
        },
        "sources": dict(sorted(Counter(c.source for c, _ in kept).items())),
        "stores": dict(sorted(Counter(store_name(c, directory) for c, _ in kept).items())),
        "train_sha256": sorted(c.sha256 for c, _ in result.train),
        "heldout_sha256": sorted(c.sha256 for c, _ in result.heldout),
        "train_digest": _digest(result.train),
        "heldout_digest": _digest(result.heldout),
    }
    return result


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(items: list[tuple[Capture, Label]]) -> str:
    """One sha256 over the sorted `sha256 label` lines: names exactly which contents were used with which labels."""
    lines = sorted(f"{capture.sha256} {label.text}\n" for capture, label in items)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def image_arrays(
    items: list[tuple[Capture, Label]], shape: Shape, class_names: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(outlier images, in-distribution images, their class indices) as uint8 [N, C, H, W] and int64 [N]."""
    outliers = [capture_pixels(c, shape) for c, label in items if label.text == OUTLIER]
    valid = [(capture_pixels(c, shape), label.class_name) for c, label in items if label.class_name]
    empty = np.zeros((0, *shape), np.uint8)
    return (
        np.stack(outliers) if outliers else empty,
        np.stack([image for image, _ in valid]) if valid else empty,
        np.array([class_names.index(str(name)) for _, name in valid], dtype=np.int64),
    )


def text_lists(items: list[tuple[Capture, Label]], class_names: list[str]) -> tuple[list[str], list[str], np.ndarray]:
    """(outlier texts, in-distribution texts, their class indices as int64 [N]), whitespace collapsed as the
    training texts are."""
    from training.text.data import collapse_whitespace

    outliers = [collapse_whitespace(capture_text(c)) for c, label in items if label.text == OUTLIER]
    valid = [(collapse_whitespace(capture_text(c)), label.class_name) for c, label in items if label.class_name]
    return (
        outliers,
        [text for text, _ in valid],
        np.array([class_names.index(str(name)) for _, name in valid], dtype=np.int64),
    )
