"""The front door: JSON / JSON Lines bodies in, Object2Vec answers out.

One BYTES input holds the whole body (so a raw HTTP body reaches it too); the request parameters
`content_type` and `accept` carry the media types. Parsing and formatting live in
`server.payload`, routing and batching in `server.dispatch`; this file only moves tensors.
The BLS calls of one `execute` (enc0, enc1, pair) are awaited together, so they run at once.
"""

import os
import sys

# The Python backend's stub starts its interpreter without applying PYTHONPATH, which is where
# the embedded launcher puts the project and its virtual environment; apply it here.
sys.path[:0] = [
    p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path
]

import asyncio
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from export.facts import Facts
from server.configs import BODY_INPUT, RESPONSE_OUTPUT
from server.dispatch import Call, plan, scatter
from server.payload import Limits, PayloadError, format_response, parse_request


async def _run(call: Call) -> np.ndarray:
    """One BLS call to an ONNX network; the calls of one execute run concurrently."""
    request = pb_utils.InferenceRequest(
        model_name=call.model,
        inputs=[pb_utils.Tensor(name, array) for name, array in call.feed.items()],
        requested_output_names=[call.output],
    )
    response = await request.async_exec()
    if response.has_error():
        raise pb_utils.TritonModelException(f"{call.model}: {response.error().message()}")
    return pb_utils.get_output_tensor_by_name(response, call.output).as_numpy()


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        facts = Facts.load(Path(args["model_repository"]).parent)
        self.limits = Limits.of(facts, int(params["max_body_bytes"]))
        self.max_batch_size = int(params["network_max_batch_size"])
        self.max_padding_ratio = float(params.get("max_padding_ratio", 0))

    async def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        parsed, owners = [], []
        for index, request in enumerate(requests):
            body = pb_utils.get_input_tensor_by_name(request, BODY_INPUT).as_numpy().reshape(-1)[0]
            params = json.loads(request.parameters())
            try:
                parsed.append(
                    parse_request(
                        body, params.get("content_type"), params.get("accept"), self.limits
                    )
                )
                owners.append(index)
            except PayloadError as error:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
                )
        try:
            calls = plan(parsed, self.max_batch_size, self.max_padding_ratio)
            outputs = await asyncio.gather(*(_run(call) for call in calls))
            answers = scatter(parsed, calls, outputs)
        except pb_utils.TritonModelException as error:
            answers = [error] * len(parsed)
        for index, request, rows in zip(owners, parsed, answers, strict=True):
            if isinstance(rows, Exception):
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(rows)))
                continue
            body = format_response(rows, request.accept)
            responses[index] = pb_utils.InferenceResponse(
                [pb_utils.Tensor(RESPONSE_OUTPUT, np.array([[body]], dtype=np.object_))]
            )
        return responses
