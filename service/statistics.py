"""Per-version inference statistics in the shape of Triton's statistics extension (`GET /v2/models/{name}/stats`).

Kept in memory by each loaded version (a replaced version's figures go with it), fed by the inference call and the
micro-batcher on the event loop thread, so no lock is needed. Durations are cumulative nanoseconds, as in Triton:
- `success` / `fail`: requests that reached the model version (were leased) and succeeded or failed (bad input,
  overload, inference failure), with their time from lease to result;
- `queue`: time each request (each chunk of a request larger than the batch limit) waited in the micro-batcher;
- `compute_input`: decoding or tokenizing a request's instances;
- `compute_infer`: onnxruntime session runs; counted per run (also in `batch_stats`, by batch size), not per
  request as Triton does, since a run serves several requests at once;
- `compute_output`: the threshold comparison and metrics after a run, per request.
`inference_count` counts instances, `execution_count` session runs, `last_inference` is milliseconds since the epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    """A count and a cumulative duration in nanoseconds (Triton's `StatisticDuration`)."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def as_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class ModelStatistics:
    """What one loaded version has done since it was loaded."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)  # batch size -> its session runs

    def record_queue_wait(self, seconds: float) -> None:
        self.queue.add(seconds)

    def record_execution(self, size: int, seconds: float) -> None:
        self.execution_count += 1
        self.inference_count += size
        self.compute_infer.add(seconds)
        self.batches.setdefault(size, Duration()).add(seconds)

    def record_request(self, succeeded: bool, seconds: float) -> None:
        (self.success if succeeded else self.fail).add(seconds)
        if succeeded:
            self.last_inference_ms = int(time.time() * 1000)

    def as_json(self, name: str, version: str) -> dict[str, Any]:
        """One entry of `model_stats`, as Triton's `GET /v2/models/{name}/stats` returns it."""
        zero = Duration().as_json()
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_json(),
                "fail": self.fail.as_json(),
                "queue": self.queue.as_json(),
                "compute_input": self.compute_input.as_json(),
                "compute_infer": self.compute_infer.as_json(),
                "compute_output": self.compute_output.as_json(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": zero,
                    "compute_infer": duration.as_json(),
                    "compute_output": zero,
                }
                for size, duration in sorted(self.batches.items())
            ],
        }
