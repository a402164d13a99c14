"""The command line: server variants from another checkout, beside the usual servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import parse_options
from bench.inputs import APIS
from bench.runner import variant_spec
from bench.servers import REPO


def test_a_variant_is_an_oegate_checkout_measured_after_the_servers(tmp_path: Path) -> None:
    options = parse_options(["--servers", "oegate,baseline", "--variant", f"before={REPO}"])
    assert options.variants == (("before", REPO),)
    assert options.server_names == ("oegate", "baseline", "before")
    assert options.connections == (1, 8, 32, 128) and options.apis == APIS
    spec = variant_spec("before", tmp_path, options)
    assert (spec.kind, spec.source, spec.apis) == ("oegate", tmp_path, APIS)
    assert "not a git checkout" in spec.description


@pytest.mark.parametrize("value", ["before", "oegate=.", "before=/nonexistent"])
def test_a_variant_needs_a_new_name_and_a_checkout(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_options(["--variant", value])
    assert "NAME=DIR" in capsys.readouterr().err


def test_instances_per_request_default_to_one_and_exclude_one_image_servers_and_bodies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse_options([]).instances == 1
    options = parse_options(["--servers", "oegate", "--apis", "v2,v2-binary,native", "--instances", "16"])
    assert options.instances == 16
    for refused in (["--servers", "oegate,baseline", "--apis", "v2"], ["--servers", "oegate", "--apis", "native-raw"]):
        with pytest.raises(SystemExit):
            parse_options([*refused, "--instances", "2"])
        assert "--instances > 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_options(["--servers", "oegate", "--instances", "0"])
