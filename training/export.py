"""Export: wrap a trained net in the gate module, write ONNX, check it against torch, publish atomically.

The gate graph takes float32 NCHW images in [0, 1] and computes, inside the graph, normalization, the net, the
temperature-scaled softmax, KL[U || p] of the T = 1 posterior (the paper's score), the anomaly score
1 / (1 + KL) and the 0-1 rescaled confidence. The service only compares the anomaly score with the threshold.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import platform
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from training.artifact import load_artifact, session_options, sha256_file
from training.calibrate import Threshold
from training.card import OUTPUT_NAMES, Card, ImageInputSpec, ThresholdSpec
from training.scores import anomaly_score_from_kl, kl_uniform, rescaled_confidence

DEFAULT_OPSET = 18


class ArtifactExistsError(FileExistsError):
    """Published versions are immutable: publish a new version instead."""


class Gate(nn.Module):
    """net + calibration in one module: x in [0, 1] -> (logits, probs, kl_uniform, anomaly_score, confidence)."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], temperature: float) -> None:
        super().__init__()
        self.net = net
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return gate_outputs(self.net((x - self.mean) / self.std), self.temperature)


def gate_outputs(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, ...]:
    """The graph's outputs from the net's logits, for every modality: (logits, softmax(z / T), KL[U || p] of the
    T = 1 posterior, anomaly score 1 / (1 + KL), 0-1 rescaled confidence of the temperature-scaled posterior)."""
    probs = torch.softmax(logits / temperature, dim=-1)
    kl = kl_uniform(logits)
    anomaly = anomaly_score_from_kl(kl)
    confidence = rescaled_confidence(probs.amax(dim=-1), logits.shape[-1])
    return logits, probs, kl, anomaly, confidence


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter warns and logs about its own internals (missing torchvision ops, optimizer passes);
    none of it concerns our graph."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def export_onnx(gate: Gate, input_shape: tuple[int, int, int], path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Write the image gate as a single-file ONNX graph with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1)
    write_onnx(gate, (torch.rand(2, *input_shape),), ["input"], ({0: batch},), path, opset)


def write_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    dynamic_shapes: tuple[dict[int, Any], ...],
    path: Path,
    opset: int = DEFAULT_OPSET,
) -> None:
    """Export `module` (in eval mode) with the dynamo exporter, check the graph, write it fsynced to `path`."""
    module = module.eval()
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            input_names=input_names,
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto
    onnx.checker.check_model(model)
    with path.open("wb") as f:
        f.write(model.SerializeToString())
        f.flush()
        os.fsync(f.fileno())


def max_abs_difference(gate: Gate, onnx_path: Path, images: np.ndarray) -> dict[str, float]:
    """Max |ORT - torch| per output on float32 images in [0, 1]."""
    session = ort.InferenceSession(str(onnx_path), sess_options=session_options(), providers=["CPUExecutionProvider"])
    ort_outputs = session.run(list(OUTPUT_NAMES), {"input": images.astype(np.float32)})
    with torch.no_grad():
        torch_outputs = gate.eval()(torch.from_numpy(images.astype(np.float32)))
    return {
        name: float(np.max(np.abs(a - b.numpy())))
        for name, a, b in zip(OUTPUT_NAMES, ort_outputs, torch_outputs, strict=True)
    }


def framework_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def next_version(models_dir: Path, name: str) -> int:
    existing = [int(p.name) for p in (models_dir / name).glob("*") if p.is_dir() and p.name.isdigit()]
    return max(existing, default=0) + 1


def new_version_target(models_dir: Path, name: str, version: int | None) -> tuple[int, Path]:
    """(version, its directory): the asked version, or one past the newest; ArtifactExistsError if it exists."""
    version = next_version(models_dir, name) if version is None else version
    target = models_dir / name / str(version)
    if target.exists():
        raise ArtifactExistsError(f"{target} already exists; published versions are immutable (use a new version)")
    return version, target


