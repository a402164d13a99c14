"""`python -m service`: serve the artifacts in `OEGATE_MODEL_DIR` (default `models/`) with uvicorn.

One worker per process (metrics are per process); scale with replicas.
"""

from __future__ import annotations

import gc

import uvicorn

from service.app import create_app
from service.logs import configure_logging
from service.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    # Everything imported so far (FastAPI, pydantic, numpy, onnxruntime, ...) lives as long as the process: move it
    # out of the collector's reach so the full collections that JSON parsing's garbage triggers stop rescanning it.
    # Measured with wrk at 32 connections on one core: p99 latency about 63 ms -> 39 ms, req/s unchanged.
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our JSON logging
        access_log=False,  # RequestContextMiddleware logs each request with its id
        workers=1,
    )


if __name__ == "__main__":
    main()
