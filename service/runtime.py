"""One onnxruntime session per loaded model version, on the best provider that actually works.

onnxruntime falls back to CPU silently when CUDA cannot be initialised (no GPU, missing CUDA libraries), so the
provider in use is read back with `session.get_providers()` and reported, never assumed from the request.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.card import OUTPUT_NAMES, ArtifactError, Card
from service.cpus import cpu_budget, onnxruntime_threads

logger = logging.getLogger(__name__)


class Runtime:
    """A verified ONNX graph ready to run: `run(images) -> {output name: array}` for float32 NCHW images."""

    def __init__(
        self, model_path: Path, card: Card, providers: list[str], intra_op_threads: int, inter_op_threads: int
    ) -> None:
        available = ort.get_available_providers()
        usable = [p for p in providers if p in available]
        skipped = [p for p in providers if p not in available]
        if skipped:
            logger.info("providers not in this onnxruntime build: %s", skipped, extra={"model": card.name})
        if not usable:
            raise ArtifactError(f"none of the configured providers {providers} is available (have {available})")
        options = ort.SessionOptions()
        # 0 = sized from the CPUs this process may use (service/cpus.py), not onnxruntime's one per host core.
        intra, inter = onnxruntime_threads(intra_op_threads, inter_op_threads, cpu_budget())
        options.intra_op_num_threads = intra
        options.inter_op_num_threads = inter
        self.threads = (intra, inter)
        options.log_severity_level = 3  # errors only; the provider fallback is reported by us, below
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=options, providers=usable)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise ArtifactError(f"{model_path}: onnxruntime cannot load the graph: {e}") from e
        self.provider: str = self._session.get_providers()[0]
        if self.provider != usable[0]:
            logger.warning("onnxruntime fell back from %s to %s", usable[0], self.provider, extra={"model": card.name})
        self._input_name = card.input.name
        self._check_signature(card)

    def _check_signature(self, card: Card) -> None:
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(inputs) != 1 or inputs[0].name != card.input.name:
            names = [i.name for i in inputs]
            raise ArtifactError(f"graph inputs {names}, card promises one input named {card.input.name!r}")
        if outputs != list(OUTPUT_NAMES):
            raise ArtifactError(f"graph outputs {outputs}, card promises {list(OUTPUT_NAMES)}")
        declared = inputs[0].shape  # e.g. ['batch', 1, 28, 28]; symbolic dimensions are strings
        if len(declared) != 4 or [d for d in declared[1:] if isinstance(d, int)] != list(card.input.shape):
            raise ArtifactError(f"graph input shape {declared} does not match the card's {list(card.input.shape)}")

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run the gate graph on a float32 batch [N, C, H, W]; blocking (call it off the event loop)."""
        outputs = self._session.run(list(OUTPUT_NAMES), {self._input_name: images})
        return dict(zip(OUTPUT_NAMES, outputs, strict=True))
