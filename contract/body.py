"""The front door's input tensor: request bodies as raw bytes (UINT8), never BYTES elements.

A BYTES tensor carries a 4-byte length before each element, and Triton 2.51's Python backend
checks those lengths while it gathers a whole batch (`GetInputTensor` in python_backend's
`src/python_be.cc`): one request whose prefix claims more bytes than it sent fails every
request batched with it. A UINT8 tensor has no prefix to lie about, and Triton's core checks
its byte size against its shape per request, before batching.

    shape [1, L]   one body of L bytes (a raw HTTP body, `Inference-Header-Content-Length: 0`,
                   arrives like this)
    shape [n, L]   n bodies, each right-padded with zero bytes to the longest; a JSON text
                   never holds a raw zero byte, so the padding cannot change a body
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BODY_DATATYPE = "UINT8"  # the tensor's KServe datatype (config: TYPE_UINT8, dims [-1])


def encode_bodies(bodies: Sequence[bytes]) -> np.ndarray:
    """The [n, L] uint8 array for these bodies (zero-padded rows)."""
    if len(bodies) == 1:
        return np.frombuffer(bodies[0], dtype=np.uint8).reshape(1, -1)
    width = max((len(b) for b in bodies), default=0)
    rows = np.zeros((len(bodies), width), dtype=np.uint8)
    for row, body in zip(rows, bodies, strict=True):
        row[: len(body)] = np.frombuffer(body, dtype=np.uint8)
    return rows


def decode_bodies(array: np.ndarray) -> list[bytes]:
    """The bodies of a [n, L] uint8 array, padding removed."""
    if array.ndim != 2:
        array = array.reshape(len(array), -1) if array.ndim else array.reshape(1, -1)
    if len(array) == 1:
        return [array.tobytes().rstrip(b"\0")]
    return [row.tobytes().rstrip(b"\0") for row in array]
