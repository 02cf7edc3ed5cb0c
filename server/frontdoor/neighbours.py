"""The front door's nearest-neighbour step: the in0 embeddings of the requests that asked
(`neighbours=k` on the content type, server.frontdoor.payload) searched in the catalogue index
(contract.neighbours), their answers replaced by the k best items.

The embeddings come from the same enc0 calls as every other in0 (server.frontdoor.dispatch); the
search is one more network, `neighbours`, called with the queries of every asking request of an
`execute` at once, cut at contract.neighbours.MAX_SCORES_PER_CALL scores a call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from contract.errors import MISCONFIGURED, ServiceError
from contract.neighbours import IDS_FILE, Catalogue, enc1_digest
from server.frontdoor.payload import ParsedRequest, Searchable

# (queries [n, enc_dim], deep) -> (scores, items), each [n, max_k], or [n, depth] when deep
# (contract.neighbours: the ranking max_exclude deeper, for requests that exclude items)
Searcher = Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray]]
KEY = "neighbours"


class Index:
    """The repository's catalogue: what it is, and its ids in index order."""

    def __init__(self, repository: Path, catalogue: Catalogue):
        if enc1_digest(repository) != catalogue.enc1_digest:
            raise ServiceError(
                MISCONFIGURED,
                f"the catalogue index {catalogue.name!r} was built from another enc1 than the "
                "one in this repository: rebuild it (python -m export.neighbours --rebuild "
                f"--repository {repository})",
            )
        self.catalogue = catalogue
        self.ids = orjson.loads((Catalogue.folder(repository) / "1" / IDS_FILE).read_bytes())

    @classmethod
    def load(cls, repository: Path) -> Index | None:
        catalogue = Catalogue.load(repository)
        return None if catalogue is None else cls(repository, catalogue)

    def limits(self) -> Searchable:
        """What server.frontdoor.payload.Limits checks requests against."""
        catalogue = self.catalogue
        return Searchable(catalogue.name, catalogue.max_k, catalogue.max_exclude, self.rows)

    @functools.cache  # noqa: B019 - one Index a front door copy, kept for its life
    def rows(self) -> dict:
        """Each id's row of the index."""
        return {item: row for row, item in enumerate(self.ids)}

    def answer(self, scores: np.ndarray, items: np.ndarray) -> orjson.Fragment:
        """One query's neighbours, written as JSON at once: its k dicts live only while it is
        written, so a request's memory is about its answer's bytes (Python objects for a whole
        answer took many times that: docs/security.md)."""
        ids = self.ids
        entries = [{"id": ids[i], "score": s} for i, s in zip(items.tolist(), scores, strict=True)]
        return orjson.Fragment(orjson.dumps(entries, option=orjson.OPT_SERIALIZE_NUMPY))


def search(
    requests: list[ParsedRequest],
    answers: list,
    index: Index,
    searcher: Searcher,
    max_batch_size: int,
) -> list:
    """`answers` (server.frontdoor.dispatch.scatter's) with each asking request's embeddings
    replaced by its k nearest items, best first. A failed search fails the requests that asked."""
    asking = [
        r
        for r, request in enumerate(requests)
        if request.k and not isinstance(answers[r], BaseException)
    ]
    if not asking:
        return answers
    queries = np.concatenate([answers[r].vectors() for r in asking])
    step = index.catalogue.queries_per_call(max_batch_size)
    deep = any(requests[r].exclude for r in asking)
    try:
        found = [searcher(queries[i : i + step], deep) for i in range(0, len(queries), step)]
    except Exception as error:  # noqa: BLE001 - ours: those requests' error, no one else's
        for r in asking:
            answers[r] = error
        return answers
    scores = np.concatenate([s for s, _ in found])
    items = np.concatenate([i for _, i in found])
    row = 0
    for r in asking:
        request = requests[r]
        excluded = request.exclude or [None] * len(request)
        answers[r] = [
            (
                KEY,
                index.answer(
                    *best_remaining(scores[row + i], items[row + i], request.k, excluded[i])
                ),
            )
            for i in range(len(request))
        ]
        row += len(request)
    return answers


def best_remaining(
    scores: np.ndarray, items: np.ndarray, k: int, excluded: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of a query's ranking, best first, without the rows it excludes."""
    if excluded is not None and len(excluded):
        kept = ~np.isin(items, excluded)
        scores, items = scores[kept], items[kept]
    return scores[:k], items[:k]
