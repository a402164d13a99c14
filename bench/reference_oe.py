"""The reference-style OE fine-tune that `bench/train_speed.py` races our loop against.

Written the way the paper's code does it (hendrycks/outlier-exposure, `MNIST/oe_tune.py`), not copied from it: a
torch `DataLoader` over PIL images for the in-distribution set (shuffled, 1 worker) and another for the outlier pool
(3 workers), each sample turned into a tensor by per-sample transforms, the two loaders zipped, one forward pass over
the concatenated batch, CE + lambda * (logsumexp - mean) on the outliers, SGD with Nesterov momentum and a per-step
cosine schedule through `LambdaLR`, and after each epoch a pass over a held-out loader (4 workers), as its `test()`.
torchvision is not a dependency here, so its two transforms used on this path are written out below with the same
arithmetic (`to_tensor`: `ToTensor` on an 8-bit grayscale PIL image; `random_horizontal_flip`:
`RandomHorizontalFlip(p=0.5)`).

What differs from the reference, and why (so that both loops see the same data):
- the outlier pool is ours (28x28 grayscale, flips already baked in at p = 1/2), so the reference's
  Resize(28) / convert("L") steps have nothing to do; its on-the-fly RandomHorizontalFlip is kept (a flip of a
  flip-symmetric pool draws from the same distribution);
- 80 Million Tiny Images is far longer than one epoch of outliers; our pool is not, so the outlier set wraps
  around (index modulo the pool size) as TinyImages' offset does, over a per-epoch permutation because our pool is
  stored grouped by source picture;
- the per-epoch pass reads the validation split, not test data (our loop validates on it too);
- `pin_memory` is off (it needs an accelerator) and nothing is moved to a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

IN_WORKERS = 1  # the reference's train_loader_in
OUT_WORKERS = 3  # the reference's train_loader_out
TEST_WORKERS = 4  # the reference's test_loader (`--prefetch`)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """torchvision's ToTensor for a mode-"L" image: [1, H, W] float32 in [0, 1]."""
    array = np.array(image, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).view(image.height, image.width, 1).permute(2, 0, 1).contiguous().float().div(255)


def random_horizontal_flip(image: Image.Image) -> Image.Image:
    """torchvision's RandomHorizontalFlip(p=0.5), drawing from torch's generator as it does."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if torch.rand(1) < 0.5 else image


class PILDigits(Dataset[tuple[torch.Tensor, int]]):
    """What torchvision's MNIST dataset does per item: a PIL image from the uint8 array, then the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Image.Image], torch.Tensor]):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index, 0], mode="L")
        return self.transform(image), int(self.labels[index])


class WrappingOutliers(Dataset[tuple[torch.Tensor, int]]):
    """The outlier set as TinyImages serves it: `length` items, item i is pool[order[(i + offset) % N]]."""

    def __init__(self, pool: np.ndarray, length: int, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.pool, self.length, self.transform = pool, length, transform
        self.order = np.arange(len(pool))
        self.offset = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.pool[self.order[(index + self.offset) % len(self.pool)], 0], mode="L")
        return self.transform(image), 0


@torch.no_grad()
def evaluate_epoch(net: nn.Module, loader: DataLoader[tuple[torch.Tensor, int]]) -> float:
    """The reference's per-epoch `test()`: loss and accuracy over a held-out loader; returns the accuracy."""
    net.eval()
    correct, total = 0, 0
    for x, y in loader:
        logits = net(x)
        float(F.cross_entropy(logits, y))
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def reference_oe_tune(
    net: nn.Module,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    pool: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    oe_batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    oe_weight: float,
    seed: int,
    in_workers: int = IN_WORKERS,
    out_workers: int = OUT_WORKERS,
    test_workers: int = TEST_WORKERS,
) -> dict[str, int]:
    """Fine-tune `net` in place with OE the reference way; returns {"steps", "in_samples", "out_samples"}."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    in_set = PILDigits(train_images, train_labels, to_tensor)
    steps_per_epoch = math.ceil(len(in_set) / batch_size)
    out_set = WrappingOutliers(pool, steps_per_epoch * oe_batch_size, lambda im: to_tensor(random_horizontal_flip(im)))
    in_loader = DataLoader(in_set, batch_size=batch_size, shuffle=True, num_workers=in_workers)
    val_set = PILDigits(val_images, val_labels, to_tensor)
    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False, num_workers=test_workers)
    optimizer = torch.optim.SGD(net.parameters(), lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1e-6 / lr + (1 - 1e-6 / lr) * 0.5 * (1 + math.cos(step / total * math.pi))
    )
    steps = in_samples = out_samples = 0
    for _ in range(epochs):
        net.train()
        out_set.order = np.random.permutation(len(pool))
        out_set.offset = int(np.random.randint(len(pool)))
        # A fresh loader per epoch, so its workers see this epoch's order and offset.
        out_loader = DataLoader(out_set, batch_size=oe_batch_size, shuffle=False, num_workers=out_workers)
        for (x_in, y_in), (x_out, _) in zip(in_loader, out_loader, strict=False):
            logits = net(torch.cat((x_in, x_out), 0))
            loss = F.cross_entropy(logits[: len(x_in)], y_in)
            tail = logits[len(x_in) :]
            loss = loss + oe_weight * -(tail.mean(1) - torch.logsumexp(tail, dim=1)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            steps, in_samples, out_samples = steps + 1, in_samples + len(x_in), out_samples + len(x_out)
        evaluate_epoch(net, val_loader)  # the reference tests after every epoch (on test data; here: val)
    return {"steps": steps, "in_samples": in_samples, "out_samples": out_samples}
