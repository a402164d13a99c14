"""Text export: the gate graph over token ids, optionally int8-quantized, published with its tokenizer.

The graph takes `input_ids` and `attention_mask` (int64 [batch, length], both dynamic) and computes the classifier
and the same five outputs as the image graph (`training/export.py: gate_outputs`). Publishing builds the graph in
the hidden temporary version directory, checks the fp32 graph against torch, quantizes it if asked (onnxruntime's
dynamic int8: weights of MatMul/Gather in int8, activations quantized per batch at run time), and then lets the
caller calibrate the threshold and summarize validation **on the graph that will be served**, before the card is
written and the directory renamed into place.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from training.artifact import run_text_session, session_options, sha256_file
from training.calibrate import Threshold
from training.card import OUTPUT_NAMES, Card, TextInputSpec
from training.export import (
    framework_versions,
    gate_outputs,
    new_version_target,
    publish_version,
    temporary_version,
    threshold_spec,
    write_onnx,
)
from training.text.tokenize import TextTokenizer

log = logging.getLogger(__name__)

GraphRunner = Callable[[Sequence[str]], dict[str, np.ndarray]]
"""Texts -> the served graph's outputs (as `Artifact.run_texts`)."""
Summarize = Callable[[GraphRunner], tuple[Threshold, dict[str, Any]]]
"""Given the served graph, choose the threshold and summarize validation (the card's `evaluation`)."""
ExtraFiles = Callable[[dict[str, Any]], dict[str, bytes]]
"""Given the card's `evaluation` (what summarize returned), files to publish beside the graph (e.g. a comparison
report), checksummed in the card."""


class TextGate(nn.Module):
    """classifier + calibration: (input_ids, attention_mask) -> the five outputs of `gate_outputs`."""

    def __init__(self, net: nn.Module, temperature: float) -> None:
        super().__init__()
        self.net = net
        self.temperature = float(temperature)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return gate_outputs(self.net(input_ids, attention_mask), self.temperature)


def export_text_onnx(gate: TextGate, max_length: int, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    length = torch.export.Dim("length", min=1, max=max_length)
    # The example's length must lie within the length range (max_length may be as small as 3); 1 would specialize.
    example_length = min(8, max_length)
    example = torch.randint(1000, 2000, (2, example_length)), torch.ones(2, example_length, dtype=torch.int64)
    write_onnx(gate, example, ["input_ids", "attention_mask"], ({0: batch, 1: length}, {0: batch, 1: length}), path)


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8 quantization: weights int8 per output channel, activations quantized per batch at
    run time. Per-tensor scales moved the default OE model's validation accuracy by 2 of 189 texts and one AUROC by
    0.58 points against fp32; per-channel by 1 text and at most 0.21 points (reports/topics/choices.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The dynamo exporter records intermediate shapes traced at the example's size; the quantizer re-runs ONNX shape
    # inference and refuses those that disagree with it, so they are dropped (inference recomputes them).
    model = onnx.load(str(source))
    model.graph.ClearField("value_info")
    plain = source.with_suffix(".shapeless.onnx")
    onnx.save(model, str(plain))
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantizer logs each skipped node and a pre-processing hint on root
    try:
        quantize_dynamic(str(plain), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
        plain.unlink(missing_ok=True)
    quantized = onnx.load(str(target))
    unsigned_weights(quantized)
    onnx.save(quantized, str(target))


def unsigned_weights(model: onnx.ModelProto) -> int:
    """Store each MatMulInteger's int8 weights q as uint8 q + 128 with zero point 128, in place; returns how many.

    The integer products are the same ((a - za) * q), so outputs do not change, but onnxruntime then runs a U8U8
    GEMM, which is exact on every CPU: its U8S8 kernel saturates on x86 CPUs with AVX2 and no VNNI unless the host
    sets `session.x64quantprecision` (service/runtime.py), which another onnxruntime host may not. Same speed here
    (40 ms per batch of 32 texts for version 2's graph either way, one thread, a VNNI CPU)."""
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    converted = 0
    for node in model.graph.node:
        if node.op_type != "MatMulInteger" or node.input[1] not in initializers:
            continue
        weights = numpy_helper.to_array(initializers[node.input[1]])
        if weights.dtype != np.int8:
            continue
        if len(node.input) < 4 or node.input[3] not in initializers:
            raise ValueError(f"MatMulInteger {node.name}: int8 weights without a constant zero point")
        zero_point = numpy_helper.to_array(initializers[node.input[3]])
        if zero_point.any():
            raise ValueError(f"MatMulInteger {node.name}: int8 weights with a nonzero zero point")
        shifted = (weights.astype(np.int16) + 128).astype(np.uint8)
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(shifted, node.input[1]))
        initializers[node.input[3]].CopyFrom(
            numpy_helper.from_array(np.full(zero_point.shape, 128, np.uint8), node.input[3])
        )
        converted += 1
    return converted


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), sess_options=session_options(), providers=["CPUExecutionProvider"])


