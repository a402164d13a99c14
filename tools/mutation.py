"""Mutation testing of the gate's logic (`make mutation`): one bounded mutmut run per module, one report.

For each module in `MODULES` the tracked tree (or a git ref) is copied into a scratch directory, mutmut is
configured there to mutate that one file and run the listed tests, and the run is stopped after `--timeout-s`
(mutants left unchecked are reported as such, never as killed). Mutants listed in `reports/mutation/equivalents.md`
(one line each: the function, the mutated line, why no test can tell it apart) are left out of the score:

    score = (killed + timeout) / (mutants - equivalent - skipped)

A timeout counts as killed (the test noticed a hang). `reports/mutation/report.md` gets the score per module and
every surviving or untested mutant with its diff line, so a reviewer sees what the suite misses.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT_DIR = ROOT / "reports" / "mutation"

# Module -> the tests that exercise it. mutmut runs, per mutant, only those of these tests that execute the
# mutated function, so a generous list costs only the one stats run.
TRAINING_CORE = ["tests/training/test_losses_scores.py", "tests/training/test_scores_oracles.py"]
MODULES: dict[str, list[str]] = {
    "training/losses.py": TRAINING_CORE,
    "training/scores.py": TRAINING_CORE,
    "training/evaluation/metrics.py": [
        "tests/training/evaluation/test_metrics.py",
        "tests/training/evaluation/test_metrics_oracles.py",
    ],
    "training/calibrate.py": ["tests/training/test_calibrate.py", "tests/training/test_calibrate_limits.py"],
    "service/codecs/text.py": [
        "tests/service/test_text_codecs.py",
        "tests/service/test_text_api.py",
    ],
    "service/codecs/image.py": [
        "tests/service/test_codecs.py",
        "tests/service/test_hostile_images.py",
        "tests/service/test_native_api.py",
        "tests/service/test_errors.py",
        "tests/service/test_v2_errors.py",
        "tests/service/test_inline_decode.py",
        "tests/reliability/test_bounded_work.py",
    ],
    "service/batching.py": ["tests/service/test_batching.py"],
    "service/metrics.py": [
        "tests/service/test_metrics.py",
        "tests/service/test_multiprocess_metrics.py",
        "tests/service/test_hot_swap.py",
    ],
    "training/captures/promotion.py": ["tests/training/captures/test_promotion.py"],
    "training/image/anomalies/validation_sets.py": ["tests/training/image/data/test_data_validation_sets.py"],
    "training/text/anomalies.py": [
        "tests/training/text/test_text_corpora.py",
        "tests/training/text/test_text_anomaly_sets.py",
    ],
    "training/text/tokenize.py": ["tests/training/text/test_tokenize.py"],
    "training/export.py": ["tests/training/test_export.py", "tests/training/test_promote.py"],
    "service/card.py": ["tests/service/test_card.py", "tests/training/test_card.py"],
    "service/inference.py": [
        "tests/service/test_native_api.py",
        "tests/service/test_v2_api.py",
        "tests/service/test_gate_boundary.py",
        "tests/service/test_errors.py",
        "tests/service/test_metrics.py",
    ],
    "service/protocol/v2.py": ["tests/service/test_v2_api.py", "tests/service/test_v2_errors.py"],
    # Not test_errors.py: every registry mutant would run its 50 app start-ups.
    "service/registry.py": [
        "tests/service/test_registry.py",
        "tests/service/test_registry_contract.py",
        "tests/service/test_hot_swap.py",
        "tests/service/test_metrics.py::test_metrics_after_a_known_mix_of_requests",  # queue depth per model
        "tests/service/test_errors.py::test_overload_is_503_with_retry_after",  # the batcher's Retry-After
    ],
}

# Started first when modules run in parallel: their tests start apps and sessions, so they take the longest.
SLOW_MODULES = ("service/registry.py", "service/protocol/v2.py", "service/inference.py")

# What mutmut's exit codes mean (mutmut/stats.py), folded into the few classes the report counts.
KILLED_CODES = {1, 3}
TIMEOUT_CODES = {36, -24, 24, 152, 255}
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}
SKIPPED_CODES = {34}

# Runs inside the scratch directory after `mutmut run`: prints each mutant's exit code and, for those not killed,
# its function and the mutated line(s).
_COLLECT = r"""
import json, sys
from pathlib import Path
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = []
for meta in sorted(Path("mutants").rglob("*.py.meta")):
    source = meta.relative_to("mutants").with_suffix("")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    for name, code in codes.items():
        entry = {"name": name, "code": code, "path": str(source)}
        if code not in (1, 3):
            lines = get_diff_for_mutant(name, path=source).splitlines()
            entry["removed"] = [l[1:].strip() for l in lines if l.startswith("-") and not l.startswith("---")]
            entry["added"] = [l[1:].strip() for l in lines if l.startswith("+") and not l.startswith("+++")]
        out.append(entry)
