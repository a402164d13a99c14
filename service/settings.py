"""All service settings in one place, read from `OEGATE_*` environment variables (pydantic-settings).

`Settings()` is built once, by `python -m service` (or a test), and passed to `create_app`; nothing reads the
environment anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Pillow refuses images above twice its MAX_IMAGE_PIXELS (89,478,485) before our own check could run, and warns
# above it; our limit stays below so that our clearer 422 message is the one clients see.
PILLOW_BOMB_PIXELS = 89_478_485


class Settings(BaseSettings):
    """The service's configuration. Every field can be set as `OEGATE_<FIELD>` (lists as JSON, e.g. `["a","b"]`)."""

    model_config = SettingsConfigDict(env_prefix="OEGATE_", use_attribute_docstrings=True, extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    """Interface `python -m service` binds to (use 0.0.0.0 in a container)."""
    port: int = Field(default=8000, ge=1, le=65535)
    """TCP port `python -m service` listens on."""
    model_dir: Path = Path("models")
    """Directory holding `<name>/<version>/{model.onnx,card.json}` artifacts."""
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"], min_length=1
    )
    """onnxruntime execution providers in order of preference; the one actually used is reported."""
    intra_op_threads: int = Field(default=0, ge=0)
    """onnxruntime threads inside one operator (0 = one per CPU this process may use: its affinity and its
    cgroup's CPU quota, not the host's core count; logged at start-up)."""
    inter_op_threads: int = Field(default=0, ge=0)
    """onnxruntime threads across independent operators (0 = 1: the gate graph runs its operators in order)."""
    max_batch_size: int = Field(default=64, ge=1, le=4096)
    """Most instances the micro-batcher puts into one session run."""
    max_delay_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    """Longest time the first queued instance waits for others to join its batch. 0 (the default, as Triton's
    `max_queue_delay_microseconds`) batches greedily: a run takes every instance queued when it starts, so batches
    grow with load (requests queue while the previous run executes) and a lone request never waits. A delay can
    help an accelerator whose per-run cost dominates; on CPU, 2 ms measured no faster at 32 connections and
    slower at 1 and 8 (README.md, Speed)."""
    max_queue_size: int = Field(default=1024, ge=1)
    """Most instances waiting per model; beyond it requests get 503 with Retry-After."""
    retry_after_s: int = Field(default=1, ge=1)
    """Seconds sent in the Retry-After header of an overload (503) response."""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 beyond it), checked before and while the body is read."""
    max_instances: int = Field(default=64, ge=1)
    """Most instances (images, arrays, texts) in one request (422 beyond it)."""
    max_image_pixels: int = Field(default=4096 * 4096, ge=1, le=PILLOW_BOMB_PIXELS)
    """Largest width x height of an uploaded image, checked from its header before decoding (bomb guard)."""
    max_text_chars: int = Field(default=4096, ge=1)
    """Longest text instance, in characters (422 beyond it). Tokens beyond a text model's `max_length` are
    truncated, not refused; this limit bounds the tokenizing work per text."""
    allow_threshold_override: bool = False
    """Whether a request may set its own `threshold` (otherwise such requests get 403)."""
    admin_token: SecretStr | None = None
    """Bearer token for `/v1/admin/*`; the admin API is off (404) while unset."""
    inference_token: SecretStr | None = None
    """Bearer token required for inference and model metadata; open while unset. Health and metrics stay open."""
    poll_interval_s: float = Field(default=10.0, ge=0.0)
    """How often the model directory is rescanned for new versions; 0 disables polling."""
    required_models: list[str] | None = None
    """Models that must be loaded for `/v2/health/ready`; unset means every model found at start."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the JSON logs written to stderr."""

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_queue_size < self.max_instances:
            raise ValueError(
                f"max_queue_size ({self.max_queue_size}) must be >= max_instances ({self.max_instances}), "
                "or a full-size request could never be queued"
            )
        for name, token in (("admin_token", self.admin_token), ("inference_token", self.inference_token)):
            if token is not None and len(token.get_secret_value()) < 16:
                raise ValueError(f"{name} must be at least 16 characters")
        return self
