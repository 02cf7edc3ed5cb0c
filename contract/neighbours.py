"""Nearest neighbours: the catalogue index the export builds and the server searches.

An index lives in the model repository as one more Triton model, `neighbours`:

    neighbours/catalogue.json   what the index is (`Catalogue` below): the server reads it
    neighbours/items.npz        the catalogue's in1 sequences, so a re-export rebuilds it
    neighbours/1/model.onnx     query [batch, enc_dim] -> scores, items [batch, max_k]: the
                                catalogue's enc1 embeddings as a constant, every item scored
                                (the pair head on every pair, or a matrix product), a TopK
                                (exact search); and deep_scores, deep_items [batch, depth],
                                the same ranking max_exclude deeper (the TopK is computed once)
    neighbours/1/model.onnx.data  those embeddings (ONNX external data: no 2 GB limit)
    neighbours/1/ids.json       the catalogue's ids, in index order: `items` are rows of it

A request asks for neighbours on its content type, as `infer_max_seqlens` is asked:
`application/jsonlines; neighbours=10` (and `; catalogue=<name>`, the index's name, checked
when given). Each instance then carries `in0` (and may carry `exclude`, a list of catalogue ids
to leave out, at most the index's max_exclude) and is answered
`{"neighbours": [{"id": ..., "score": ...}, ...]}`, best first: the k best of what remains.

Why the deeper outputs leave nothing out: an instance excludes at most max_exclude items, so
after they are taken out of the best max_k + max_exclude, at least max_k remain, and they are
the best of the catalogue without them. A request with no exclusions asks for `scores` and
`items` only, so it carries no more than it did.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from contract.names import ENCODER_MODELS

NEIGHBOURS_MODEL = "neighbours"
QUERY_INPUT = "query"
SCORES_OUTPUT = "scores"
ITEMS_OUTPUT = "items"
DEEP_SCORES_OUTPUT = "deep_scores"
DEEP_ITEMS_OUTPUT = "deep_items"


def search_outputs(deep: bool) -> tuple[str, str]:
    """(scores, items) outputs a search asks for: the deep ones where a query excludes items."""
    return (DEEP_SCORES_OUTPUT, DEEP_ITEMS_OUTPUT) if deep else (SCORES_OUTPUT, ITEMS_OUTPUT)


CATALOGUE_FILE = "catalogue.json"
ITEMS_FILE = "items.npz"
IDS_FILE = "ids.json"
# The pair network's head, beside its model.onnx: two encodings in, the answer's scores out
# (the comparator and the MLP); the `model` similarity ranks items by it.
HEAD_FILE = "head.onnx"
HEAD_INPUTS = ("in0", "in1")

# The content type's parameters that ask for neighbours.
K_PARAMETER = "neighbours"
CATALOGUE_PARAMETER = "catalogue"
# An instance's key: catalogue ids its answer leaves out (a user's history).
EXCLUDE_KEY = "exclude"

# How a score is computed from the query q (enc0 of in0) and an item's vector e (enc1):
#   model      the pair network's own answer for (q, e): the regression value, or the expected
#              class (sum of c * p_c: p_1 for two classes). What the model was trained to say.
#   dot        q . e            the comparator's hadamard product, summed
#   cosine     q . e / |q||e|   the same, with every vector's length taken out
#   euclidean  -|q - e|         the comparator's abs_diff: the closest vector scores highest
SIMILARITIES = ("model", "dot", "cosine", "euclidean")

DEFAULT_MAX_K = 100
# Ids one instance may exclude: the TopK runs this much deeper, for every query (what that
# costs each similarity: docs/neighbours.md). MovieLens' most active user rated 737 movies.
DEFAULT_MAX_EXCLUDE = 1000
# Neighbours one request may ask for (instances x k, all its bodies): about 4 MB of answer, and as
# much memory in the front door while it is formatted (server/frontdoor/neighbours.py). A request
# over it is refused with its numbers, before anything runs (docs/security.md).
DEFAULT_MAX_NEIGHBOURS = 100_000
# Scores one request may have computed (instances x items x the similarity's width): its work,
# so that requests queued behind neighbour requests wait a bounded time for each
# (docs/security.md has what 2^30 costs).
DEFAULT_MAX_NEIGHBOUR_SCORES = 1 << 30
DEFAULT_MAX_ITEMS = 10_000_000
# Floats one call holds at most (queries x items x the similarity's width): 64 MB, so a
# 1,000,000-item catalogue is searched 16 queries a call by `dot`, one by `model`. The config's
# max_batch_size and the front door's calls both follow it.
MAX_SCORES_PER_CALL = 1 << 24


def queries_per_call(scores: int, max_batch_size: int) -> int:
    """Queries a call may carry when each needs `scores` floats (at least one)."""
    return max(1, min(max_batch_size, MAX_SCORES_PER_CALL // max(scores, 1)))


@dataclass(frozen=True)
class Catalogue:
    name: str
    items: int
    similarity: str
    max_k: int  # the graph's TopK: the most neighbours a request may ask for
    enc_dim: int
    enc1_digest: str  # sha256 of the enc1/1/model.onnx the vectors came from
    # floats a call holds per query and item (1 for the vector similarities; the pair head's
    # widths for `model`): a call searches queries_per_call(items * width, ...) queries
    width: int = 1
    # ids an instance may exclude; 0 for an index built before exclusions (rebuild it)
    max_exclude: int = 0
    # `model` similarity of a linear head (export.neighbours.linear_head): one matrix product
    linear: bool = False

    @staticmethod
    def folder(repository: Path) -> Path:
        return Path(repository) / NEIGHBOURS_MODEL

    def save(self, repository: Path) -> Path:
        path = self.folder(repository) / CATALOGUE_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, repository: Path) -> Catalogue | None:
        """The repository's index, or None where it has none."""
        path = cls.folder(repository) / CATALOGUE_FILE
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})

    @property
    def depth(self) -> int:
        """The deep outputs' width: the ranking max_exclude deeper than max_k."""
        return min(self.items, self.max_k + self.max_exclude)

    @property
    def scores_per_query(self) -> int:
        return self.items * self.width

    def queries_per_call(self, max_batch_size: int) -> int:
        return queries_per_call(self.scores_per_query, max_batch_size)


def enc1_digest(repository: Path) -> str:
    """sha256 of the repository's enc1 graph: an index records the one its vectors came from,
    and the server refuses an index built from another."""
    sha = hashlib.sha256()
    with open(Path(repository) / ENCODER_MODELS[1] / "1" / "model.onnx", "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()
