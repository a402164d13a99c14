"""`python -m bench.train_speed`: OE fine-tuning samples/s of our loop vs a reference-style loop, same results.

python -m bench.train_speed                         # configs/mnist-oe.toml's OE stage, 1 round
python -m bench.train_speed --epochs 1 --rounds 3   # shorter stages, three interleaved rounds
python -m bench.train_speed --train-limit 200 --pool-limit 400 --epochs 1 --val-anomaly-samples 50 --out /tmp/t.md

Both loops fine-tune copies of one baseline net (trained here by our loop for `--baseline-epochs`, or loaded from
`--baseline-checkpoint`) on the same in-distribution split, outlier pool, net, batch sizes (in `oe.batch_size`, out
`oe.batch_size * oe.outlier_batch_ratio`), schedule, epochs and seed: ours is `training.train.train_stage` (the
pipeline's loop, including its per-epoch validation and checkpoint), the other is `bench/reference_oe.py`. Round r
uses seed `run.seed + r` for both, and alternates which loop goes first. Each run's validation accuracy and mean
AUROC over the validation anomaly sets (built from the validation split and noise; never test data) show that both
learn the same thing; across rounds they give the seed spread the difference is judged against.

Samples/s counts in-distribution images (each step also carries `outlier_batch_ratio` times as many outliers) over
the wall time of the whole fine-tune call; samples per CPU-second divide by the CPU time of this process and its
loader workers instead, which is what a loaded machine (other work taking turns on the cores) distorts least.
Writes a markdown report (`--out`, default `bench/results/<stamp>-train-speed.md`).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.reference_oe import IN_WORKERS, OUT_WORKERS, TEST_WORKERS, reference_oe_tune
from bench.servers import REPO, results_path, write_report
from training.checkpoint import load_checkpoint
from training.config import PipelineConfig, load_config
from training.data.base import ImageSet, InDistribution
from training.data.registry import load_anomalies, load_in_distribution, load_outlier_pool
from training.evaluation.metrics import auroc
from training.image.nets import build_net
from training.pipeline import anomaly_scores, set_threads
from training.train import Normalizer, predict_logits, train_stage

log = logging.getLogger(__name__)
LOOPS = ("ours", "reference")


@dataclass(frozen=True)
class Result:
    loop: str
    round: int
    seed: int
    seconds: float
    cpu_seconds: float  # user + system CPU of this process and of its finished children (the loader workers)
    in_samples: int
    val_accuracy: float
    mean_auroc: float

    @property
    def samples_per_second(self) -> float:
        return self.in_samples / self.seconds

    @property
    def samples_per_cpu_second(self) -> float:
        return self.in_samples / self.cpu_seconds


def cpu_seconds() -> float:
    """CPU time used so far by this process and its waited-for children (DataLoader workers are joined when their
    iterator ends, so an epoch's workers are counted once it is over)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def evaluate(net: nn.Module, data: InDistribution, anomalies: dict[str, np.ndarray]) -> tuple[float, float]:
    """(validation accuracy, mean AUROC of KL[U||p] over the validation anomaly sets vs the validation split)."""
    assert data.val.labels is not None
    identity = Normalizer.identity(data.shape[0])
    val_logits = predict_logits(net, identity, data.val.images)
    accuracy = float((val_logits.argmax(1).numpy() == data.val.labels).mean())
    in_scores = anomaly_scores(val_logits)
    aurocs = []
    for images in anomalies.values():
        out_scores = anomaly_scores(predict_logits(net, identity, images))
        is_anomaly = np.r_[np.zeros(len(in_scores), bool), np.ones(len(out_scores), bool)]
        aurocs.append(auroc(is_anomaly, np.r_[in_scores, out_scores]))
    return accuracy, float(np.mean(aurocs))


def run_ours(net: nn.Module, cfg: PipelineConfig, data: InDistribution, pool: np.ndarray, seed: int) -> int:
    with tempfile.TemporaryDirectory(prefix="train-speed-") as run_dir:
        train_stage(
            stage="oe", net=net, normalize=Normalizer.identity(data.shape[0]), train=data.train, val=data.val,
            cfg=cfg.oe, run_dir=Path(run_dir), seed=seed, extra_state={}, outliers=pool,
        )  # fmt: skip
    return len(data.train) * cfg.oe.epochs


def run_reference(
    net: nn.Module,
    cfg: PipelineConfig,
    data: InDistribution,
    pool: np.ndarray,
    seed: int,
    in_workers: int = IN_WORKERS,
    out_workers: int = OUT_WORKERS,
    test_workers: int = TEST_WORKERS,
) -> int:
    assert data.train.labels is not None and data.val.labels is not None
    oe = cfg.oe
    done = reference_oe_tune(
        net, data.train.images, data.train.labels, pool, data.val.images, data.val.labels, epochs=oe.epochs,
        batch_size=oe.batch_size, oe_batch_size=round(oe.batch_size * oe.outlier_batch_ratio), lr=oe.lr,
        momentum=oe.momentum, weight_decay=oe.weight_decay or 0.0, oe_weight=oe.weight, seed=seed,
        in_workers=in_workers, out_workers=out_workers, test_workers=test_workers,
    )  # fmt: skip
    return int(done["in_samples"])


def baseline_net(cfg: PipelineConfig, data: InDistribution, args: argparse.Namespace) -> nn.Module:
    """The shared starting point: a checkpoint's weights, or a short baseline trained here by our loop."""
    c, h, w = data.shape
    torch.manual_seed(cfg.run.seed)
    net = build_net(cfg.net, c, data.num_classes, h, w)
    if args.baseline_checkpoint is not None:
        net.load_state_dict(load_checkpoint(args.baseline_checkpoint)["net_state"])
        return net
    stage_cfg = cfg.baseline.model_copy(update={"epochs": args.baseline_epochs})
    with tempfile.TemporaryDirectory(prefix="train-speed-baseline-") as run_dir:
        train_stage(
            stage="baseline", net=net, normalize=Normalizer.identity(c), train=data.train, val=data.val,
            cfg=stage_cfg, run_dir=Path(run_dir), seed=cfg.run.seed, extra_state={},
        )  # fmt: skip
    return net


def load_data(cfg: PipelineConfig, train_limit: int | None) -> InDistribution:
    data = load_in_distribution(cfg.data.in_distribution, seed=cfg.run.seed, val_fraction=cfg.data.val_fraction)
    data = data.sealed()  # the test split stays unread
    if train_limit is not None and train_limit < len(data.train):
        assert data.train.labels is not None
        limited = ImageSet(data.train.images[:train_limit], data.train.labels[:train_limit])
        data = InDistribution(data.name, data.class_names, limited, data.val, data.test, data.description)
    return data


def measure(args: argparse.Namespace) -> tuple[PipelineConfig, list[Result], dict[str, str]]:
    overrides = [*args.set, *([f"oe.epochs={args.epochs}"] if args.epochs else [])]
    if args.threads:
        overrides.append(f"run.threads={args.threads}")
    cfg = load_config(args.config, overrides)
    set_threads(cfg.run.threads)  # as the pipeline does: run.threads, else the usable CPUs
    data = load_data(cfg, args.train_limit)
    pool = load_outlier_pool(cfg.data.outlier_pool, data.shape, seed=cfg.run.seed, limit=args.pool_limit)
    n_anomalies = args.val_anomaly_samples or cfg.data.val_anomaly_samples
    anomalies = {name: load_anomalies(name, data, n=n_anomalies, seed=cfg.run.seed) for name in cfg.data.val_anomalies}
    facts = machine_facts(args, cfg, data, len(pool), n_anomalies)
    start = baseline_net(cfg, data, args)
    results: list[Result] = []
    for round_ in range(args.rounds):
        seed = cfg.run.seed + round_
        for loop in LOOPS if round_ % 2 == 0 else LOOPS[::-1]:
            net = copy.deepcopy(start)
            run = run_ours if loop == "ours" else run_reference
            started, cpu_started = time.perf_counter(), cpu_seconds()
            in_samples = run(net, cfg, data, pool, seed)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
            accuracy, mean_auroc = evaluate(net, data, anomalies)
            results.append(Result(loop, round_, seed, seconds, cpu, in_samples, accuracy, mean_auroc))
            log.info("%s", results[-1])
    facts["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return cfg, results, facts


def machine_facts(
    args: argparse.Namespace, cfg: PipelineConfig, data: InDistribution, pool_size: int, n_anomalies: int
) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    oe = cfg.oe
    return {
        "command": f"`{shlex.join(['python', '-m', 'bench.train_speed', *args.argv])}`",
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} x {cpu_model} (usable: {len(os.sched_getaffinity(0))}), "
        f"Linux {platform.release()}, not pinned",
        "versions": f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}",
        "torch threads": f"{torch.get_num_threads()} (both loops, main process); the reference's loader workers: "
        f"{IN_WORKERS} in + {OUT_WORKERS} out + {TEST_WORKERS} per-epoch validation processes",
        "load average before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "git": commit.stdout.strip() or "?",
        "data": f"{data.name} train {len(data.train)} images, val {len(data.val)}; outlier pool "
        f"{cfg.data.outlier_pool} {pool_size} images; validation anomaly sets {', '.join(cfg.data.val_anomalies)} "
        f"({n_anomalies} each)",
        "stage": f"{args.config}: net {cfg.net.arch}, {oe.epochs} epoch(s), batch {oe.batch_size} in + "
        f"{round(oe.batch_size * oe.outlier_batch_ratio)} out, lr {oe.lr} cosine, lambda {oe.weight}; baseline: "
        + (f"{args.baseline_checkpoint}" if args.baseline_checkpoint else f"{args.baseline_epochs} epoch(s) of ours"),
    }


