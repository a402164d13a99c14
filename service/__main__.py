"""`python -m service`: serve the artifacts in `OEGATE_MODEL_DIR` (default `models/`) with uvicorn.

One process by default; `OEGATE_WORKERS=N` runs N worker processes on the same port under a supervisor
(service/workers.py), with Prometheus metrics merged across them. The uvicorn settings and timeouts are in
service/server.py.
"""

from __future__ import annotations

import argparse
import sys

from service.logs import configure_logging
from service.settings import Settings


def settings_help() -> str:
    """Every setting as its environment variable, default and documentation."""
    lines = ["Settings (environment variables; lists as JSON):", ""]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        lines.append(f"  OEGATE_{name.upper()} (default {default!r})")
        lines += [f"      {line.strip()}" for line in (field.description or "").splitlines()]
    return "\n".join(lines)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("oegate")
    except PackageNotFoundError:
        return "unknown"


def parse_arguments(argv: list[str]) -> None:
    """`--help` lists the settings and `--version` the version, instead of starting a server."""
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=__doc__,
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (oegate {package_version()})")
    parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    parse_arguments(sys.argv[1:] if argv is None else argv)
    settings = Settings()
    if settings.workers > 1:
        from service.workers import supervise  # the supervisor never imports the app (nor onnxruntime)

        sys.exit(supervise(settings))
    from service.server import serve

    configure_logging(settings.log_level)
    if not serve(settings):  # as uvicorn.run: a failed start-up (e.g. the port is taken) is exit status 3
        sys.exit(3)


if __name__ == "__main__":
    main()
