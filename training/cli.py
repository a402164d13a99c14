"""`python -m training ...`: the command line over the pipeline, its stages, data and evaluation."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from training.config import PipelineConfig, is_text_config, load_config, read_raw_config
from training.image.pool.build import DEFAULT_PER_IMAGE, DEFAULT_RECIPE, RECIPES

log = logging.getLogger("training")


def package_version() -> str:
    """The installed oegate distribution's version ("unknown" when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("oegate")
    except PackageNotFoundError:
        return "unknown"


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML config file (see configs/)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="override one config field, e.g. --set oe.epochs=3 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run directory")
    parser.add_argument(
        "--force", action="store_true", help="with --resume: continue even though the config differs from the run's"
    )


def _config(args: argparse.Namespace) -> PipelineConfig:
    if is_text_config(read_raw_config(args.config, args.overrides)):
        raise ValueError(
            f'{args.config} is a text config (task = "text"): run it with `python -m training pipeline --config '
            f"{args.config}`; the single-stage commands (train, finetune-oe, export) are for image models"
        )
    return load_config(args.config, args.overrides)


def _cmd_pipeline(args: argparse.Namespace) -> int:
    if args.with_captures is not None:
        return _pipeline_with_captures(args)
    if is_text_config(read_raw_config(args.config, args.overrides)):
        from training.text.config import load_text_config
        from training.text.pipeline import run_text_pipeline

        text_cfg = load_text_config(args.config, args.overrides)
        published = run_text_pipeline(text_cfg, command=args.command_line, resume=args.resume, force=args.force)
    else:
        from training.pipeline import run_pipeline

        published = run_pipeline(_config(args), command=args.command_line, resume=args.resume, force=args.force)
    for path in published:
        print(path)
    for line in results_summary(published):
        print(line)
    return 0


def _pipeline_with_captures(args: argparse.Namespace) -> int:
    from training.captures.commands import DEFAULT_LABELS
    from training.captures.retrain import newest_version, run_with_captures

    labels = args.labels or args.with_captures / DEFAULT_LABELS
    if is_text_config(read_raw_config(args.config, args.overrides)):
        from training.captures.retrain_text import run_text_with_captures
        from training.text.config import load_text_config

        text_cfg = load_text_config(args.config, args.overrides)
        live = args.live if args.live is not None else newest_version(args.served_models, text_cfg.export.name)
        published = run_text_with_captures(
            text_cfg, captures_dir=args.with_captures, labels_path=labels, live_dir=live, command=args.command_line,
            resume=args.resume, force=args.force,
        )  # fmt: skip
    else:
        cfg = _config(args)
        live = args.live if args.live is not None else newest_version(args.served_models, cfg.export.name)
        published = run_with_captures(
            cfg, captures_dir=args.with_captures, labels_path=labels, live_dir=live, command=args.command_line,
            resume=args.resume, force=args.force,
        )  # fmt: skip
    for path in published:
        print(path)
        print(path / "comparison.md")
    for line in results_summary(published):
        print(line)
    return 0


def results_summary(published: list[Path]) -> list[str]:
    """One line per published version: what a run ends with on stdout (validation figures only)."""
    from training.artifact import read_card

    lines = []
    for path in published:
        card = read_card(path)
        e = card.evaluation
        mean_auroc, mean_fpr = e.get("mean_auroc"), e.get("mean_fpr95")
        detection = (
            f", val anomaly sets: mean AUROC {100 * mean_auroc:.2f}%, mean FPR95 {100 * mean_fpr:.2f}%"
            if mean_auroc is not None and mean_fpr is not None
            else ""
        )
        lines.append(
            f"{card.name}/{card.version}: val accuracy {100 * e.get('val_accuracy', float('nan')):.2f}%, "
            f"T {card.temperature:.3f}, threshold {card.threshold.value:.5f} "
            f"(accepts {100 * card.threshold.calibration_acceptance:.2f}% of val){detection}"
        )
    return lines


def _cmd_train(args: argparse.Namespace) -> int:
    from training.pipeline import prepare, publish, run_baseline

    cfg = _config(args)
    ctx = prepare(cfg, args.command_line, resume=args.resume, force=args.force)
    net = run_baseline(ctx)
    if cfg.export.enabled and cfg.export.baseline_name:
        print(publish(ctx, net, name=cfg.export.baseline_name, stage="baseline", pool_size=None))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from training.pipeline import net_from_checkpoint, prepare, publish, run_outlier_exposure

    cfg = _config(args)
    ctx = prepare(cfg, args.command_line, resume=args.resume, force=args.force)
    net, pool_size = run_outlier_exposure(ctx, net_from_checkpoint(args.baseline, ctx))
    if cfg.export.enabled:
        print(publish(ctx, net, name=cfg.export.name, stage="oe", pool_size=pool_size))
    return 0


