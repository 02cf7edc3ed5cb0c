"""The floor: an empty Python-backend model. It takes the front door's input, does no work,
and answers each body with itself; what it costs is what any Python front door costs on
this Triton (HTTP/gRPC, the scheduler, the stub's shared memory), with nothing of ours."""

import os
import sys

# As in the front door: the stub ignores PYTHONPATH, where the embedded launcher puts the
# virtual environment (its numpy 1.x, which the stub's bytes tensors need).
sys.path[:0] = [
    p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path
]

import numpy as np
import triton_python_backend_utils as pb_utils

from contract.body import decode_bodies
from contract.names import BODY_INPUT, RESPONSE_OUTPUT


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            body = pb_utils.get_input_tensor_by_name(request, BODY_INPUT).as_numpy()
            answer = np.array([[b] for b in decode_bodies(body)], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(RESPONSE_OUTPUT, answer)]))
        return responses
