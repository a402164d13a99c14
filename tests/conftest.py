"""Fixtures shared by every test package, and the `needs_apt` skip rule.

`@pytest.mark.needs_apt("fonts-aenigma")` skips a test, naming the package, when that Debian package's files are
absent (the paths are the ones the loaders read, looked up at run time so monkeypatching them works). CI installs
the packages (`make apt-data`), so there these tests run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.artifacts import publish_tiny
from training.image.anomalies import real_anomalies, rendered_sets
from training.image.pool import fontglyphs
from training.image.pool import sources as pool_sources
from training.text import corpora as text_corpora

APT_PATHS: dict[str, Callable[[], Path]] = {
    # The fonts of the font-glyph OE source's wider form (`fontglyphs.FAMILIES`); DejaVu and Nanum as below.
    **{family.package: (lambda family=family: family.directory) for family in fontglyphs.FAMILIES.values()},
    "openclipart-png": lambda: pool_sources.OPENCLIPART_DIR,
    "dataset-fashion-mnist": lambda: real_anomalies.FASHION_MNIST_TEST,
    "fonts-aenigma": lambda: rendered_sets.AENIGMA_DIR,
    "fonts-dejavu-core": lambda: Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    "fonts-noto-core": lambda: rendered_sets.NOTO_DIR,
    "fonts-dejavu-extra": lambda: fontglyphs.DEJAVU_DIR / "DejaVuSansCondensed.ttf",
    "fonts-nanum": lambda: fontglyphs.NANUM_DIR,
    "wordnet-base": lambda: text_corpora.WORDNET_DIR / "data.noun",
    "r-cran-janeaustenr": lambda: text_corpora.AUSTEN_DATABASE,
    "r-cran-tokenizers": lambda: text_corpora.MOBY_DICK_DATABASE,
    "dict-gcide": lambda: text_corpora.GCIDE_DICT,
    # Tools the deploy and bench tests run (tests/deploy, tests/bench); promtool comes with prometheus.
    "docker-compose": lambda: Path("/usr/bin/docker-compose"),
    "prometheus": lambda: Path("/usr/bin/prometheus"),
    # The HTTP load generator the benchmark drives (tests/bench/test_wrk.py runs it against a local recorder).
    "wrk": lambda: Path("/usr/bin/wrk"),
    # User-mode CPU emulation: the int8 text graph on an x86 CPU without VNNI (tests/training/text/test_int8_cpus.py).
    "qemu-user": lambda: Path("/usr/bin/qemu-x86_64"),
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(name="needs_apt"):
        for package in marker.args:
            if package not in APT_PATHS:
                raise ValueError(f"needs_apt: unknown package {package!r}; known: {sorted(APT_PATHS)}")
            if not APT_PATHS[package]().exists():
                pytest.skip(f"needs the Debian package {package} (`make apt-data` as root)")


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One published random-weight artifact per session (exporting takes seconds); copy it before modifying."""
    return publish_tiny(tmp_path_factory.mktemp("models"))


@pytest.fixture
def copy_artifact(tmp_path: Path) -> Callable[[Path, str, int], Path]:
    def copy(source: Path, name: str, version: int) -> Path:
        target = tmp_path / "models" / name / str(version)
        shutil.copytree(source, target)
        return target

    return copy
