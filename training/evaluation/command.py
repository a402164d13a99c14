"""`python -m training evaluate`: its arguments, and the run that evaluates an artifact and writes its report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.evaluation.evaluate import PUBLIC_ANOMALY_SETS, SERVED_SCORE, EvaluationConfig, evaluate
from training.evaluation.report_sections import ReportExtras
from training.text.anomalies import TEXT_ANOMALY_SET_NAMES

RECALL_CHOICES = (90, 95, 99)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m training evaluate`."""
    parser.add_argument(
        "--artifact", type=Path, required=True, metavar="DIR", help="artifact version directory models/NAME/VERSION"
    )
    parser.add_argument(
        "--anomalies", nargs="+", metavar="SET", default=[],
        help="anomaly sets (registry names, npy:PATH, imagefolder:PATH); default: all public sets of the model's task "
        f"(images: {', '.join(PUBLIC_ANOMALY_SETS)}; text: {', '.join(TEXT_ANOMALY_SET_NAMES)})",
    )  # fmt: skip
    parser.add_argument(
        "--compare", type=Path, metavar="DIR", help="a baseline artifact, shown side by side (paper's Table 1)"
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="report directory (default: reports/<artifact name>)")
    parser.add_argument("--recall", type=int, choices=RECALL_CHOICES, default=95, help="N of FPR at N%% recall")
    parser.add_argument("--draws", type=int, default=10, help="1:5 subsamples of each anomaly set (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the anomaly sets and draws")
    parser.add_argument(
        "--in-distribution", metavar="SPEC", help="in-distribution spec (default: the card's training data)"
    )
    parser.add_argument("--data-seed", type=int, help="seed of the in-distribution split (default: the card's)")
    parser.add_argument("--bin-size", type=int, default=100, help="samples per calibration bin (default 100)")
    parser.add_argument(
        "--seed-artifacts", nargs="+", default=[], metavar="OE_DIR[:BASELINE_DIR]",
        help="the same config trained with other seeds: a seed-spread table in the report",
    )  # fmt: skip
    parser.add_argument("--loso", type=Path, metavar="JSON", help="loso.json of `python -m training loso`")


def run_evaluate(args: argparse.Namespace) -> int:
    """`python -m training evaluate`: evaluate, write report.md, metrics.json and PNGs, print where."""
    from training.evaluation.report import write_report  # matplotlib only when a report is written

    config = EvaluationConfig(
        anomalies=tuple(args.anomalies), recall=args.recall / 100.0, draws=args.draws, seed=args.seed,
        bin_size=args.bin_size, in_distribution=args.in_distribution, data_seed=args.data_seed,
    )  # fmt: skip
    evaluation = evaluate(args.artifact, config, args.compare)
    seed_runs = []
    for spec in args.seed_artifacts:
        oe_dir, _, baseline_dir = spec.partition(":")
        seed_runs.append(evaluate(Path(oe_dir), config, Path(baseline_dir) if baseline_dir else None))
    loso = json.loads(args.loso.read_text()) if args.loso is not None else None
    card = evaluation.primary.artifact.card
    out = args.out if args.out is not None else Path("reports") / card.name
    write_report(evaluation, out, command=getattr(args, "command_line", None), extras=ReportExtras(seed_runs, loso))
    mean = evaluation.primary.mean_detection(SERVED_SCORE)
    print(
        f"{card.name}/{card.version}: mean FPR{args.recall} {100 * mean['fpr']:.2f}%, AUROC "
        f"{100 * mean['auroc']:.2f}%, AUPR {100 * mean['aupr']:.2f}% over "
        f"{len(evaluation.config.anomalies)} anomaly sets"
    )
    print(out / "report.md")
    return 0
