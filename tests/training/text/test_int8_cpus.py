"""The int8 text graph scores the same on an x86 CPU without VNNI as on the CPU its threshold was calibrated on.

onnxruntime's U8S8 GEMM saturates on AVX2 CPUs without VNNI. Two fixes, each tested here: the export stores the
weights as uint8 (`unsigned_weights`: a U8U8 GEMM, exact everywhere, in any onnxruntime host), and every session the
service and training open asks for the exact U8S8 kernel (`EXACT_INT8`), for graphs exported before, with int8
weights, like versions 1 and 2 of the topics models. The CPU here may well have VNNI, so the graphs also run under
qemu's user-mode emulation of a Haswell (AVX2, no VNNI) and are compared with what this CPU gives. A plain session
on the int8-weight graph is the control: it must disagree there, or the emulation does not show the fault.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from service.card import read_verified_card
from service.codecs.text import TokenBatch
from service.runtime import EXACT_INT8, Runtime
from tests.training.text.conftest import VAL_TEXTS, publish_tiny_text
from training.artifact import load_artifact, sha256_file
from training.text.export import unsigned_weights
from training.text.tokenize import TextTokenizer

QEMU = Path("/usr/bin/qemu-x86_64")
TEXTS = [*VAL_TEXTS, "hello world", "a", "the cat sat on the mat", "rockets and ovens"]

RUN_ON_EMULATED_CPU = """
import sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
from service.card import read_verified_card
from service.codecs.text import TokenBatch
from service.runtime import Runtime
from training.artifact import load_artifact

inputs, out = np.load(sys.argv[1]), sys.argv[2]
ids, mask = inputs["input_ids"], inputs["attention_mask"]
feed = {"input_ids": ids, "attention_mask": mask}
tokens = TokenBatch(tuple(row[: int(m.sum())] for row, m in zip(ids, mask)))
results = {}
for kind, directory in (("uint8", Path(sys.argv[3])), ("int8", Path(sys.argv[4]))):
    card = read_verified_card(directory, "tiny-text", int(directory.name))
    runtime = Runtime(directory / "model.onnx", card, ["CPUExecutionProvider"], 1, 1)
    plain = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    results[f"{kind}-service"] = runtime.run(tokens)["logits"]
    results[f"{kind}-training"] = load_artifact(directory).session.run(["logits"], feed)[0]
    results[f"{kind}-plain"] = plain.run(["logits"], feed)[0]
np.savez(out, **results)
"""


def weight_dtypes(path: Path) -> list[np.dtype]:
    model = onnx.load(str(path))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    return [
        numpy_helper.to_array(initializers[node.input[i]]).dtype
        for node in model.graph.node
        if node.op_type == "MatMulInteger"
        for i in (1, 3)
    ]


def with_int8_weights(directory: Path, target: Path) -> Path:
    """A copy of a quantized artifact with the weights as the quantizer writes them (int8, zero point 0), as versions
    1 and 2 of the topics models hold them; the card's checksum follows."""
    shutil.copytree(directory, target)
    model = onnx.load(str(target / "model.onnx"))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger":
            weights = numpy_helper.to_array(initializers[node.input[1]]).astype(np.int16) - 128
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(weights.astype(np.int8), node.input[1]))
            zero = np.zeros(numpy_helper.to_array(initializers[node.input[3]]).shape, np.int8)
            initializers[node.input[3]].CopyFrom(numpy_helper.from_array(zero, node.input[3]))
    onnx.save(model, str(target / "model.onnx"))
    card = json.loads((target / "card.json").read_text())
    card["sha256"]["model.onnx"] = sha256_file(target / "model.onnx")
    (target / "card.json").write_text(json.dumps(card))
    return target


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, text_tokenizer: TextTokenizer) -> tuple[Path, Path]:
    """One tiny int8 artifact as the export writes it (uint8 weights) and its copy with int8 weights; read only."""
    root = tmp_path_factory.mktemp("int8")
    unsigned = publish_tiny_text(root / "models", text_tokenizer, quantize=True)
    return unsigned, with_int8_weights(unsigned, root / "signed" / "tiny-text" / "1")


