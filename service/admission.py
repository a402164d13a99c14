"""Admission of predict/infer requests: a cost-weighted bound on the work in flight, with a lane kept for cheap ones.

Policy:
1. **Cost.** A request costs the bytes of its body, known from `Content-Length` before any of it is read: the body
   bounds everything the request can make the service hold or do (its instances, its texts' characters and so
   tokens, its compressed images, whose decoded pixels the pixel budget bounds per request, service/limits.py). A
   body of unknown size (chunked) or one that may expand (`Content-Encoding`) costs `max_body_bytes`, the most it
   may become; a declared size above that is charged `max_body_bytes` too (the body limit answers 413 then).
2. **Lanes.** A request costing at most `light_request_bytes` is *light* (one digit is ~0.5 KB of JSON, 64 are
   ~27 KB); any other is *heavy*.
3. **Bound.** At most `max_requests` requests and `max_bytes` bytes of cost are in flight over both lanes. Heavy
   requests may fill all but a reserve of `reserved_requests` requests and `reserved_requests x
   light_request_bytes` bytes, which only light requests may use: however many heavy requests saturate the server,
   a light one is admitted while fewer than `reserved_requests` light ones hold the reserve.
4. **Refusal.** A request over the bound is refused at once (503 + Retry-After before its body is read, by
   `InFlightLimitMiddleware`); `oegate_admissions_total{lane, outcome}` counts both outcomes per lane.
5. **Priority after admission.** The lane goes with the request (`current_lane`): a light one decodes in threads
   of its own, and its model's micro-batcher queues it in a queue with a worker of its own, whose batches hold
   light requests only and run on an inference limiter of their own (service/limits.py, service/batching.py), so
   it never waits behind heavy work.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from dataclasses import dataclass

from service.metrics import Metrics


class Lane(enum.StrEnum):
    LIGHT = "light"
    HEAVY = "heavy"


current_lane: ContextVar[Lane] = ContextVar("current_lane", default=Lane.HEAVY)
"""The lane of the request being served (set by `InFlightLimitMiddleware`); heavy where no admission ran."""


@dataclass(frozen=True)
class Ticket:
    """One request's place in the bound: its lane and cost."""

    lane: Lane
    cost: int  # bytes


class Admission:
    """Counts the requests and bytes of cost in flight and admits or refuses each new request (policy above)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        max_requests: int,
        max_bytes: int,
        max_body_bytes: int,
        light_request_bytes: int,
        reserved_requests: int,
    ) -> None:
        if reserved_requests >= max_requests or reserved_requests * light_request_bytes + max_body_bytes > max_bytes:
            raise ValueError("the light reserve must leave room for one heavy request of max_body_bytes")
        self.max_requests = max_requests
        self.max_bytes = max_bytes  # bytes of cost
        self.max_body_bytes = max_body_bytes  # the cost of a body of unknown or expandable size
        self.light_request_bytes = light_request_bytes  # the largest light request
        self.reserved_requests = reserved_requests
        self.reserved_bytes = reserved_requests * light_request_bytes
        self._metrics = metrics
        self.requests = 0  # in flight, both lanes
        self.bytes = 0  # cost in flight, both lanes

    def ticket(self, content_length: str | None, encoded: bool) -> Ticket:
        """The lane and cost of a request with this `Content-Length` header (None: absent) and, if `encoded`, a
        compressed body."""
        declared = int(content_length) if content_length is not None and content_length.isdigit() else None
        cost = self.max_body_bytes if declared is None or encoded else min(declared, self.max_body_bytes)
        return Ticket(Lane.LIGHT if cost <= self.light_request_bytes else Lane.HEAVY, cost)

    def limits(self, lane: Lane) -> tuple[int, int]:
        """The requests and bytes of cost in flight (both lanes) up to which a request of `lane` is admitted."""
        if lane is Lane.LIGHT:
            return self.max_requests, self.max_bytes
        return self.max_requests - self.reserved_requests, self.max_bytes - self.reserved_bytes

    def fits(self, ticket: Ticket) -> bool:
        """Whether `ticket` would be admitted now."""
        max_requests, max_bytes = self.limits(ticket.lane)
        return self.requests + 1 <= max_requests and self.bytes + ticket.cost <= max_bytes

    def refusal(self, ticket: Ticket) -> str:
        """Why `ticket` does not fit, for the 503's message."""
        max_requests, max_bytes = self.limits(ticket.lane)
        lane = f" for {ticket.lane} requests" if self.reserved_requests else ""
        if self.requests + 1 > max_requests:
            return f"{self.requests} requests in flight, limit {max_requests}{lane}"
        return f"{self.bytes} bytes of requests in flight, limit {max_bytes}{lane}, and this one costs {ticket.cost}"

    def try_admit(self, ticket: Ticket) -> bool:
        """Count `ticket` in flight if it fits (True), else count a refusal (False)."""
        admitted = self.fits(ticket)
        self._metrics.admissions.labels(ticket.lane, "admitted" if admitted else "refused").inc()
        if admitted:
            self.requests += 1
            self.bytes += ticket.cost
            self._changed()
        return admitted

    def release(self, ticket: Ticket) -> None:
        self.requests -= 1
        self.bytes -= ticket.cost
        self._changed()

    def saturated(self) -> bool:
        """True while even the smallest light request (a body of one byte) would be refused (readiness then says
        not ready)."""
        return not self.fits(Ticket(Lane.LIGHT, 1))

    def _changed(self) -> None:
        self._metrics.requests_in_flight.set(self.requests)
        self._metrics.request_bytes_in_flight.set(self.bytes)