json.dump(out, sys.stdout)
"""


@dataclass
class ModuleResult:
    module: str
    killed: int = 0
    timeout: int = 0
    equivalent: int = 0
    skipped: int = 0
    unchecked: int = 0
    survivors: list[dict[str, object]] = field(default_factory=list)  # survived or no covering test
    seconds: float = 0.0

    @property
    def counted(self) -> int:
        return self.killed + self.timeout + len(self.survivors) + self.unchecked

    @property
    def score(self) -> float:
        return (self.killed + self.timeout) / self.counted if self.counted else 0.0


def function_key(mutant_name: str) -> str:
    """`service.batching.xǁMicroBatcherǁsubmit__mutmut_3` -> `service.batching.MicroBatcher.submit`."""
    base = mutant_name.rsplit("__mutmut_", 1)[0]
    module, _, function = base.rpartition(".")
    parts = [p for p in function.split("ǁ") if p]
    if parts[0] == "x":
        parts = parts[1:]
    elif parts[0].startswith("x_"):
        parts[0] = parts[0][2:]
    return f"{module}.{'.'.join(parts)}"


def read_equivalents(path: Path) -> set[tuple[str, str]]:
    """`- `function` `mutated line` - reason` lines -> {(function, mutated line)}."""
    found = set()
    for line in path.read_text().splitlines() if path.exists() else []:
        match = re.match(r"^- `([^`]+)` `(.+?)`(?: — |: | - )", line)
        if match:
            found.add((match.group(1), match.group(2).strip()))
    return found


def copy_tree(target: Path, ref: str | None) -> None:
    """The tracked and untracked-but-not-ignored files of the worktree, or the tree of `ref`."""
    if ref is not None:
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
        with tempfile.TemporaryFile() as tmp:
            tmp.write(archive)
            tmp.seek(0)
            with tarfile.open(fileobj=tmp) as tar:
                tar.extractall(target, filter="data")
        return
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run_module(
    module: str, tests: list[str], ref: str | None, timeout_s: int, equivalents: set[tuple[str, str]]
) -> ModuleResult:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="oegate-mutation-") as scratch:
        work = Path(scratch)
        copy_tree(work, ref)
        existing = [t for t in tests if (work / t.split("::")[0]).exists()]  # files or node ids
        config = {
            "source_paths": [module],
            "also_copy": ["service", "training", "tests", "bench", "configs"],
            "pytest_add_cli_args_test_selection": existing,
            "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
        }
        with (work / "pyproject.toml").open("a") as f:
            f.write("\n[tool.mutmut]\n")
            for key, value in config.items():
                f.write(f"{key} = {json.dumps(value)}\n")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        mutmut = [sys.executable, "-c", "import sys; from mutmut.__main__ import cli; sys.exit(cli())"]
        # Its own process group, so that a timeout also stops the forked mutant processes (a hung one would live on).
        run = subprocess.Popen(
            [*mutmut, "run", "--max-children", "1"],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            run.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
            print(f"{module}: stopped after {timeout_s} s; unchecked mutants are reported", file=sys.stderr)
        collected = subprocess.run(
            [sys.executable, "-c", _COLLECT], cwd=work, env=env, check=True, capture_output=True, text=True
        )
    result = ModuleResult(module, seconds=time.monotonic() - started)
    for entry in json.loads(collected.stdout):
        code = entry["code"]
        if code in KILLED_CODES:
            result.killed += 1
        elif code in TIMEOUT_CODES:
            result.timeout += 1
        elif code in SKIPPED_CODES:
            result.skipped += 1
        elif (function_key(entry["name"]), " / ".join(entry["added"])) in equivalents:
            result.equivalent += 1
        elif code is None:
            result.unchecked += 1
        else:
            entry["status"] = "no test" if code in NO_TESTS_CODES else ("survived" if code == 0 else f"exit {code}")
            result.survivors.append(entry)
    return result


def write_report(results: list[ModuleResult], ref: str | None, path: Path) -> None:
    revision = (
        ref
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    dirty = (
        ""
        if ref
        else " (plus uncommitted changes)"
        * bool(
            subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        )
    )
    lines = [
        "# Mutation testing report",
        "",
        f"Generated by `make mutation` (`python -m tools.mutation`) at revision `{revision}`{dirty}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, mutmut, one run per module.",
        "Score = (killed + timeout) / (mutants - reviewed equivalents - skipped); equivalents are listed, one line "
        "each with the reason, in `equivalents.md`.",
        "",
        "| module | mutants | killed | timeout | equivalent | survived | unchecked | score | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        total = r.counted + r.equivalent + r.skipped
        lines.append(
            f"| `{r.module}` | {total} | {r.killed} | {r.timeout} | {r.equivalent} | {len(r.survivors)} | "
            f"{r.unchecked} | {r.score:.1%} | {r.seconds:.0f} |"
        )
    lines += ["", "## Surviving mutants", ""]
    for r in results:
        if not r.survivors:
            continue
        lines.append(f"### `{r.module}`")
        lines.append("")
        for s in r.survivors:
            removed = " / ".join(s["removed"])  # type: ignore[arg-type]
            added = " / ".join(s["added"])  # type: ignore[arg-type]
            lines.append(f"- {s['status']}: `{function_key(str(s['name']))}` `{removed}` -> `{added}`")
        lines.append("")
    if all(not r.survivors for r in results):
        lines.append("None.")
    notes = REPORT_DIR / "notes.md"  # reviewed by hand: how often this runs, what is pending, the baseline
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="only these (default: all)")
    parser.add_argument("--ref", help="test this git revision instead of the working tree (e.g. for a baseline)")
    parser.add_argument("--timeout-s", type=int, default=1200, help="wall-clock bound per module")
    parser.add_argument("--jobs", type=int, default=1, help="modules run at the same time (one core each)")
    parser.add_argument("--report", type=Path, default=REPORT_DIR / "report.md")
    parser.add_argument("--min-score", type=float, default=0.95, help="exit 1 if a module scores below this")
    args = parser.parse_args(argv)
    equivalents = read_equivalents(REPORT_DIR / "equivalents.md")
    modules = args.module or list(MODULES)

    def run(module: str) -> ModuleResult:
        result = run_module(module, MODULES[module], args.ref, args.timeout_s, equivalents)
        print(f"{module}: {result.score:.1%} ({len(result.survivors)} surviving, {result.unchecked} unchecked)")
        return result

    slowest_first = sorted(modules, key=lambda m: m not in SLOW_MODULES)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each module is its own mutmut process
        by_module = dict(zip(slowest_first, pool.map(run, slowest_first), strict=True))
    results = [by_module[m] for m in modules]
    write_report(results, args.ref, args.report)
    return 0 if all(r.score >= args.min_score for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
