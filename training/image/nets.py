"""Classifier architectures: the reference MNIST ConvNet, a small CNN for 28x28 inputs and the paper's Wide ResNet."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class NetConfig(BaseModel):
    """Which architecture to build, and its size."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    arch: Literal["convnet", "small_cnn", "wrn"] = "small_cnn"
    """`convnet`: the reference code's MNIST net (28x28, 1 channel); `small_cnn`: a wider conv-bn net for 28x28
    digits; `wrn` (Wide ResNet) for 32x32 images as in the paper."""
    width: int = Field(default=32, ge=4)
    """small_cnn: channels of the first conv layer (the second has twice as many)."""
    wrn_depth: int = Field(default=40, ge=10)
    """wrn: depth, 6n + 4."""
    wrn_widen_factor: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.3, ge=0.0, lt=1.0)
    """Dropout probability (convnet: Dropout2d after its second conv, 0.5 in the reference)."""
    standardize: bool = True
    """Standardize inputs by the training set's per-channel mean and std (inside the graph too). False feeds the
    [0, 1] pixels as they are, as the reference MNIST code does (`transforms.ToTensor()` only)."""


def _gelu_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """The reference ConvNet's GELU approximation x * sigmoid(1.702 x)."""
    return torch.sigmoid(1.702 * x) * x


class ConvNet(nn.Module):
    """The reference MNIST net (hendrycks/outlier-exposure, `MNIST/models/convnet.py`), layer for layer:
    conv5x5(10) - maxpool - GELU, conv5x5(20) - Dropout2d - maxpool - GELU, fc 320 -> 50 - GELU, fc 50 -> k.
    About 22k parameters; no batch norm."""

    def __init__(self, in_channels: int, num_classes: int, height: int, width: int, cfg: NetConfig) -> None:
        super().__init__()
        if (height, width) != (28, 28):
            raise ValueError(f"convnet is the reference's 28x28 net, got {height}x{width}")
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(cfg.dropout)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _gelu_sigmoid(F.max_pool2d(self.conv1(x), 2))
        x = _gelu_sigmoid(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = _gelu_sigmoid(self.fc1(x.flatten(1)))
        return self.fc2(x)


class SmallCNN(nn.Module):
    """conv-bn-relu-pool x2, then a 128-unit hidden layer with dropout. About 0.4M parameters at width 32."""

    def __init__(self, in_channels: int, num_classes: int, height: int, width: int, cfg: NetConfig) -> None:
        super().__init__()
        c = cfg.width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * c * (height // 4) * (width // 4), 128),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _WideBasic(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + shortcut


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis, 2016), the paper's vision network (WRN-40-2, dropout 0.3)."""

    def __init__(self, in_channels: int, num_classes: int, cfg: NetConfig) -> None:
        super().__init__()
        if (cfg.wrn_depth - 4) % 6 != 0:
            raise ValueError(f"wrn_depth must be 6n + 4, got {cfg.wrn_depth}")
        n = (cfg.wrn_depth - 4) // 6
        widths = [16, 16 * cfg.wrn_widen_factor, 32 * cfg.wrn_widen_factor, 64 * cfg.wrn_widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_planes = widths[0]
        for stage, stride in zip(range(1, 4), (1, 2, 2), strict=True):
            for i in range(n):
                layers.append(_WideBasic(in_planes, widths[stage], stride if i == 0 else 1, cfg.dropout))
                in_planes = widths[stage]
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def build_net(cfg: NetConfig, in_channels: int, num_classes: int, height: int, width: int) -> nn.Module:
    if cfg.arch == "convnet":
        return ConvNet(in_channels, num_classes, height, width, cfg)
    if cfg.arch == "small_cnn":
        if height % 4 or width % 4:
            raise ValueError(f"small_cnn needs height and width divisible by 4, got {height}x{width}")
        return SmallCNN(in_channels, num_classes, height, width, cfg)
    return WideResNet(in_channels, num_classes, cfg)
