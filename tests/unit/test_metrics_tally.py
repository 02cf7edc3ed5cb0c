"""The front door's metrics before Triton sees them: what an execute records becomes exactly
these increments (server.frontdoor.metrics), and every metric is documented."""

from __future__ import annotations

import threading

import numpy as np

from contract import metrics as m
from server.frontdoor.metrics import Record, Tally, asked, series_of
from server.frontdoor.payload import ENC0, ENC1, PAIR
from server.launcher.embedded import PROJECT_ROOT


def increments(tally: Tally) -> dict:
    return {(name, values): amount for name, _, _, values, amount in tally.take()}


def test_counts_add_up_and_a_take_starts_again_from_nothing():
    tally = Tally()
    for outcome in ("answered", "answered", "bad_request"):
        record = Record()
        record.count(m.REQUESTS, (outcome,))
        record.count(m.TOKENS, ("enc0",), 7)
        tally.add(record)
    got = increments(tally)
    assert got[("o2v_requests_total", ("answered",))] == 2
    assert got[("o2v_requests_total", ("bad_request",))] == 1
    assert got[("o2v_tokens_total", ("enc0",))] == 21
    assert increments(tally) == {}


def test_a_histogram_becomes_cumulative_buckets_a_sum_and_a_count():
    tally, record = Tally(), Record()
    record.observe(m.EXECUTE_DURATION, 0.003)  # in le=0.005 and above
    record.observe(m.EXECUTE_DURATION, 0.005)  # on a bound: in it (le means <=)
    record.observe(m.EXECUTE_DURATION, 100.0, times=3)  # above every bound: +Inf only
    tally.add(record)
    got = increments(tally)
    bucket = "o2v_execute_duration_seconds_bucket"
    assert (bucket, ("0.0025",)) not in got  # nothing at or below: no increment at all
    assert got[(bucket, ("0.005",))] == 2
    assert got[(bucket, ("10.0",))] == 2
    assert got[(bucket, ("+Inf",))] == 5
    assert got[("o2v_execute_duration_seconds_count", ())] == 5
    assert got[("o2v_execute_duration_seconds_sum", ())] == 0.008 + 300


def test_records_from_many_threads_are_all_counted():
    tally = Tally()

    def work():
        for _ in range(1000):
            record = Record()
            record.count(m.REQUESTS, ("answered",))
            record.observe(m.REQUEST_DURATION, 0.001)
            tally.add(record)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    taken = []
    while any(t.is_alive() for t in threads):
        taken.append(increments(tally))
    for thread in threads:
        thread.join()
    taken.append(increments(tally))
    assert sum(t.get(("o2v_requests_total", ("answered",)), 0) for t in taken) == 4000
    count = ("o2v_request_duration_seconds_count", ())
    assert sum(t.get(count, 0) for t in taken) == 4000


def test_every_series_of_a_histogram_is_published_from_the_start():
    names = [name for name, *_ in series_of(m.STAGE_DURATION, ("parse",))]
    assert names.count("o2v_stage_duration_seconds_bucket") == len(m.SECONDS) + 1
    assert names[-2:] == ["o2v_stage_duration_seconds_sum", "o2v_stage_duration_seconds_count"]


def test_what_was_asked_is_told_by_the_routes():
    routes = np.array([ENC0, ENC1, ENC1, PAIR], dtype=np.int8)
    assert asked(routes, 0) == [("embedding_in0", 1), ("embedding_in1", 2), ("pair_score", 1)]
    assert asked(np.array([ENC0, ENC0], dtype=np.int8), 5) == [("neighbours", 2)]


def test_every_metric_is_documented_with_its_labels():
    text = (PROJECT_ROOT / "docs" / "metrics.md").read_text()
    for metric in m.ALL:
        assert f"`{metric.name}`" in text, metric.name
        for label in metric.labels:
            assert f"`{label}`" in text, (metric.name, label)
