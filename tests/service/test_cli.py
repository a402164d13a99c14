"""`python -m service --help` and `--version` answer instead of starting a server."""

from __future__ import annotations

import pytest

from service.__main__ import main
from service.settings import Settings


def test_help_lists_every_setting_with_its_default_and_doc(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for name, field in Settings.model_fields.items():
        assert f"OEGATE_{name.upper()} (default " in out, name
        first_doc_line = (field.description or "").splitlines()[0].strip()
        assert first_doc_line in out, name
    assert "OEGATE_PORT (default 8000)" in out


def test_version_and_unknown_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("python -m service (oegate ")
    with pytest.raises(SystemExit) as stop:
        main(["--port", "9"])  # settings are environment variables, not flags
    assert stop.value.code == 2
