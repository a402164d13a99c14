from pathlib import Path

import numpy as np
import pytest
import torch

from training.artifact import load_artifact
from training.calibrate import conformal_threshold
from training.card import ImageInputSpec
from training.export import Gate, publish_artifact
from training.image.nets import ConvNet, NetConfig, SmallCNN, WideResNet, build_net


def test_convnet_is_the_reference_mnist_net() -> None:
    net = build_net(NetConfig(arch="convnet", dropout=0.5), 1, 10, 28, 28)
    assert isinstance(net, ConvNet)
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    # conv 1->10 5x5 (260) + conv 10->20 5x5 (5,020) + fc 320->50 (16,050) + fc 50->10 (510), as MNIST/models/convnet.py
    assert sum(p.numel() for p in net.parameters()) == 21_840
    assert net.conv2_drop.p == 0.5
    x = torch.randn(4, 1, 28, 28)
    net.eval()
    with torch.no_grad():  # the reference's forward, written out: gelu(x) = x * sigmoid(1.702 x)
        gelu = lambda t: t * torch.sigmoid(1.702 * t)  # noqa: E731
        h = gelu(torch.nn.functional.max_pool2d(net.conv1(x), 2))
        h = gelu(torch.nn.functional.max_pool2d(net.conv2(h), 2))
        expected = net.fc2(gelu(net.fc1(h.reshape(-1, 320))))
        torch.testing.assert_close(net(x), expected)
    with pytest.raises(ValueError, match="28x28"):
        build_net(NetConfig(arch="convnet"), 1, 10, 32, 32)


def test_small_cnn_shapes_and_size() -> None:
    net = build_net(NetConfig(), 1, 10, 28, 28)
    assert isinstance(net, SmallCNN)
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    # conv 1->32 (288) + bn (64) + conv 32->64 (18,432) + bn (128) + fc 3136->128 (401,536) + fc 128->10 (1,290)
    assert sum(p.numel() for p in net.parameters()) == 421_738  # ~1.7 MB of float32 weights
    with pytest.raises(ValueError, match="divisible by 4"):
        build_net(NetConfig(), 1, 10, 30, 30)


def test_wide_resnet_depth_rule_and_forward() -> None:
    net = build_net(NetConfig(arch="wrn", wrn_depth=10, wrn_widen_factor=1), 3, 7, 32, 32)
    assert isinstance(net, WideResNet)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        build_net(NetConfig(arch="wrn", wrn_depth=12), 3, 7, 32, 32)


def test_rgb_wide_resnet_exports_and_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_net(NetConfig(arch="wrn", wrn_depth=10, wrn_widen_factor=1, dropout=0.3), 3, 5, 32, 32)
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    gate = Gate(net, mean, std, temperature=1.3).eval()
    rng = np.random.default_rng(0)
    images = rng.random((6, 3, 32, 32), dtype=np.float32)
    path = publish_artifact(
        gate,
        models_dir=tmp_path,
        name="rgb",
        version=None,
        labels=list("abcde"),
        input_spec=ImageInputSpec(channels=3, height=32, width=32, mean=mean, std=std),
        threshold=conformal_threshold(rng.random(50), 0.9),
        calibration_split="random",
        evaluation={},
        training={},
        check_images=images,
    )
    outputs = load_artifact(path).run(images)
    with torch.no_grad():
        expected = gate(torch.from_numpy(images))
    assert np.max(np.abs(outputs["logits"] - expected[0].numpy())) < 1e-4
    assert outputs["probs"].shape == (6, 5)
