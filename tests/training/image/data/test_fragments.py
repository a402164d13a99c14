"""Fragments: OE outliers recombined from pieces of training images (training/image/pool/fragments.py)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from training.config import load_config
from training.data.base import DataError, ImageSet
from training.image.pool import fragments as fragments_module
from training.image.pool.fragments import _centre_of_ink, _partners, _piece, _shift, fragments
from training.pipeline import with_fragments


def _digits(n: int = 40, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Blocky 'digits': class k is a filled 12 x 12 square of value 60 * (k + 1), at a seeded spot near the middle."""
    rng = np.random.default_rng(1)
    images = np.zeros((n, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % classes
    for i, k in enumerate(labels):
        y, x = rng.integers(6, 10, size=2)
        images[i, 0, y : y + 12, x : x + 12] = 60 * (k + 1)
    return images, labels.astype(np.int64)


def test_fragments_are_seeded_uint8_images_of_the_training_shape() -> None:
    images, labels = _digits()
    a = fragments(images, labels, 25, seed=3)
    assert a.shape == (25, 1, 28, 28) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, fragments(images, labels, 25, seed=3))
    assert not np.array_equal(a, fragments(images, labels, 25, seed=4))
    assert (a.reshape(25, -1).max(axis=1) > 0).all()  # every fragment has ink


def test_float_training_images_give_the_same_fragments_as_uint8() -> None:
    images, labels = _digits()
    np.testing.assert_array_equal(
        fragments(images.astype(np.float32) / 255.0, labels, 10, seed=0), fragments(images, labels, 10, seed=0)
    )


def test_each_fragment_overlays_pieces_of_two_or_three_images_of_different_classes() -> None:
    images, labels = _digits()  # class k's ink is 60 * (k + 1): a fragment's values say which classes it holds
    out = fragments(images, labels, 200, seed=0)
    shown = [set(np.unique(f)) - {0} for f in out]
    assert all(values <= {60, 120, 180, 240} for values in shown)  # pixels are copied, never blended
    counts = np.array([len(values) for values in shown])
    assert counts.max() <= 3
    assert (counts >= 2).mean() > 0.9  # the pieces of different classes are both visible in almost every fragment
    assert (counts == 3).any()


def test_partners_are_distinct_classes_while_labels_allow_it() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    for _ in range(200):
        picked = _partners(labels, len(labels), 3, rng)
        assert sorted(labels[picked]) == [0, 1, 2]
    unlabelled = _partners(None, 5, 3, rng)
    assert len(set(unlabelled.tolist())) == 3
    one_class = _partners(np.zeros(5, dtype=np.int64), 5, 2, rng)  # too few classes: distinct images instead
    assert len(set(one_class.tolist())) == 2


def test_a_piece_is_one_side_of_a_line_near_the_centre_of_ink(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fragments_module, "SHIFT", 0.0)
    full = np.ones((1, 28, 28), dtype=np.float32)
    rng = np.random.default_rng(0)
    shares = np.array([_piece(full, rng).mean() for _ in range(300)])
    # A line through a point within 10% of the side from the centre keeps between about 36% and 64% of a full square.
    assert shares.min() > 0.3 and shares.max() < 0.7
    assert abs(shares.mean() - 0.5) < 0.03
    kept = _piece(full, rng)[0] > 0
    rows, cols = np.nonzero(kept)
    # One side of a straight line: the kept set is convex, so the midpoint of any two kept pixels is (nearly) kept.
    pairs = np.random.default_rng(1).integers(0, len(rows), size=(200, 2))
    mid = kept[(rows[pairs[:, 0]] + rows[pairs[:, 1]]) // 2, (cols[pairs[:, 0]] + cols[pairs[:, 1]]) // 2]
    assert mid.mean() > 0.97


def test_shift_moves_ink_and_drops_what_leaves_the_frame() -> None:
    image = np.zeros((1, 5, 5), dtype=np.float32)
    image[0, 0, 0], image[0, 4, 4] = 1.0, 2.0
    moved = _shift(image, 1, 2)
    assert moved[0, 1, 2] == 1.0 and moved.sum() == 1.0  # the corner at (4, 4) left the frame
    back = _shift(image, -4, -4)
    assert back[0, 0, 0] == 2.0 and back.sum() == 2.0


def test_fragments_are_centred_by_their_centre_of_ink() -> None:
    images, labels = _digits()
    for f in fragments(images, labels, 30, seed=5):
        cy, cx = _centre_of_ink(f[0].astype(np.float64))
        assert abs(cy - 13.5) <= 0.5 + 1e-9 and abs(cx - 13.5) <= 0.5 + 1e-9


def test_fragment_ink_scales_each_piece_between_faintest_and_full() -> None:
    images = np.zeros((12, 1, 28, 28), dtype=np.uint8)
    images[:, 0, 6:22, 6:22] = 200
    labels = np.arange(12) % 3
    full = fragments(images, labels, 50, seed=0)
    assert set(np.unique(full)) == {0, 200}  # faintest = 1: the training images' ink, unchanged
    faint = fragments(images, labels, 50, seed=0, faintest=0.5)
    ink = faint[faint > 0]
    assert ink.min() >= 100 and ink.max() <= 200
    assert ink.min() < 130 and ink.max() > 170  # the factors spread over [0.5, 1]
    per_fragment = [len(np.unique(f[f > 0])) for f in faint]
    assert max(per_fragment) >= 2  # pieces of one fragment get their own factors
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="faintest"):
            fragments(images, labels, 1, seed=0, faintest=bad)


def test_a_full_ink_share_of_the_fragments_keeps_every_piece_at_full_ink() -> None:
    images = np.zeros((12, 1, 28, 28), dtype=np.uint8)
    images[:, 0, 6:22, 6:22] = 200
    labels = np.arange(12) % 3
    all_full = fragments(images, labels, 40, seed=0, faintest=0.5, full_ink_share=1.0)
    assert set(np.unique(all_full)) == {0, 200}
    mixed = fragments(images, labels, 400, seed=0, faintest=0.5, full_ink_share=0.5)
    full = np.array([set(np.unique(f[f > 0])) == {200} for f in mixed])
    assert 0.4 < full.mean() < 0.6  # about half the fragments, drawn one by one
    assert min(int(f[f > 0].min()) for f in mixed[~full]) < 130  # the others vary over [0.5, 1] as before
    # Share 0 draws exactly what the construction drew before the share existed (version 5's fragments): pinned.
    pinned = {0.5: "ca49af86c835e194", 1.0: "d44d255672c7e8c1"}
    for faintest, digest in pinned.items():
        drawn = fragments(images, labels, 40, seed=0, faintest=faintest, full_ink_share=0.0)
        assert hashlib.sha256(drawn.tobytes()).hexdigest()[:16] == digest, faintest
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="full_ink_share"):
            fragments(images, labels, 1, seed=0, faintest=0.5, full_ink_share=bad)


