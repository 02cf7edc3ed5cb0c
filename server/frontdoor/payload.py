"""Request bodies of the hosted Object2Vec service: parsing, checking and formatting.

    application/json       {"instances": [{"in0": [...]}, {"in0": [...], "in1": [...]}]}
    application/jsonlines  one instance per line

Every problem raises `ServiceError` with a message that says what is wrong and where (the
instance index or the line number); the front door turns it into an INVALID_ARG error (HTTP 400)
for that request alone.
"""

from __future__ import annotations

import array
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import orjson

from contract.errors import BAD_REQUEST, TOO_LARGE, ServiceError, clip, excerpt
from contract.facts import Facts
from contract.media import decide
from contract.names import (
    DEFAULT_MAX_INSTANCES,
    JSON,
    PARAMETERS,
)
from contract.neighbours import (
    CATALOGUE_PARAMETER,
    DEFAULT_MAX_NEIGHBOUR_SCORES,
    DEFAULT_MAX_NEIGHBOURS,
    EXCLUDE_KEY,
    K_PARAMETER,
)
from server.frontdoor.ragged import EMPTY, Ragged
from server.frontdoor.scanner import scan

MAX_INFER_SEQLEN = 5000


@dataclass
class Instance:
    in0: np.ndarray | None  # int64 token ids, already truncated
    in1: np.ndarray | None


# An instance's route, from the sides it carries: enc0 (in0 only), enc1 (in1 only), the pair
# network (both). `_routes` computes them from these values.
ENC0, ENC1, PAIR = 0, 1, 2


@dataclass
class ParsedRequest:
    """A checked request, by columns: per instance its route, per side the token ids of the
    instances that carry that side (in instance order, truncated)."""

    routes: np.ndarray  # int8 [instances]: ENC0 | ENC1 | PAIR
    sides: tuple[Ragged, Ragged]  # in0 of the ENC0 and PAIR instances, in1 of ENC1 and PAIR
    accept: str
    k: int = 0  # > 0: every instance is ENC0 and is answered its k nearest catalogue items
    # with k: per instance, the catalogue rows its answer leaves out (None: nothing to leave
    # out); None when no instance excludes any
    exclude: list[np.ndarray | None] | None = None

    @classmethod
    def of(cls, instances: Sequence[Instance], accept: str, k: int = 0) -> ParsedRequest:
        has = [[getattr(i, key) is not None for i in instances] for key in ("in0", "in1")]
        sides = tuple(
            Ragged.of([getattr(i, key) for i in instances if getattr(i, key) is not None])
            for key in ("in0", "in1")
        )
        return cls(_routes(*has, len(instances)), sides, accept, k)

    def __len__(self) -> int:
        return len(self.routes)

    @property
    def instances(self) -> list[Instance]:
        """One Instance per instance, its arrays views into `sides` (for tests and messages:
        the path of a request never builds them)."""
        rows = [side_rows(self.routes, side).tolist() for side in (0, 1)]
        return [
            Instance(*(self.sides[s][r[k]] if r[k] >= 0 else None for s, r in enumerate(rows)))
            for k in range(len(self))
        ]


def side_rows(routes: np.ndarray, side: int) -> np.ndarray:
    """For each instance of `routes`, the row of its sequence among those of `side` (-1: it
    carries none): the sides hold the sequences of the instances that carry them, in order."""
    carries = routes != (ENC1 if side == 0 else ENC0)
    return np.where(carries, np.cumsum(carries) - 1, -1)


def _routes(has0: bool | list[bool], has1: bool | list[bool], count: int) -> np.ndarray | None:
    """ENC0 | ENC1 | PAIR of each instance from which carry in0 and in1 (True: all, False:
    none, else per instance); None when one carries neither."""
    if isinstance(has0, bool) and isinstance(has1, bool):  # the usual request: one kind
        if not (has0 or has1):
            return None
        return np.full(count, PAIR if has0 and has1 else ENC0 if has0 else ENC1, dtype=np.int8)
    in0 = np.array(has0 if isinstance(has0, list) else [has0] * count, dtype=np.int8)
    in1 = np.array(has1 if isinstance(has1, list) else [has1] * count, dtype=np.int8)
    if not (in0 | in1).all():
        return None
    return in0 + 2 * in1 - 1  # in0 alone: 1 + 0 - 1, in1 alone: 0 + 2 - 1, both: 1 + 2 - 1


