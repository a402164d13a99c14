"""`python -m training captures list|sample|label|curate`: review and curate what the service captured."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from training.captures.curate import CurationConfig
from training.captures.labels import Label, read_labels, write_labels
from training.captures.store import DECISIONS, KINDS, Capture, Filter, read_captures, store_name

DEFAULT_LABELS = "labels.txt"


def parse_time(value: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC when it has no offset)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{value!r} is neither Unix seconds nor an ISO 8601 time") from e
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def parse_shape(value: str) -> tuple[int, int, int]:
    parts = tuple(int(v) for v in value.split(","))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"shape must be C,H,W, got {value!r}")
    return parts[0], parts[1], parts[2]


def labels_path(args: argparse.Namespace) -> Path:
    return args.labels if args.labels is not None else args.store / DEFAULT_LABELS


def _filter(args: argparse.Namespace) -> Filter:
    ids: list[str] | None = None
    if getattr(args, "ids", None):
        ids = [i for i in args.ids.split(",") if i]
    if getattr(args, "ids_from", None):
        ids = (ids or []) + [line.split()[0] for line in args.ids_from.read_text().splitlines() if line.split()]
    return Filter(
        model=args.model, decision=args.decision, kind=args.kind, source=args.source, since=args.since,
        until=args.until, ids=ids,
    )  # fmt: skip


def _selected(args: argparse.Namespace) -> list[Capture]:
    captures = read_captures(args.store, _filter(args))
    if getattr(args, "unlabelled", False):
        labelled = read_labels(labels_path(args))
        captures = [c for c in captures if c.id not in labelled]
    return captures


def cmd_list(args: argparse.Namespace) -> int:
    captures = _selected(args)
    labels = read_labels(labels_path(args))
    if args.json:
        rows = [
            {
                **vars(c),
                "store": store_name(c, args.store),
                "label_review": labels[c.id].text if c.id in labels else None,
            }
            for c in captures
        ]
        print(json.dumps(rows))
        return 0
    print("id\ttime_utc\tmodel\tversion\tdecision\tkind\tanomaly_score\tpredicted\tsource\treview\tstore")
    for c in captures:
        review = labels[c.id].text if c.id in labels else "-"
        print(
            f"{c.id}\t{c.time_utc}\t{c.model}\t{c.version}\t{c.decision}\t{c.kind}\t{c.anomaly_score:.4f}\t"
            f"{c.label}\t{c.source or '-'}\t{review}\t{store_name(c, args.store)}"
        )
    print(f"# {len(captures)} captures")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from training.captures.sample import contact_sheet, draw_sample, index_lines, text_table

    captures = draw_sample(_selected(args), args.count, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sample.tsv").write_text("\n".join(index_lines(captures)) + "\n")
    texts = [c for c in captures if c.input_kind == "text"]
    images = [c for c in captures if c.input_kind != "text"]
    written = [args.out / "sample.tsv"]
    if images:
        contact_sheet(images, args.shape, args.out / "sample.png")
        written.append(args.out / "sample.png")
    if texts:
        (args.out / "sample.md").write_text(text_table(texts))
        written.append(args.out / "sample.md")
    print(f"{len(captures)} captures: {', '.join(map(str, written))}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    label = Label(args.label)
    if not (args.ids or args.ids_from or args.decision or args.kind or args.source or args.since or args.until):
        raise ValueError("label needs a selection: --ids, --ids-from, or a rule (--decision, --kind, --source, ...)")
    path = labels_path(args)
    existing = read_labels(path)
    captures = _selected(args)
    chosen = [c for c in captures if args.overwrite or c.id not in existing]
    note = args.note
    updates = {
        c.id: (label, note or f"{c.decision} {c.anomaly_score:.4f} as {c.label}, {c.source or '-'}, {c.time_utc}")
        for c in chosen
    }
    changed, added = write_labels(path, updates)
    kept = len(captures) - len(chosen)
    print(
        f"{path}: {added} added, {changed} changed to {label.text}"
        + (f", {kept} already labelled kept (--overwrite to relabel)" if kept else "")
    )
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    from training.captures.curate import curate

    cfg = CurationConfig(
        holdout_percent=args.holdout_percent, per_source_cap=args.per_source_cap,
        max_hash_distance=args.max_hash_distance,
    )  # fmt: skip
    if args.model is None:
        raise ValueError("curate needs --model (curation is per model)")
    curated = curate(args.store, labels_path(args), args.model, cfg, shape=args.shape)
    summary = {k: v for k, v in curated.summary.items() if not k.endswith("_sha256") or k == "labels_sha256"}
    print(json.dumps(summary, indent=2))
    return 0


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "store", type=Path,
        help="a capture store (the service's OEGATE_CAPTURE_DIR), or a directory of stores (one per replica)",
    )  # fmt: skip
    parser.add_argument("--labels", type=Path, help=f"the labels file (default STORE/{DEFAULT_LABELS})")
    parser.add_argument("--model", help="only this model's captures")
    parser.add_argument("--decision", choices=DECISIONS, help="only captures the gate rejected / accepted")
    parser.add_argument("--kind", choices=KINDS, help="only captures sampled as this kind")
    parser.add_argument("--source", help="only captures from this source ('' for none declared)")
    parser.add_argument("--since", type=parse_time, help="from this time (Unix seconds or ISO 8601, UTC)")
    parser.add_argument("--until", type=parse_time, help="before this time")
    parser.add_argument("--ids", help="only these capture ids (comma-separated)")
    parser.add_argument("--ids-from", type=Path, help="only the ids in this file (first word of each line)")


def add_captures_parser(sub: argparse._SubParsersAction) -> None:
    captures = sub.add_parser("captures", help="review and curate what the service captured (the OE flywheel)")
    commands = captures.add_subparsers(dest="captures_command", required=True)

    p = commands.add_parser("list", help="list captures (filter by model, decision, kind, source, time)")
    _add_selection(p)
    p.add_argument("--unlabelled", action="store_true", help="only captures the labels file does not mention")
    p.add_argument("--json", action="store_true", help="JSON instead of a tab-separated table")
    p.set_defaults(func=cmd_list)

    p = commands.add_parser("sample", help="a seeded sample for review: contact sheet PNG / markdown table + index")
    _add_selection(p)
    p.add_argument("--unlabelled", action="store_true", help="only captures the labels file does not mention")
    p.add_argument("--count", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=parse_shape, default=(1, 28, 28), help="C,H,W the model takes (default 1,28,28)")
    p.add_argument("--out", type=Path, default=Path("runs/capture-review"))
    p.set_defaults(func=cmd_sample)

    p = commands.add_parser(
        "label", help="label selected captures in bulk: outlier | in-distribution:<class> | discard"
    )
    _add_selection(p)
    p.add_argument("--as", dest="label", required=True, help="outlier, discard or in-distribution:<class>")
    p.add_argument("--overwrite", action="store_true", help="relabel captures the file already labels")
    p.add_argument("--note", help="the note written after each new line (default: decision, score, source, time)")
    p.set_defaults(func=cmd_label)

    p = commands.add_parser("curate", help="dry run: what retraining would use (dedup, source cap, held-back slice)")
    _add_selection(p)
    p.add_argument("--shape", type=parse_shape, default=(1, 28, 28), help="C,H,W the model takes (default 1,28,28)")
    defaults = CurationConfig()
    p.add_argument("--holdout-percent", type=float, default=defaults.holdout_percent)
    p.add_argument("--per-source-cap", type=int, default=defaults.per_source_cap)
    p.add_argument("--max-hash-distance", type=int, default=defaults.max_hash_distance)
    p.set_defaults(func=cmd_curate)
