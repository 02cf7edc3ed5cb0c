"""The front door's metrics (contract.metrics): counted in process, published on Triton's
/metrics by a flusher thread.

Why not one Python backend metrics call per event: each call is a round trip to tritonserver
(about 21 us here), a dozen per execute would cost a small request a sizeable share of its time.
So an execute fills a `Record` (dict additions, a few microseconds), hands it to the `Tally` under
one lock, and every `interval_s` the flusher turns what accumulated into increments: a few dozen
calls per interval whatever the traffic. What /metrics shows lags by at most `interval_s`.

Counters restart from zero when tritonserver restarts (the supervisor restarts it after a dead
stub): Prometheus' rate() and increase() treat a drop as a reset, so rates stay right.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterable

import numpy as np

from contract import metrics as m

_INF = float("inf")


def _le(bound: float) -> str:
    """A bucket's bound as Prometheus' clients write it."""
    return "+Inf" if bound == _INF else repr(float(bound))


class Record:
    """What one execute counted and observed."""

    __slots__ = ("counts", "observations")

    def __init__(self) -> None:
        self.counts: dict[tuple[m.Metric, tuple[str, ...]], float] = {}
        self.observations: list[tuple[m.Metric, tuple[str, ...], float, int]] = []

    def count(self, metric: m.Metric, labels: tuple[str, ...] = (), amount: float = 1) -> None:
        key = (metric, labels)
        self.counts[key] = self.counts.get(key, 0) + amount

    def observe(
        self, metric: m.Metric, value: float, labels: tuple[str, ...] = (), times: int = 1
    ) -> None:
        self.observations.append((metric, labels, value, times))


class _Buckets:
    __slots__ = ("counts", "sum", "count")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum, self.count = 0.0, 0


class Tally:
    """What every execute recorded since the last flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict = {}
        self._histograms: dict = {}

    def add(self, record: Record) -> None:
        with self._lock:
            counts = self._counts
            for key, amount in record.counts.items():
                counts[key] = counts.get(key, 0) + amount
            for metric, labels, value, times in record.observations:
                buckets = self._histograms.get((metric, labels))
                if buckets is None:
                    buckets = self._histograms[(metric, labels)] = _Buckets(len(metric.buckets) + 1)
                buckets.counts[bisect_left(metric.buckets, value)] += times
                buckets.sum += value * times
                buckets.count += times

    def take(self) -> Iterable[tuple[str, m.Metric, tuple[str, ...], tuple[str, ...], float]]:
        """What accumulated, as increments of the published series: (series name, metric,
        label names, label values, amount); the tally starts again from nothing."""
        with self._lock:
            counts, self._counts = self._counts, {}
            histograms, self._histograms = self._histograms, {}
        for (metric, labels), amount in counts.items():
            yield metric.name, metric, metric.labels, labels, amount
        for (metric, labels), buckets in histograms.items():
            names = (*metric.labels, "le")
            below = 0
            for bound, count in zip((*metric.buckets, _INF), buckets.counts, strict=True):
                below += count
                if below:
                    yield f"{metric.name}_bucket", metric, names, (*labels, _le(bound)), below
            yield f"{metric.name}_sum", metric, metric.labels, labels, buckets.sum
            yield f"{metric.name}_count", metric, metric.labels, labels, buckets.count


def series_of(metric: m.Metric, labels: tuple[str, ...] = ()) -> list[tuple]:
    """Every series of one metric's label values, at zero: published at load so that a rate
    has a starting point before the first event (and a dashboard shows 0, not 'no data')."""
    if metric.kind != "histogram":
        return [(metric.name, metric, metric.labels, labels)]
    names = (*metric.labels, "le")
    series = [
        (f"{metric.name}_bucket", metric, names, (*labels, _le(bound)))
        for bound in (*metric.buckets, _INF)
    ]
    suffixes = ("_sum", "_count")
    return series + [(metric.name + s, metric, metric.labels, labels) for s in suffixes]


class TritonSink:
    """Series on Triton's /metrics through the Python backend's metrics API (`pb_utils`)."""

    def __init__(self, pb_utils) -> None:
        self._pb = pb_utils
        self._families: dict = {}
        self._series: dict = {}

    def series(self, name: str, metric: m.Metric, names: tuple, values: tuple):
        key = (name, values)
        found = self._series.get(key)
        if found is None:
            family = self._families.get(name)
            if family is None:
                kinds = self._pb.MetricFamily
                family = self._families[name] = kinds(
                    name=name,
                    description=metric.question,
                    # a histogram's series are counters too (contract.metrics)
                    kind=kinds.GAUGE if metric.kind == "gauge" else kinds.COUNTER,
                )
            found = self._series[key] = family.Metric(labels=dict(zip(names, values, strict=True)))
        return found

    def add(self, name: str, metric: m.Metric, names: tuple, values: tuple, amount: float):
        self.series(name, metric, names, values).increment(amount)


class Publisher:
    """The tally flushed to a sink every `interval_s` by a daemon thread, and once at `stop`."""

    def __init__(self, sink: TritonSink, interval_s: float) -> None:
        self.tally, self.sink, self.interval_s = Tally(), sink, interval_s
        for metric, labels in _STARTING_SERIES:
            for series in series_of(metric, labels):
                sink.series(*series)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="o2v-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        for increment in self.tally.take():
            self.sink.add(*increment)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self.flush()


# Published at zero from the start: what the autoscaling rule and the dashboard's first panels read
_STARTING_SERIES = (
    *((m.REQUESTS, (outcome,)) for outcome in m.OUTCOMES),
    *((m.INSTANCES, (asked, m.ANSWERED)) for asked in m.ASKED),
    *((metric, (network,)) for metric in (m.TOKENS, m.POSITIONS) for network in m.NETWORKS),
    *((m.BODY_BYTES, (direction,)) for direction in m.DIRECTIONS),
    (m.EXECUTE_DURATION, ()),
    (m.REQUEST_DURATION, ()),
    (m.DRAIN_REFUSALS, ()),
    *((m.STAGE_DURATION, (stage,)) for stage in m.STAGES),
)


def asked(routes: np.ndarray, k: int) -> list[tuple[str, int]]:
    """(what was asked, how many instances) of one parsed request: its routes are
    server.frontdoor.payload's ENC0, ENC1, PAIR, in m.ASKED's order."""
    if k:
        return [(m.ASKED[3], len(routes))]
    counts = np.bincount(routes, minlength=3).tolist()
    return [(m.ASKED[route], n) for route, n in enumerate(counts) if n]


class NoRecord(Record):
    """Metrics off: nothing counted."""

    def count(self, metric, labels=(), amount=1) -> None:
        pass

    def observe(self, metric, value, labels=(), times=1) -> None:
        pass


class Stages:
    """An execute's stages timed one after the other."""

    __slots__ = ("record", "started", "last")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.started = self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.record.observe(m.STAGE_DURATION, now - self.last, (stage,))
        self.last = now

    def end(self, requests: int) -> None:
        elapsed = time.perf_counter() - self.started
        self.record.observe(m.EXECUTE_DURATION, elapsed)
        self.record.observe(m.REQUEST_DURATION, elapsed, times=requests)


def count_calls(record: Record, calls: list) -> None:
    """The planned network calls (server.frontdoor.dispatch.Call) of one execute."""
    record.observe(m.EXECUTE_CALLS, len(calls))
    for call in calls:
        labels = (call.network,)
        record.count(m.TOKENS, labels, call.tokens)
        record.count(m.POSITIONS, labels, call.positions)
        record.observe(m.CALL_ROWS, len(call), labels)