@dataclass(frozen=True)
class Searchable:
    """What a neighbours request is checked against: the catalogue index's name, the most
    neighbours a query may ask, the most ids an instance may exclude, and the row of each id
    (built at the first exclusion asked: docs/neighbours.md says what it costs a copy)."""

    name: str
    max_k: int
    max_exclude: int = 0
    rows: Callable[[], Mapping[object, int]] = field(default=dict, compare=False)


@dataclass(frozen=True)
class Limits:
    vocab_sizes: tuple[int, int]
    max_seq_lens: tuple[int, int]
    max_body_bytes: int
    max_instances: int = DEFAULT_MAX_INSTANCES
    catalogue: Searchable | None = None  # the index, if the server has one
    # What neighbours may cost a request, all its bodies: its answer (instances x k) and its
    # search (instances x the scores one query computes, 0 where unknown).
    max_neighbours: int = DEFAULT_MAX_NEIGHBOURS
    max_neighbour_scores: int = DEFAULT_MAX_NEIGHBOUR_SCORES
    scores_per_query: int = 0

    @classmethod
    def of(cls, facts: Facts, max_body_bytes: int, **fields) -> Limits:
        return cls(facts.vocab_sizes, facts.max_seq_lens, max_body_bytes, **fields)


def request_options(parameters: object) -> tuple[str | None, str | None]:
    """(content_type, accept) from a request's parameters: a JSON object text, or a dict.

    Anything but those two keys with string values is the caller's mistake, said plainly.
    """
    if isinstance(parameters, str | bytes):
        try:
            parameters = orjson.loads(parameters or b"{}")
        except orjson.JSONDecodeError:
            raise ServiceError(BAD_REQUEST, "request parameters are not a JSON object") from None
    if not isinstance(parameters, dict):
        raise ServiceError(BAD_REQUEST, "request parameters must be an object")
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise ServiceError(
            BAD_REQUEST,
            f"unknown request parameter(s) {clip(', '.join(map(repr, unknown)))}: "
            f"the front door reads {PARAMETERS[0]!r} and {PARAMETERS[1]!r}",
        )
    values = []
    for key in PARAMETERS:
        value = parameters.get(key)
        if value is not None and not isinstance(value, str):
            raise ServiceError(
                BAD_REQUEST,
                f"request parameter {key!r} must be a string (a media type), "
                f"got {type(value).__name__}",
            )
        values.append(value)
    return values[0], values[1]


def _neighbours(params: Mapping[str, str], limits: Limits) -> int:
    """k of `neighbours=k` (0: not asked), checked against the server's catalogue index."""
    asked, named = params.get(K_PARAMETER), params.get(CATALOGUE_PARAMETER)
    if asked is None:
        if named is not None:
            raise ServiceError(
                BAD_REQUEST, f"{CATALOGUE_PARAMETER}={clip(named)} needs {K_PARAMETER}=<k>"
            )
        return 0
    if limits.catalogue is None:
        raise ServiceError(
            BAD_REQUEST,
            f"{K_PARAMETER}={clip(asked)}: this server has no catalogue index "
            "(build one: python -m export.neighbours CATALOGUE --repository ...)",
        )
    name, max_k = limits.catalogue.name, limits.catalogue.max_k
    if named is not None and named != name:
        raise ServiceError(
            BAD_REQUEST,
            f"{CATALOGUE_PARAMETER}={clip(named)}: unknown catalogue; this server has {name!r}",
        )
    # int() of a string of thousands of digits is a ValueError of its own (and slow): refused
    k = int(asked) if asked.isdigit() and len(asked) < 10 else 0
    if not 1 <= k <= max_k:
        raise ServiceError(
            BAD_REQUEST,
            f"{K_PARAMETER}={clip(asked)}: give an integer in [1, {max_k}] "
            f"(the catalogue {name!r} answers at most {max_k} a query)",
        )
    return k


