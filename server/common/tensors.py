"""A request's tensor as a Python model reads it, checked against the shape the client gave.

Triton 2.51 keeps a request's batch size where 0 means "none yet", and computes byte sizes in
64-bit arithmetic that wraps: sent [4611686018427387904, 4] with 4 elements of data, a model
receives a tensor of shape [4], its batch dimension gone (measured here; ONNX Runtime then
failed with a 500, and the front door read four bodies of one byte). Both Python models (the
front door and the ONNX Runtime stand-in) read their inputs here, and refuse a tensor whose
rank or element count is not what the config and the data say, as the client's error.
"""

from __future__ import annotations

import math

import numpy as np

from contract.errors import BAD_REQUEST, ServiceError


def read_tensor(tensor, name: str, rank: int) -> np.ndarray:
    """`tensor.as_numpy()` of the `rank` its config gives it (the batch dimension included),
    or a ServiceError: the caller's mistake."""
    shape = [int(d) for d in tensor.shape()]
    try:
        array = tensor.as_numpy()
    except ValueError:
        array = None
    # math.prod over Python integers: exact, where the server's own count wrapped
    if (
        array is None
        or len(shape) != rank
        or any(d < 0 for d in shape)
        or math.prod(shape) != array.size
    ):
        raise ServiceError(
            BAD_REQUEST,
            f"input {name!r}: its shape and the data sent disagree (the shape's element count "
            "overflows, or its batch dimension is missing)",
        )
    return array