def publish_artifact(
    gate: Gate,
    *,
    models_dir: Path,
    name: str,
    version: int | None,
    labels: list[str],
    input_spec: ImageInputSpec,
    threshold: Threshold,
    calibration_split: str,
    evaluation: dict[str, Any],
    training: dict[str, Any],
    check_images: np.ndarray,
    tolerance: float = 1e-4,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Export, verify and publish `models_dir/name/version/` atomically; returns the version directory.

    The version is written under a hidden temporary name, fsynced, checked (ORT vs torch on `check_images`, card
    and checksum re-read), then renamed into place; a crash leaves only a `.tmp-*` directory, which the service
    ignores. An existing version is never overwritten. `extra_files` (name -> bytes, e.g. a comparison report) are
    written beside the graph and listed in the card's checksums.
    """
    version, target = new_version_target(models_dir, name, version)
    reserved = {"model.onnx", "card.json"} & set(extra_files or {})
    if reserved:
        raise ValueError(f"extra files may not replace {sorted(reserved)}")
    if not np.isfinite(threshold.value):
        raise ValueError(f"threshold must be finite, got {threshold.value}")
    with temporary_version(models_dir / name, version) as staging:
        staging.mkdir(parents=True)
        onnx_path = staging / "model.onnx"
        export_onnx(gate, input_spec.shape, onnx_path)
        differences = max_abs_difference(gate, onnx_path, check_images)
        worst = max(differences.values())
        if not worst < tolerance:
            raise RuntimeError(f"ONNX Runtime disagrees with torch by {worst:.2e} (> {tolerance}): {differences}")
        for file_name, content in (extra_files or {}).items():
            (staging / file_name).write_bytes(content)
        publish_version(
            staging,
            target,
            Card(
                name=name,
                version=version,
                task="image",
                labels=labels,
                num_classes=len(labels),
                input=input_spec,
                temperature=gate.temperature,
                threshold=threshold_spec(threshold, calibration_split),
                evaluation={**evaluation, "onnx_vs_torch_max_abs_diff": differences},
                training=training,
                frameworks=framework_versions(),
                sha256={
                    "model.onnx": sha256_file(onnx_path),
                    **{file_name: sha256_file(staging / file_name) for file_name in extra_files or {}},
                },
                created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
            ),
        )
    return target


def threshold_spec(threshold: Threshold, calibration_split: str) -> ThresholdSpec:
    """The card's record of a chosen threshold: value, rule, promise and the calibration it came from."""
    return ThresholdSpec(
        value=threshold.value,
        method="pac_binomial" if threshold.method == "pac" else "conformal_quantile",
        acceptance_target=threshold.acceptance_target,
        delta=threshold.delta,
        order_statistic=threshold.order_statistic,
        promise=threshold.promise,
        calibration_split=calibration_split,
        calibration_samples=threshold.calibration_samples,
        calibration_acceptance=threshold.calibration_acceptance,
    )


def publish_version(staging: Path, target: Path, card: Card) -> None:
    """Write `card` (its checksums already taken of the files in `staging`) and move `staging` into place."""
    card_path = staging / "card.json"
    with card_path.open("w") as f:
        f.write(card.model_dump_json(indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    move_into_place(staging, target)


@contextlib.contextmanager
def temporary_version(directory: Path, version: int) -> Iterator[Path]:
    """A hidden `.tmp-<version>-<random>` path in `directory` (not created here; the service skips hidden entries),
    removed again if the block fails."""
    temporary = directory / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def move_into_place(temporary: Path, target: Path) -> None:
    """Re-read the artifact in `temporary` exactly as the service will, fsync it and rename it to `target` (one
    atomic step on one filesystem); ArtifactExistsError if `target` appeared meanwhile."""
    load_artifact(temporary)
    _fsync_directory(temporary)
    try:
        os.rename(temporary, target)
    except OSError as e:
        raise ArtifactExistsError(f"{target} appeared while publishing: {e}") from e
    _fsync_directory(target.parent)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
