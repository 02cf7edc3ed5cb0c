"""Every metric the service exposes to operators: name, kind, labels, unit and the question it
answers. The front door (server.frontdoor.metrics) and the SageMaker endpoint
(server.sagemaker.metrics) create theirs from this table; docs/metrics.md, the dashboard
(docker/grafana/object2vec.json) and the autoscaling rule (docker/k8s/base) name them.

Names follow Prometheus' conventions (and TEI's `te_*`, Triton's `nv_*`): one prefix, the unit
last (`_seconds`, `_bytes`), `_total` on counters. Label values are bounded: outcomes are
contract.errors' kinds, never request or catalogue ids.

A histogram of the front door is published as Prometheus' classic histogram series
(`_bucket{le=...}`, `_sum`, `_count`) made of counters, not the Python backend's HISTOGRAM kind:
each call of that API is a round trip to tritonserver (about 21 us measured here, 2.51), and a
histogram's `observe` is one call per observation; counted in process and flushed as
increments, a second of traffic costs a few dozen calls whatever the request rate.
`histogram_quantile` reads either form.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.errors import KINDS
from contract.names import ENCODER_MODELS, PAIR_MODEL

PREFIX = "o2v_"

# Label values, all bounded
ANSWERED = "answered"
OUTCOMES = (ANSWERED, *(kind.name for kind in KINDS))
ASKED = ("embedding_in0", "embedding_in1", "pair_score", "neighbours")
NETWORKS = (*ENCODER_MODELS, PAIR_MODEL)
STAGES = ("parse", "plan", "networks", "neighbours", "format")
DIRECTIONS = ("in", "out")

SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
CALLS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 32)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    unit: str
    question: str
    buckets: tuple[float, ...] = ()


# On Triton's /metrics (port 8002), from every front door copy.
REQUESTS = Metric(
    "o2v_requests_total",
    "counter",
    ("outcome",),
    "requests",
    "How many requests did the front door answer, and which did it refuse and why "
    "(outcome: answered, or the error kind)?",
)
INSTANCES = Metric(
    "o2v_instances_total",
    "counter",
    ("asked", "outcome"),
    "instances",
    "What was asked (embeddings of in0, of in1, pair scores, neighbours), instance by "
    "instance, and how it ended (instances of a request refused before parsing are not "
    "known, so not counted)",
)
TOKENS = Metric(
    "o2v_tokens_total",
    "counter",
    ("network",),
    "tokens",
    "Real tokens sent to each network",
)
POSITIONS = Metric(
    "o2v_positions_total",
    "counter",
    ("network",),
    "positions",
    "Positions each network computed, padding and separators included: "
    "positions / tokens is the padding ratio",
)
BODY_BYTES = Metric(
    "o2v_body_bytes_total",
    "counter",
    ("direction",),
    "bytes",
    "Request bodies read (in) and answers written (out)",
)
REQUEST_DURATION = Metric(
    "o2v_request_duration_seconds",
    "histogram",
    (),
    "seconds",
    "How long the front door worked on a request, from its execute's start to its answer "
    "(Triton's queue before it: nv_inference_queue_duration_us)",
    SECONDS,
)
EXECUTE_DURATION = Metric(
    "o2v_execute_duration_seconds",
    "histogram",
    (),
    "seconds",
    "How long each execute (one batch of requests) took; its rate over copies is how busy "
    "the front door is (the autoscaling signal)",
    SECONDS,
)
STAGE_DURATION = Metric(
    "o2v_stage_duration_seconds",
    "histogram",
    ("stage",),
    "seconds",
    "Where an execute's time goes: parse, plan, networks, neighbours, format",
    SECONDS,
)
EXECUTE_CALLS = Metric(
    "o2v_execute_network_calls",
    "histogram",
    (),
    "calls",
    "How many network calls one execute made",
    CALLS,
)
CALL_ROWS = Metric(
    "o2v_network_call_rows",
    "histogram",
    ("network",),
    "rows",
    "How full each network call was (rows per call; _count is the calls)",
    ROWS,
)
DRAIN_REFUSALS = Metric(
    "o2v_drain_refusals_total",
    "counter",
    (),
    "requests",
    "Requests refused with 503 because a stop had begun (a client retries them elsewhere)",
)
COPIES = Metric(
    "o2v_front_door_copies",
    "gauge",
    (),
    "copies",
    "Front door copies loaded: the denominator of how busy the front door is",
)

FRONT_DOOR = (
    REQUESTS,
    INSTANCES,
    TOKENS,
    POSITIONS,
    BODY_BYTES,
    REQUEST_DURATION,
    EXECUTE_DURATION,
    STAGE_DURATION,
    EXECUTE_CALLS,
    CALL_ROWS,
    DRAIN_REFUSALS,
    COPIES,
)

# The SageMaker endpoint's own (SageMaker mode): GET /metrics on its port, followed by Triton's.
ROUTES = ("invocations", "ping", "execution-parameters", "metrics", "other")
LIMITS = ("head_bytes", "body_bytes", "read_timeout", "connections", "concurrency", "malformed")

ENDPOINT_REQUESTS = Metric(
    "o2v_endpoint_requests_total",
    "counter",
    ("route", "status"),
    "requests",
    "Answers the SageMaker endpoint sent, by route and HTTP status",
)
ENDPOINT_IN_FLIGHT = Metric(
    "o2v_endpoint_requests_in_flight",
    "gauge",
    (),
    "requests",
    "Invocations being answered now",
)
ENDPOINT_REFUSALS = Metric(
    "o2v_endpoint_refusals_total",
    "counter",
    ("limit",),
    "requests",
    "Requests refused over one of the endpoint's limits: head_bytes (431), body_bytes (413), "
    "read_timeout (408), connections, concurrency (503), malformed (400)",
)
UPSTREAM_DURATION = Metric(
    "o2v_endpoint_upstream_duration_seconds",
    "histogram",
    (),
    "seconds",
    "How long Triton took to answer an invocation forwarded to it",
    SECONDS,
)
UPSTREAM_TIMEOUTS = Metric(
    "o2v_endpoint_upstream_timeouts_total",
    "counter",
    (),
    "requests",
    "Invocations Triton did not answer in time (504)",
)
SLOW_PEERS = Metric(
    "o2v_endpoint_slow_peers_closed_total",
    "counter",
    (),
    "connections",
    "Connections aborted because the peer did not read its answer in time",
)

ENDPOINT = (
    ENDPOINT_REQUESTS,
    ENDPOINT_IN_FLIGHT,
    ENDPOINT_REFUSALS,
    UPSTREAM_DURATION,
    UPSTREAM_TIMEOUTS,
    SLOW_PEERS,
)

ALL = FRONT_DOOR + ENDPOINT
