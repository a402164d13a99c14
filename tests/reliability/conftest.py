"""Reliability tests reuse the service test fixtures (per-test model directories, in-process apps, a held
session run)."""

from tests.service.conftest import anyio_backend, blocked_runtime, model_dir, serve, text_artifact

__all__ = ["anyio_backend", "blocked_runtime", "model_dir", "serve", "text_artifact"]