def max_abs_difference(gate: TextGate, path: Path, tokenizer: TextTokenizer, texts: Sequence[str]) -> dict[str, float]:
    """Max |ORT - torch| per output on `texts`, one padded batch (so padding is exercised too)."""
    input_ids, mask = tokenizer(texts)
    ort_outputs = _session(path).run(None, {"input_ids": input_ids, "attention_mask": mask})
    with torch.no_grad():
        torch_outputs = gate.eval()(torch.from_numpy(input_ids), torch.from_numpy(mask))
    return {
        name: float(np.max(np.abs(a - b.numpy())))
        for name, a, b in zip(OUTPUT_NAMES, ort_outputs, torch_outputs, strict=True)
    }


def publish_text_artifact(
    gate: TextGate,
    *,
    models_dir: Path,
    name: str,
    version: int | None,
    labels: list[str],
    tokenizer: TextTokenizer,
    quantize: bool,
    check_texts: Sequence[str],
    summarize: Summarize,
    calibration_split: str,
    training: dict[str, Any],
    tolerance: float = 1e-4,
    extra_files: ExtraFiles | None = None,
) -> Path:
    """Export, verify, calibrate on the served graph and publish `models_dir/name/version/` atomically."""
    version, target = new_version_target(models_dir, name, version)
    with temporary_version(models_dir / name, version) as staging:
        staging.mkdir(parents=True)
        fp32 = staging / "model.fp32.onnx"
        export_text_onnx(gate, tokenizer.max_length, fp32)
        differences = max_abs_difference(gate, fp32, tokenizer, check_texts)
        worst = max(differences.values())
        if not worst < tolerance:
            raise RuntimeError(f"ONNX Runtime disagrees with torch by {worst:.2e} (> {tolerance}): {differences}")
        onnx_path = staging / "model.onnx"
        graph: dict[str, Any] = {"onnx_vs_torch_max_abs_diff": differences, "fp32_bytes": fp32.stat().st_size}
        if quantize:
            quantize_int8(fp32, onnx_path)
            graph["quantization"] = (
                "onnxruntime dynamic int8 (QInt8 per-channel weights, stored as uint8 with zero point 128; "
                "activations per batch)"
            )
            graph["int8_bytes"] = onnx_path.stat().st_size
            graph["int8_vs_fp32_max_abs_diff"] = _graph_difference(fp32, onnx_path, tokenizer, check_texts)
            fp32.unlink()
        else:
            fp32.rename(onnx_path)
        shutil.copyfile(tokenizer.path, staging / "tokenizer.json")
        session = _session(onnx_path)
        threshold, evaluation = summarize(lambda texts: run_text_session(session, tokenizer, texts))
        if not np.isfinite(threshold.value):
            raise ValueError(f"threshold must be finite, got {threshold.value}")
        files = extra_files(evaluation) if extra_files is not None else {}
        reserved = {"model.onnx", "card.json", "tokenizer.json"} & set(files)
        if reserved:
            raise ValueError(f"extra files may not replace {sorted(reserved)}")
        for file_name, content in files.items():
            (staging / file_name).write_bytes(content)
        publish_version(
            staging,
            target,
            Card(
                name=name,
                version=version,
                task="text",
                labels=labels,
                num_classes=len(labels),
                input=TextInputSpec(max_length=tokenizer.max_length, pad_token_id=tokenizer.pad_token_id),
                temperature=gate.temperature,
                threshold=threshold_spec(threshold, calibration_split),
                evaluation={**evaluation, "graph": graph},
                training=training,
                frameworks=framework_versions(),
                sha256={
                    "model.onnx": sha256_file(onnx_path),
                    "tokenizer.json": sha256_file(staging / "tokenizer.json"),
                    **{file_name: sha256_file(staging / file_name) for file_name in files},
                },
                created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
            ),
        )
    log.info("published %s", target)
    return target


def _graph_difference(a: Path, b: Path, tokenizer: TextTokenizer, texts: Sequence[str]) -> dict[str, float]:
    first, second = (run_text_session(_session(p), tokenizer, texts) for p in (a, b))
    return {name: float(np.max(np.abs(first[name] - second[name]))) for name in first}
