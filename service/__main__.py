"""`python -m service`: serve the artifacts in `OEGATE_MODEL_DIR` (default `models/`) with uvicorn.

One worker per process (metrics are per process); scale with replicas.
"""

from __future__ import annotations

import uvicorn

from service.app import create_app
from service.logs import configure_logging
from service.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our JSON logging
        access_log=False,  # RequestContextMiddleware logs each request with its id
        workers=1,
    )


if __name__ == "__main__":
    main()
