"""Training batches assembled in place: each step's [in-distribution; outliers] input in one reused buffer.

The loop used to build every batch as numpy fancy indexing, a uint8 -> float32 conversion, a division, a
`torch.cat` of the two halves and, in the net, a copy to the memory layout the convolutions prefer: five fresh
arrays per step. Here the images stay as they were loaded (uint8, or float32 already in [0, 1]) in torch tensors
that share numpy's memory, and a step gathers its rows with `index_select` into one buffer and converts them into
another, laid out channels-last (NHWC in memory, oneDNN's fast path for convolutions on CPU). Values are exactly
those of `training.data.base.as_float` (x / 255 in float32).

The returned batch is a view of the buffer: it is valid until the next call, which is all one training step needs.
"""

from __future__ import annotations

import numpy as np
import torch


def _tensor(images: np.ndarray) -> torch.Tensor:
    if images.dtype not in (np.uint8, np.float32):
        images = images.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(images))


class BatchAssembler:
    """Builds `images[index]` followed by `outliers[out_index]` as float32 [N, C, H, W] in [0, 1], channels-last."""

    def __init__(self, images: np.ndarray, outliers: np.ndarray | None, max_rows: int) -> None:
        self.images = _tensor(images)
        self.outliers = _tensor(outliers) if outliers is not None else None
        shape = (max_rows, *self.images.shape[1:])
        self._raw = {
            dtype: torch.empty(shape, dtype=dtype)
            for dtype in {self.images.dtype, *(() if self.outliers is None else (self.outliers.dtype,))}
        }
        self._batch = torch.empty(shape, dtype=torch.float32).contiguous(memory_format=torch.channels_last)

    def _gather(self, source: torch.Tensor, index: np.ndarray, at: int) -> None:
        rows = slice(at, at + len(index))
        selected = torch.from_numpy(np.asarray(index, dtype=np.int64))
        if source.dtype == torch.uint8:
            raw = self._raw[torch.uint8][rows]
            torch.index_select(source, 0, selected, out=raw)
            torch.div(raw, 255.0, out=self._batch[rows])
        else:
            self._batch[rows] = source.index_select(0, selected)

    def __call__(self, index: np.ndarray, out_index: np.ndarray | None = None) -> torch.Tensor:
        self._gather(self.images, index, 0)
        rows = len(index)
        if out_index is not None:
            if self.outliers is None:
                raise ValueError("no outliers were given to this assembler")
            self._gather(self.outliers, out_index, rows)
            rows += len(out_index)
        return self._batch[:rows]
