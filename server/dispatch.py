"""Routing the instances of many requests to the networks, one call per network.

An instance with only `in0` goes to enc0, only `in1` to enc1, both to the pair network. All
instances of all requests of one front door `execute` that go to the same network are padded
once into one array and sent in one call (split only above the network's max batch size), and
the answers are scattered back to their requests in order. Padding never changes an answer
(the encoders mask it), so an instance's answer does not depend on its batch-mates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from contract.names import (
    ENCODER_INPUT,
    ENCODER_MODELS,
    ENCODER_OUTPUT,
    PAIR_INPUTS,
    PAIR_MODEL,
    PAIR_OUTPUT,
)
from contract.padding import pad
from server.payload import Instance, ParsedRequest

# (model name, {input name: array}, output name) -> output array [N, ...]
Runner = Callable[[str, dict[str, np.ndarray], str], np.ndarray]


@dataclass
class _Route:
    model: str
    inputs: tuple[str, ...]
    output: str
    key: str  # the answer's key: embeddings | scores
    members: list[tuple[int, int]] = field(default_factory=list)  # (request, instance)
    tokens: list[list[np.ndarray]] = field(default_factory=list)  # per input

    def add(self, where: tuple[int, int], sequences: list[np.ndarray]) -> None:
        self.members.append(where)
        for column, sequence in zip(self.tokens, sequences, strict=True):
            column.append(sequence)


def _routes() -> dict[str, _Route]:
    return {
        "enc0": _Route(ENCODER_MODELS[0], (ENCODER_INPUT,), ENCODER_OUTPUT, "embeddings", [], [[]]),
        "enc1": _Route(ENCODER_MODELS[1], (ENCODER_INPUT,), ENCODER_OUTPUT, "embeddings", [], [[]]),
        "pair": _Route(PAIR_MODEL, PAIR_INPUTS, PAIR_OUTPUT, "scores", [], [[], []]),
    }


def _route_of(instance: Instance) -> tuple[str, list[np.ndarray]]:
    if instance.in0 is not None and instance.in1 is not None:
        return "pair", [instance.in0, instance.in1]
    if instance.in0 is not None:
        return "enc0", [instance.in0]
    return "enc1", [instance.in1]


@dataclass
class Call:
    """One call to a network: its inputs, and whose answers the output rows are."""

    model: str
    feed: dict[str, np.ndarray]
    output: str
    key: str
    members: list[tuple[int, int]]  # (request, instance) per output row


def _groups(route: _Route, max_batch_size: int, max_padding_ratio: float) -> list[list[int]]:
    """Which rows of a route go together: one group, unless a limit says to split.

    With `max_padding_ratio` > 0, rows are sorted by length and cut wherever a group's padded
    size would exceed that multiple of its real tokens: on a CPU, computing padding costs as
    much as computing tokens.
    """
    rows = list(range(len(route.members)))
    if max_padding_ratio <= 0:
        return [rows[i : i + max_batch_size] for i in range(0, len(rows), max_batch_size)]
    lengths = np.array([[len(seq) for seq in column] for column in route.tokens]).T  # [N, inputs]
    rows.sort(key=lambda row: int(lengths[row].sum()))
    groups: list[list[int]] = []
    group: list[int] = []
    for row in rows:
        grown = group + [row]
        padded = len(grown) * lengths[grown].max(axis=0).sum()
        if group and (
            len(grown) > max_batch_size or padded > max_padding_ratio * lengths[grown].sum()
        ):
            groups.append(group)
            grown = [row]
        group = grown
    return groups + ([group] if group else [])


def plan(
    requests: list[ParsedRequest], max_batch_size: int, max_padding_ratio: float = 0.0
) -> list[Call]:
    """The calls that answer every instance: one per network, split above max_batch_size.

    `max_padding_ratio` > 0 also splits a network's instances into length groups (see _groups).
    """
    routes = _routes()
    for r, request in enumerate(requests):
        for i, instance in enumerate(request.instances):
            name, sequences = _route_of(instance)
            routes[name].add((r, i), sequences)
    calls = []
    for route in routes.values():
        for rows in _groups(route, max_batch_size, max_padding_ratio):
            # Tokens were truncated at parse time; pad only fills up to the longest.
            feed = {
                name: pad([column[row] for row in rows], np.iinfo(np.int64).max)
                for name, column in zip(route.inputs, route.tokens, strict=True)
            }
            calls.append(
                Call(
                    route.model, feed, route.output, route.key, [route.members[row] for row in rows]
                )
            )
    return calls


def scatter(
    requests: list[ParsedRequest], calls: list[Call], outputs: list[np.ndarray | BaseException]
) -> list[list[tuple[str, np.ndarray]] | BaseException]:
    """For each request, its answers in instance order, as (key, vector) pairs.

    A call that failed (its output is the exception) fails only the requests that had an
    instance in it; every other request still gets its answers.
    """
    answers: list = [[None] * len(request.instances) for request in requests]
    for call, output in zip(calls, outputs, strict=True):
        if isinstance(output, BaseException):
            for r, _ in call.members:
                answers[r] = output
            continue
        for (r, i), vector in zip(call.members, output, strict=True):
            if not isinstance(answers[r], BaseException):
                answers[r][i] = (call.key, vector)
    return answers


def by_request(call: Call) -> list[Call]:
    """The call cut into one call per request it serves (same rows, same order)."""
    rows: dict[int, list[int]] = {}
    for row, (r, _) in enumerate(call.members):
        rows.setdefault(r, []).append(row)
    return [
        Call(
            call.model,
            {name: array[mine] for name, array in call.feed.items()},
            call.output,
            call.key,
            [call.members[row] for row in mine],
        )
        for mine in rows.values()
    ]


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


def dispatch(
    requests: list[ParsedRequest],
    run: Runner,
    max_batch_size: int,
    max_padding_ratio: float = 0.0,
) -> list[list[tuple[str, np.ndarray]] | BaseException]:
    """plan, run, scatter: the synchronous path (the front door in process, peers, tests)."""
    calls = plan(requests, max_batch_size, max_padding_ratio)
    return scatter(requests, *run_calls(calls, run))
