"""The usual body read straight into token arrays, without a Python object per token id.

A 1 MB Batch Transform body holds about 150,000 token ids. Any JSON library makes a Python int
of each, and making, checking and flattening them costs more than all the rest of the front
door's work on that body (docs/performance.md, issue 36). This scanner reads the one shape
that bulk jobs send, and nothing else:

    application/jsonlines  {"in0": [12, 7, 99]}  one a line; "in1", or both, likewise
    application/json       {"instances": [{"in0": [12, 7, 99]}, ...]}

keys written plainly, each at most once, ids written as decimal digits (no sign, no leading
zero, no fraction, no exponent), spaces and tabs between tokens (and line breaks between
those of a JSON body). A body it reads is valid JSON that orjson decodes to exactly what the
scanner returns, and every id is inside its side's vocabulary. Anything else, valid or not,
it declines (`None`): the general path (server.frontdoor.payload) then decodes the body with
orjson and says what is wrong, and where. So the scanner decides no verdict and writes no
message; tests/unit/test_scanner.py holds both paths to the same result.

Compiled with numba: the scan is a loop over bytes that no library offers (numba because it
is a pip wheel, no compiler at install; measured against orjson + NumPy in
docs/performance.md). It compiles, or loads from numba's cache, when imported: a request
never waits for it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from server.frontdoor.ragged import Ragged


def _compiled(**options):
    """numba's njit, its machine code cached on disk (in __pycache__ beside this file, or
    NUMBA_CACHE_DIR) so that a start loads it instead of compiling it again, where a cache
    can be written: with none (a read-only tree and no home) numba refuses caching, and the
    scanner compiles at each start instead. Indexes are not bounds-checked: every read of the
    body checks its index against the body's length, and every write stays within the
    capacities `_scan` counts first."""

    def decorate(function):
        try:
            return njit(cache=True, nogil=True, boundscheck=False, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(cache=False, nogil=True, boundscheck=False, **options)(function)

    return decorate


# What `_scan` returns as its status
_READ, _DECLINED = 0, 1

_SPACE, _TAB, _NEWLINE, _RETURN = 32, 9, 10, 13
_COMMA, _COLON = 44, 58
_OPEN_LIST, _CLOSE_LIST, _OPEN_OBJECT, _CLOSE_OBJECT = 91, 93, 123, 125
_ZERO, _NINE = 48, 57
# An id of more digits may not fit int64: declined (no vocabulary is that large)
_MAX_DIGITS = 18


@_compiled(inline="always")
def _skip(body, at, lines):
    """The first index from `at` that is not whitespace (line breaks too where `lines`)."""
    n = len(body)
    while at < n:
        c = body[at]
        if c == _SPACE or c == _TAB or (lines and (c == _NEWLINE or c == _RETURN)):
            at += 1
        else:
            break
    return at


@_compiled(inline="always")
def _literal(body, at, text):
    """Whether `text` (uint8) is written at `at`."""
    if at + len(text) > len(body):
        return False
    for k in range(len(text)):
        if body[at + k] != text[k]:
            return False
    return True


@_compiled(inline="always")
def _ids(body, at, lines, vocab, ids, used):
    """The list of ids at `at` ('[' already checked), appended to ids[used:]. Returns (index
    after its ']', ids now used), or (-1, 0) to decline."""
    n = len(body)
    at = _skip(body, at + 1, lines)
    while True:
        digits = 0
        value = 0
        while at < n and _ZERO <= body[at] <= _NINE:
            if digits == 1 and value == 0:  # a leading zero
                return -1, 0
            value = value * 10 + (body[at] - _ZERO)
            digits += 1
            at += 1
            if digits > _MAX_DIGITS:
                return -1, 0
        if digits == 0 or value >= vocab:  # "[]", "[,", a sign, "[1.5", an unknown id
            return -1, 0
        at = _skip(body, at, lines)
        if at >= n or (body[at] != _CLOSE_LIST and body[at] != _COMMA):
            return -1, 0
        # Stored only now: each id stored is followed by its own ',' or ']', which is what
        # `_capacities` counts
        ids[used] = value
        used += 1
        if body[at] == _CLOSE_LIST:
            return at + 1, used
        at = _skip(body, at + 1, lines)


@_compiled(inline="always")
def _member(body, at, lines, vocab, ids, used):
    """What follows a key at `at`: ':' and its list of ids, appended to ids[used:]. Returns
    (index after its ']', ids now used), or a negative index to decline."""
    n = len(body)
    at = _skip(body, at, lines)
    if at >= n or body[at] != _COLON:
        return -1, used
    at = _skip(body, at + 1, lines)
    if at >= n or body[at] != _OPEN_LIST:
        return -1, used
    return _ids(body, at, lines, vocab, ids, used)


@_compiled(inline="always")
def _record(body, at, lines, vocab0, vocab1, ids0, used0, ids1, used1):
    """One {"in0": [...], "in1": [...]} object at `at` (either key or both), its ids appended
    to ids0[used0:] and ids1[used1:]. Returns (index after its '}', ids used per side, ids it
    holds per side), with a negative index to decline."""
    n = len(body)
    if at >= n or body[at] != _OPEN_OBJECT:
        return -1, used0, used1, 0, 0
    at = _skip(body, at + 1, lines)
    count0 = 0
    count1 = 0
    while True:
        if _literal(body, at, _IN0) and count0 == 0:
            at, after = _member(body, at + len(_IN0), lines, vocab0, ids0, used0)
            count0, used0 = after - used0, after
        elif _literal(body, at, _IN1) and count1 == 0:  # (a key twice: declined)
            at, after = _member(body, at + len(_IN1), lines, vocab1, ids1, used1)
            count1, used1 = after - used1, after
        else:
            return -1, used0, used1, 0, 0
        if at < 0:
            return -1, used0, used1, 0, 0
        at = _skip(body, at, lines)
        if at >= n:
            return -1, used0, used1, 0, 0
        if body[at] == _CLOSE_OBJECT:
            return at + 1, used0, used1, count0, count1
        if body[at] != _COMMA:
            return -1, used0, used1, 0, 0
        at = _skip(body, at + 1, lines)


@_compiled(inline="always")
def _fill(body, jsonlines, vocab0, vocab1, max_records, ids0, ids1, lengths):
    """Every record of the body: its ids appended to ids0 and ids1, the number it holds of
    each side in lengths[record] (0: it has no such key). Returns (status, records, ids used
    of each side); _DECLINED at the first thing outside the scanner's shape or beyond
    max_records."""
    n = len(body)
    records = 0
    used0 = 0
    used1 = 0
    lines = not jsonlines  # whether line breaks are whitespace (JSON), or end records
    at = _skip(body, 0, lines)
    if not jsonlines:
        if at >= n or body[at] != _OPEN_OBJECT:
            return _DECLINED, 0, 0, 0
        at = _skip(body, at + 1, lines)
        if not _literal(body, at, _INSTANCES):
            return _DECLINED, 0, 0, 0
        at = _skip(body, at + len(_INSTANCES), lines)
        if at >= n or body[at] != _COLON:
            return _DECLINED, 0, 0, 0
        at = _skip(body, at + 1, lines)
        if at >= n or body[at] != _OPEN_LIST:
            return _DECLINED, 0, 0, 0
        at = _skip(body, at + 1, lines)
    while True:
        if records >= max_records:
            return _DECLINED, 0, 0, 0
        at, used0, used1, count0, count1 = _record(
            body, at, lines, vocab0, vocab1, ids0, used0, ids1, used1
        )
        if at < 0:
            return _DECLINED, 0, 0, 0
        lengths[records, 0] = count0
        lengths[records, 1] = count1
        records += 1
        at = _skip(body, at, lines)
        if jsonlines:
            if at >= n:
                break
            # a line ends at \n, \r\n or \r, as bytes.splitlines has it
            if body[at] == _RETURN:
                at += 1
                if at < n and body[at] == _NEWLINE:
                    at += 1
            elif body[at] == _NEWLINE:
                at += 1
            else:
                return _DECLINED, 0, 0, 0
            if at >= n:
                break
            at = _skip(body, at, lines)
            if at >= n or body[at] == _NEWLINE or body[at] == _RETURN:
                return _DECLINED, 0, 0, 0  # a blank line: the general path drops it
        else:
            if at >= n:
                return _DECLINED, 0, 0, 0
            if body[at] == _CLOSE_LIST:
                break
            if body[at] != _COMMA:
                return _DECLINED, 0, 0, 0
            at = _skip(body, at + 1, lines)
    if not jsonlines:
        at = _skip(body, at + 1, lines)
        if at >= n or body[at] != _CLOSE_OBJECT:
            return _DECLINED, 0, 0, 0
        if _skip(body, at + 1, lines) != n:
            return _DECLINED, 0, 0, 0
    return _READ, records, used0, used1


@_compiled(inline="always")
def _capacities(body):
    """(ids, records) the body can hold at most: each id is followed by ',' or ']', each
    record opens with '{'."""
    ids = 0
    records = 0
    for c in body:
        ids += (c == _COMMA) | (c == _CLOSE_LIST)
        records += c == _OPEN_OBJECT
    return ids, records


@_compiled()
def _scan(body, jsonlines, vocab0, vocab1, max_records):
    """(status, routes, in0 ids, in0 lengths, in1 ids, in1 lengths): one compiled call, so
    that a small body pays one dispatch (its arguments' types are read at every call)."""
    # Capacities no body can exceed, so that no write goes past an array. (A count costs a
    # tenth of the scan; arrays sized by the body's length cost twice the scan, mapped and
    # faulted in afresh at every call.)
    capacity, records = _capacities(body)
    ids0 = np.empty(capacity, dtype=np.int64)
    ids1 = np.empty(capacity, dtype=np.int64)
    lengths = np.empty((records, 2), dtype=np.int64)
    status, count, used0, used1 = _fill(
        body, jsonlines, vocab0, vocab1, max_records, ids0, ids1, lengths
    )
    if status != _READ:
        count = 0
    routes = np.empty(count, dtype=np.int8)
    lengths0 = np.empty(count, dtype=np.int64)
    lengths1 = np.empty(count, dtype=np.int64)
    sequences0 = 0
    sequences1 = 0
    for record in range(count):
        has0 = lengths[record, 0] > 0
        has1 = lengths[record, 1] > 0
        routes[record] = 2 if has0 and has1 else (0 if has0 else 1)  # PAIR, ENC0, ENC1
        if has0:
            lengths0[sequences0] = lengths[record, 0]
            sequences0 += 1
        if has1:
            lengths1[sequences1] = lengths[record, 1]
            sequences1 += 1
    return status, routes, ids0[:used0], lengths0[:sequences0], ids1[:used1], lengths1[:sequences1]


# The keys the scanner reads, as constants of the compiled code
_IN0, _IN1, _INSTANCES = (
    np.array(list(key), dtype=np.uint8) for key in (b'"in0"', b'"in1"', b'"instances"')
)


def scan(
    body: bytes, jsonlines: bool, vocab_sizes: tuple[int, int], max_records: int
) -> tuple[np.ndarray, tuple[Ragged, Ragged]] | None:
    """(routes, (in0 side, in1 side)) as server.frontdoor.payload's columns, untruncated; None
    when the body is not of the scanner's shape."""
    data = np.frombuffer(body, dtype=np.uint8)
    status, routes, ids0, lengths0, ids1, lengths1 = _scan(
        data, jsonlines, *vocab_sizes, max_records
    )
    if status != _READ:
        return None
    return routes, (Ragged(ids0, lengths0), Ragged(ids1, lengths1))


scan(b'{"in0":[0]}', True, (1, 1), 1)  # compiled (or loaded) now, not at the first request
