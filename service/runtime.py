"""One onnxruntime session per loaded model version, on the best provider that actually works.

onnxruntime falls back to CPU silently when CUDA cannot be initialised (no GPU, missing CUDA libraries), so the
provider in use is read back with `session.get_providers()` and reported, never assumed from the request.

Image graphs take one float32 input [N, C, H, W]; text graphs take `input_ids` and `attention_mask`, int64
[N, length], which `run` makes by padding the batch's token ids to its longest text (`TokenBatch.padded`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.batching import ModelInputs
from service.card import OUTPUT_NAMES, ArtifactError, Card, ImageInputSpec, TextInputSpec
from service.codecs.text import TokenBatch
from service.cpus import cpu_budget, onnxruntime_threads

logger = logging.getLogger(__name__)


class Runtime:
    """A verified ONNX graph ready to run: `run(inputs) -> {output name: array}` for images or token ids."""

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
        self._input = card.input
        self._check_signature(card)

    def _check_signature(self, card: Card) -> None:
        if isinstance(card.input, TextInputSpec):
            self._check_text_inputs(card.input)
        else:
            self._check_image_input(card.input)
        outputs = [o.name for o in self._session.get_outputs()]
        if outputs != list(OUTPUT_NAMES):
            raise ArtifactError(f"graph outputs {outputs}, card promises {list(OUTPUT_NAMES)}")

    def _check_image_input(self, spec: ImageInputSpec) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != spec.name:
            raise ArtifactError(f"graph inputs {[i.name for i in inputs]}, card promises one input named {spec.name!r}")
        declared = inputs[0].shape  # e.g. ['batch', 1, 28, 28]; symbolic dimensions are strings
        if len(declared) != 4 or [d for d in declared[1:] if isinstance(d, int)] != list(spec.shape):
            raise ArtifactError(f"graph input shape {declared} does not match the card's {list(spec.shape)}")

    def _check_text_inputs(self, spec: TextInputSpec) -> None:
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != list(spec.names):
            raise ArtifactError(f"graph inputs {[i.name for i in inputs]}, card promises {list(spec.names)}")
        for graph_input in inputs:
            if graph_input.type != "tensor(int64)" or len(graph_input.shape) != 2:
                raise ArtifactError(
                    f"graph input {graph_input.name} is {graph_input.type} {graph_input.shape}, "
                    "card promises int64 [batch, length]"
                )

    def run(self, inputs: ModelInputs) -> dict[str, np.ndarray]:
        """Run the gate graph on a batch: float32 images [N, C, H, W], or token ids padded here to the longest
        text; blocking (call it off the event loop)."""
        if isinstance(self._input, TextInputSpec):
            if not isinstance(inputs, TokenBatch):
                raise TypeError(f"a text model runs on a TokenBatch, got {type(inputs).__name__}")
            input_ids, attention_mask = inputs.padded(self._input.pad_token_id)
            feed = dict(zip(self._input.names, (input_ids, attention_mask), strict=True))
        else:
            if not isinstance(inputs, np.ndarray):
                raise TypeError(f"an image model runs on an array, got {type(inputs).__name__}")
            feed = {self._input.name: inputs}
        outputs = self._session.run(list(OUTPUT_NAMES), feed)
        return dict(zip(OUTPUT_NAMES, outputs, strict=True))
