"""The server's Prometheus metrics (SPEC-server §7.4), exposed by `prometheus-client`.

HTTP requests by route and status are counted by the access-log middleware
(`adminchain.server.access`); the ledger's own figures come from the handlers. Gauges that
describe the ledger (log size, projection lag, checkpoint age) are read at scrape time.

With several worker processes (`serve --workers N`), prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by `serve` before this module is imported) sums counters and
histograms over the workers. Gauges cannot be read at scrape time there: every worker sets the
log size and lag once a second, the newest value wins, and worker 0 (which publishes the
checkpoints) sets the checkpoint age.

Counters counted by the handlers are added up over one turn of the event loop and incremented
once at its end (`count`): each increment of a multiprocess counter takes a lock and writes a
memory-mapped file, and a request would make five of them.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["Metrics"]

TICK_SECONDS: Final = 1.0
"""How often each worker sets the gauges in multiprocess mode."""
_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """One registry of the ledger's metrics for one server."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self._stop = threading.Event()
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
        self._counted: dict[tuple[MetricWrapperBase, tuple[str, ...]], float] = {}
        self.append_requests = Counter(
            "adminchain_append_requests_total",
            "Append requests, by outcome (ok, invalid, forbidden, refused, unavailable).",
            ["outcome"],
            registry=registry,
        )
        self.appended_events = Counter(
            "adminchain_appended_events_total",
            "Events in append requests, by outcome (stored, duplicate).",
            ["outcome"],
            registry=registry,
        )
        self.append_seconds = Histogram(
            "adminchain_append_duration_seconds",
            "Time from an append request's body read to its durable, folded answer.",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.events_by_type = Counter(
            "adminchain_events_total",
            "Events stored through this server, by type.",
            ["type"],
            registry=registry,
        )
        self.verdicts = Counter(
            "adminchain_verdicts_total",
            "Verdicts of the events stored through this server.",
            ["projection", "verdict", "reason"],
            registry=registry,
        )
        self.log_size = Gauge(
            "adminchain_log_size_events",
            "Events in the log.",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.lag = Gauge(
            "adminchain_projection_lag_events",
            "Events in the log the server's projections have not folded yet.",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.checkpoint_age = Gauge(
            "adminchain_seconds_since_last_checkpoint",
            "Seconds since this server last signed and stored a checkpoint (-1: never).",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.http_requests = Counter(
            "adminchain_http_requests_total",
            "HTTP requests, by route (path template), method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.subscriptions = Gauge(
            "adminchain_open_subscriptions",
            "Open /v1/subscribe streams.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once (label values here come from small fixed
        sets: routes, statuses, event types, verdicts)."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def count(self, metric: MetricWrapperBase, *labels: str, amount: float = 1) -> None:
        """`child(metric, *labels).inc(amount)`, at the end of the event loop's turn (at once
        outside an event loop)."""
        key = (metric, labels)
        counted = self._counted
        if not counted:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.child(metric, *labels).inc(amount)
                return
        counted[key] = counted.get(key, 0) + amount

    def flush(self) -> None:
        """Increment the counters by what `count` added up."""
        counted, self._counted = self._counted, {}
        for (metric, labels), amount in counted.items():
            self.child(metric, *labels).inc(amount)

    def bind(
        self,
        size: Callable[[], float],
        lag: Callable[[], float],
        checkpoint_age: Callable[[], float] | None,
    ) -> None:
        """Read the ledger gauges from these functions at every scrape (in multiprocess mode:
        once a second, from a thread, until `close`). `checkpoint_age` is None in a worker
        that publishes no checkpoints."""
        if not self.multiprocess:
            self.log_size.set_function(size)
            self.lag.set_function(lag)
            self.checkpoint_age.set_function(checkpoint_age or (lambda: -1.0))
            return
        gauges = [(self.log_size, size), (self.lag, lag)]
        if checkpoint_age is not None:
            gauges.append((self.checkpoint_age, checkpoint_age))

        def tick() -> None:
            while True:
                for gauge, read in gauges:
                    gauge.set(read())
                if self._stop.wait(TICK_SECONDS):
                    return

        threading.Thread(target=tick, name="adminchain-metrics", daemon=True).start()

    def close(self) -> None:
        """Stop setting the gauges (multiprocess mode)."""
        self._stop.set()

    def exposition(self) -> bytes:
        """The Prometheus text exposition: this process's registry, or every worker's."""
        self.flush()
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
