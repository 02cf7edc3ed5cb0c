"""What the NGC image's C++ ONNX Runtime backend checks when it loads a model, checked the same
way by the Python ONNX Runtime backend that stands in for it here, so that a config the image
would refuse is refused here too, with the same kind of message.

From `triton-inference-server/onnxruntime_backend` r24.10, `src/onnxruntime.cc`
(`ValidateInputs`, `ValidateOutputs`) and `CompareDimsSupported` in the backend library:

1. the config has as many inputs as the graph, its batch inputs counted ("configuration
   expects N inputs, model provides M");
2. every config input and output is one of the graph's ("unexpected inference input/output");
3. each one's data type is the graph's ("configuration expects datatype X ..., model provides
   TYPE_Y");
4. a ragged input (`allow_ragged_batch`) is a graph input of shape [-1];
5. with `max_batch_size` > 0 every graph tensor's first dimension is dynamic, and the config's
   dims, after that batch dimension, have the graph's rank; an input's fixed graph dimensions
   must equal the config's (a dynamic one takes any), an output's must equal it exactly (a
   dynamic graph dimension wants -1); with `max_batch_size` 0 the same without the batch
   dimension.

Scalar graph tensors (config dims all 1), optional inputs and sequence controls, which this
project's graphs do not have, are not reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence

from contract.errors import MISCONFIGURED, ServiceError

# ONNX Runtime's type strings -> Triton's config types.
_TYPES = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(double)": "TYPE_FP64",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int8)": "TYPE_INT8",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(bool)": "TYPE_BOOL",
    "tensor(string)": "TYPE_STRING",
}


def _shape(graph_shape: Sequence) -> list[int]:
    """ONNX Runtime's shape (ints, symbolic names, None) with every dynamic dimension -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in graph_shape]


def _text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _compare_dims(
    model: str, tensor: str, graph: list[int], dims: list[int], batch: int, exact: bool
):
    full = [-1, *dims] if batch > 0 else list(dims)
    if batch > 0 and (not graph or graph[0] != -1):
        raise ServiceError(
            MISCONFIGURED,
            f"model '{model}', tensor '{tensor}': for the model to support batching the shape "
            "should have at least 1 dimension and the first dimension must be -1; but shape "
            f"expected by the model is {_text(graph)}",
        )
    same = len(graph) == len(full) and all(
        g == c for g, c in zip(graph, full, strict=True) if exact or g != -1
    )
    if not same:
        batching = (
            " (an initial batch dimension because max_batch_size > 0 followed by the explicit "
            "tensor shape, making complete shape "
            if batch > 0
            else " (shape "
        )
        raise ServiceError(
            MISCONFIGURED,
            f"model '{model}', tensor '{tensor}': the model expects {len(graph)} dimensions "
            f"(shape {_text(graph)}) but the model configuration specifies {len(full)} "
            f"dimensions{batching}{_text(full)})",
        )


def check_config(config: dict, graph_inputs: Sequence, graph_outputs: Sequence) -> None:
    """Raises a MISCONFIGURED ServiceError where the C++ backend would refuse `config` (Triton's
    config as JSON, as a Python model's `initialize` receives it) for a graph whose inputs and
    outputs are ONNX Runtime's NodeArg lists (`session.get_inputs()`, `get_outputs()`)."""
    model = config.get("name", "?")
    batch = int(config.get("max_batch_size", 0))
    inputs = {arg.name: arg for arg in graph_inputs}
    outputs = {arg.name: arg for arg in graph_outputs}
    configured = config.get("input", [])
    batch_inputs = config.get("batch_input", [])
    if len(configured) + len(batch_inputs) != len(inputs):
        raise ServiceError(
            MISCONFIGURED,
            f"unable to load model '{model}', configuration expects "
            f"{len(configured) + len(batch_inputs)} inputs, model provides {len(inputs)}",
        )
    # The C++ backend binds a batch input by its target name and finds a wrong one only when
    # it runs; refused here at load, where it costs no request.
    for entry in batch_inputs:
        for target in entry.get("target_name", []):
            if target not in inputs:
                allowed = ", ".join(f"'{n}'" for n in sorted(inputs))
                raise ServiceError(
                    MISCONFIGURED,
                    f"unexpected batch input '{target}', allowed inputs are: {allowed}",
                )
    for kind, entries, graph, exact in (
        ("input", configured, inputs, False),
        ("output", config.get("output", []), outputs, True),
    ):
        for entry in entries:
            name, dtype = entry["name"], entry.get("data_type", "TYPE_INVALID")
            if name not in graph:
                allowed = ", ".join(f"'{n}'" for n in sorted(graph))
                raise ServiceError(
                    MISCONFIGURED,
                    f"unexpected inference {kind} '{name}', allowed {kind}s are: {allowed}",
                )
            provided = _TYPES.get(graph[name].type, graph[name].type)
            if dtype != provided:
                raise ServiceError(
                    MISCONFIGURED,
                    f"unable to load model '{model}', configuration expects datatype {dtype} "
                    f"for {kind} '{name}', model provides {provided}",
                )
            shape = _shape(graph[name].shape)
            dims = [int(d) for d in entry.get("reshape", {}).get("shape", entry.get("dims", []))]
            if kind == "input" and entry.get("allow_ragged_batch"):
                if shape != [-1]:
                    raise ServiceError(
                        MISCONFIGURED,
                        f"unable to load model '{model}', configuration expects model provides "
                        f"input with shape [-1]  for ragged input '{name}', model provides "
                        f"{_text(shape)}",
                    )
                continue
            _compare_dims(model, name, shape, dims, batch, exact)