def _only_in0(routes: np.ndarray, body: bytes, kind: str) -> None:
    """Neighbours are the items nearest an in0: every instance must carry in0 alone."""
    wrong = np.flatnonzero(routes != ENC0)
    if len(wrong):
        where = _labels(body, kind, len(routes))[wrong[0]]
        raise ServiceError(
            BAD_REQUEST,
            f"{where}: {K_PARAMETER}=<k> asks for the catalogue items nearest an in0, "
            "so each instance carries in0 only",
        )


def _exclusions(records: list, labels: Callable[[], list[str]], catalogue: Searchable):
    """Per instance, the catalogue rows its `exclude` names (None where it names none); None
    when no instance excludes any. Every id is checked: a string or an integer of the
    catalogue, at most max_exclude an instance. `labels` names the instances, for messages."""
    asked = [record.get(EXCLUDE_KEY) for record in records]
    if all(value is None for value in asked):
        return None
    found = []
    for number, value in enumerate(asked):
        problem = _excluded(value, catalogue) if value is not None else None
        if isinstance(problem, str):
            raise ServiceError(BAD_REQUEST, f"{labels()[number]}: {problem}")
        found.append(problem)
    return found


def _excluded(value: object, catalogue: Searchable) -> np.ndarray | str:
    """The rows an instance's `exclude` names, or what is wrong with it."""
    if not isinstance(value, list):
        return f"{EXCLUDE_KEY} must be a list of catalogue ids, got {type(value).__name__}"
    if len(value) > catalogue.max_exclude:
        rebuild = (
            ""
            if catalogue.max_exclude
            else " (this index was built without exclusions: "
            "rebuild it with python -m export.neighbours --rebuild --max-exclude N)"
        )
        return (
            f"{EXCLUDE_KEY} holds {len(value)} ids; the catalogue {catalogue.name!r} excludes "
            f"at most {catalogue.max_exclude} an instance{rebuild}"
        )
    rows, found = catalogue.rows(), np.empty(len(value), dtype=np.int64)
    for position, item in enumerate(value):
        row = rows.get(item) if type(item) in (str, int) else None
        if row is None:
            what = (
                "is not an id of the catalogue"
                if type(item) in (str, int)
                else "is not a catalogue id (a string or an integer) of"
            )
            return f"{EXCLUDE_KEY}[{position}] = {excerpt(item)} {what} {catalogue.name!r}"
        found[position] = row
    return found


def _infer_max_seqlens(value: str | None, limits: Limits) -> tuple[int, int]:
    if value is None:
        return limits.max_seq_lens
    parts = value.split(",")
    try:
        lengths = [int(p) for p in parts]
    except ValueError:
        lengths = []
    if len(lengths) != 2 or not all(1 <= n <= MAX_INFER_SEQLEN for n in lengths):
        raise ServiceError(
            BAD_REQUEST,
            f"infer_max_seqlens={excerpt(value)}: give two integers in [1, {MAX_INFER_SEQLEN}] "
            "separated by a comma, for enc0 and enc1",
        )
    return (min(lengths[0], limits.max_seq_lens[0]), min(lengths[1], limits.max_seq_lens[1]))


def _tokens(value: object, key: str, side: int, limits: Limits, cap: int, where: str) -> np.ndarray:
    if not isinstance(value, list):
        raise ServiceError(
            BAD_REQUEST, f"{where}: {key} must be a list of token ids, got {type(value).__name__}"
        )
    if not value:
        raise ServiceError(BAD_REQUEST, f"{where}: {key} is empty: give at least one token id")
    try:
        tokens = np.asarray(value)
    except (ValueError, OverflowError):
        tokens = np.asarray([], dtype=object)
    # numpy reads [true, 2] as [1, 2]: a JSON boolean is not an id. `bool in map(type, ...)`
    # scans in C, not in a Python generator: this runs for every instance.
    if tokens.dtype.kind not in "iu" or tokens.ndim != 1 or bool in map(type, value):
        bad = next((t for t in value if isinstance(t, bool) or not isinstance(t, int)), value[0])
        raise ServiceError(
            BAD_REQUEST, f"{where}: {key} holds {excerpt(bad)}: token ids are non-negative integers"
        )
    low, high = tokens.min(), tokens.max()
    if low < 0:
        raise ServiceError(
            BAD_REQUEST, f"{where}: {key} holds {low}: token ids are non-negative integers"
        )
    vocab = limits.vocab_sizes[side]
    if high >= vocab:
        raise ServiceError(
            BAD_REQUEST,
            f"{where}: {key} holds token id {high}, outside the vocabulary of enc{side} "
            f"(ids 0..{vocab - 1})",
        )
    return tokens[:cap].astype(np.int64, copy=False)


