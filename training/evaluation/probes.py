"""`python -m training probe`: score published artifacts on real-world inputs found on this machine, of kinds that
no OE pool or corpus, validation set or test set holds.

The anomaly sets that matter most are the ones nobody tuned for: what users send. LOSO estimates them from the
pool's own groups; the probes add inputs from outside every data set this project reads, from files that Debian
machines carry anyway:

- images, decoded exactly as the service decodes an upload (alpha composited on black, converted to the model's
  mode, resized bilinearly): `ui-icons`, the Adwaita theme's PNG icons (`adwaita-icon-theme`; the OE pool drops
  openclipart's UI icons); `backgrounds`, desktop wallpapers (`gnome-backgrounds`, `mate-backgrounds`: photographs
  and abstract art); `game-sprites`, SuperTux's sprites (`supertux-data`: the pool holds arcade's sprites, so this
  is a known kind from another source);
- texts: `licenses`, sentences of the licence texts in /usr/share/common-licenses (`base-files`: English legal
  prose); `docstrings`, the first paragraphs of the Python standard library's docstrings (English technical prose,
  near the `computers` topic); `ui-messages-en`, the English source strings of the gettext catalogues under
  /usr/share/locale (short UI messages); `ui-messages-translated`, their translations (some hundred languages).

Each probe is a seeded sample of at most `--samples` inputs (sentences of 4 to 60 words for texts), scored against
the artifact's validation split (rebuilt from its card; the test split stays sealed) as `validate` scores its sets:
AUROC, FPR95 and the share accepted at the card's threshold. Like the test sets, the probes inform and never
choose: a recipe tuned on them would make them one more validation set. A probe whose files are missing is listed
with the package that brings it.
"""

from __future__ import annotations

import argparse
import ast
import gettext
import io
import random
import re
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_WORDS, MAX_WORDS = 4, 60
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# What gettext raises on a catalogue it cannot read (bad magic, truncated tables, a malformed plural header).
CATALOGUE_ERRORS = (OSError, struct.error, UnicodeDecodeError, ValueError, IndexError, KeyError, SyntaxError)


@dataclass(frozen=True)
class Probe:
    """One probe (described in the module docstring): its task, where its files are, the package that brings them."""

    name: str
    task: str  # "image" or "text"
    roots: tuple[Path, ...]
    package: str


STANDARD_LIBRARY = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
PROBES = (
    Probe("ui-icons", "image", (Path("/usr/share/icons/Adwaita"),), "adwaita-icon-theme"),
    Probe("backgrounds", "image", (Path("/usr/share/backgrounds"),), "gnome-backgrounds"),
    Probe("game-sprites", "image", (Path("/usr/share/games/supertux2"),), "supertux-data"),
    Probe("licenses", "text", (Path("/usr/share/common-licenses"),), "base-files"),
    Probe("docstrings", "text", (STANDARD_LIBRARY,), "python3"),
    Probe("ui-messages-en", "text", (Path("/usr/share/locale"),), "gettext catalogues"),
    Probe("ui-messages-translated", "text", (Path("/usr/share/locale"),), "gettext catalogues"),
)  # fmt: skip


def _files(roots: Iterable[Path], pattern: str) -> list[Path]:
    return sorted(p for root in roots if root.is_dir() for p in root.rglob(pattern) if p.is_file())


def _sentences(text: str) -> list[str]:
    return re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text).strip())


def _licence_sentences(roots: tuple[Path, ...]) -> list[str]:
    return [s for path in _files(roots, "*") for s in _sentences(path.read_text(errors="replace"))]


