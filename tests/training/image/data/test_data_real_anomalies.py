"""Real test anomaly sets (Fashion-MNIST, rendered notMNIST and Omniglot analogues) and user sets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

from training.data.base import DataError, InDistribution
from training.data.registry import load_anomalies
from training.data.splits import draw
from training.image.anomalies import rendered_sets
from training.image.anomalies.glyphs import FIELD, GlyphRenderer, mnist_box
from training.image.anomalies.real_anomalies import FASHION_MNIST_TEST, real_set_images
from training.image.idx import read_idx

Reference = Callable[..., InDistribution]


def _center_of_mass(image: np.ndarray) -> tuple[float, float]:
    mass = image.astype(np.float64)
    rows, cols = np.indices(image.shape)
    return float((rows * mass).sum() / mass.sum()), float((cols * mass).sum() / mass.sum())


def test_mnist_box_fits_20_pixels_and_centers_the_mass() -> None:
    ink = np.zeros((40, 10), dtype=np.uint8)
    ink[:, :] = 255
    ink[:10, :] = 100  # mass sits low: centering shifts the box up
    box = mnist_box(ink)
    assert box.shape == (FIELD, FIELD)
    rows, cols = np.nonzero(box)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 5
    center_row, center_col = _center_of_mass(box)
    assert abs(center_row - 14) <= 0.5 and abs(center_col - 14) <= 0.5
    assert int(mnist_box(ink // 3).max()) == 255  # faint ink is stretched to full white, like MNIST strokes


def test_renderer_skips_missing_glyphs() -> None:
    font = ImageFont.load_default(size=64)  # Pillow's bundled FreeType font: Latin only
    assert isinstance(font, ImageFont.FreeTypeFont)
    renderer = GlyphRenderer(font)
    letter = renderer.render("A")
    assert letter is not None and letter.dtype == np.uint8 and int(letter.max()) > 200
    assert renderer.render("\u0531") is None  # Armenian capital Ayb: not in the font
    assert renderer.render(" ") is None


@pytest.mark.needs_apt("dataset-fashion-mnist")
def test_fashion_mnist(mnist: InDistribution) -> None:
    everything = real_set_images("fashion-mnist")
    assert everything.shape == (10_000, 1, 28, 28) and everything.dtype == np.uint8
    assert np.array_equal(everything[:, 0], read_idx(FASHION_MNIST_TEST))
    sample = load_anomalies("fashion-mnist", mnist, n=50, seed=0)
    assert sample.shape == (50, 1, 28, 28) and sample.dtype == np.uint8
    assert np.array_equal(sample, load_anomalies("fashion-mnist", mnist, n=50, seed=0))
    assert not np.array_equal(sample, load_anomalies("fashion-mnist", mnist, n=50, seed=1))
    assert np.array_equal(sample, everything[np.sort(draw(50, 10_000, 0, "fashion-mnist"))])


@pytest.mark.needs_apt("fonts-aenigma")
def test_notmnist(make_reference: Reference) -> None:
    rendered = rendered_sets.load_rendered_set("notmnist")
    assert rendered.class_names == tuple("ABCDEFGHIJ")
    assert len(rendered.images) > 4000  # ~465 fonts x 10 letters
    assert np.bincount(rendered.labels, minlength=10).min() > 400
    _check_mnist_like(rendered.images)
    sample = load_anomalies("notmnist", make_reference((1, 28, 28)), n=100, seed=0)
    assert sample.shape == (100, 1, 28, 28) and sample.dtype == np.uint8
    assert int(sample.reshape(100, -1).max(axis=1).min()) > 100  # no blank images


@pytest.mark.needs_apt("fonts-noto-core")
def test_omniglot(make_reference: Reference) -> None:
    rendered = rendered_sets.load_rendered_set("omniglot")
    assert len(rendered.class_names) == 20
    assert len(rendered.images) > 2000
    assert np.array_equal(np.unique(rendered.labels), np.arange(20))  # every alphabet survives the digit filter
    _check_mnist_like(rendered.images)
    color = load_anomalies("omniglot", make_reference((3, 32, 32)), n=20, seed=0)
    assert color.shape == (20, 3, 32, 32) and color.dtype == np.uint8
    assert np.array_equal(color[:, 0], color[:, 1]) and np.array_equal(color[:, 1], color[:, 2])


def _check_mnist_like(images: np.ndarray) -> None:
    assert images.shape[1:] == (1, 28, 28) and images.dtype == np.uint8
    flat = images.reshape(len(images), -1)
    assert int(flat.max(axis=1).min()) >= 128  # every glyph has ink
    assert float(np.median(flat.mean(axis=1))) < 128  # white on black, like MNIST
    centers = np.array([_center_of_mass(image[0]) for image in images[::50]])
    assert np.all(np.abs(centers - 14) < 2.5)


@pytest.mark.needs_apt("fonts-aenigma")
def test_rendered_sets_are_deterministic_and_cached(
    monkeypatch: pytest.MonkeyPatch, private_cache: Path, tmp_path: Path
) -> None:
    first = rendered_sets.load_rendered_set("notmnist")
    assert (private_cache / "anomalies-notmnist.npz").is_file()

    def no_rendering(font_dir: Path) -> rendered_sets.RenderedSet:
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(rendered_sets, "render_notmnist", no_rendering)
    cached = rendered_sets.load_rendered_set("notmnist")
    assert np.array_equal(first.images, cached.images) and np.array_equal(first.labels, cached.labels)
    monkeypatch.undo()
    few_fonts = tmp_path / "fonts"
    few_fonts.mkdir()
    for font in sorted(rendered_sets.AENIGMA_DIR.glob("*.ttf"))[:5]:
        (few_fonts / font.name).symlink_to(font)
    fresh = rendered_sets.render_notmnist(few_fonts)
    assert len(fresh.images) >= 40
    assert np.array_equal(fresh.images, first.images[: len(fresh.images)])  # fonts are rendered in sorted order


def test_too_many_samples_is_an_error(make_reference: Reference, tmp_path: Path) -> None:
    np.save(tmp_path / "few.npy", np.zeros((3, 28, 28), dtype=np.uint8))
    with pytest.raises(DataError, match="asked for 4 samples but only 3 exist"):
        load_anomalies(f"npy:{tmp_path / 'few.npy'}", make_reference((1, 28, 28)), n=4, seed=0)


def test_user_anomaly_sets_are_fitted_to_the_reference(
    make_reference: Reference, tmp_path: Path, write_png: Callable[..., Path]
) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", rgb)
    gray = load_anomalies(f"npy:{tmp_path / 'rgb.npy'}", make_reference((1, 8, 8)), n=6, seed=0)
    assert gray.shape == (6, 1, 8, 8) and gray.dtype == np.uint8
    for i in range(3):
        write_png(tmp_path / "imgs" / str(i) / "x.png", np.full((5, 7), 40 * i, dtype=np.uint8))
    folder = load_anomalies(f"imagefolder:{tmp_path / 'imgs'}", make_reference((3, 4, 4)), n=3, seed=0)
    assert folder.shape == (3, 3, 4, 4)
    assert sorted(int(image.max()) for image in folder) == [0, 40, 80]