def _cmd_loso(args: argparse.Namespace) -> int:
    groups = [g for g in args.groups.split(",") if g] if args.groups else None
    if is_text_config(read_raw_config(args.config, args.overrides)):
        from training.text.config import load_text_config
        from training.text.loso import loso_groups, run_text_loso
        from training.text.pipeline import prepare_text

        text_cfg = load_text_config(args.config, args.overrides)
        loso_groups(text_cfg, groups)  # a bad group or corpus is named before a run directory is made
        text_ctx = prepare_text(text_cfg, args.command_line, resume=args.resume, force=args.force)
        print(run_text_loso(text_ctx, groups=groups, baseline_checkpoint=args.baseline))
        return 0
    from training.loso import run_loso
    from training.pipeline import prepare

    cfg = _config(args)
    ctx = prepare(cfg, args.command_line, resume=args.resume, force=args.force)
    print(run_loso(ctx, groups=groups, baseline_checkpoint=args.baseline))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from training.checkpoint import load_checkpoint
    from training.pipeline import net_from_checkpoint, prepare, publish

    state = load_checkpoint(args.checkpoint)
    if is_text_config(state["config"]):
        from training.text.config import load_text_config
        from training.text.pipeline import load_corpus, prepare_text, publish_text, text_net_from_checkpoint

        text_cfg = load_text_config(None, args.overrides, base=state["config"])
        text_ctx = prepare_text(text_cfg, args.command_line, record=False)
        net = text_net_from_checkpoint(args.checkpoint, text_ctx)
        corpus_size = len(load_corpus(text_ctx)) if state["stage"] == "oe" else None  # recorded in the card
        print(publish_text(text_ctx, net, name=args.name, stage=state["stage"], corpus_size=corpus_size))
        return 0
    cfg = load_config(None, args.overrides, base=state["config"])
    ctx = prepare(cfg, args.command_line, record=False)  # the run's config.json stays the run's record
    stage = state["stage"]
    print(publish(ctx, net_from_checkpoint(args.checkpoint, ctx), name=args.name, stage=stage, pool_size=None))
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from training.promote import promote

    print(promote(args.name, args.version, staging=args.staging, models=args.models, force=args.force))
    return 0


def _cmd_build_pool(args: argparse.Namespace) -> int:
    from training.image.pool.build import build_default_pool

    shape = tuple(int(v) for v in args.shape.split(","))
    if len(shape) != 3:
        raise ValueError(f"--shape must be C,H,W, got {args.shape!r}")
    print(build_default_pool(shape=shape, per_image=args.per_image, seed=args.seed, recipe=args.recipe))
    return 0


