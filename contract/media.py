"""The hosted service's two media types: spellings, the content type's parameters, Accept
negotiation, and the decision of both types for a request, made here once.

`decide` is the whole rule: the body's type from Content-Type (or, where none is given, from the
body: one JSON object with `instances` is JSON, anything else JSON Lines), the answer's from
Accept (RFC 9110 section 12.5.1: q-values, `q=0` refuses a type, wildcards, the most specific
range wins; the body's own type on a tie). The SageMaker endpoint decides with it and forwards
what it decided (the body's type and the answer's, as the front door's request parameters), so
it knows its answer's Content-Type without reading the answer; the front door applies the same
rule to whatever reaches it (a direct Triton call sends what it likes), which for the endpoint's
requests is the decision already made.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import orjson

from contract.errors import (
    BAD_REQUEST,
    NOT_ACCEPTABLE,
    UNSUPPORTED_MEDIA_TYPE,
    ServiceError,
    excerpt,
)
from contract.names import JSON, JSONLINES
from contract.neighbours import CATALOGUE_PARAMETER, K_PARAMETER

# Spellings seen in the wild for the same two formats.
ALIASES = {
    JSON: JSON,
    "text/json": JSON,
    JSONLINES: JSONLINES,
    "application/x-jsonlines": JSONLINES,
    "application/jsonl": JSONLINES,
    "application/x-ndjson": JSONLINES,
}


@functools.lru_cache(maxsize=1024)  # a handful of distinct headers in practice: parse once
def canonical(media_type: str) -> str | None:
    """'application/jsonl; charset=utf-8' -> 'application/jsonlines'; None if not ours."""
    return ALIASES.get(media_type.split(";", 1)[0].strip().lower())


def unsupported(what: str, value: str) -> str:
    """The message for a media type that is not one of ours (the front door and the adapter
    say the same)."""
    return f"unsupported {what} {excerpt(value)}: use {JSON!r} or {JSONLINES!r}"


def _ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        if not kind:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(1.0, max(0.0, float(value)))
                except ValueError:
                    quality = 0.0  # a q-value we cannot read accepts nothing
        ranges.append((kind.lower(), quality))
    return ranges


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    """The q-value the most specific matching range gives `offer` (any alias of it)."""
    best, specificity = 0.0, -1
    spellings = [name for name, value in ALIASES.items() if value == offer]
    for kind, quality in ranges:
        if kind in spellings:
            rank = 2
        elif kind == "application/*":
            rank = 1
        elif kind == "*/*":
            rank = 0
        else:
            continue
        if rank > specificity:
            best, specificity = quality, rank
    return best


@functools.lru_cache(maxsize=1024)
def negotiate(accept: str | None, preferred: str) -> str | None:
    """The type to answer for an Accept header: the acceptable one with the highest q-value,
    `preferred` (the request's own format) on a tie or an absent header; None if neither is
    acceptable (HTTP 406)."""
    if accept is None or not accept.strip():
        return preferred
    ranges = _ranges(accept)
    offers = sorted(
        (preferred, JSONLINES if preferred == JSON else JSON),
        key=lambda offer: -_quality(offer, ranges),
    )
    return offers[0] if _quality(offers[0], ranges) > 0 else None


# The content type's parameters the front door reads; any other is refused, so that a misspelt
# one (`neighbors=10`) is not answered as if it were absent.
CONTENT_TYPE_PARAMETERS = ("charset", "infer_max_seqlens", K_PARAMETER, CATALOGUE_PARAMETER)


@dataclass(frozen=True)
class Media:
    """What a request's media types were decided to be."""

    request: str  # the body's type: JSON or JSONLINES
    answer: str  # the answer's
    parameters: Mapping[str, str] = field(default_factory=dict)  # the content type's, checked


@functools.lru_cache(maxsize=1024)  # read by the endpoint at admission, then per body
def read_content_type(header: str) -> tuple[str, Mapping[str, str]]:
    """'application/json; infer_max_seqlens=50,20' -> ('application/json', {...}), or the
    caller's error (415 for a type not ours, 400 for a parameter or charset we cannot use)."""
    kind, *params = (part.strip() for part in header.split(";"))
    media_type = ALIASES.get(kind.lower())
    if media_type is None:
        raise ServiceError(UNSUPPORTED_MEDIA_TYPE, unsupported("content type", kind))
    values = {}
    for param in params:
        if not param:
            continue
        key, _, value = param.partition("=")
        key = key.strip().lower()
        if key not in CONTENT_TYPE_PARAMETERS:
            raise ServiceError(
                BAD_REQUEST,
                f"unknown content type parameter {excerpt(key)}: the front door reads "
                + ", ".join(CONTENT_TYPE_PARAMETERS),
            )
        values[key] = value.strip().strip('"')
    charset = values.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise ServiceError(BAD_REQUEST, f"charset={charset}: bodies are JSON, which is UTF-8")
    return media_type, MappingProxyType(values)  # shared by the cache: read-only


def answer_type(accept: str | None, request: str) -> str:
    """The answer's type for an Accept header, or the caller's error (406)."""
    answer = negotiate(accept, request)
    if answer is None:
        raise ServiceError(NOT_ACCEPTABLE, unsupported("accept type", accept or ""))
    return answer


def sniff(body: bytes) -> str:
    """A body's type where no content type says it: JSON when the body is one object with
    `instances`, JSON Lines otherwise."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return JSONLINES
    return JSON if isinstance(document, dict) and "instances" in document else JSONLINES


def decide(content_type: str | None, accept: str | None, body: bytes) -> Media:
    """Both types of a request (the body read only where no content type is given)."""
    if content_type and content_type.strip():
        request, parameters = read_content_type(content_type)
    else:
        request, parameters = sniff(body), {}
    return Media(request, answer_type(accept, request), parameters)