def _instance(record: object, where: str, limits: Limits, caps: tuple[int, int]) -> Instance:
    if not isinstance(record, dict):
        raise ServiceError(
            BAD_REQUEST,
            f"{where}: an instance is an object with in0 and/or in1, got {type(record).__name__}",
        )
    if "in0" not in record and "in1" not in record:
        keys = ", ".join(sorted(map(str, record))) or "none"
        raise ServiceError(BAD_REQUEST, f"{where}: has neither in0 nor in1 (keys: {keys})")
    sides = [
        _tokens(record[key], key, side, limits, caps[side], where) if key in record else None
        for side, key in enumerate(("in0", "in1"))
    ]
    return Instance(*sides)


# Every function of the vectorised path below costs a few NumPy calls whatever the request's
# size, so that a three-instance request pays about what the record-by-record path costs and
# a 10,000-instance one a fraction of it (docs/performance.md).


def _side(values: list, vocab: int, cap: int, bools: bool = True) -> Ragged | None:
    """One side's token lists, checked all at once and truncated to `cap`; None when any of
    them is not valid (not a non-empty list of ids of the vocabulary). `bools`: whether the
    body may hold a JSON boolean (a Python int to everything below but the type check)."""
    if set(map(type, values)) != {list}:
        return None
    lengths = list(map(len, values))
    if 0 in lengths:
        return None
    flat = list(itertools.chain.from_iterable(values))
    if bools and set(map(type, flat)) != {int}:  # bool, float, str, list, dict, None
        return None
    try:
        # array.array takes ints only (a float, str, list, dict or None is a TypeError, an
        # int beyond int64 an OverflowError), in one C loop: a third of np.array's time
        ids = np.frombuffer(array.array("q", flat), dtype=np.int64)
    except (TypeError, OverflowError):
        return None
    if ids.min() < 0 or ids.max() >= vocab:
        return None
    ragged = Ragged(ids, np.array(lengths, dtype=np.int64))
    return ragged if max(lengths) <= cap else ragged.truncated(cap)


def _columns(records: list, limits: Limits, caps: tuple[int, int], bools: bool = True):
    """(routes, sides) of every record, checked with one NumPy pass per side over all its
    token ids instead of one per instance (a 1 MB body of 10,000 instances:
    docs/performance.md), or None when any record is not valid: then `_instance`, record by
    record, says which and why."""
    if set(map(type, records)) != {dict}:
        return None
    has, sides = [], []
    for side, key in enumerate(("in0", "in1")):
        values = [r.get(key) for r in records]
        carries = [v is not None for v in values]
        every = all(carries)
        if not every:
            if any(key in r for r in itertools.compress(records, [not c for c in carries])):
                return None  # "in0": null
            values = list(itertools.compress(values, carries))
        ragged = _side(values, limits.vocab_sizes[side], caps[side], bools) if values else EMPTY
        if ragged is None:
            return None
        has.append(True if every else carries if values else False)
        sides.append(ragged)
    routes = _routes(*has, len(records))
    return None if routes is None else (routes, tuple(sides))


def may_hold_booleans(body: bytes) -> bool:
    """JSON's booleans are the literals true and false: a body without either holds none (one
    that has them, even inside a string, is checked for them)."""
    return b"true" in body or b"false" in body


def _check_count(count: int, limits: Limits) -> None:
    if count > limits.max_instances:
        raise ServiceError(
            BAD_REQUEST,
            f"{count} instances exceed the limit of {limits.max_instances} per request: "
            "split them into smaller requests",
        )


