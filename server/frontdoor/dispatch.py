"""Routing the instances of many requests to the networks, and cutting them into calls.

An instance with only `in0` goes to enc0, only `in1` to enc1, both to the pair network. All
instances of all requests of one front door `execute` that go to the same network are gathered
(server.frontdoor.ragged: one flat array per input), cut into calls where the network's measured
costs say so (server.frontdoor.cutting; otherwise one call, split only above the row and token
limits), padded (or, for an encoder with a flat form, laid back to back: contract.flat), and the
answers are scattered back to their requests in order. Padding never changes an answer (the encoders
mask it), so an instance's answer does not depend on its batch-mates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace

import numpy as np

from contract.flat import flat_layout, flat_name
from contract.names import (
    ENCODER_INPUT,
    ENCODER_MODELS,
    ENCODER_OUTPUT,
    PAIR_INPUTS,
    PAIR_MODEL,
    PAIR_OUTPUT,
)
from server.frontdoor.answers import Answers
from server.frontdoor.cutting import CallCost, cut, measure
from server.frontdoor.payload import ENC0, ENC1, PAIR, ParsedRequest, side_rows
from server.frontdoor.ragged import EMPTY, Ragged

# (model name, {input name: array}, output name) -> output array [N, ...]
Runner = Callable[[str, dict[str, np.ndarray], str], np.ndarray]


@dataclass(frozen=True)
class _Route:
    model: str
    inputs: tuple[str, ...]
    output: str
    key: str  # the answer's key: embeddings | scores
    route: int  # server.frontdoor.payload's ENC0 | ENC1 | PAIR
    sides: tuple[int, ...]  # the request side that feeds each input


_ROUTES = (
    _Route(ENCODER_MODELS[0], (ENCODER_INPUT,), ENCODER_OUTPUT, "embeddings", ENC0, (0,)),
    _Route(ENCODER_MODELS[1], (ENCODER_INPUT,), ENCODER_OUTPUT, "embeddings", ENC1, (1,)),
    _Route(PAIR_MODEL, PAIR_INPUTS, PAIR_OUTPUT, "scores", PAIR, (0, 1)),
)


@dataclass
class Call:
    """One call to a network: its inputs, and whose answers the output rows are."""

    model: str
    feed: dict[str, np.ndarray]
    output: str
    key: str
    owners: np.ndarray  # int64 per output row: the request it answers
    instances: np.ndarray  # int64 per output row: which instance of that request
    separator: int = 0  # > 0: the encoder's flat form (contract.flat) with this separator
    sequences: Ragged | None = None  # a flat call's sequences, to cut it per request
    network: str = ""  # the network it runs: enc0 | enc1 | pair (for the metrics)
    tokens: int = 0  # real tokens sent
    positions: int = 0  # positions computed: padding and separators included

    @property
    def members(self) -> list[tuple[int, int]]:
        """(request, instance) per output row."""
        return list(zip(self.owners.tolist(), self.instances.tolist(), strict=True))

    def __len__(self) -> int:
        return len(self.owners)


def _gather(requests: list[ParsedRequest]):
    """Every request's instances as one: (owner request, instance index, routes, both sides),
    a few NumPy calls whatever the number of requests."""
    if len(requests) == 1:
        request = requests[0]
        count = len(request)
        return np.zeros(count, dtype=np.int64), np.arange(count), request.routes, request.sides
    counts = np.array([len(r) for r in requests])
    owners = np.repeat(np.arange(len(requests)), counts)
    indexes = np.arange(len(owners)) - np.repeat(np.cumsum(counts) - counts, counts)
    routes = np.concatenate([r.routes for r in requests])
    sides = tuple(Ragged.concat([r.sides[s] for r in requests]) for s in (0, 1))
    return owners, indexes, routes, sides


def _route_columns(route: _Route, routes: np.ndarray, count: int, sides: tuple[Ragged, Ragged]):
    """(the route's `count` instances, one Ragged per input)."""
    mine = np.arange(count) if count == len(routes) else np.flatnonzero(routes == route.route)
    columns = []
    for side in route.sides:
        if count == len(sides[side]):  # every sequence of the side: in order already
            columns.append(sides[side])
        else:
            columns.append(sides[side].take(side_rows(routes, side)[mine]))
    return mine, columns


# What a call to each network costs on this host (server.frontdoor.cutting); None: not measured.
Costs = Mapping[str, CallCost] | None


def _flat_call(route: _Route, column: Ragged, separator: int, owners, instances) -> Call:
    feed = flat_layout(column.ids, column.lengths, separator)
    tokens = int(column.lengths.sum())
    return Call(
        flat_name(route.model),
        feed,
        route.output,
        route.key,
        owners,
        instances,
        separator,
        column,
        network=route.model,
        tokens=tokens,
        positions=tokens + separator * len(column),
    )


def plan(
    requests: list[ParsedRequest],
    max_batch_size: int,
    costs: Costs = None,
    max_batch_tokens: int | None = None,
    flat: Mapping[str, int] | None = None,
) -> list[Call]:
    """The calls that answer every instance: one per network, split above max_batch_size rows
    or max_batch_tokens padded tokens, and cut by length where a network's measured costs say
    the padding saved pays for the call. An encoder with a flat form (`flat`: its separator)
    gets its sequences back to back instead, nothing padded, cut only by the two limits.
    """
    calls = []
    owners, indexes, routes, sides = _gather(requests)
    counts = np.bincount(routes, minlength=len(_ROUTES)).tolist()
    for route in _ROUTES:
        count = counts[route.route]
        if not count:
            continue
        mine, columns = _route_columns(route, routes, count, sides)
        request_of, instance_of = owners[mine], indexes[mine]
        separator = (flat or {}).get(route.model, 0)
        if separator:
            widths = columns[0].lengths + separator  # a row's positions in the flat row
            for rows in _flat_rows(widths, max_batch_size, max_batch_tokens):
                column = columns[0] if len(rows) == count else columns[0].take(rows)
                whose = _members(request_of, instance_of, rows, len(rows) == count)
                calls.append(_flat_call(route, column, separator, *whose))
            continue
        lengths = np.stack([c.lengths for c in columns], axis=1)
        cost = costs.get(route.model) if costs else None
        for rows in cut(lengths, max_batch_size, cost, max_batch_tokens):
            # Tokens were truncated at parse time; padding only fills up to the longest. The rows of
            # a call are in ascending order (server.frontdoor.cutting): all of them, in order.
            whole = len(rows) == count
            taken = [column if whole else column.take(rows) for column in columns]
            feed = {name: column.padded() for name, column in zip(route.inputs, taken, strict=True)}
            whose = _members(request_of, instance_of, rows, whole)
            tokens = sum(int(column.lengths.sum()) for column in taken)
            positions = sum(array.size for array in feed.values())
            calls.append(
                Call(
                    route.model,
                    feed,
                    route.output,
                    route.key,
                    *whose,
                    network=route.model,
                    tokens=tokens,
                    positions=positions,
                )
            )
    return calls


def _members(request_of: np.ndarray, instance_of: np.ndarray, rows: np.ndarray, whole: bool):
    """(owners, instances) of a call's rows."""
    return (request_of, instance_of) if whole else (request_of[rows], instance_of[rows])


def _flat_rows(widths: np.ndarray, max_rows: int, max_tokens: int | None) -> list[np.ndarray]:
    """Consecutive rows, each run under max_rows rows and max_tokens positions in all (a run
    of one row may pass it)."""
    if max_tokens is None or int(widths.sum()) <= max_tokens:
        rows = np.arange(len(widths))
        return [rows[i : i + max_rows] for i in range(0, len(rows), max_rows)]
    ends = np.cumsum(widths)
    runs, first = [], 0
    while first < len(widths):
        base = ends[first - 1] if first else 0
        last = int(np.searchsorted(ends, base + max_tokens, side="right"))
        last = min(max(last, first + 1), first + max_rows, len(widths))
        runs.append(np.arange(first, last))
        first = last
    return runs


def scatter(
    requests: list[ParsedRequest], calls: list[Call], outputs: list[np.ndarray | BaseException]
) -> list[Answers | BaseException]:
    """For each request, its answers in instance order.

    A call that failed (its output is the exception) fails only the requests that had an
    instance in it; every other request still gets its answers.
    """
    answers: list = [[] for _ in requests]  # per request: (key, instances, rows) blocks
    for call, output in zip(calls, outputs, strict=True):
        if isinstance(output, BaseException):
            for r in set(call.owners.tolist()):
                answers[r] = output
            continue
        if len(output) != len(call):
            raise ValueError(f"{call.model} answered {len(output)} rows for {len(call)}")
        # Runs of rows of one request (a call's rows come request by request): slices, views
        owners = call.owners
        cuts = np.flatnonzero(owners[1:] != owners[:-1]) + 1
        starts, ends = [0, *cuts.tolist()], [*cuts.tolist(), len(owners)]
        for r, start, end in zip(owners[starts].tolist(), starts, ends, strict=True):
            if not isinstance(answers[r], BaseException):
                answers[r].append((call.key, call.instances[start:end], output[start:end]))
    return [
        blocks if isinstance(blocks, BaseException) else Answers.of(blocks, len(request))
        for blocks, request in zip(answers, requests, strict=True)
    ]


def by_request(call: Call) -> list[Call]:
    """The call cut into one call per request it serves (same rows, same order)."""
    parts = []
    for r in dict.fromkeys(call.owners.tolist()):  # the requests, in order of first row
        mine = np.flatnonzero(call.owners == r)
        members = {"owners": call.owners[mine], "instances": call.instances[mine]}
        if call.sequences is not None:  # a flat call: its layout rebuilt for these rows
            sequences = call.sequences.take(mine)
            feed = flat_layout(sequences.ids, sequences.lengths, call.separator)
            parts.append(replace(call, feed=feed, sequences=sequences, **members))
        else:
            feed = {name: array[mine] for name, array in call.feed.items()}
            parts.append(replace(call, feed=feed, **members))
    return parts


def _attempt(run: Runner, call: Call) -> np.ndarray | BaseException:
    try:
        return run(call.model, call.feed, call.output)
    except Exception as error:  # noqa: BLE001 - the caller decides whose error it is
        return error


def run_calls(
    calls: list[Call], run: Runner
) -> tuple[list[Call], list[np.ndarray | BaseException]]:
    """Each call in turn; a call that failed and served several requests runs again once per
    request, so one request's fault (say, an input the network rejects) fails that request
    alone. Returns the calls and outputs to scatter."""
    kept_calls, kept_outputs = [], []
    for call in calls:
        output = _attempt(run, call)
        parts = by_request(call) if isinstance(output, BaseException) else [call]
        if len(parts) == 1:
            kept_calls.append(call)
            kept_outputs.append(output)
            continue
        for part in parts:
            kept_calls.append(part)
            kept_outputs.append(_attempt(run, part))
    return kept_calls, kept_outputs


def measure_costs(
    run: Runner, width: int = 32, rounds: int = 3, skip: Collection[str] = ()
) -> dict[str, CallCost]:
    """Each network's call cost on this host, through `run` and the front door's own work
    around a call (plan, scatter): the lowest of `rounds` measurements taken in turn, since a
    busy host only ever adds to a call. `skip`: networks
    whose calls are never cut (the encoders with flat forms)."""

    def call_for(route: _Route, rows: int, tokens: int):
        # `tokens` padded positions a row, shared between the route's inputs
        shape = (rows, max(tokens // len(route.inputs), 1))
        side = Ragged(np.ones(shape[0] * shape[1], dtype=np.int64), np.full(rows, shape[1]))
        sides = tuple(side if s in route.sides else EMPTY for s in (0, 1))
        request = ParsedRequest(np.full(rows, route.route, dtype=np.int8), sides, "")
        return lambda: scatter([request], *run_calls(plan([request], rows), run))

    padded = [route for route in _ROUTES if route.model not in skip]
    found: dict[str, list[CallCost]] = {route.model: [] for route in padded}
    for _ in range(rounds):
        for route in padded:
            found[route.model].append(measure(functools.partial(call_for, route), width))
    return {
        model: CallCost(min(c.call_s for c in costs), min(c.token_s for c in costs))
        for model, costs in found.items()
    }


def dispatch(
    requests: list[ParsedRequest],
    run: Runner,
    max_batch_size: int,
    costs: Costs = None,
    max_batch_tokens: int | None = None,
    flat: Mapping[str, int] | None = None,
) -> list[Answers | BaseException]:
    """plan, run, scatter: the synchronous path (the front door in process, peers, tests)."""
    calls = plan(requests, max_batch_size, costs, max_batch_tokens, flat)
    return scatter(requests, *run_calls(calls, run))
