"""`python -m bench`: the side-by-side HTTP benchmark (oegate, oegate without batching, plain FastAPI, Triton).

python -m bench                                       # everything, 12 s per row at 1, 8, 32 and 128 connections
python -m bench --duration 2 --warmup 1 --connections 8 --servers oegate,baseline --output-dir /tmp/b  # smoke
python -m bench --wait-quiet 3600                     # first wait up to an hour for a quiet machine
python -m bench --servers oegate --variant before=/tmp/before   # with oegate from another checkout beside it
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import cast

from bench import inputs
from bench.inputs import Api
from bench.runner import SERVER_NAMES, Options, command_line, run


def _names(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), got {text!r}")
    return names


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"comma-separated integers expected, got {text!r}") from e
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"connection counts must be >= 1, got {text!r}")
    return counts


def _env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("OEGATE_"):
        raise argparse.ArgumentTypeError(f"OEGATE_NAME=VALUE expected, got {text!r}")
    return key, value


def _variant(text: str) -> tuple[str, Path]:
    name, sep, directory = text.partition("=")
    source = Path(directory).resolve()
    if not sep or not name or name in SERVER_NAMES or not (source / "service" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(f"NAME=DIR with DIR an oegate checkout and NAME a new name, got {text!r}")
    return name, source


def parse_options(argv: list[str]) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add(
        "--connections", type=_counts, default=defaults.connections, help="wrk connections per row (default 1,8,32,128)"
    )
    add("--duration", type=float, default=defaults.duration_s, help="measured seconds per row (default %(default)s)")
    add("--warmup", type=float, default=defaults.warmup_s, help="warm-up seconds before each row (default %(default)s)")
    add("--rounds", type=int, default=defaults.rounds, help="times every server is measured (median; default 1)")
    add("--servers", type=lambda t: _names(t, SERVER_NAMES), default=defaults.servers, help=",".join(SERVER_NAMES))
    add("--apis", type=lambda t: _names(t, inputs.APIS), default=defaults.apis, help=",".join(inputs.APIS))
    add("--server-core", type=int, default=defaults.server_core, help="core every server is pinned to")
    add("--client-core", type=int, default=defaults.client_core, help="core wrk (and this script) is pinned to")
    add("--model-root", type=Path, default=defaults.model_root, help="oegate's model directory (default models)")
    add("--model", default=defaults.model, help="model name (default %(default)s)")
    add("--version", default=defaults.version, help="artifact version the peers load (default %(default)s)")
    add("--digit", type=int, default=defaults.digit_index, help="MNIST test index sent (default %(default)s)")
    add(
        "--instances",
        type=int,
        default=defaults.instances,
        help="the digit N times per request: N native instances or a V2 batch of N (default 1; oegate and Triton)",
    )
    add("--triton-venv", type=Path, default=defaults.triton_venv, help="Python 3.12 venv for PyTriton (made if absent)")
    add("--output-dir", type=Path, default=defaults.output_dir, help="where <stamp>.md/.json go (bench/results)")
    add("--quiet-load", type=float, default=defaults.quiet_load, help="1-min load average counted as quiet")
    add("--wait-quiet", type=float, default=defaults.wait_quiet_s, help="seconds to wait for a quiet machine first")
    add("--oegate-env", type=_env, action="append", default=[], help="extra OEGATE_X=VALUE for both oegate servers")
    add(
        "--variant",
        type=_variant,
        action="append",
        default=[],
        help="NAME=DIR: also measure oegate from the checkout DIR (e.g. main, for before/after rows)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.instances < 1:
        parser.error("--instances must be >= 1")
    if args.instances > 1 and ("baseline" in args.servers or "native-raw" in args.apis):
        parser.error("--instances > 1: the baseline server reads one instance and native-raw carries one image")
    if args.server_core == args.client_core:
        parser.error("--server-core and --client-core must differ")
    return Options(
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
        rounds=args.rounds,
        servers=args.servers,
        apis=cast(tuple[Api, ...], args.apis),
        server_core=args.server_core,
        client_core=args.client_core,
        model_root=args.model_root.resolve(),
        model=args.model,
        version=args.version,
        digit_index=args.digit,
        instances=args.instances,
        triton_venv=args.triton_venv.resolve(),
        output_dir=args.output_dir.resolve(),
        quiet_load=args.quiet_load,
        wait_quiet_s=args.wait_quiet,
        oegate_env=tuple(args.oegate_env),
        variants=tuple(args.variant),
        command=command_line(),
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the progress lines
    return run(parse_options(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
