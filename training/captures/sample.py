"""Review material for a sample of captures: a contact sheet PNG for images, a markdown table for texts.

Both come with the sample's index (`sample.tsv`: number, id, decision, anomaly score, predicted label, source), so a
reviewer who sees that picture 17 is a valid "4" writes `<id of 17> in-distribution:4` into the labels file.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from training.captures.inputs import Shape, capture_pixels, capture_text
from training.captures.store import Capture

CELL = 84  # pixels of one enlarged image
CAPTION = 16
TEXT_CELL_CHARS = 200  # a text longer than this is cut in the table (the file holds all of it)


def draw_sample(captures: list[Capture], count: int, seed: int) -> list[Capture]:
    """`count` captures drawn without replacement by a seeded generator (all of them if fewer), in time order."""
    if count >= len(captures):
        return list(captures)
    chosen = set(random.Random(seed).sample(range(len(captures)), count))
    return [capture for index, capture in enumerate(captures) if index in chosen]


def index_lines(captures: list[Capture]) -> list[str]:
    header = "n\tid\tdecision\tanomaly_score\tpredicted\tsource\ttime_utc"
    return [header] + [
        f"{n}\t{c.id}\t{c.decision}\t{c.anomaly_score:.4f}\t{c.label}\t{c.source}\t{c.time_utc}"
        for n, c in enumerate(captures)
    ]


def contact_sheet(captures: list[Capture], shape: Shape, path: Path, columns: int = 12) -> None:
    """A grid of the captures as the model saw them, each enlarged and captioned `n R|A score`."""
    rows = max(1, -(-len(captures) // columns))
    mode = "L" if shape[0] == 1 else "RGB"
    sheet = Image.new(mode, (columns * CELL, rows * (CELL + CAPTION)), 40 if mode == "L" else (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for n, capture in enumerate(captures):
        x, y = (n % columns) * CELL, (n // columns) * (CELL + CAPTION)
        pixels = capture_pixels(capture, shape)
        view = Image.fromarray(pixels[0] if shape[0] == 1 else pixels.transpose(1, 2, 0))
        sheet.paste(view.resize((CELL, CELL), Image.Resampling.NEAREST), (x, y))
        mark = "R" if capture.reject else "A"
        draw.text(
            (x + 2, y + CELL + 2), f"{n} {mark} {capture.anomaly_score:.3f}", fill=255 if mode == "L" else "white"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def text_table(captures: list[Capture]) -> str:
    """A markdown table of the texts (pipes and newlines escaped, long texts cut)."""
    lines = ["| n | decision | score | predicted | source | text |", "|---|---|---|---|---|---|"]
    for n, capture in enumerate(captures):
        text = capture_text(capture)
        cut = text[:TEXT_CELL_CHARS] + ("…" if len(text) > TEXT_CELL_CHARS else "")
        cell = cut.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
        lines.append(
            f"| {n} | {capture.decision} | {capture.anomaly_score:.4f} | {capture.label} | {capture.source} | {cell} |"
        )
    return "\n".join(lines) + "\n"
