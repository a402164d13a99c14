"""Screening the OE pool's source images for in-distribution content (digits, for MNIST), before a reviewer.

Outlier Exposure pushes every pool image towards a flat posterior, so a pool image that *is* a digit teaches the
model to reject digits. Names alone do not find them (house numbers, dials, numbered pictures), so we ask a
baseline classifier: each source file is shown in two low-transform views, the whole picture fitted into the
model's input like an MNIST digit (`glyphs.mnist_box`: ink in a 20 x 20 box, mass-centered), once as light ink on
dark and once inverted. A file is flagged when the baseline's top softmax probability on either view reaches
`min_confidence`. Flagged files go on a contact sheet (PNG) for review by eye; the reviewed list, with a reason
per line, is `excluded.txt`, which `sources.py` reads.

`python -m training data screen-pool --checkpoint runs/<name>/checkpoints/baseline.pt` runs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from training.data.wheels import wheel_file
from training.image.anomalies.glyphs import mnist_box
from training.image.convert import flatten_alpha
from training.image.pool.build import open_rgba
from training.image.pool.sources import ARCADE_IMAGES, OPENCLIPART_DIR, default_sources

logger = logging.getLogger(__name__)
INK_LEVEL = 32  # gray levels above the background that count as ink when cropping


@dataclass(frozen=True)
class Flagged:
    key: str  # source:relative/path, as excluded.txt lists it
    label: str
    confidence: float
    view: np.ndarray  # uint8 [28, 28], the view that was flagged


def mnist_views(path: Path) -> list[np.ndarray]:
    """The file's two MNIST-style views (uint8 28 x 28): dark-on-light art inverted, and light-on-dark art as is."""
    rgba = open_rgba(path, 256)
    if rgba is None:
        return []
    views = []
    for background, invert in ((255, True), (0, False)):
        gray = np.asarray(flatten_alpha(rgba, background).convert("L"), dtype=np.int16)
        ink = (255 - gray) if invert else gray
        mask = ink > INK_LEVEL
        if not mask.any():
            continue
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].clip(0, 255).astype(np.uint8)
        views.append(mnist_box(crop))
    return views


def _key(path: Path) -> str:
    try:
        return f"openclipart:{path.relative_to(OPENCLIPART_DIR).as_posix()}"
    except ValueError:
        return f"arcade:{path.relative_to(wheel_file(*ARCADE_IMAGES)).as_posix()}"


@torch.no_grad()
def screen(
    net: torch.nn.Module, mean: list[float], std: list[float], labels: list[str], *, min_confidence: float
) -> list[Flagged]:
    """Every default-pool source file whose MNIST-style view the net reads as a class with >= min_confidence."""
    net.eval()
    flagged: list[Flagged] = []
    files = [path for source in default_sources() for path in source.files]
    for start in range(0, len(files), 256):
        batch = files[start : start + 256]
        views, owners = [], []
        for i, path in enumerate(batch):
            for view in mnist_views(path):
                views.append(view)
                owners.append(i)
        if not views:
            continue
        x = torch.from_numpy(np.stack(views)[:, None].astype(np.float32) / 255.0)
        x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        probs = torch.softmax(net(x), dim=-1)
        top, label = probs.max(dim=-1)
        best: dict[int, tuple[float, int, int]] = {}
        for j, owner in enumerate(owners):
            if owner not in best or float(top[j]) > best[owner][0]:
                best[owner] = (float(top[j]), int(label[j]), j)
        for owner, (confidence, index, j) in best.items():
            if confidence >= min_confidence:
                flagged.append(Flagged(_key(batch[owner]), labels[index], confidence, views[j]))
        logger.info("screened %d / %d files, %d flagged", start + len(batch), len(files), len(flagged))
    return flagged


def contact_sheet(flagged: list[Flagged], path: Path, columns: int = 16) -> None:
    """A grid of the flagged views, 3x enlarged, each captioned with its index, label and confidence."""
    cell_w, cell_h = 84, 100
    rows = max(1, -(-len(flagged) // columns))
    sheet = Image.new("L", (columns * cell_w, rows * cell_h), 40)
    draw = ImageDraw.Draw(sheet)
    for i, item in enumerate(flagged):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        sheet.paste(Image.fromarray(item.view).resize((84, 84), Image.Resampling.NEAREST), (x, y))
        draw.text((x + 2, y + 86), f"{i}:{item.label} {item.confidence:.3f}", fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