def _document(body: bytes, content_type: str, limits: Limits) -> list:
    """The body's records, undecorated: the instances of a JSON body, or every line of a JSON
    Lines one that is not blank."""
    if content_type == JSON:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            hint = ""
            if "unexpected content after document" in str(error):
                hint = (
                    " (several JSON documents, one a line, are JSON Lines: send them with "
                    "content type application/jsonlines)"
                )
            raise ServiceError(BAD_REQUEST, f"malformed JSON: {error}{hint}") from None
        if not isinstance(document, dict) or "instances" not in document:
            raise ServiceError(
                BAD_REQUEST,
                'a JSON body is an object with "instances": {"instances": [{"in0": [...]}, ...]}',
            )
        instances = document["instances"]
        if not isinstance(instances, list):
            raise ServiceError(BAD_REQUEST, '"instances" must be a list')
        _check_count(len(instances), limits)
        return instances
    lines = body.splitlines()
    if len(lines) <= limits.max_instances:
        try:  # the usual body, no blank line: no line stripped (a blank one fails to decode)
            return list(map(orjson.loads, lines))
        except orjson.JSONDecodeError:
            pass
    lines = [line for line in lines if line.strip()]
    _check_count(len(lines), limits)
    try:
        return list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        pass
    for number, line in _numbered(body):  # which line, and why
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise ServiceError(
                BAD_REQUEST, f"line {number}: malformed JSON Lines record: {error}"
            ) from None
    raise AssertionError("unreachable: a line failed to decode once and not again")


def _numbered(body: bytes) -> list[tuple[int, bytes]]:
    """(line number, line) of each line that is not blank: how messages name a record."""
    return [(n, line) for n, line in enumerate(body.splitlines(), 1) if line.strip()]


def _labels(body: bytes, content_type: str, count: int) -> list[str]:
    if content_type == JSON:
        return [f"instances[{i}]" for i in range(count)]
    return [f"line {n}" for n, _ in _numbered(body)]


def parse_request(
    body: bytes, content_type: str | None, accept: str | None, limits: Limits
) -> ParsedRequest:
    """A checked request: instances with truncated token arrays, and the answer's format."""
    if len(body) > limits.max_body_bytes:
        raise ServiceError(
            TOO_LARGE,  # Triton says 400 for it as for BAD_REQUEST; the metrics tell them apart
            f"body of {len(body)} bytes exceeds the limit of "
            f"{limits.max_body_bytes} bytes: split it into smaller requests",
        )
    if not body or body.isspace():  # (strip() would copy the body)
        raise ServiceError(
            BAD_REQUEST, "empty body: send instances as application/json or jsonlines"
        )
    media = decide(content_type, accept, body)
    kind, params, answer = media.request, media.parameters, media.answer
    caps = _infer_max_seqlens(params.get("infer_max_seqlens"), limits)
    k = _neighbours(params, limits)
    # The usual body, read by the scanner; anything else, and every mistake, by orjson
    scanned = scan(body, kind != JSON, limits.vocab_sizes, limits.max_instances)
    if scanned is not None:
        routes, sides = scanned
        truncated = tuple(side.truncated(cap) for side, cap in zip(sides, caps, strict=True))
        parsed, records = ParsedRequest(routes, truncated, answer, k), None
    else:
        parsed, records = _decoded(body, kind, answer, caps, k, limits)
    if k:
        _only_in0(parsed.routes, body, kind)
        _within_neighbour_budget(len(parsed), k, limits)
        if records is not None:  # (the scanner reads no `exclude`)
            parsed.exclude = _exclusions(
                records, lambda: _labels(body, kind, len(records)), limits.catalogue
            )
    return parsed


def _decoded(
    body: bytes, kind: str, answer: str, caps: tuple[int, int], k: int, limits: Limits
) -> tuple[ParsedRequest, list]:
    """The request decoded by orjson and checked (all at once, or record by record to say
    what is wrong and where), and its records."""
    records = _document(body, kind, limits)
    if not records:
        raise ServiceError(BAD_REQUEST, "no instances in the body")
    columns = _columns(records, limits, caps, may_hold_booleans(body))
    if columns is not None:
        return ParsedRequest(*columns, answer, k), records
    labels = _labels(body, kind, len(records))
    pairs = zip(labels, records, strict=True)
    instances = [_instance(record, where, limits, caps) for where, record in pairs]
    return ParsedRequest.of(instances, answer, k), records