def test_too_few_training_images_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        fragments(np.zeros((2, 1, 28, 28), dtype=np.uint8), None, 1, seed=0)


def test_config_bounds_the_fragment_settings() -> None:
    cfg = load_config(None, ["oe.fragments=20", "oe.fragment_ink=0.5", "oe.fragment_full_ink_share=0.5"])
    assert (cfg.oe.fragments, cfg.oe.fragment_ink, cfg.oe.fragment_full_ink_share) == (20, 0.5, 0.5)
    default = load_config(None).oe
    assert (default.fragments, default.fragment_ink, default.fragment_full_ink_share) == (0, 1.0, 0.0)  # off
    bad_values = ("oe.fragments=-1", "oe.fragment_ink=0", "oe.fragment_ink=1.5", "oe.fragment_full_ink_share=-0.1")
    for bad in (*bad_values, "oe.fragment_full_ink_share=1.5"):
        with pytest.raises(ValidationError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config(None, [bad])


def _ctx(count: int, train: ImageSet, seed: int = 0, ink: float = 1.0, full_ink_share: float = 0.0) -> Any:
    oe = SimpleNamespace(fragments=count, fragment_ink=ink, fragment_full_ink_share=full_ink_share)
    cfg = SimpleNamespace(oe=oe, run=SimpleNamespace(seed=seed))
    return SimpleNamespace(cfg=cfg, data=SimpleNamespace(train=train))


def test_the_pipeline_adds_fragments_of_the_training_split_only() -> None:
    images, labels = _digits()
    pool = np.full((7, 1, 28, 28), 255, dtype=np.uint8)
    out = with_fragments(_ctx(12, ImageSet(images, labels)), pool)
    assert out.shape == (19, 1, 28, 28)
    np.testing.assert_array_equal(out[:7], pool)
    np.testing.assert_array_equal(out[7:], fragments(images, labels, 12, seed=0))
    inked = with_fragments(_ctx(12, ImageSet(images, labels), seed=2, ink=0.5, full_ink_share=0.5), pool)
    expected = fragments(images, labels, 12, seed=2, faintest=0.5, full_ink_share=0.5)  # the run's ink settings
    np.testing.assert_array_equal(inked[7:], expected)
    assert not np.array_equal(expected, fragments(images, labels, 12, seed=2, faintest=0.5))
    assert with_fragments(_ctx(0, ImageSet(images, labels)), pool) is pool  # 0: the pool as it was
    float_pool = np.full((2, 1, 28, 28), 0.5, dtype=np.float32)  # a user's float pool keeps its [0, 1] range
    mixed = with_fragments(_ctx(3, ImageSet(images, labels)), float_pool)
    assert mixed.dtype == np.float32 and float(mixed.max()) <= 1.0 and float(mixed[2:].max()) > 0.2
    with pytest.raises(DataError, match="training images"):
        with_fragments(_ctx(3, ImageSet(images, labels)), np.zeros((2, 3, 28, 28), dtype=np.uint8))