def _cmd_screen_pool(args: argparse.Namespace) -> int:
    from training.checkpoint import load_checkpoint
    from training.image.nets import NetConfig, build_net
    from training.image.pool.screen import contact_sheet, screen

    state = load_checkpoint(args.checkpoint)
    c, h, w = state["input_shape"]
    net = build_net(NetConfig.model_validate(state["config"]["net"]), c, len(state["class_names"]), h, w)
    net.load_state_dict(state["net_state"])
    flagged = screen(
        net, state["normalizer"]["mean"], state["normalizer"]["std"], state["class_names"],
        min_confidence=args.min_confidence,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    contact_sheet(flagged, args.out / "flagged.png")
    lines = [f"{item.key}  baseline reads '{item.label}' at {item.confidence:.4f}" for item in flagged]
    (args.out / "flagged.txt").write_text("".join(f"{i}\t{line}\n" for i, line in enumerate(lines)))
    print(
        f"{len(flagged)} flagged: {args.out / 'flagged.png'} and {args.out / 'flagged.txt'} (review, then copy the "
        "lines that show in-distribution content into training/image/pool/excluded.txt)"
    )
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from training.config import describe_config

    if is_text_config(read_raw_config(args.config, args.overrides)):
        from training.text.config import load_text_config

        print(describe_config(load_text_config(args.config, args.overrides)))
    else:
        print(describe_config(_config(args)))
    return 0


def _cmd_list_data(args: argparse.Namespace) -> int:
    from training.data.registry import describe_data_specs

    print(describe_data_specs())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s (oegate {package_version()})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pipeline", help="data -> baseline -> OE -> calibrate -> evaluate -> export, in one go")
    _add_config_arguments(p)
    p.add_argument(
        "--with-captures", type=Path, metavar="DIR",
        help="retrain the live version with the reviewed captures in DIR, one capture store or a directory of "
        "stores (one per replica) (the OE flywheel; image and text models)",
    )  # fmt: skip
    p.add_argument("--labels", type=Path, help="with --with-captures: the labels file (default DIR/labels.txt)")
    p.add_argument(
        "--live", type=Path, metavar="VERSION_DIR",
        help="with --with-captures: the live version (default: the newest of export.name under --served-models)",
    )  # fmt: skip
    p.add_argument("--served-models", type=Path, default=Path("models"), help="the served model directory")
    p.set_defaults(func=_cmd_pipeline)

    p = sub.add_parser("train", help="train the baseline (cross-entropy only); publishes it if export.baseline_name")
    _add_config_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("finetune-oe", help="fine-tune a baseline checkpoint with Outlier Exposure, then publish")
    _add_config_arguments(p)
    p.add_argument("--baseline", type=Path, required=True, help="baseline checkpoint (runs/<name>/checkpoints/...)")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser(
        "loso", help="leave-one-source-out: OE without each pool (or text corpus) group, scored on that group"
    )
    _add_config_arguments(p)
    p.add_argument("--groups", help="comma-separated pool or corpus groups to hold out (default: every group)")
    p.add_argument("--baseline", type=Path, help="baseline checkpoint to start from (default: train one in the run)")
    p.set_defaults(func=_cmd_loso)

    p = sub.add_parser("export", help="calibrate a checkpoint and publish it as an artifact")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--name", required=True, help="artifact name (models/<name>/<version>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("promote", help="make a staged version live: staging/NAME/VERSION -> models/NAME/VERSION")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--staging", type=Path, default=Path("staging"), help="where training published it")
    p.add_argument("--models", type=Path, default=Path("models"), help="the served model directory")
    p.add_argument(
        "--force", action="store_true",
        help="promote even though the version's promotion rule failed or its comparison is stale",
    )  # fmt: skip
    p.set_defaults(func=_cmd_promote)

    from training.captures.commands import add_captures_parser

    add_captures_parser(sub)

    config = sub.add_parser("config", help="inspect configs").add_subparsers(dest="config_command", required=True)
    p = config.add_parser("show", help="print the resolved config (file + --set) with every field's documentation")
    p.add_argument("--config", type=Path, help="TOML config file (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.set_defaults(func=_cmd_config_show)

    data = sub.add_parser("data", help="data sets and the OE outlier pool").add_subparsers(dest="data", required=True)
    p = data.add_parser("build-pool", help="build and cache the default OE outlier pool (openclipart + arcade)")
    p.add_argument("--shape", default="1,28,28", help="C,H,W of the model input (default 1,28,28)")
    p.add_argument("--per-image", type=int, default=DEFAULT_PER_IMAGE, help="random crops per source image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--recipe", choices=RECIPES, default=DEFAULT_RECIPE,
        help="views: `crops` (random crops; pool `default`) or `mixed` (+ outlines, placed objects; `default-mixed`)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_build_pool)
    p = data.add_parser("screen-pool", help="flag pool source images a baseline reads as in-distribution")
    p.add_argument("--checkpoint", type=Path, required=True, help="a baseline checkpoint (runs/<name>/checkpoints/)")
    p.add_argument("--min-confidence", type=float, default=0.99, help="flag at this top softmax probability")
    p.add_argument("--out", type=Path, default=Path("runs/pool-screen"), help="where flagged.png/.txt go")
    p.set_defaults(func=_cmd_screen_pool)
    p = data.add_parser("list", help="list the registered data set names")
    p.set_defaults(func=_cmd_list_data)

    p = sub.add_parser("validate", help="score artifacts on validation anomaly sets (never test data)")
    from training.evaluation.validate import add_validate_arguments, run_validate

    add_validate_arguments(p)
    p.set_defaults(func=run_validate)
    p = sub.add_parser("probe", help="score artifacts on real-world inputs of kinds no data set here holds (informs)")
    from training.evaluation.probes import add_probe_arguments, run_probe

    add_probe_arguments(p)
    p.set_defaults(func=run_probe)

    try:
        from training.evaluation.command import add_evaluate_arguments, run_evaluate
    except ImportError:  # evaluation extras missing
        pass
    else:
        p = sub.add_parser("evaluate", help="the paper's detection and calibration tables for an artifact")
        add_evaluate_arguments(p)
        p.set_defaults(func=run_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["python", "-m", "training", *argv])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        # Bad input (unknown data set, config typo, existing version, bad artifact): one clear line, no traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: rerun the same command with --resume to continue from the last checkpoint",
            file=sys.stderr,
        )
        return 130
