"""The attack benchmark's results: what each client saw, per attacker level, as Markdown tables and the issue's
targets checked level by level (`python -m bench.attack`, bench/attack.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# The targets, checked in the report.
RSS_BOUND_BYTES = 512 * 2**20
LONE_BOUND_S = 1.0
LONE_KIND = "lone: 1 x 28^2 PNG"


def percentile(values: list[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) by linear interpolation between the nearest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Outcomes:
    """What one kind of client saw: a count per status (or per transport error), and each answer's time."""

    statuses: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def record(self, status: str, elapsed_s: float) -> None:
        self.statuses[status] += 1
        self.seconds.setdefault(status, []).append(elapsed_s)

    def merge(self, other: Outcomes) -> None:
        self.statuses.update(other.statuses)
        for status, times in other.seconds.items():
            self.seconds.setdefault(status, []).extend(times)

    def all_seconds(self) -> list[float]:
        return [t for times in self.seconds.values() for t in times]


@dataclass
class LevelResult:
    connections: int
    seconds: float
    rss_ready_bytes: int  # once /v2/health/ready answered
    rss_idle_bytes: int  # after one warm-up request of each kind
    rss_peak_bytes: int
    lone: Outcomes
    attackers: dict[str, Outcomes]
    # Each 503's time inside the service (its access log's duration_ms: from the request's headers to its
    # response), which the clients' times exceed by uploading the body and by their own scheduling.
    server_refusal_seconds: list[float] = field(default_factory=list)

    def attackers_total(self) -> Outcomes:
        total = Outcomes()
        for outcomes in self.attackers.values():
            total.merge(outcomes)
        return total


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}"


def _mb(value: int) -> str:
    return f"{value / 2**20:,.0f}"


def _counts(statuses: Counter[str]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())) or "-"


def _yes(holds: bool) -> str:
    return "yes" if holds else "**no**"


def table(results: list[LevelResult]) -> str:
    """One row per attacker level: RSS, the lone request's latency and statuses, what the attackers got."""
    lines = [
        "| attackers | RSS ready / warm (MB) | RSS peak (MB) | lone requests | lone p50 / p99 / max (ms) "
        "| lone statuses | attacker requests/s | attacker statuses | 503 p50 / p99 (ms) |",
        "|---:|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in results:
        lone, total = r.lone.all_seconds(), r.attackers_total()
        refused = total.seconds.get("503", [])
        lines.append(
            f"| {r.connections} | {_mb(r.rss_ready_bytes)} / {_mb(r.rss_idle_bytes)} | {_mb(r.rss_peak_bytes)} "
            f"| {len(lone)} "
            f"| {_ms(percentile(lone, 50))} / {_ms(percentile(lone, 99))} / {_ms(max(lone, default=None))} "
            f"| {_counts(r.lone.statuses)} | {sum(total.statuses.values()) / r.seconds:,.1f} "
            f"| {_counts(total.statuses)} | {_ms(percentile(refused, 50))} / {_ms(percentile(refused, 99))} |"
        )
    return "\n".join(lines)


def kinds_table(results: list[LevelResult]) -> str:
    """Answer times per kind of request (the lone client's first) and status."""
    lines = ["| attackers | request | status | count | p50 / p99 / max (ms) |", "|---:|---|---|---:|---:|"]
    for r in results:
        for kind, outcomes in [(LONE_KIND, r.lone), *r.attackers.items()]:
            for status, seconds in sorted(outcomes.seconds.items()):
                lines.append(
                    f"| {r.connections} | {kind} | {status} | {len(seconds)} "
                    f"| {_ms(percentile(seconds, 50))} / {_ms(percentile(seconds, 99))} / {_ms(max(seconds))} |"
                )
    return "\n".join(lines)


def verdicts(results: list[LevelResult]) -> str:
    """The issue's targets, level by level."""
    lines = []
    for r in results:
        lone = r.lone.all_seconds()
        slowest = max(lone, default=float("inf"))
        lone_ok = set(r.lone.statuses) == {"200"} and slowest < LONE_BOUND_S
        refused = r.attackers_total().seconds.get("503", [])
        p99 = percentile(refused, 99)
        lines.append(
            f"- {r.connections} attackers: RSS peak {_mb(r.rss_peak_bytes)} MB < {_mb(RSS_BOUND_BYTES)} MB: "
            f"{_yes(r.rss_peak_bytes < RSS_BOUND_BYTES)}; every lone request 200 within {LONE_BOUND_S:g} s: "
            f"{_yes(lone_ok)} (max {_ms(slowest if lone else None)} ms, {_counts(r.lone.statuses)}); 503s: "
            + (f"{len(refused)}, p99 {_ms(p99)} ms" if refused else "none (the in-flight bound was not reached)")
            + (
                f" (in the service: p99 {_ms(percentile(r.server_refusal_seconds, 99))} ms, "
                f"max {_ms(max(r.server_refusal_seconds))} ms)"
                if r.server_refusal_seconds
                else ""
            )
        )
    return "\n".join(lines)


def render(facts: dict[str, str], results: list[LevelResult]) -> str:
    header = "\n".join(f"- {key}: {value}" for key, value in facts.items())
    return (
        "# The reliability issue's attack, measured (`python -m bench.attack`)\n\n"
        f"{header}\n\n## Per level\n\n{table(results)}\n\n## Targets\n\n{verdicts(results)}\n\n"
        f"## By kind of request and status\n\n{kinds_table(results)}\n"
    )
