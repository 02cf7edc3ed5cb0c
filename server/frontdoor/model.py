"""The front door: JSON / JSON Lines bodies in, Object2Vec answers out.

The UINT8 input `body` holds the request's body as raw bytes (a raw HTTP body reaches it too; a
request may carry several, one per zero-padded row: contract/body.py); the request parameters
`content_type` and `accept` carry the media types. Parsing and formatting live in
`server.frontdoor.payload`, routing and batching in `server.frontdoor.dispatch`; this file only
moves tensors. The networks run one of two ways, as the config's `networks` parameter says
(server.launcher.host decides it for the machine): `bls`, calls to the enc0 / enc1 / pair models, or
`in_process`, the same ONNX files run by ONNX Runtime in this process.

`execute` is synchronous and so are its BLS calls: the Python backend runs one `execute` of a
non-decoupled model at a time even when it is a coroutine, and the coroutine path costs more
per request (docs/performance.md). The price: when one batch needs several networks
(embeddings and pairs together), their calls run one after the other.

Every request is judged alone: whatever goes wrong with one becomes that request's error (400
when the caller is at fault, 500 with a one-line message when we are), and the others of the
same `execute` are answered.
"""

import contextvars
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from contract import errors
from contract import metrics as m
from contract.body import decode_bodies
from contract.facts import Facts
from contract.names import BODY_INPUT, RESPONSE_OUTPUT
from contract.neighbours import (
    DEFAULT_MAX_NEIGHBOUR_SCORES,
    DEFAULT_MAX_NEIGHBOURS,
    NEIGHBOURS_MODEL,
    QUERY_INPUT,
    search_outputs,
)
from server.common.drain import IN_FLIGHT_PARAMETER, Gate, refusals
from server.common.memory import RELEASE_ABOVE_BYTES, quiet_collector, release_memory
from server.common.tensors import read_tensor
from server.frontdoor.dispatch import measure_costs, plan, run_calls, scatter
from server.frontdoor.metrics import (
    NoRecord,
    Publisher,
    Record,
    Stages,
    TritonSink,
    asked,
    count_calls,
)
from server.frontdoor.neighbours import Index, search
from server.frontdoor.payload import (
    Limits,
    ParsedRequest,
    format_response,
    parse_bodies,
    request_options,
)

# The trace of the execute's first request: a call serves many requests and can have one
# parent, so with tracing on (O2V_TRACE_MODE) the network calls show under that request.
_TRACE: contextvars.ContextVar = contextvars.ContextVar("trace", default=None)


def _bls_outputs(model: str, feed: dict, outputs: tuple[str, ...]) -> list[np.ndarray]:
    """One BLS call to an ONNX network."""
    trace = _TRACE.get()
    response = pb_utils.InferenceRequest(
        model_name=model,
        inputs=[pb_utils.Tensor(name, array) for name, array in feed.items()],
        requested_output_names=list(outputs),
        # served while a stop drains (server/common/drain.py)
        parameters={IN_FLIGHT_PARAMETER: True},
        **({"trace": trace} if trace is not None else {}),
    ).exec()
    if response.has_error():
        raise RuntimeError(f"{model}: {response.error().message()}")
    return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs]


def _bls(model: str, feed: dict, output: str) -> np.ndarray:
    """A server.frontdoor.dispatch Runner over BLS."""
    return _bls_outputs(model, feed, (output,))[0]


