"""The server's Prometheus metrics (SPEC-server §7.4), exposed by `prometheus-client`.

HTTP requests by route and status are counted by the access-log middleware
(`adminchain.server.access`); the ledger's own figures come from the handlers. Gauges that
describe the ledger (log size, projection lag, checkpoint age) are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """One registry of the ledger's metrics for one server."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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
        self.log_size = Gauge("adminchain_log_size_events", "Events in the log.", registry=registry)
        self.lag = Gauge(
            "adminchain_projection_lag_events",
            "Events in the log the server's projections have not folded yet.",
            registry=registry,
        )
        self.checkpoint_age = Gauge(
            "adminchain_seconds_since_last_checkpoint",
            "Seconds since this server last signed and stored a checkpoint (-1: never).",
            registry=registry,
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
        )

    def bind(
        self,
        size: Callable[[], float],
        lag: Callable[[], float],
        checkpoint_age: Callable[[], float],
    ) -> None:
        """Read the ledger gauges from these functions at every scrape."""
        self.log_size.set_function(size)
        self.lag.set_function(lag)
        self.checkpoint_age.set_function(checkpoint_age)
