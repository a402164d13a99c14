"""The promotion rule of a retrained version: no worse than the live one on validation data, better on captures.

Both versions are scored on the same inputs: the candidate's validation split and validation anomaly sets (never
test data) and the held-back slice of the curated captures (curate.py; never trained on). Each version uses its own
threshold. The rule (configurable, recorded in the card with every figure it read):
- validation accuracy, validation acceptance at the threshold, and AUROC on every validation anomaly set: the
  candidate's >= the live version's - `tolerance`;
- held-back `outlier` captures: the share the candidate rejects >= the live version's share + `min_capture_gain`
  (and at least `min_heldout_outliers` of them, or nothing is shown);
- held-back `in-distribution` captures (if any): the share the candidate accepts >= the live version's -
  `tolerance`.
`python -m training promote` refuses a version whose rule failed unless `--force`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PromotionRule(BaseModel):
    """When a version retrained on captures may replace the live one (the `[promotion]` section of a config)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    tolerance: float = Field(default=0.01, ge=0.0, le=1.0)
    """How much worse (absolute, as a fraction) the candidate may be on each validation figure and on held-back
    in-distribution captures."""
    min_capture_gain: float = Field(default=0.05, ge=0.0, le=1.0)
    """How much more of the held-back outlier captures the candidate must reject than the live version."""
    min_heldout_outliers: int = Field(default=10, ge=1)
    """Fewest held-back outlier captures that can show an improvement."""


def check(rule: PromotionRule, candidate: dict[str, Any], live: dict[str, Any]) -> list[dict[str, Any]]:
    """Every comparison the rule makes: name, candidate value, live value, requirement, passed."""
    rows: list[dict[str, Any]] = []

    def at_least(name: str, ours: float, theirs: float, margin: float, requirement: str) -> None:
        rows.append({
            "check": name, "candidate": ours, "live": theirs, "requirement": requirement,
            "passed": bool(ours >= theirs + margin - 1e-12),
        })  # fmt: skip

    tol = rule.tolerance
    no_worse = f">= live - {tol:g}"
    at_least("val accuracy", candidate["val_accuracy"], live["val_accuracy"], -tol, no_worse)
    at_least("val acceptance", candidate["val_acceptance"], live["val_acceptance"], -tol, no_worse)
    for name in sorted(candidate["val_anomalies"]):
        at_least(
            f"val AUROC {name}", candidate["val_anomalies"][name]["auroc"], live["val_anomalies"][name]["auroc"], -tol,
            no_worse,
        )  # fmt: skip
    ours, theirs = candidate["captures"], live["captures"]
    rows.append({
        "check": "held-back outlier captures", "candidate": ours["outliers"], "live": theirs["outliers"],
        "requirement": f">= {rule.min_heldout_outliers}", "passed": ours["outliers"] >= rule.min_heldout_outliers,
    })  # fmt: skip
    if ours["outliers"]:
        at_least(
            "captures: outliers rejected", ours["outliers_rejected"], theirs["outliers_rejected"],
            rule.min_capture_gain, f">= live + {rule.min_capture_gain:g}",
        )  # fmt: skip
    if ours["in_distribution"]:
        at_least(
            "captures: in-distribution accepted", ours["in_distribution_accepted"],
            theirs["in_distribution_accepted"], -tol, no_worse,
        )  # fmt: skip
    return rows


def report(title: str, rows: list[dict[str, Any]], curation: dict[str, Any], notes: list[str], passed: bool) -> str:
    """The comparison report (markdown) published with the candidate."""
    lines = [
        f"# {title}",
        "",
        "**Promotion rule: PASSED**"
        if passed
        else "**Promotion rule: FAILED** (`python -m training promote` refuses it without `--force`)",
        "",
        "| check | candidate | live | requirement | passed |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        values = [f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in ("candidate", "live")]
        verdict = "yes" if row["passed"] else "NO"
        lines.append(f"| {row['check']} | {values[0]} | {values[1]} | {row['requirement']} | {verdict} |")
    counts = curation["counts"]
    lines += [
        "",
        "## Captures used",
        "",
        f"- store `{curation['store']}`, model `{curation['model']}`, window {curation['window_utc']}",
        *([f"- stores: {curation['stores']}"] if len(curation.get("stores", {})) > 1 else []),
        f"- labels file `{curation['labels_file']}` (sha256 `{curation['labels_sha256'][:16]}...`)",
        f"- trained on: {counts['train']}; held back (never trained on): {counts['heldout']}",
        f"- near-duplicates removed: {counts['near_duplicates_removed']}; over the per-source cap: "
        f"{counts['over_source_cap']}; discarded by review: {counts['discarded']}",
        f"- sources: {curation['sources']}",
        "",
        "## Notes",
        "",
        *[f"- {note}" for note in notes],
        "",
    ]
    return "\n".join(lines)
