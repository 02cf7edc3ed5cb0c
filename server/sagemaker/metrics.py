"""The SageMaker endpoint's metrics (contract.metrics' ENDPOINT), answered on its own port at
GET /metrics, followed by Triton's (whose ports stay on loopback in SageMaker mode): one scrape
gives the whole pod.

prometheus_client keeps the counts and writes the text format: a well-kept library, and what
it costs an invocation (four label lookups and increments, about 4 us measured here) is small
beside the invocation itself.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from contract import metrics as m

prometheus_client.disable_created_metrics()  # no `_created` series: Triton writes none either

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
TRITON_TIMEOUT_S = 2.0


def _make(kind, metric: m.Metric, registry: CollectorRegistry, **extra):
    return kind(metric.name, metric.question, metric.labels, registry=registry, unit="", **extra)


class EndpointMetrics:
    """The endpoint's counts; the HTTP server (server.sagemaker.http1) reports to it as its
    Observer, the adapter around each invocation."""

    def __init__(
        self,
        in_flight: Callable[[], int],
        route_of: Callable[[str], str | None],
        triton_metrics_url: str | None = None,
    ):
        self.route_of = route_of
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = _make(Counter, m.ENDPOINT_REQUESTS, self.registry)
        self.refusals = _make(Counter, m.ENDPOINT_REFUSALS, self.registry)
        self.upstream = _make(
            Histogram, m.UPSTREAM_DURATION, self.registry, buckets=m.UPSTREAM_DURATION.buckets
        )
        self.upstream_timeouts = _make(Counter, m.UPSTREAM_TIMEOUTS, self.registry)
        self.slow_peers = _make(Counter, m.SLOW_PEERS, self.registry)
        in_flight_gauge = _make(Gauge, m.ENDPOINT_IN_FLIGHT, self.registry)
        in_flight_gauge.set_function(in_flight)
        for limit in m.LIMITS:  # at zero from the start: a rate needs a first sample
            self.refusals.labels(limit)
        self.triton_metrics_url = triton_metrics_url

    # http1.Observer
    def sent(self, path: str | None, status: int) -> None:
        route = (self.route_of(path) if path is not None else None) or "other"
        self.requests.labels(route, str(status)).inc()

    def refused(self, limit: str) -> None:
        self.refusals.labels(limit).inc()

    def slow_peer(self) -> None:
        self.slow_peers.inc()

    async def exposition(self) -> bytes:
        """The endpoint's metrics, then Triton's (or a comment saying why they are missing)."""
        own = prometheus_client.generate_latest(self.registry)
        if self.triton_metrics_url is None:
            return own
        try:
            triton = await asyncio.to_thread(self._triton)
        except OSError as error:
            triton = f"# Triton's metrics unavailable: {error}\n".encode()
        return own + triton

    def _triton(self) -> bytes:
        with urllib.request.urlopen(self.triton_metrics_url, timeout=TRITON_TIMEOUT_S) as answer:
            return answer.read()
