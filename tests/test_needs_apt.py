"""Every Debian package a test may need (`needs_apt`) is one `make apt-data` installs, so CI runs those tests
instead of skipping them unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import APT_PATHS

ROOT = Path(__file__).parents[1]


def make_apt_data_packages() -> set[str]:
    listed = (ROOT / "requirements" / "apt-data.txt").read_text()
    data = {package for line in listed.splitlines() if not line.startswith("#") for package in line.split()}
    tools = re.search(r"^APT_TOOLS := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert tools is not None, "Makefile: no APT_TOOLS line"
    return data | set(tools.group(1).split())


def test_every_package_a_test_needs_is_installed_by_make_apt_data() -> None:
    installed = make_apt_data_packages()
    assert {"wordnet-base", "qemu-user", "wrk"} <= installed
    assert sorted(set(APT_PATHS) - installed) == []
