"""Prometheus metrics across worker processes (`OEGATE_WORKERS=N`): what `/metrics` exposes in multiprocess mode.

The supervisor (service/workers.py) gives every start a fresh, empty `PROMETHEUS_MULTIPROC_DIR`. prometheus-client
reads that variable when it is first imported: each worker's counters, histograms and gauges then live in memory-mapped
files there (one per process and kind), and whichever worker answers a scrape reads and merges all of them:
- counters and histograms are summed over every worker that ever ran in this start (a restarted worker's counts are
  kept, so totals never go down);
- each gauge declares how workers combine (`multiprocess_mode` in service/metrics.py): queue depth and requests in
  flight are summed over live workers (`livesum`); the per-version info and card gauges take the largest value
  among live workers (`livemax`), so a series is shown while any worker serves that version;
- prometheus-client cannot remove a labelled series in this mode, so a worker retires one by setting it to
  `RETIRED` (-inf: it never wins a max); `WorkersCollector` drops a gauge series whose merged value is -inf, i.e.
  no live worker still serves it. A dead worker's live-gauge files are removed by the supervisor
  (`mark_process_dead`), so its values stop counting at once;
- the `process_*` metrics are those of every live worker (a worker is live while its `gauge_live*_<pid>.db` files
  exist), summed: memory, CPU seconds and open descriptors of the whole service, the earliest start time;
- `python_gc_*` is not exported (prometheus-client's garbage-collector collector is per process).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

RETIRED = -math.inf
"""The value a worker gives a gauge series it no longer serves (a `livemax` merge drops it unless another worker
still sets it)."""
_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")
_EARLIEST = frozenset({"process_start_time_seconds"})
_PER_PROCESS = frozenset({"process_max_fds"})  # a limit, the same for every worker: not summed


def live_worker_pids(directory: Path) -> list[int]:
    """Pids with live-gauge files in `directory`: the workers not yet marked dead (every worker writes
    `oegate_requests_in_flight`, a `livesum` gauge, from its start)."""
    pids = {int(match[1]) for path in directory.iterdir() if (match := _LIVE_FILE.match(path.name))}
    return sorted(pids)


class WorkersCollector(Collector):
    """The merged metrics of every worker writing to `directory`, without retired gauge series, and the summed
    `process_*` metrics of the live workers."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._merged = MultiProcessCollector(None, path=str(directory))

    def collect(self) -> Iterator[Metric]:
        for metric in self._merged.collect():
            if metric.type == "gauge":
                metric.samples = [sample for sample in metric.samples if sample.value != RETIRED]
            yield metric
        yield from _summed_process_metrics(live_worker_pids(self._directory))


def _summed_process_metrics(pids: Iterable[int]) -> Iterator[Metric]:
    families: dict[str, Metric] = {}
    values: dict[str, float] = {}
    for pid in pids:
        # ProcessCollector reads /proc/<pid>; a worker that has just exited yields nothing (no error).
        for family in ProcessCollector(pid=functools.partial(int, pid), registry=None).collect():
            families.setdefault(family.name, family)
            for sample in family.samples:
                if sample.name not in values:
                    values[sample.name] = sample.value
                elif sample.name in _EARLIEST:
                    values[sample.name] = min(values[sample.name], sample.value)
                elif sample.name not in _PER_PROCESS:
                    values[sample.name] += sample.value
    for name, family in families.items():
        family.samples = [Sample(s.name, s.labels, values[s.name]) for s in family.samples]
        yield families[name]


def scrape_registry(directory: Path) -> CollectorRegistry:
    """The registry `/metrics` exposes in multiprocess mode: every worker's metrics merged, plus `python_info`."""
    registry = CollectorRegistry()
    registry.register(WorkersCollector(directory))
    PlatformCollector(registry=registry)
    return registry