def render(results: list[Result], facts: dict[str, str]) -> str:
    lines = ["# OE fine-tuning speed: our loop vs a reference-style loop", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    lines += [
        "",
        "| round | seed | loop | seconds | in-dist samples/s | CPU seconds | samples per CPU-s | val accuracy "
        "| mean val AUROC |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.round} | {r.seed} | {r.loop} | {r.seconds:.1f} | {r.samples_per_second:,.0f} | "
            f"{r.cpu_seconds:.1f} | {r.samples_per_cpu_second:,.0f} | "
            f"{100 * r.val_accuracy:.2f}% | {100 * r.mean_auroc:.2f} |"
        )
    lines += ["", "| loop | median samples/s | median samples per CPU-s | val accuracy (mean, range) "]
    lines[-1] += "| mean val AUROC (mean, range) |"
    lines += ["|---|---:|---:|---:|---:|"]
    wall, cpu = {}, {}
    for loop in LOOPS:
        rows = [r for r in results if r.loop == loop]
        wall[loop] = statistics.median(r.samples_per_second for r in rows)
        cpu[loop] = statistics.median(r.samples_per_cpu_second for r in rows)
        acc = [100 * r.val_accuracy for r in rows]
        auc = [100 * r.mean_auroc for r in rows]
        lines.append(
            f"| {loop} | {wall[loop]:,.0f} | {cpu[loop]:,.0f} | {np.mean(acc):.2f}% ({min(acc):.2f}-{max(acc):.2f}) "
            f"| {np.mean(auc):.2f} ({min(auc):.2f}-{max(auc):.2f}) |"
        )
    lines += [
        "",
        f"**ours / reference: {wall['ours'] / wall['reference']:.2f}x samples/s, "
        f"{cpu['ours'] / cpu['reference']:.2f}x samples per CPU-second** (medians)",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.train_speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--config", type=Path, default=REPO / "configs" / "mnist-oe.toml", help="training config (its oe stage)")
    add("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override (repeatable)")
    add("--epochs", type=int, default=0, help="OE epochs (default: the config's)")
    add("--rounds", type=int, default=1, help="interleaved rounds, seed run.seed + round (default 1)")
    add("--train-limit", type=int, default=None, help="use the first N training images (default all)")
    add("--pool-limit", type=int, default=None, help="use a seeded subset of N pool images (default all)")
    add("--val-anomaly-samples", type=int, default=0, help="per validation anomaly set (default: the config's)")
    add("--baseline-epochs", type=int, default=1, help="epochs of the shared baseline trained here (default 1)")
    add("--baseline-checkpoint", type=Path, default=None, help="start from this baseline checkpoint instead")
    add(
        "--threads",
        type=int,
        default=0,
        help="torch threads for both loops (default: the config's, else the usable CPUs)",
    )
    add("--out", type=Path, default=None, help="report path (default bench/results/<stamp>-train-speed.md)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.epochs < 0 or args.baseline_epochs < 1:
        parser.error("--rounds and --baseline-epochs must be >= 1, --epochs >= 0")
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _, results, facts = measure(args)
    text = render(results, facts)
    print(text)
    write_report(args.out or results_path("train-speed"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
