"""The promotion rule's checks and its report, on known figures."""

from __future__ import annotations

from typing import Any

from training.captures.promotion import PromotionRule, check, report


def figures(accuracy: float, auroc: float, rejected: float | None, accepted: float | None) -> dict[str, Any]:
    captures: dict[str, Any] = {"outliers": 40 if rejected is not None else 0, "in_distribution": 0}
    if rejected is not None:
        captures["outliers_rejected"] = rejected
    if accepted is not None:
        captures |= {"in_distribution": 8, "in_distribution_accepted": accepted}
    return {
        "val_accuracy": accuracy,
        "val_acceptance": 0.95,
        "val_anomalies": {"val-a": {"auroc": auroc}, "val-b": {"auroc": 0.9}},
        "captures": captures,
    }


def verdicts(rows: list[dict[str, Any]]) -> dict[str, bool]:
    return {row["check"]: row["passed"] for row in rows}


def test_the_rule_allows_the_tolerance_and_demands_the_gain() -> None:
    rule = PromotionRule(tolerance=0.01, min_capture_gain=0.05, min_heldout_outliers=10)
    live = figures(0.96, 0.95, 0.50, 0.75)
    assert verdicts(check(rule, figures(0.95, 0.94, 0.55, 0.74), live)) == {
        "val accuracy": True,  # 0.95 >= 0.96 - 0.01
        "val acceptance": True,
        "val AUROC val-a": True,  # 0.94 >= 0.95 - 0.01
        "val AUROC val-b": True,
        "held-back outlier captures": True,
        "captures: outliers rejected": True,  # 0.55 >= 0.50 + 0.05
        "captures: in-distribution accepted": True,  # 0.74 >= 0.75 - 0.01
    }
    failed = check(rule, figures(0.9489, 0.9389, 0.5499, 0.7389), live)
    assert [row["check"] for row in failed if not row["passed"]] == [
        "val accuracy", "val AUROC val-a", "captures: outliers rejected", "captures: in-distribution accepted",
    ]  # fmt: skip


def test_without_held_back_outliers_nothing_is_shown_better() -> None:
    rows = check(PromotionRule(), figures(0.96, 0.95, None, None), figures(0.96, 0.95, None, None))
    assert verdicts(rows)["held-back outlier captures"] is False
    assert "captures: outliers rejected" not in verdicts(rows)


def test_the_report_lists_every_check_and_the_verdict() -> None:
    rule = PromotionRule()
    rows = check(rule, figures(0.96, 0.95, 0.9, None), figures(0.96, 0.95, 0.5, None))
    curation = {
        "store": "/captures", "model": "m", "window_utc": ["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"],
        "labels_file": "labels.txt", "labels_sha256": "ab" * 32,
        "counts": {"train": {"outlier": 120}, "heldout": {"outlier": 40}, "near_duplicates_removed": 7,
                   "over_source_cap": 3, "discarded": 2},
        "sources": {"kiosk": 160},
    }  # fmt: skip
    text = report("m: candidate vs live 1", rows, curation, ["fine-tuned"], passed=True)
    assert text.startswith("# m: candidate vs live 1\n\n**Promotion rule: PASSED**\n")
    assert "| captures: outliers rejected | 0.9000 | 0.5000 | >= live + 0.05 | yes |" in text
    assert "- near-duplicates removed: 7; over the per-source cap: 3; discarded by review: 2" in text


def test_exactly_the_fewest_held_back_outliers_is_enough() -> None:
    live = figures(0.96, 0.95, 0.50, None)  # 40 held-back outlier captures
    for fewest, shown in ((40, True), (41, False)):
        rows = check(PromotionRule(min_heldout_outliers=fewest), figures(0.96, 0.95, 0.60, None), live)
        assert verdicts(rows)["held-back outlier captures"] is shown


def test_every_requirement_is_written_as_the_rule_says() -> None:
    rule = PromotionRule(tolerance=0.02, min_capture_gain=0.1, min_heldout_outliers=10)
    rows = check(rule, figures(0.96, 0.95, 0.9, 0.8), figures(0.96, 0.95, 0.5, 0.8))
    assert {row["check"]: row["requirement"] for row in rows} == {
        "val accuracy": ">= live - 0.02",
        "val acceptance": ">= live - 0.02",
        "val AUROC val-a": ">= live - 0.02",
        "val AUROC val-b": ">= live - 0.02",
        "held-back outlier captures": ">= 10",
        "captures: outliers rejected": ">= live + 0.1",
        "captures: in-distribution accepted": ">= live - 0.02",
    }


def test_a_shortfall_of_float_rounding_passes() -> None:
    # Fractions computed two ways may differ in the last bits: 1e-12 below the bound still passes, 1e-9 does not.
    rule = PromotionRule(tolerance=0.0)
    for below, passed in ((1e-12, True), (1e-9, False)):
        live = figures(0.5 + below, 0.95, None, None)
        assert verdicts(check(rule, figures(0.5, 0.95, None, None), live))["val accuracy"] is passed


CURATION: dict[str, Any] = {
    "store": "/captures", "model": "m", "window_utc": ["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"],
    "labels_file": "labels.txt", "labels_sha256": "0123456789abcdef" + "f" * 48,
    "counts": {"train": {"outlier": 120}, "heldout": {"outlier": 40}, "near_duplicates_removed": 7,
               "over_source_cap": 3, "discarded": 2},
    "sources": {"kiosk": 160},
}  # fmt: skip


def test_the_report_in_full_when_the_rule_fails() -> None:
    rows = check(PromotionRule(), figures(0.96, 0.95, 0.52, None), figures(0.96, 0.95, 0.5, None))
    curation = CURATION | {"stores": {"/a": 100, "/b": 60}}
    text = report("m: candidate vs live 1", rows, curation, ["one", "two"], passed=False)
    assert text == "\n".join([
        "# m: candidate vs live 1",
        "",
        "**Promotion rule: FAILED** (`python -m training promote` refuses it without `--force`)",
        "",
        "| check | candidate | live | requirement | passed |",
        "|---|---|---|---|---|",
        "| val accuracy | 0.9600 | 0.9600 | >= live - 0.01 | yes |",
        "| val acceptance | 0.9500 | 0.9500 | >= live - 0.01 | yes |",
        "| val AUROC val-a | 0.9500 | 0.9500 | >= live - 0.01 | yes |",
        "| val AUROC val-b | 0.9000 | 0.9000 | >= live - 0.01 | yes |",
        "| held-back outlier captures | 40 | 40 | >= 10 | yes |",
        "| captures: outliers rejected | 0.5200 | 0.5000 | >= live + 0.05 | NO |",
        "",
        "## Captures used",
        "",
        "- store `/captures`, model `m`, window ['2026-11-01T00:00:00Z', '2026-11-02T00:00:00Z']",
        "- stores: {'/a': 100, '/b': 60}",
        "- labels file `labels.txt` (sha256 `0123456789abcdef...`)",
        "- trained on: {'outlier': 120}; held back (never trained on): {'outlier': 40}",
        "- near-duplicates removed: 7; over the per-source cap: 3; discarded by review: 2",
        "- sources: {'kiosk': 160}",
        "",
        "## Notes",
        "",
        "- one",
        "- two",
        "",
    ])  # fmt: skip


def test_one_store_is_not_listed_as_stores() -> None:
    rows = check(PromotionRule(), figures(0.96, 0.95, 0.9, None), figures(0.96, 0.95, 0.5, None))
    text = report("t", rows, CURATION | {"stores": {"/captures": 160}}, [], passed=True)
    assert "- stores:" not in text and "**Promotion rule: PASSED**\n" in text
