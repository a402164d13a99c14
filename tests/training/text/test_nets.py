"""TextClassifier: which parameters `trainable_layers` leaves trainable, and the shapes of its outputs."""

from __future__ import annotations

import pytest
import torch

from training.text.encoder import BertConfig, SentenceEncoder
from training.text.nets import TINY, TextClassifier, TextNetConfig, build_text_net


def _trainable_prefixes(net: TextClassifier) -> set[str]:
    """'head', 'embeddings' or 'layer.N' for each parameter that requires grad."""
    out = set()
    for name, param in net.named_parameters():
        if param.requires_grad:
            parts = name.split(".")
            out.add("head" if parts[0] == "head" else parts[1] if parts[1] == "embeddings" else f"layer.{parts[3]}")
    return out


def _frozen_prefixes(net: TextClassifier) -> set[str]:
    every = {"head", "embeddings", *(f"layer.{i}" for i in range(net.encoder.config.num_hidden_layers))}
    return every - _trainable_prefixes(net)


@pytest.mark.parametrize(
    ("trainable_layers", "trainable", "frozen_layers"),
    [
        (0, {"head"}, 2),
        (1, {"head", "layer.1"}, 1),
        (2, {"head", "embeddings", "layer.0", "layer.1"}, 0),
        (7, {"head", "embeddings", "layer.0", "layer.1"}, 0),
    ],
)
def test_trainable_layers_on_the_tiny_encoder(trainable_layers: int, trainable: set[str], frozen_layers: int) -> None:
    net = TextClassifier(SentenceEncoder(TINY), 3, trainable_layers, 0.1)
    assert _trainable_prefixes(net) == trainable
    assert net.frozen_layers == frozen_layers


def test_trainable_layers_on_the_minilm_shape() -> None:
    torch.manual_seed(0)
    net = TextClassifier(SentenceEncoder(BertConfig()), 5, 2, 0.1)  # random init: the real shape without weights
    assert net.frozen_layers == 4
    assert _trainable_prefixes(net) == {"head", "layer.4", "layer.5"}
    assert _frozen_prefixes(net) == {"embeddings", "layer.0", "layer.1", "layer.2", "layer.3"}
    head = sum(p.numel() for p in net.head.parameters())
    assert head == 384 * 5 + 5
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    layer = sum(p.numel() for p in net.encoder.encoder.layer[5].parameters())
    assert trainable == head + 2 * layer


def test_head_only_training_leaves_the_encoder_untouched() -> None:
    torch.manual_seed(0)
    net = TextClassifier(SentenceEncoder(TINY), 3, 0, 0.0)
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1.0)
    ids, mask = torch.randint(1000, 2000, (4, 6)), torch.ones(4, 6, dtype=torch.int64)
    torch.nn.functional.cross_entropy(net(ids, mask), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    for name, value in net.encoder.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_build_text_net_tiny_is_seeded_and_gives_logits_per_class() -> None:
    cfg = TextNetConfig(encoder="tiny", trainable_layers=1)
    first, again = build_text_net(cfg, 4, seed=3), build_text_net(cfg, 4, seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert first.encoder.config == TINY and first.frozen_layers == 1
    logits = first.eval()(torch.randint(1000, 2000, (3, 5)), torch.ones(3, 5, dtype=torch.int64))
    assert logits.shape == (3, 4)
