"""The int8 text graph scores the same on an x86 CPU without VNNI as on the CPU its threshold was calibrated on.

onnxruntime's U8S8 GEMM saturates on AVX2 CPUs without VNNI unless the session asks for its exact kernel
(`EXACT_INT8`, service/runtime.py). The CPU here may well have VNNI, so the graph is also run under qemu's user-mode
emulation of a Haswell (AVX2, no VNNI), through the service's `Runtime` and training's `load_artifact`, and compared
with what this CPU gives. A session without the entry runs too, as the control: it must disagree, or the emulated
CPU does not show the fault and the comparison proves nothing.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.card import read_verified_card
from service.codecs.text import TokenBatch
from service.runtime import EXACT_INT8, Runtime
from tests.training.text.conftest import VAL_TEXTS, publish_tiny_text
from training.artifact import load_artifact
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

directory, inputs, out = Path(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3]
ids, mask = inputs["input_ids"], inputs["attention_mask"]
tokens = TokenBatch(tuple(row[: int(m.sum())] for row, m in zip(ids, mask)))
card = read_verified_card(directory, "tiny-text", 1)
runtime = Runtime(directory / "model.onnx", card, ["CPUExecutionProvider"], 1, 1)
plain = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
np.savez(
    out,
    service=runtime.run(tokens)["logits"],
    training=load_artifact(directory).session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0],
    plain=plain.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0],
)
"""


@pytest.mark.needs_apt("qemu-user")
@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86 CPU in user mode on an x86 host")
def test_the_int8_graph_scores_alike_on_a_cpu_without_vnni(tmp_path: Path, text_tokenizer: TextTokenizer) -> None:
    directory = publish_tiny_text(tmp_path / "models", text_tokenizer, quantize=True)
    input_ids, attention_mask = text_tokenizer(TEXTS)
    np.savez(tmp_path / "inputs.npz", input_ids=input_ids, attention_mask=attention_mask)
    here = load_artifact(directory).run_texts(TEXTS)["logits"]
    service_here = Runtime(
        directory / "model.onnx", read_verified_card(directory, "tiny-text", 1), ["CPUExecutionProvider"], 1, 1
    ).run(TokenBatch(tuple(np.array(ids) for ids in text_tokenizer.encode(TEXTS))))["logits"]
    np.testing.assert_allclose(service_here, here, atol=1e-5)

    script = tmp_path / "emulated.py"
    script.write_text(RUN_ON_EMULATED_CPU)
    command = [str(QEMU), "-cpu", "Haswell", sys.executable, str(script), str(directory), str(tmp_path / "inputs.npz")]
    done = subprocess.run(
        [*command, str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300, cwd=Path.cwd()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    emulated = np.load(tmp_path / "out.npz")

    assert np.max(np.abs(emulated["plain"] - here)) > 0.5  # the control: without the entry this CPU saturates
    np.testing.assert_allclose(emulated["service"], here, atol=1e-4)
    np.testing.assert_allclose(emulated["training"], here, atol=1e-4)


def test_every_session_asks_for_exact_int8_gemm(tiny_text_artifact: Path) -> None:
    card = read_verified_card(tiny_text_artifact, "tiny-text", 1)
    service = Runtime(tiny_text_artifact / "model.onnx", card, ["CPUExecutionProvider"], 1, 1)
    training = load_artifact(tiny_text_artifact)
    for session in (service._session, training.session):
        assert session.get_session_options().get_session_config_entry(EXACT_INT8) == "1"
