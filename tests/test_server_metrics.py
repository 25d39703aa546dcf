"""The server's counters: what the handlers count in one turn of the event loop is added to the
Prometheus counters once, at the end of that turn (and before any exposition)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from adminchain.server.metrics import Metrics


def _value(metrics: Metrics, outcome: str) -> float:
    value: float = metrics.registry.get_sample_value(
        "adminchain_append_requests_total", {"outcome": outcome}
    ) or 0.0
    return value


def test_counts_of_one_turn_are_added_at_its_end() -> None:
    metrics = Metrics(CollectorRegistry())

    async def run() -> tuple[float, float]:
        for _ in range(3):
            metrics.count(metrics.append_requests, "ok")
        metrics.count(metrics.append_requests, "refused", amount=2)
        during = _value(metrics, "ok")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return during, _value(metrics, "ok")

    during, after = asyncio.run(run())
    assert (during, after) == (0.0, 3.0)
    assert _value(metrics, "refused") == 2.0


def test_an_exposition_shows_what_was_counted_so_far() -> None:
    metrics = Metrics(CollectorRegistry())

    async def run() -> bytes:
        metrics.count(metrics.append_requests, "ok")
        return metrics.exposition()

    assert b'adminchain_append_requests_total{outcome="ok"} 1.0' in asyncio.run(run())
    metrics.count(metrics.append_requests, "ok")  # outside an event loop: at once
    assert _value(metrics, "ok") == 2.0
