"""One onnxruntime session per loaded model version, on the best provider that actually works.

onnxruntime falls back to CPU when CUDA cannot be initialised (no GPU, missing CUDA libraries), printing a red
error to stderr on every session it creates. So each accelerator provider is probed once per process
(`provider_works`: a session on a one-node graph, onnxruntime's own logging silenced), the outcome is logged once as
one JSON line, and sessions are then created with only the providers that work. The provider in use is still read
back with `session.get_providers()` and reported, never assumed from the request.

Image graphs take one float32 input [N, C, H, W]; text graphs take `input_ids` and `attention_mask`, int64
[N, length], which `run` makes by padding the batch's token ids to its longest text (`TokenBatch.padded`).
"""

from __future__ import annotations

import base64
import ctypes
import functools
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.batching import ModelInputs
from service.card import OUTPUT_NAMES, ArtifactError, Card, ImageInputSpec, TextInputSpec
from service.codecs.text import TokenBatch
from service.cpus import cpu_budget, onnxruntime_threads

logger = logging.getLogger(__name__)

PROBE_GRAPH = base64.b64decode(
    "CAcSADo7ChAKAXgSAXkiCElkZW50aXR5EgVwcm9iZVoPCgF4EgoKCAgBEgQKAggBYg8KAXkSCgoICAESBAoCCAFCBAoAEA0="
)
"""A 71-byte ONNX graph, y = Identity(x) on float [1] (opset 13, IR 7): enough for a provider to initialise."""
QUIET = 4  # onnxruntime log severity: fatal only
ERRORS_ONLY = 3
EXACT_INT8 = "session.x64quantprecision"
"""Session config entry, set to "1" on every session: on x86 CPUs with AVX2 but without VNNI, onnxruntime's int8
GEMM multiplies uint8 activations by int8 weights with VPMADDUBSW, whose int16 pair sums saturate, so a dynamically
quantized text graph (`quantize_int8` in training/text/export.py) scores differently there than where it was
calibrated (the tiny test net's logits moved 1.69 against fp32, 0.15 on a VNNI CPU). "1" selects onnxruntime's exact
U8S8 kernel on those CPUs; on others, and for float graphs, it changes nothing."""


@functools.cache
def provider_works(provider: str) -> bool:
    """Whether onnxruntime can run a session on `provider` in this process (CPU always can). Probed once per
    process per provider: whether CUDA libraries and a device are there does not change while the process runs.
    The probe silences onnxruntime's default logger (which prints the CUDA load failure) and leaves it at
    errors-only, the level every session of the service uses; the outcome is one `provider probed` log line."""
    if provider == "CPUExecutionProvider":
        return True
    options = ort.SessionOptions()
    options.log_severity_level = QUIET
    ort.set_default_logger_severity(QUIET)
    try:
        session = ort.InferenceSession(PROBE_GRAPH, sess_options=options, providers=[provider, "CPUExecutionProvider"])
        works, reason = session.get_providers()[0] == provider, "onnxruntime fell back to CPUExecutionProvider"
    except Exception as e:  # onnxruntime raises its own exception types when a provider cannot start
        works, reason = False, f"{type(e).__name__}: {e}"
    finally:
        ort.set_default_logger_severity(ERRORS_ONLY)
    if works:
        logger.info("provider probed", extra={"provider": provider, "usable": True})
    else:
        logger.info(
            "provider probed",
            extra={"provider": provider, "usable": False, "reason": _library_error(provider) or reason},
        )
    return works


def _library_error(provider: str) -> str | None:
    """Why the provider's shared library does not load (e.g. a missing libcublasLt), the line onnxruntime would
    have printed; None if it loads or the build has no such library."""
    stem = provider.removesuffix("ExecutionProvider").lower()
    library = Path(ort.__file__).parent / "capi" / f"libonnxruntime_providers_{stem}.so"
    if not library.is_file():
        return None
    try:
        ctypes.CDLL(str(library))
    except OSError as e:
        return str(e)
    return None


class Runtime:
    """A verified ONNX graph ready to run: `run(inputs) -> {output name: array}` for images or token ids."""

    def __init__(
        self,
        model_path: Path,
        card: Card,
        providers: list[str],
        intra_op_threads: int,
        inter_op_threads: int,
        cpu_mem_arena: bool = True,
        workers: int = 1,
    ) -> None:
        available = ort.get_available_providers()
        built = [p for p in providers if p in available]
        skipped = [p for p in providers if p not in available]
        if skipped:
            logger.info("providers not in this onnxruntime build: %s", skipped, extra={"model": card.name})
        usable = [p for p in built if provider_works(p)]
        if not usable:
            raise ArtifactError(f"none of the configured providers {providers} is usable (have {available})")
        options = ort.SessionOptions()
        # 0 = sized from the CPUs this process may use (service/cpus.py), not onnxruntime's one per host core, and
        # shared with the other `workers` server processes.
        intra, inter = onnxruntime_threads(intra_op_threads, inter_op_threads, cpu_budget(workers=workers))
        options.intra_op_num_threads = intra
        options.inter_op_num_threads = inter
        self.threads = (intra, inter)
        # Off: each run's tensors are malloc'd and freed (large ones mmap'd, so returned to the OS), instead of an
        # arena that keeps the largest batch's peak for the life of the session (service/settings.py).
        options.enable_cpu_mem_arena = cpu_mem_arena
        options.log_severity_level = ERRORS_ONLY  # the provider fallback is reported by us, below
        options.add_session_config_entry(EXACT_INT8, "1")
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
