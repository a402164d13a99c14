"""Batches assembled in place hold exactly the values the old per-step conversion made, in the layout asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.batches import BatchAssembler
from training.data.base import as_float


def test_batch_equals_as_float_of_the_rows_in_then_out_channels_last() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 3, 8, 8), dtype=np.uint8)
    outliers = rng.integers(0, 256, size=(30, 3, 8, 8), dtype=np.uint8)
    assemble = BatchAssembler(images, outliers, max_rows=12)
    index, out_index = np.array([5, 0, 39, 5]), np.array([29, 1, 2, 3, 4, 0, 7, 8])
    batch = assemble(index, out_index)
    expected = np.concatenate([as_float(images[index]), as_float(outliers[out_index])])
    assert batch.dtype == torch.float32 and batch.shape == (12, 3, 8, 8)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(batch.numpy(), expected)  # bit for bit: x / 255 in float32


def test_a_shorter_last_batch_and_float_outliers_pass_through() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(10, 1, 4, 4), dtype=np.uint8)
    outliers = rng.random((6, 1, 4, 4), dtype=np.float32)  # float pools in [0, 1] are used as they are
    assemble = BatchAssembler(images, outliers, max_rows=9)
    batch = assemble(np.array([9, 8]), np.array([5, 0, 1]))
    assert batch.shape == (5, 1, 4, 4)
    np.testing.assert_array_equal(batch.numpy(), np.concatenate([as_float(images[[9, 8]]), outliers[[5, 0, 1]]]))
    np.testing.assert_array_equal(assemble(np.array([3])).numpy(), as_float(images[[3]]))  # no outliers: in only


def test_outlier_rows_without_outliers_are_refused() -> None:
    assemble = BatchAssembler(np.zeros((4, 1, 2, 2), np.uint8), None, max_rows=4)
    with pytest.raises(ValueError, match="no outliers"):
        assemble(np.array([0]), np.array([1]))
