"""The flat form of an encoder's input: every sequence of a call in one row, no padding.

The `flat.onnx` graph beside an encoder's `model.onnx` (hcnn and pooled_embedding; export
writes it) takes the token ids of all sequences in one row, each followed by `separator` zero
ids, and a [sequences, longest] `gather` of positions in that row: row `i` lists sequence
`i`'s positions, then points at the zero after it. The convolutions see each sequence exactly
as they see it padded (zero ids are masked before every layer, and `separator` is at least a
kernel's reach), and pooling gathers each sequence's own positions: the answers are the padded
graph's, while the work is the real tokens plus the separators. `separator` is written into the
graph's metadata (`SEPARATOR_KEY`), so export and server cannot disagree on it.
"""

from __future__ import annotations

import numpy as np

FLAT_FILE = "flat.onnx"
FLAT_INPUTS = ("tokens", "gather")
SEPARATOR_KEY = "o2v_separator"

# The same graph with a prologue that builds its feed from what Triton's ragged batching gives
# (export.ragged): `tokens` [-1], every request's ids back to back, and `lengths` [items, 1]
# INT32, each sequence's length (a batch input of kind BATCH_ITEM_SHAPE).
RAGGED_FILE = "ragged.onnx"
RAGGED_LENGTHS = "lengths"


def flat_name(model: str) -> str:
    """What a call to an encoder's flat form is named, by the front door and the sessions that
    run it."""
    return f"{model}/flat"


def flat_layout(ids: np.ndarray, lengths: np.ndarray, separator: int) -> dict[str, np.ndarray]:
    """The flat graph's feed for sequences given as flat `ids` with their `lengths`."""
    lengths = lengths.astype(np.int64, copy=False)
    stride = lengths + separator
    starts = np.cumsum(stride) - stride  # where each sequence begins in the row
    tokens = np.zeros((1, int(stride.sum())), dtype=np.int64)
    # Id j of `ids` lands j places in, plus `separator` for each sequence before its own: one
    # repeat, a third of the time of locating it within its sequence first (docs/performance.md)
    places = np.repeat(np.arange(len(lengths)) * separator, lengths)
    places += np.arange(len(ids))
    tokens[0, places] = ids
    width = max(int(lengths.max(initial=0)), 1)
    gather = np.minimum(np.arange(width)[None, :], lengths[:, None])
    gather += starts[:, None]
    return {FLAT_INPUTS[0]: tokens, FLAT_INPUTS[1]: gather}
