from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_defaults_serve_models_on_localhost() -> None:
    settings = Settings()
    assert settings.model_dir == Path("models")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.admin_token is None and settings.inference_token is None
    assert settings.allow_threshold_override is False


def test_environment_variables_use_the_oegate_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OEGATE_MODEL_DIR", "/srv/models")
    monkeypatch.setenv("OEGATE_PORT", "9000")
    monkeypatch.setenv("OEGATE_PROVIDERS", '["CPUExecutionProvider"]')
    monkeypatch.setenv("OEGATE_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("OEGATE_ADMIN_TOKEN", "a-long-enough-admin-token")
    settings = Settings()
    assert settings.model_dir == Path("/srv/models")
    assert settings.port == 9000
    assert settings.providers == ["CPUExecutionProvider"]
    assert settings.max_batch_size == 8
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "a-long-enough-admin-token"
    assert "a-long-enough" not in repr(settings)  # secrets stay out of logs


def test_every_setting_is_documented() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_queue_size": 10, "max_instances": 11}, "max_queue_size (10) must be >= max_instances (11)"),
        ({"admin_token": "short"}, "admin_token must be at least 16 characters"),
        ({"max_batch_size": 0}, "greater than or equal to 1"),
        ({"max_image_pixels": 10**9}, "less than or equal to 89478485"),
        ({"poll_interval_s": -1}, "greater than or equal to 0"),
        ({"unknown_setting": 1}, "Extra inputs are not permitted"),
        ({"workers": 0}, "greater than or equal to 1"),
        ({"workers": 2, "poll_interval_s": 0}, "workers > 1 needs poll_interval_s > 0"),
        ({"workers": 2, "capture_dir": "/tmp/oegate-captures"}, "capture_dir needs workers = 1"),
    ],
)
def test_unsafe_or_inconsistent_values_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(**values)  # type: ignore[arg-type]
