"""An ONNX Runtime backend written in Python, served under the backend name `onnxruntime`.

The embedded tritonserver has no C++ ONNX Runtime backend, so a model whose config says `backend:
"onnxruntime"` runs on this file (Triton's Python-based backends). It is as strict as the C++
backend at load (server/onnxruntime_backend/graph_checks.py: names, types, dims and the batch
dimension against the graph) and follows it where it matters: it runs `<version>/model.onnx` (or the
config's `default_model_filename`), honours the instance kind and device id (CUDA provider on a GPU
instance when ONNX Runtime has it), and reads `intra_op_thread_count` / `inter_op_thread_count` (and
`spinning`, server.common.onnx_sessions) from the model's parameters.

Ragged batching as the C++ backend does it (backend_input_collector.cc): an input with
`allow_ragged_batch` is every request's elements concatenated into one 1-D tensor, and each
`batch_input` is computed from the requests (BATCH_ITEM_SHAPE, BATCH_ELEMENT_COUNT and the
accumulated counts), so a ragged model batches requests of any lengths here as there.

All requests of one `execute` that share their (non-ragged) input shapes run as one batch; if
that batch fails, each of its requests runs alone, so an error stays with the request that
caused it.
"""

from __future__ import annotations

import os
import sys

# The Python backend's stub starts its interpreter without applying PYTHONPATH, which is where
# the embedded launcher puts the project and its virtual environment; apply it here.
sys.path[:0] = [
    p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path
]

import json
from pathlib import Path

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from contract import errors  # noqa: E402
from server.common.drain import Gate, in_flight, refusals  # noqa: E402
from server.common.memory import RELEASE_ABOVE_BYTES, release_memory  # noqa: E402
from server.common.onnx_sessions import run, session  # noqa: E402
from server.common.tensors import read_tensor  # noqa: E402
from server.onnxruntime_backend.graph_checks import check_config  # noqa: E402


def _parameter(config: dict, key: str, default: int = 0) -> int:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return int(value) if value.strip() else default


def _batch_input(kind: str, shapes: list[tuple[int, ...]]) -> np.ndarray:
    """What Triton computes for a batch input of `kind` over requests whose source input has
    these shapes (batch dimension first)."""
    counts = np.array([int(np.prod(s)) for s in shapes], dtype=np.int64)
    if kind == "BATCH_ELEMENT_COUNT":
        return counts
    if kind == "BATCH_ACCUMULATED_ELEMENT_COUNT":
        return np.cumsum(counts)
    if kind == "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO":
        return np.concatenate([[0], np.cumsum(counts)])
    if kind == "BATCH_ITEM_SHAPE":  # one row per batch item: its shape without the batch dim
        return np.array([s[1:] for s in shapes for _ in range(s[0])], dtype=np.int64).reshape(
            -1, len(shapes[0]) - 1
        )
    raise ValueError(f"batch input kind {kind} is not supported here")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = Path(args["model_repository"]) / args["model_version"] / filename
        gpu = args["model_instance_kind"] == "GPU"
        spinning = config.get("parameters", {}).get("spinning", {}).get("string_value") or "auto"
        # a network of token ids is timed on its padded graph, as in process
        tokens = all(i["data_type"] == "TYPE_INT64" for i in config["input"])
        self.session = session(
            path,
            _parameter(config, "intra_op_thread_count"),
            _parameter(config, "inter_op_thread_count"),
            spinning,
            int(args["model_instance_device_id"]) if gpu else None,
            timed_by=path.with_name("model.onnx") if tokens else None,
        )
        # What the NGC image's C++ backend refuses at load is refused here too.
        check_config(config, self.session.get_inputs(), self.session.get_outputs())
        self.inputs = [i["name"] for i in config["input"]]
        batched = int(config.get("max_batch_size", 0)) > 0
        self.ranks = [len(i["dims"]) + batched for i in config["input"]]
        self.ragged = {i["name"] for i in config["input"] if i.get("allow_ragged_batch")}
        self.batch_inputs = [
            (
                b["target_name"][0],
                b["kind"],
                self.inputs.index(b["source_input"][0]),
                pb_utils.triton_string_to_numpy(b["data_type"]),
            )
            for b in config.get("batch_input", [])
        ]
        self.outputs = [o["name"] for o in config["output"]]
        self.output_dtypes = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]
        }

        self.gate = Gate.from_env(args["model_instance_name"])

    def execute(self, requests: list) -> list:
        with self.gate.busy():
            if not self.gate.refusing():
                responses = self._execute(requests)
                if self.received > RELEASE_ABOVE_BYTES:
                    release_memory()
                return responses
            # A stop began (server/common/drain.py): the front door's calls for requests in flight
            # are served, anything new is refused with a retryable error.
            kept = [i for i, r in enumerate(requests) if in_flight(r.parameters())]
            responses = refusals(pb_utils, len(requests))
            for i, response in zip(kept, self._execute([requests[i] for i in kept]), strict=True):
                responses[i] = response
            return responses

    def _inputs(self, request) -> list[np.ndarray]:
        return [
            read_tensor(pb_utils.get_input_tensor_by_name(request, name), name, rank)
            for name, rank in zip(self.inputs, self.ranks, strict=True)
        ]

    def _execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        arrays: list = [None] * len(requests)
        for index, request in enumerate(requests):
            try:
                arrays[index] = self._inputs(request)
            except errors.ServiceError as error:
                responses[index] = pb_utils.InferenceResponse(
                    error=errors.triton_error(pb_utils, error)
                )
        self.received = sum(a.nbytes for inputs in arrays if inputs for a in inputs)
        # Requests are batched per shape signature; different shapes cannot share one tensor,
        # unless the input is ragged.
        groups: dict[tuple, list[int]] = {}
        for index, inputs in enumerate(arrays):
            if inputs is None:
                continue
            signature = tuple(
                a.shape[1:]
                for a, name in zip(inputs, self.inputs, strict=True)
                if name not in self.ragged
            )
            groups.setdefault(signature, []).append(index)
        for members in groups.values():
            try:
                self._answer(arrays, members, responses)
            except Exception:  # noqa: BLE001 - find whose input it was: each request alone
                for i in members:
                    try:
                        self._answer(arrays, [i], responses)
                    except Exception as error:  # noqa: BLE001 - that request's error only
                        message = f"onnxruntime: {str(error).splitlines()[0][:200]}"
                        fault = errors.ServiceError(errors.SERVER_FAULT, message)
                        responses[i] = pb_utils.InferenceResponse(
                            error=errors.triton_error(pb_utils, fault)
                        )
        return responses

    def _answer(self, arrays: list, members: list[int], responses: list) -> None:
        """Runs these requests as one batch and slices the outputs back to each."""
        feed = {
            name: np.concatenate(
                [arrays[i][k].reshape(-1) if name in self.ragged else arrays[i][k] for i in members]
            )
            for k, name in enumerate(self.inputs)
        }
        for target, kind, source, dtype in self.batch_inputs:
            shapes = [arrays[i][source].shape for i in members]
            feed[target] = _batch_input(kind, shapes).astype(dtype)
        results = run(self.session, self.outputs, feed)
        start = 0
        for i in members:
            stop = start + len(arrays[i][0])
            responses[i] = pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor(name, result[start:stop].astype(self.output_dtypes[name]))
                    for name, result in zip(self.outputs, results, strict=True)
                ]
            )
            start = stop
