from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service import runtime as runtime_module
from service.card import ArtifactError, read_verified_card
from service.codecs.text import TokenBatch
from service.runtime import Runtime, provider_works
from tests.service.conftest import clone_artifact


def test_the_provider_in_use_is_read_back_not_assumed_from_the_request(
    tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """CUDA is asked for first and the build lists it, but the session comes up on CPU (what onnxruntime does
    silently when CUDA cannot start): the runtime must report CPU and warn, not report CUDA."""
    card = read_verified_card(tiny_artifact, "tiny", 1)
    real_session = ort.InferenceSession
    requested: list[list[str]] = []

    def cpu_only_session(path: str, sess_options: object = None, providers: list[str] | None = None) -> object:
        requested.append(list(providers or []))
        return real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", cpu_only_session)
    monkeypatch.setattr(runtime_module, "provider_works", lambda provider: True)  # the probe passed, the load did not
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        runtime = Runtime(tiny_artifact / "model.onnx", card, ["CUDAExecutionProvider", "CPUExecutionProvider"], 1, 1)
    assert requested == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
    assert runtime.provider == "CPUExecutionProvider"
    assert [r.getMessage() for r in caplog.records] == [
        "onnxruntime fell back from CUDAExecutionProvider to CPUExecutionProvider"
    ]


def test_no_fallback_warning_when_the_first_provider_is_used(
    tiny_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    card = read_verified_card(tiny_artifact, "tiny", 1)
    with caplog.at_level(logging.INFO, logger="service.runtime"):
        runtime = Runtime(tiny_artifact / "model.onnx", card, ["CPUExecutionProvider"], 1, 1)
    assert runtime.provider == "CPUExecutionProvider"
    assert caplog.records == []


def test_providers_missing_from_the_build_are_skipped(tiny_artifact: Path) -> None:
    card = read_verified_card(tiny_artifact, "tiny", 1)
    runtime = Runtime(tiny_artifact / "model.onnx", card, ["NoSuchExecutionProvider", "CPUExecutionProvider"], 1, 1)
    assert runtime.provider == "CPUExecutionProvider"
    outputs = runtime.run(np.zeros((2, 1, 28, 28), np.float32))
    assert list(outputs) == ["logits", "probs", "kl_uniform", "anomaly_score", "confidence"]
    assert outputs["probs"].shape == (2, 10)
    with pytest.raises(ArtifactError, match=r"none of the configured providers \['NoSuchExecutionProvider'\]"):
        Runtime(tiny_artifact / "model.onnx", card, ["NoSuchExecutionProvider"], 1, 1)


@pytest.mark.parametrize(
    ("input_changes", "message"),
    [
        ({"name": "pixels"}, "graph inputs ['input'], card promises one input named 'pixels'"),
        ({"height": 32, "width": 32}, "does not match the card's [1, 32, 32]"),
    ],
)
def test_a_graph_that_contradicts_its_card_is_refused(
    tmp_path: Path, tiny_artifact: Path, input_changes: dict[str, object], message: str
) -> None:
    directory = clone_artifact(tiny_artifact, tmp_path, "tiny", 1)
    card_json = json.loads((directory / "card.json").read_text())
    card_json["input"].update(input_changes)
    (directory / "card.json").write_text(json.dumps(card_json))
    with pytest.raises(ArtifactError) as caught:
        Runtime(directory / "model.onnx", read_verified_card(directory, "tiny", 1), ["CPUExecutionProvider"], 1, 1)
    assert message in str(caught.value)


def test_an_unreadable_graph_is_refused(tmp_path: Path, tiny_artifact: Path) -> None:
    card = read_verified_card(tiny_artifact, "tiny", 1)
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ArtifactError, match="onnxruntime cannot load the graph"):
        Runtime(tmp_path / "model.onnx", card, ["CPUExecutionProvider"], 1, 1)


def test_a_text_card_on_an_image_graph_is_refused(tmp_path: Path, tiny_artifact: Path, text_artifact: Path) -> None:
    shutil.copyfile(tiny_artifact / "model.onnx", tmp_path / "model.onnx")
    card = read_verified_card(text_artifact, "words", 1)
    with pytest.raises(ArtifactError) as caught:
        Runtime(tmp_path / "model.onnx", card, ["CPUExecutionProvider"], 1, 1)
    assert str(caught.value) == "graph inputs ['input'], card promises ['input_ids', 'attention_mask']"


def test_a_text_runtime_pads_the_batch_and_refuses_arrays(text_artifact: Path) -> None:
    card = read_verified_card(text_artifact, "words", 1)
    runtime = Runtime(text_artifact / "model.onnx", card, ["CPUExecutionProvider"], 1, 1)
    outputs = runtime.run(TokenBatch((np.array([101, 2154, 102]), np.array([101, 2154, 2154, 2154, 102]))))
    assert [outputs[name].shape for name in ("probs", "anomaly_score")] == [(2, 3), (2,)]
    with pytest.raises(TypeError, match=r"^a text model runs on a TokenBatch, got ndarray$"):
        runtime.run(np.zeros((1, 3), np.int64))


@pytest.fixture
def fresh_probe() -> object:
    """The provider probe forgets what it found (it is cached per process), before and after the test."""
    provider_works.cache_clear()
    yield
    provider_works.cache_clear()


@pytest.mark.usefixtures("fresh_probe")
def test_cuda_is_probed_once_quietly_and_sessions_get_only_working_providers(
    tiny_artifact: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """This machine's onnxruntime-gpu lists CUDA but cannot load it: one quiet probe, one log line, and every
    session asks for CPU only (so onnxruntime never prints its CUDA load error)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider to probe")
    if provider_works("CUDAExecutionProvider"):
        pytest.skip("CUDA works on this machine")
    provider_works.cache_clear()
    capfd.readouterr()
    card = read_verified_card(tiny_artifact, "tiny", 1)
    real_session = ort.InferenceSession
    requested: list[list[str]] = []

    def recording_session(path: object, sess_options: object = None, providers: list[str] | None = None) -> object:
        requested.append(list(providers or []))
        return real_session(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", recording_session)
    with caplog.at_level(logging.INFO, logger="service.runtime"):
        runtimes = [
            Runtime(tiny_artifact / "model.onnx", card, ["CUDAExecutionProvider", "CPUExecutionProvider"], 1, 1)
            for _ in range(3)
        ]
    assert requested == [["CUDAExecutionProvider", "CPUExecutionProvider"]] + [["CPUExecutionProvider"]] * 3
    assert [runtime.provider for runtime in runtimes] == ["CPUExecutionProvider"] * 3
    probes = [record for record in caplog.records if record.getMessage() == "provider probed"]
    assert len(probes) == 1
    assert (probes[0].provider, probes[0].usable) == ("CUDAExecutionProvider", False)  # type: ignore[attr-defined]
    assert probes[0].reason  # type: ignore[attr-defined]  # e.g. "libcublasLt.so.13: cannot open shared object file"
    assert [r.getMessage() for r in caplog.records if r.getMessage() != "provider probed"] == []  # no fallback warning
    captured = capfd.readouterr()
    assert "CUDA" not in captured.err and "onnxruntime" not in captured.err  # the red load error is gone


@pytest.mark.usefixtures("fresh_probe")
def test_the_probe_log_line_is_one_json_object(caplog: pytest.LogCaptureFixture) -> None:
    from service.logs import JsonFormatter

    with caplog.at_level(logging.INFO, logger="service.runtime"):
        provider_works("NoSuchExecutionProvider")
        provider_works("NoSuchExecutionProvider")
        assert provider_works("CPUExecutionProvider") is True
    assert len(caplog.records) == 1
    line = json.loads(JsonFormatter().format(caplog.records[0]))
    assert (line["message"], line["provider"], line["usable"]) == ("provider probed", "NoSuchExecutionProvider", False)
    assert line["reason"].startswith("onnxruntime fell back") or "NoSuch" in line["reason"]
