"""Typed training configuration: TOML files plus `--set section.field=value` overrides.

Every model is `extra="forbid"`, so a typo in a file or an override fails with a pydantic error naming the field.
The resolved config is written into every run directory and checkpoint.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.captures.curate import CurationConfig
from training.captures.promotion import PromotionRule
from training.image.anomalies.validation_sets import DEFAULT_VALIDATION_SET_NAMES, VALIDATION_SET_NAMES
from training.image.nets import NetConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class RunConfig(_Section):
    name: str = Field(default="run", pattern=r"^[A-Za-z0-9._-]+$")
    """Run name; the run directory defaults to runs/<name>."""
    seed: int = 0
    """Seeds data splits, initialization, shuffling and outlier sampling."""
    run_dir: Path | None = None
    """Where config, logs, checkpoints and metrics go (default runs/<name>)."""
    threads: int = Field(default=0, ge=0)
    """torch intra-op threads (0 = one per CPU this process may use: its affinity mask and its cgroup's CPU quota,
    which torch's default ignores; logged at the start of a run)."""

    @property
    def directory(self) -> Path:
        return self.run_dir if self.run_dir is not None else Path("runs") / self.name


class DataConfig(_Section):
    in_distribution: str = "mnist"
    """In-distribution spec: a registered name (mnist, mnist5k) or npz:/imagefolder:/torchvision: forms."""
    val_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    """Share carved off for validation (and test, for image folders without split folders) when the data set has
    no fixed split; mnist and mnist5k have fixed splits. Recorded in the card, so `evaluate` rebuilds the same
    test split."""
    held_out_classes: list[str] = Field(default_factory=list)
    """Classes left out of every split; their train and val images are the `val-heldout-classes` validation set
    (inputs of the same kind as the data, of no trained class). For choosing a recipe; a model you ship is trained
    with every class."""
    outlier_pool: str = "default"
    """OE pool spec: `default` (the cached openclipart + arcade pool of random crops), `default-mixed` (crops,
    outlines and placed objects), `default-scribbles` (default-mixed plus a group of procedurally drawn pen strokes,
    `training/image/pool/scribbles.py`; 28 x 28 grayscale only), `default-glyphs` (default-scribbles plus a group
    of characters of scripts no test set holds and symbols, drawn from Debian fonts like handwriting,
    `training/image/pool/fontglyphs.py`; 28 x 28 grayscale only), `default-glyphs-wide` (default-scribbles plus
    twice the glyphs from nineteen script groups), `default-printed` (default-glyphs-wide plus those scripts' glyphs
    printed as type), the `-no-cyrillic` forms of the three (for scoring `val-glyphs-cyrillic` and
    `val-printed-cyrillic`), npy:PATH or imagefolder:PATH."""
    outlier_pool_limit: int | None = Field(default=None, gt=0)
    """Use at most this many pool images (small pools for quick runs)."""
    glyph_samples: int | None = Field(default=None, gt=0)
    """Glyphs drawn for the hand-drawn glyph group of a `default-glyphs*` or `default-printed*` pool (None: 6,000,
    or 12,000 for `-wide` and `default-printed`)."""
    outlier_pool_exclude: list[str] = Field(default_factory=list)
    """Source groups of the default pool to leave out (leave-one-source-out runs; `python -m training loso`)."""
    val_anomalies: list[str] = Field(default_factory=lambda: list(DEFAULT_VALIDATION_SET_NAMES))
    """Validation anomaly sets for the card's validation summary and every choice made on detection: built from
    the validation split and noise (val-*), or your own held-out sets (npy:PATH, imagefolder:PATH). Test anomaly
    sets are refused here: they are read once, by `python -m training evaluate`."""
    val_anomaly_samples: int = Field(default=2000, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("eval_anomalies" in data or "eval_anomaly_samples" in data):
            raise ValueError(
                "data.eval_anomalies / data.eval_anomaly_samples are now data.val_anomalies / "
                "data.val_anomaly_samples: the pipeline evaluates on validation anomaly sets only "
                f"({', '.join(VALIDATION_SET_NAMES)}); test sets are for `python -m training evaluate`"
            )
        return data

    @model_validator(mode="after")
    def _validation_only(self) -> DataConfig:
        for name in self.val_anomalies:
            if name not in VALIDATION_SET_NAMES and name.partition(":")[0] not in ("npy", "imagefolder"):
                raise ValueError(
                    f"data.val_anomalies: '{name}' is not a validation anomaly set; use "
                    f"{', '.join(VALIDATION_SET_NAMES)} or your own npy:PATH / imagefolder:PATH held-out sets "
                    "(test sets are read only by `python -m training evaluate`)"
                )
        return self


class OptimConfig(_Section):
    """One training stage: SGD with Nesterov momentum and per-step cosine decay, as the reference code."""

    epochs: int = Field(default=10, ge=1)
    """Passes over the in-distribution training split."""
    batch_size: int = Field(default=128, ge=1)
    """In-distribution images per step."""
    lr: float = Field(default=0.1, gt=0.0)
    """Peak learning rate; cosine-decayed per step to 1e-6 over the stage."""
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    """SGD momentum."""
    nesterov: bool = True
    """Nesterov momentum, as the reference code."""
    weight_decay: float = Field(default=5e-4, ge=0.0)
    """L2 penalty in SGD."""


class OEConfig(OptimConfig):
    """OE fine-tuning from the baseline: reference schedule is a few epochs at a small learning rate."""

    enabled: bool = True
    """Run the OE fine-tune (false: baseline only)."""
    epochs: int = Field(default=5, ge=1)
    """Passes over the in-distribution training split (each paired with outlier batches)."""
    lr: float = Field(default=0.01, gt=0.0)
    """Peak learning rate of the fine-tune; cosine-decayed per step."""
    weight: float = Field(default=0.5, ge=0.0)
    """lambda in CE + lambda * E_out[logsumexp(z) - mean(z)]; 0.5 for images (the paper)."""
    outlier_batch_ratio: float = Field(default=2.0, gt=0.0)
    """Outlier batch size as a multiple of the in-distribution batch (2 in the reference vision code)."""
    weight_decay: float | None = Field(default=None, ge=0.0)  # type: ignore[assignment]
    """None (default): the baseline's weight decay, so both twins are regularized alike (resolved in the run's
    config.json)."""
    screen_confidence: float | None = Field(default=None, gt=0.0, le=1.0)
    """Drop outlier pool images that the net OE starts from (the baseline) classifies with a top softmax
    probability >= this before the fine-tune: pool images that are in fact in-distribution would teach the gate to
    reject its own classes. None (default): keep every pool image. The count dropped goes in the card."""
    fragments: int = Field(default=0, ge=0)
    """Add this many outlier images recombined from pieces of training images of different classes to the pool,
    before the screen (`training/image/pool/fragments.py`): the nearest OE data to a class the net never learnt.
    0 (default): none."""
    fragment_ink: float = Field(default=1.0, gt=0.0, le=1.0)
    """Each fragment piece's ink is scaled by a factor drawn uniformly from [this, 1]: 1 (default) keeps the
    training images' ink; lower values vary it from piece to piece, as pen pressure does."""
    fragment_full_ink_share: float = Field(default=0.0, ge=0.0, le=1.0)
    """With `fragment_ink` < 1: the share of fragments whose pieces all keep full ink (each fragment drawn so with
    this probability); the rest vary as `fragment_ink` says. 0 (default): every fragment varies."""


class CalibrationConfig(_Section):
    acceptance_target: float = Field(default=0.95, gt=0.0, lt=1.0)
    """Fraction of held-out in-distribution inputs the reject threshold must accept."""
    threshold_method: Literal["conformal", "pac"] = "conformal"
    """`conformal`: acceptance >= target on average over calibration draws; `pac`: >= target with probability
    >= 1 - delta over the calibration draw (training/calibrate.py states both promises)."""
    delta: float = Field(default=0.05, gt=0.0, lt=1.0)
    """Failure probability of the `pac` rule."""


class ExportConfig(_Section):
    name: str = Field(default="model", pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """Artifact name for the OE model (models/<name>/<version>)."""
    baseline_name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """Also publish the baseline (no OE, same calibration) under this name, to show OE's effect."""
    version: int | None = Field(default=None, ge=1)
    """Version to publish; default: one past the newest existing version."""
    models_dir: Path = Path("staging")
    """Where versions are published: the staging area by default, so nothing is served until
    `python -m training promote NAME VERSION` copies it into the served `models/`."""
    enabled: bool = True
    """Publish the artifacts (false: train only)."""


class PipelineConfig(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    net: NetConfig = Field(default_factory=NetConfig)
    baseline: OptimConfig = Field(default_factory=OptimConfig)
    oe: OEConfig = Field(default_factory=OEConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    captures: CurationConfig = Field(default_factory=CurationConfig)
    promotion: PromotionRule = Field(default_factory=PromotionRule)

    @model_validator(mode="after")
    def _names_differ(self) -> PipelineConfig:
        if self.export.baseline_name == self.export.name:
            raise ValueError("export.baseline_name must differ from export.name")
        if self.oe.weight_decay is None:
            self.oe.weight_decay = self.baseline.weight_decay
        return self


def parse_override(item: str) -> tuple[list[str], Any]:
    """`section.field=value` -> (["section", "field"], value), the value parsed as TOML (bare words as strings)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r} must look like section.field=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def load_config(
    path: Path | None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> PipelineConfig:
    """Validate `base` (e.g. a checkpoint's stored config), else the TOML file at `path`, with overrides applied."""
    raw = read_raw_config(path, overrides, base)
    check_names(raw, PipelineConfig)
    return PipelineConfig.model_validate(raw)


def read_raw_config(
    path: Path | None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`base`, else the TOML file at `path` (else nothing), with `--set` overrides applied; not yet validated."""
    raw: dict[str, Any] = copy.deepcopy(base) if base is not None else {}
    if path is not None and base is None:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError as e:
            raise ValueError(f"config file {path} not found") from e
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML ({e})") from e
    for item in overrides or []:
        keys, value = parse_override(item)
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {key} is not a section")
            node = child
        node[keys[-1]] = value
    return raw


def is_text_config(raw: dict[str, Any]) -> bool:
    """A text pipeline's config says `task = "text"` at its top; image configs have no `task`."""
    return raw.get("task") == "text"


RENAMED = frozenset({"data.eval_anomalies", "data.eval_anomaly_samples"})


def check_names(raw: dict[str, Any], model: type[BaseModel], prefix: str = "") -> None:
    """Unknown sections and fields fail with the closest valid name (pydantic alone says only 'extra input')."""
    fields = model.model_fields
    for key, value in raw.items():
        if f"{prefix}{key}" in RENAMED:
            continue  # the section's own validator names the new field
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ValueError(f"unknown config field '{prefix}{key}'{hint}; valid here: {', '.join(fields)}")
        annotation = fields[key].annotation
        if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            check_names(value, annotation, f"{prefix}{key}.")
        elif isinstance(value, str) and typing.get_origin(annotation) is list:
            raw[key] = [item.strip() for item in value.split(",") if item.strip()]  # --set x=a,b as a list


def describe_config(cfg: BaseModel) -> str:
    """The resolved config as TOML, each field followed by its documentation as a comment."""
    lines: list[str] = []
    for section_name in type(cfg).model_fields:
        section = getattr(cfg, section_name)
        if not isinstance(section, BaseModel):
            lines += [f"{section_name} = {_toml_value(section)}", ""]
            continue
        lines += [f"[{section_name}]"]
        for name, field in type(section).model_fields.items():
            value = getattr(section, name)
            lines.append(f"# {name} is unset" if value is None else f"{name} = {_toml_value(value)}")
            for doc_line in (field.description or "").splitlines():
                lines.append(f"#   {doc_line.strip()}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


Stage = Literal["baseline", "oe", "matched"]
"""A training stage: the baseline, the OE fine-tune, or (text) the matched fine-tune: the OE stage without the OE term,
whose net is the text baseline twin (`oe.matched_twin`)."""
