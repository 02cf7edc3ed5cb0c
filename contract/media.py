"""The hosted service's two media types as HTTP names them: spellings, and Accept negotiation.

The front door reads the `accept` request parameter with `negotiate`, and the SageMaker adapter
reads the Accept header with it, so both answer the same type for the same header (RFC 9110
section 12.5.1: q-values, `q=0` refuses a type, wildcards, the most specific range wins).
"""

from __future__ import annotations

import functools

from contract.errors import excerpt
from contract.names import JSON, JSONLINES

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