def _docstring_sentences(roots: tuple[Path, ...]) -> list[str]:
    """First paragraphs of module, class and function docstrings of the top-level modules under `roots`."""
    found: list[str] = []
    for path in sorted(p for root in roots if root.is_dir() for p in root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    found.extend(_sentences(doc.split("\n\n")[0]))
    return found


def _catalogue_strings(roots: tuple[Path, ...], translated: bool) -> list[str]:
    """gettext .mo catalogues: their English source strings, or the translations of the non-English ones."""
    found: list[str] = []
    for path in _files(roots, "*.mo"):
        language = path.relative_to(next(r for r in roots if path.is_relative_to(r))).parts[0]
        if translated and language.split("_")[0].split("@")[0] == "en":
            continue
        try:
            with path.open("rb") as handle:
                catalogue: dict[Any, Any] = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
        except CATALOGUE_ERRORS:  # a broken catalogue is skipped
            continue
        for source, target in catalogue.items():
            if isinstance(source, str) and source and isinstance(target, str):
                found.append(target if translated else source)
    return found


TEXT_READERS: dict[str, Callable[[tuple[Path, ...]], list[str]]] = {
    "licenses": _licence_sentences,
    "docstrings": _docstring_sentences,
    "ui-messages-en": lambda roots: _catalogue_strings(roots, translated=False),
    "ui-messages-translated": lambda roots: _catalogue_strings(roots, translated=True),
}


def probe_texts(probe: Probe, samples: int, seed: int) -> list[str]:
    """A seeded sample of at most `samples` distinct texts of 4 to 60 words (whitespace-separated)."""
    texts = sorted({t.strip() for t in TEXT_READERS[probe.name](probe.roots)})
    texts = [t for t in texts if MIN_WORDS <= len(t.split()) <= MAX_WORDS]
    random.Random(seed).shuffle(texts)
    return texts[:samples]


def probe_images(probe: Probe, spec: Any, samples: int, seed: int) -> np.ndarray:
    """A seeded sample of at most `samples` image files under the probe's roots, decoded as the service does
    (float32 [N, C, H, W] in [0, 1]); files that do not decode are skipped."""
    from PIL import Image, UnidentifiedImageError

    from service.card import ImageInputSpec
    from service.codecs.errors import CodecError
    from service.codecs.image import decode_image

    spec = ImageInputSpec.model_validate(spec.model_dump(mode="json"))  # the service's own reading of the card
    files = [p for p in _files(probe.roots, "*") if p.suffix in IMAGE_SUFFIXES]  # one walk of the tree
    random.Random(seed).shuffle(files)
    decoded: list[np.ndarray] = []
    for path in files:
        if len(decoded) == samples:
            break
        try:  # as a client would upload it: PNG bytes (the service takes PNG and JPEG)
            with Image.open(path) as image:
                buffer = io.BytesIO()
                image.save(buffer, "PNG")
            decoded.append(decode_image(buffer.getvalue(), spec, 1 << 30))
        except (OSError, UnidentifiedImageError, CodecError, ValueError):
            continue
    channels, height, width = spec.shape
    return np.stack(decoded) if decoded else np.zeros((0, channels, height, width), np.float32)


def probe_artifact(
    artifact_dir: Path, probes: Iterable[Probe], samples: int, seed: int, inputs: dict[Any, Any] | None = None
) -> dict[str, Any]:
    """Per probe of the artifact's task: detection figures against its validation split, or why it was skipped.
    `inputs` keeps each probe's sample between artifacts of one command (decoding is most of an image probe's time)."""
    from training.artifact import load_artifact
    from training.evaluation.metrics import detection_figures
    from training.evaluation.validate import validation_run

    artifact = load_artifact(artifact_dir)
    card = artifact.card
    inputs = {} if inputs is None else inputs
    in_scores = validation_run(artifact)[1]["anomaly_score"]
    results: dict[str, Any] = {}
    for probe in (p for p in probes if p.task == card.task):
        if card.task == "text":
            key: tuple[Any, ...] = (probe, samples, seed)
            if key not in inputs:
                inputs[key] = probe_texts(probe, samples, seed)
            texts = inputs[key]
            scores = artifact.run_texts(texts)["anomaly_score"] if texts else np.zeros(0, np.float32)
        else:
            key = (probe, samples, seed, artifact.image_input.model_dump_json())
            if key not in inputs:
                inputs[key] = probe_images(probe, artifact.image_input, samples, seed)
            images = inputs[key]
            scores = artifact.run(images)["anomaly_score"] if len(images) else np.zeros(0, np.float32)
        if not len(scores):
            results[probe.name] = {"skipped": f"no inputs under {', '.join(map(str, probe.roots))} ({probe.package})"}
            continue
        results[probe.name] = {"n": len(scores), **detection_figures(in_scores, scores, card.threshold.value)}
    return {"artifact": f"{card.name}/{card.version}", "task": card.task, "probes": results}


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", type=Path, action="append", required=True, metavar="DIR", help="repeatable")
    parser.add_argument("--samples", type=int, default=500, help="inputs per probe (at most; default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")


def run_probe(args: argparse.Namespace) -> int:
    """One table: a row per probe, a column per artifact (AUROC / FPR95 / accepted at the card's threshold, %)."""
    from training.artifact import read_card

    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}")
    if len({read_card(path).task for path in args.artifact}) > 1:
        raise ValueError("probe artifacts of one task at a time (image and text artifacts have different probes)")
    inputs: dict[Any, Any] = {}
    results = [probe_artifact(path, PROBES, args.samples, args.seed, inputs) for path in args.artifact]
    columns = [f"{r['artifact']} (`{path}`)" for r, path in zip(results, args.artifact, strict=True)]
    print("| probe | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(results))
    for name in results[0]["probes"]:
        cells = []
        for r in results:
            figures = r["probes"][name]
            if "skipped" in figures:
                cells.append(f"skipped: {figures['skipped']}")
            else:
                keys = ("auroc", "fpr95", "accepted_fraction")
                cells.append(" / ".join(f"{100 * figures[k]:.2f}" for k in keys) + f" (n {figures['n']})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0