def _within_neighbour_budget(instances: int, k: int, limits: Limits) -> None:
    """What neighbours may cost: an answer of at most max_neighbours items, a search of at
    most max_neighbour_scores scores (docs/security.md)."""
    if instances * k > limits.max_neighbours:
        most = max(1, limits.max_neighbours // k)
        raise ServiceError(
            BAD_REQUEST,
            f"{K_PARAMETER}={k} for {instances} instances asks for {instances * k} neighbours; "
            f"a request may ask for at most {limits.max_neighbours} (max_neighbours): "
            f"send at most {most} instances a request at this k",
        )
    scores = instances * limits.scores_per_query
    if scores > limits.max_neighbour_scores:
        most = max(1, limits.max_neighbour_scores // limits.scores_per_query)
        raise ServiceError(
            BAD_REQUEST,
            f"{K_PARAMETER}=<k> for {instances} instances would compute {scores} scores "
            f"({limits.scores_per_query} a query over the catalogue); a request may compute at "
            f"most {limits.max_neighbour_scores} (max_neighbour_scores): send at most {most} "
            "instances a request",
        )


def parse_bodies(
    bodies: Sequence[bytes], content_type: str | None, accept: str | None, limits: Limits
) -> list[ParsedRequest]:
    """Every body of one request (the rows of its `body` tensor), all checked, or none.

    The instance limit holds for the request as a whole, so that extra rows cannot multiply it.
    """
    if not bodies:
        raise ServiceError(BAD_REQUEST, "no body: the body tensor is empty")
    parsed, budget = [], limits
    for number, body in enumerate(bodies, 1):
        if not isinstance(body, bytes):
            raise ServiceError(BAD_REQUEST, "each body must be bytes")
        try:
            request = parse_request(body, content_type, accept, budget)
        except ServiceError as error:
            if len(bodies) == 1:
                raise
            raise error.within(f"body {number} of {len(bodies)}") from None
        asking = len(request) if request.k else 0
        budget = replace(
            budget,
            max_instances=budget.max_instances - len(request),
            max_neighbours=budget.max_neighbours - asking * request.k,
            max_neighbour_scores=budget.max_neighbour_scores - asking * budget.scores_per_query,
        )
        parsed.append(request)
    return parsed


# JSON Lines answers of at least this many rows of one matrix are written by one orjson call
# (below it, one call a row costs less); a JSON answer is one call either way, and orjson
# writes a list of rows faster than a matrix (docs/performance.md, 2026-12-06)
MATRIX_ROWS = 16


def format_response(rows: Sequence[tuple[str, object]], accept: str) -> bytes:
    """rows: (key, value) per instance in order: `embeddings` or `scores` and a vector, or
    `neighbours` and a list of {"id", "score"}."""
    matrix = getattr(rows, "matrix", None)  # server.frontdoor.answers
    if accept == JSON:
        predictions = (
            [{key: v} for key, v in rows] if matrix is None else [{rows.key: v} for v in matrix]
        )
        return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
    if matrix is not None and len(matrix) >= MATRIX_ROWS:
        return _lines_of_matrix(rows.key, matrix)
    return b"".join(
        orjson.dumps({key: v}, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for key, v in rows
    )


def _lines_of_matrix(key: str, matrix: np.ndarray) -> bytes:
    """What the row-by-row path writes for `matrix`'s rows under `key`, byte for byte: orjson
    writes the matrix as [[...],[...]], and between two rows is the only place where "],["
    occurs, so each is replaced by the end of one line and the start of the next."""
    text = orjson.dumps(matrix, option=orjson.OPT_SERIALIZE_NUMPY)
    start = b"{" + orjson.dumps(key) + b":"
    rows = memoryview(text.replace(b"],[", b"]}\n" + start + b"["))[1:-1]  # (a view: no copy)
    return b"".join((start, rows, b"}\n"))
