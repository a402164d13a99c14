"""The models `bench/compute.py` serves: heavy enough that inference, not HTTP, dominates a request.

- `wrn`: a Wide ResNet (training/image/nets.py, WRN-16-4 by default, 3x32x32 input, 10 classes) with untrained,
  seeded weights, exported through the training side's own `publish_artifact` (gate in the graph, ONNX-vs-torch
  check, card, checksum) into a temporary models directory, so the service loads it like any artifact. Built per
  run and never committed.
- `text`: the committed text artifact `models/topics-oe/1` (int8 BERT-mini topic classifier), as it is.

`Workload` holds what every measurement of one model needs: its artifact, one request body, and in-process inputs
for any batch size built from the same instance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import inputs
from bench.inputs import Api
from bench.servers import REPO
from service.batching import ModelInputs
from service.card import TextInputSpec, read_verified_card
from service.codecs.text import TextEncoder

MODEL_NAMES = ("wrn", "text")
WRN_NAME = "wrn-bench"
TEXT_ARTIFACT = ("topics-oe", "1")
TEXT = "How do I reset my password if the recovery e-mail never arrives?"
"""One sentence of a support question, about 16 tokens: every text request sends it."""


@dataclass(frozen=True)
class Workload:
    model: str  # "wrn" or "text"
    model_root: Path
    name: str
    version: str
    api: Api
    body: bytes
    batch: Callable[[int], ModelInputs]  # in-process inputs of n copies of the request's instance
    description: str

    @property
    def directory(self) -> Path:
        return self.model_root / self.name / self.version


def build_wrn(models_root: Path, depth: int = 16, widen_factor: int = 4, seed: int = 0) -> Workload:
    """Export an untrained WRN-depth-widen_factor (seeded) as `models_root/wrn-bench/1`; its workload."""
    import torch  # the training side; imported here so that the text workload does not need it

    from training.calibrate import conformal_threshold
    from training.card import ImageInputSpec
    from training.export import Gate, publish_artifact
    from training.image.nets import NetConfig, build_net

    torch.manual_seed(seed)
    cfg = NetConfig(arch="wrn", wrn_depth=depth, wrn_widen_factor=widen_factor, dropout=0.0)
    net = build_net(cfg, 3, 10, 32, 32).eval()
    rng = np.random.default_rng(seed)
    images = rng.random((32, 3, 32, 32), dtype=np.float32)
    gate = Gate(net, [0.5] * 3, [0.25] * 3, temperature=1.0)
    with torch.no_grad():
        scores = gate(torch.from_numpy(images))[3].numpy()  # anomaly_score (Gate's outputs: see training/export.py)
    publish_artifact(
        gate, models_dir=models_root, name=WRN_NAME, version=1, labels=[f"class-{i}" for i in range(10)],
        input_spec=ImageInputSpec(channels=3, height=32, width=32, mean=[0.5] * 3, std=[0.25] * 3),
        threshold=conformal_threshold(scores, 0.95), calibration_split="random images (benchmark only)",
        evaluation={}, training={"note": f"untrained WRN-{depth}-{widen_factor}, seed {seed}: compute benchmark only"},
        check_images=images[:8],
    )  # fmt: skip
    values = images[:1]
    return Workload(
        model="wrn",
        model_root=models_root,
        name=WRN_NAME,
        version="1",
        api="v2",
        body=inputs.request_body("v2", values),
        batch=lambda n: np.repeat(values, n, axis=0),
        description=f"WRN-{depth}-{widen_factor} (untrained, seeded), float32 [1, 3, 32, 32] per request as V2 JSON",
    )


def text_workload(model_root: Path = REPO / "models") -> Workload:
    """topics-oe/1, one `TEXT` per request on the native API."""
    name, version = TEXT_ARTIFACT
    card = read_verified_card(model_root / name / version, name, int(version))
    assert isinstance(card.input, TextInputSpec)
    tokens = TextEncoder.load(model_root / name / version, card.input).encode([TEXT], max_chars=10_000)
    return Workload(
        model="text",
        model_root=model_root,
        name=name,
        version=version,
        api="native",
        body=json.dumps({"instances": [{"text": TEXT}]}).encode(),
        batch=lambda n: type(tokens).join([tokens] * n),
        description=f"{name}/{version} (int8 BERT-mini), one {len(tokens.ids[0])}-token text per request, native JSON",
    )