def test_the_export_stores_int8_weights_as_uint8_with_zero_point_128(quantized: tuple[Path, Path]) -> None:
    directory, signed = quantized
    dtypes = weight_dtypes(directory / "model.onnx")
    assert len(dtypes) == 2 * 13 and set(dtypes) == {np.dtype(np.uint8)}  # 13 MatMulIntegers: weights, zero points
    assert set(weight_dtypes(signed / "model.onnx")) == {np.dtype(np.int8)}
    # The same integer products: the two graphs agree to the last bit on this CPU.
    np.testing.assert_array_equal(
        load_artifact(signed).run_texts(TEXTS)["logits"], load_artifact(directory).run_texts(TEXTS)["logits"]
    )
    model = onnx.load(str(signed / "model.onnx"))
    assert unsigned_weights(model) == 13 and unsigned_weights(model) == 0  # once converted, nothing left to convert


def test_weights_the_shift_would_change_are_refused(quantized: tuple[Path, Path]) -> None:
    _, signed = quantized
    model = onnx.load(str(signed / "model.onnx"))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    node = next(node for node in model.graph.node if node.op_type == "MatMulInteger")
    zero_point = numpy_helper.to_array(initializers[node.input[3]]).copy()
    zero_point.flat[0] = 1  # asymmetric int8 weights: q + 128 with zero point 128 would no longer be the same product
    initializers[node.input[3]].CopyFrom(numpy_helper.from_array(zero_point, node.input[3]))
    with pytest.raises(
        ValueError, match=rf"^MatMulInteger {re.escape(node.name)}: int8 weights with a nonzero zero point$"
    ):
        unsigned_weights(model)
    del node.input[3]
    with pytest.raises(
        ValueError, match=rf"^MatMulInteger {re.escape(node.name)}: int8 weights without a constant zero point$"
    ):
        unsigned_weights(model)


@pytest.mark.needs_apt("qemu-user")
@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86 CPU in user mode on an x86 host")
def test_the_int8_graph_scores_alike_on_a_cpu_without_vnni(
    tmp_path: Path, text_tokenizer: TextTokenizer, quantized: tuple[Path, Path]
) -> None:
    unsigned, signed = quantized
    input_ids, attention_mask = text_tokenizer(TEXTS)
    np.savez(tmp_path / "inputs.npz", input_ids=input_ids, attention_mask=attention_mask)
    here = load_artifact(unsigned).run_texts(TEXTS)["logits"]
    service_here = Runtime(
        unsigned / "model.onnx", read_verified_card(unsigned, "tiny-text", 1), ["CPUExecutionProvider"], 1, 1
    ).run(TokenBatch(tuple(np.array(ids) for ids in text_tokenizer.encode(TEXTS))))["logits"]
    np.testing.assert_allclose(service_here, here, atol=1e-5)

    script = tmp_path / "emulated.py"
    script.write_text(RUN_ON_EMULATED_CPU)
    command = [str(QEMU), "-cpu", "Haswell", sys.executable, str(script), str(tmp_path / "inputs.npz")]
    done = subprocess.run(
        [*command, str(tmp_path / "out.npz"), str(unsigned), str(signed)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    emulated = np.load(tmp_path / "out.npz")

    assert np.max(np.abs(emulated["int8-plain"] - here)) > 0.5  # the control: int8 weights, no entry: saturated
    for name in ("uint8-plain", "uint8-service", "uint8-training", "int8-service", "int8-training"):
        np.testing.assert_allclose(emulated[name], here, atol=1e-4, err_msg=name)


def test_every_session_asks_for_exact_int8_gemm(tiny_text_artifact: Path) -> None:
    card = read_verified_card(tiny_text_artifact, "tiny-text", 1)
    service = Runtime(tiny_text_artifact / "model.onnx", card, ["CPUExecutionProvider"], 1, 1)
    training = load_artifact(tiny_text_artifact)
    for session in (service._session, training.session):
        assert session.get_session_options().get_session_config_entry(EXACT_INT8) == "1"