def _bls_search(queries: np.ndarray, deep: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A server.frontdoor.neighbours Searcher over BLS."""
    outputs = search_outputs(deep)
    return tuple(_bls_outputs(NEIGHBOURS_MODEL, {QUERY_INPUT: queries}, outputs))


def _in_process(repository: Path, params: dict):
    """The networks run by ONNX Runtime in this process (a server.frontdoor.dispatch Runner); None
    (so BLS) where this Python has no onnxruntime, as in the NGC image, whose configs a copied
    repository may carry."""
    try:
        from server.common.onnx_sessions import network_runner
    except ImportError as error:
        pb_utils.Logger.log_warn(f"object2vec: networks in_process unavailable ({error}): BLS")
        return None
    threads = [int(params.get(k, 0)) for k in ("intra_op_thread_count", "inter_op_thread_count")]
    return network_runner(repository, *threads, params.get("spinning", "auto"))


def _bodies(request) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, BODY_INPUT)
    return read_tensor(tensor, BODY_INPUT, rank=2)  # [bodies, longest]


def _service_error(error: BaseException) -> errors.ServiceError:
    if isinstance(error, errors.ServiceError):
        return error
    # Ours, not the caller's: one line for the caller, the details in the server's log.
    pb_utils.Logger.log_error(f"object2vec: {type(error).__name__}: {error}")
    message = f"internal error: {type(error).__name__}: {str(error)[:200]}"
    return errors.ServiceError(errors.SERVER_FAULT, message)


def _failure(error: BaseException, record: Record) -> "pb_utils.InferenceResponse":
    """The one place a front door error becomes Triton's."""
    error = _service_error(error)
    record.count(m.REQUESTS, (error.kind.name,))
    return pb_utils.InferenceResponse(error=errors.triton_error(pb_utils, error))


def _outcome(record: Record, request: ParsedRequest, outcome: str) -> None:
    """A parsed request's instances, by what they asked, and how they ended."""
    for what, count in asked(request.routes, request.k):
        record.count(m.INSTANCES, (what, outcome), count)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        facts_dir = Path(args["model_repository"]).parent
        facts = Facts.load(facts_dir)
        # A stale index (built from another enc1) stops the load: wrong neighbours are worse.
        self.index = Index.load(facts_dir)
        catalogue = self.index.limits() if self.index else None
        self.limits = Limits.of(
            facts,
            int(params["max_body_bytes"]),
            max_instances=int(params["max_instances"]),
            catalogue=catalogue,
            max_neighbours=int(params.get("max_neighbours", DEFAULT_MAX_NEIGHBOURS)),
            max_neighbour_scores=int(
                params.get("max_neighbour_scores", DEFAULT_MAX_NEIGHBOUR_SCORES)
            ),
            scores_per_query=self.index.catalogue.scores_per_query if self.index else 0,
        )
        self.max_batch_size = int(params["network_max_batch_size"])
        self.max_batch_tokens = int(params.get("network_max_batch_tokens", 0)) or None
        self.run, self.costs = _bls, None
        if params.get("networks") == "in_process":
            self.run = _in_process(facts_dir, params) or _bls
        # the catalogue searched where the networks run
        self.search = getattr(self.run, "search", None) or _bls_search
        # encoders with a flat form (contract.flat) in process: their sequences unpadded
        self.flat = getattr(self.run, "flat", None)
        if self.run is not _bls and params.get("call_cutting", "measured") == "measured":
            self.costs = measure_costs(self.run, skip=self.flat or ())
            for model, cost in self.costs.items():
                pb_utils.Logger.log_info(f"object2vec: a call to {model} costs {cost}")
        self.gate = Gate.from_env(args["model_instance_name"])
        # only calls to Triton carry a trace: in process, none is looked up
        self.calls_triton = self.run is _bls or self.search is _bls_search
        # metrics on Triton's /metrics (server.frontdoor.metrics); interval 0: none
        interval = float(params.get("metrics_interval_s", 0))
        self.publisher = Publisher(TritonSink(pb_utils), interval) if interval > 0 else None
        if self.publisher:
            self.publisher.sink.add(*_COPIES, 1)
        quiet_collector()

    def finalize(self) -> None:
        if self.publisher:
            self.publisher.sink.add(*_COPIES, -1)
            self.publisher.stop()

    def execute(self, requests: list) -> list:
        record = Record() if self.publisher else _NOTHING
        with self.gate.busy():
            if self.gate.refusing():  # a stop began: retry elsewhere (server/common/drain.py)
                record.count(m.DRAIN_REFUSALS, (), len(requests))
                record.count(m.REQUESTS, (errors.OVERLOADED.name,), len(requests))
                responses = refusals(pb_utils, len(requests))
            else:
                responses = self._execute(requests, record)
                if self.received > RELEASE_ABOVE_BYTES:
                    release_memory()  # the parsed instances of a big request are gone now
        if self.publisher:
            self.publisher.tally.add(record)
        return responses

    def _execute(self, requests: list, record: Record) -> list:
        stages = Stages(record)
        if self.calls_triton:
            _TRACE.set(requests[0].trace())
        responses: list = [None] * len(requests)
        self.received = 0
        parsed, spans = [], []  # spans: (request index, its first parsed body, body count)
        for index, request in enumerate(requests):
            try:
                bodies = _bodies(request)
                self.received += bodies.nbytes
                decoded = decode_bodies(bodies)
                record.count(m.BODY_BYTES, ("in",), sum(map(len, decoded)))
                content_type, accept = request_options(request.parameters())
                mine = parse_bodies(decoded, content_type, accept, self.limits)
            except Exception as error:  # noqa: BLE001 - this request's error, no one else's
                responses[index] = _failure(error, record)
                continue
            spans.append((index, len(parsed), len(mine)))
            parsed.extend(mine)
        stages.lap("parse")
        answers = self._answers(parsed, stages, record) if parsed else []
        for index, first, count in spans:
            mine = answers[first : first + count]
            failed = next((a for a in mine if isinstance(a, BaseException)), None)
            try:
                if failed is not None:
                    raise failed
                rows = [
                    [format_response(a, p.accept)]
                    for a, p in zip(mine, parsed[first : first + count], strict=True)
                ]
                output = pb_utils.Tensor(RESPONSE_OUTPUT, np.array(rows, dtype=np.object_))
                responses[index] = pb_utils.InferenceResponse([output])
            except Exception as error:  # noqa: BLE001
                error = _service_error(error)
                responses[index] = _failure(error, record)
                outcome = error.kind.name
            else:
                outcome = m.ANSWERED
                record.count(m.REQUESTS, (outcome,))
                record.count(m.BODY_BYTES, ("out",), sum(len(row[0]) for row in rows))
            for request in parsed[first : first + count]:
                _outcome(record, request, outcome)
        stages.lap("format")
        stages.end(len(requests))
        return responses

    def _answers(self, parsed: list[ParsedRequest], stages: Stages, record: Record) -> list:
        """Each parsed request's answers, or the error that failed it."""
        try:
            calls = plan(parsed, self.max_batch_size, self.costs, self.max_batch_tokens, self.flat)
            stages.lap("plan")
            count_calls(record, calls)
            answers = scatter(parsed, *run_calls(calls, self.run))
            stages.lap("networks")
            if self.index is not None and any(p.k for p in parsed):
                answers = search(parsed, answers, self.index, self.search, self.max_batch_size)
                stages.lap("neighbours")
            return answers
        except Exception as error:  # noqa: BLE001 - a fault of ours: the parsed ones get it
            return [error] * len(parsed)


_NOTHING = NoRecord()
_COPIES = (m.COPIES.name, m.COPIES, (), ())
