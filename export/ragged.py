"""An encoder's ragged form: the graph Triton's ragged batching feeds (contract.flat).

Triton's ONNX Runtime backend concatenates the `tokens` of every request of a batch into one
1-D tensor (an input with `allow_ragged_batch`, graph shape [-1]) and adds a batch input of
kind BATCH_ITEM_SHAPE, `lengths` [items, 1] INT32: each sequence's length, a request of shape
[B, L] giving B items of L. This graph is the flat form (flat.onnx) with a prologue that lays
those sequences out as contract.flat does (separator zeros after each, the [items, longest]
gather), written with onnx.helper because it only moves indexes: no PyTorch module to trace.

The answers are the padded graph's: ids of 0 inside a sequence are padding there as in the
padded form (a padded [B, L] request answers as its padded rows), the flat graph's id guard
answers a sequence with an id outside the vocabulary with NaN, and an empty sequence (L = 0),
which the padded graph's guard also rejects, is answered with NaN by the epilogue.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from contract.flat import FLAT_INPUTS, RAGGED_LENGTHS
from contract.names import ENCODER_INPUT, ENCODER_OUTPUT

_INNER = "flat/"  # the flat graph's names inside this one


def _constant(name: str, value, dtype=TensorProto.INT64) -> onnx.NodeProto:
    values = value if isinstance(value, list) else [value]
    dims = [len(values)] if isinstance(value, list) else []
    return helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, dtype, dims, values)
    )


def _prologue(separator: int) -> list[onnx.NodeProto]:
    """`tokens` [T] and `lengths` [N, 1] -> the flat graph's `tokens` [1, T + N * separator]
    and `gather` [N, longest]."""
    tokens, gather = (_INNER + name for name in FLAT_INPUTS)
    n = helper.make_node
    return [
        _constant("zero", 0),
        _constant("one", 1),
        _constant("axis0", [0]),
        _constant("axis1", [1]),
        _constant("separator", separator),
        n("Squeeze", [RAGGED_LENGTHS, "axis1"], ["lengths_i32"]),
        n("Cast", ["lengths_i32"], ["sizes"], to=TensorProto.INT64),  # [N]
        # where each sequence starts in the flat row: the strides before it
        n("Add", ["sizes", "separator"], ["stride"]),
        n("CumSum", ["stride", "zero"], ["stride_ends"]),
        n("Sub", ["stride_ends", "stride"], ["starts"]),
        # each token's sequence: how many sequences end at or before it
        n("CumSum", ["sizes", "zero"], ["ends"]),
        n("Shape", [ENCODER_INPUT], ["count"]),  # [1] = T
        n("Add", ["count", "one"], ["count_1"]),
        n("ConstantOfShape", ["count_1"], ["no_marks"], value=helper.make_tensor("", 7, [1], [0])),
        n("Shape", ["sizes"], ["count_n"]),  # [1] = N
        n("Expand", ["one", "count_n"], ["marks_one"]),
        n("ScatterElements", ["no_marks", "ends", "marks_one"], ["marks"], reduction="add"),
        n("CumSum", ["marks", "zero"], ["marks_so_far"]),
        n("Slice", ["marks_so_far", "axis0", "count", "axis0"], ["sequence"]),  # [T]
        # a token's place in the flat row: its own index, plus the separators before it
        n("Squeeze", ["count"], ["count_scalar"]),
        n("Range", ["zero", "count_scalar", "one"], ["index"]),
        n("Mul", ["sequence", "separator"], ["shift"]),
        n("Add", ["index", "shift"], ["place"]),
        n("Mul", ["count_n", "separator"], ["separators"]),
        n("Add", ["count", "separators"], ["row_size"]),
        n("ConstantOfShape", ["row_size"], ["zeros"], value=helper.make_tensor("", 7, [1], [0])),
        n("ScatterElements", ["zeros", "place", ENCODER_INPUT], ["row"]),
        n("Unsqueeze", ["row", "axis0"], [tokens]),
        # row i of the gather: sequence i's positions, then the zero after it
        n("ReduceMax", ["sizes"], ["longest_or_none"], keepdims=0),
        n("Max", ["longest_or_none", "one"], ["longest"]),
        n("Range", ["zero", "longest", "one"], ["offsets"]),
        n("Unsqueeze", ["offsets", "axis0"], ["offsets_row"]),
        n("Unsqueeze", ["sizes", "axis1"], ["lengths_column"]),
        n("Min", ["offsets_row", "lengths_column"], ["within"]),
        n("Unsqueeze", ["starts", "axis1"], ["starts_column"]),
        n("Add", ["starts_column", "within"], [gather]),
    ]


def _epilogue() -> list[onnx.NodeProto]:
    """An empty sequence's answer is NaN, as the padded graph's guard answers it."""
    n = helper.make_node
    return [
        n("Greater", ["sizes", "zero"], ["present"]),
        n("Unsqueeze", ["present", "axis1"], ["present_column"]),
        _constant("nan", float("nan"), TensorProto.FLOAT),
        n("Where", ["present_column", _INNER + ENCODER_OUTPUT, "nan"], [ENCODER_OUTPUT]),
    ]


def ragged_graph(flat: bytes, separator: int) -> bytes:
    """The ragged form of an encoder whose flat form (contract.flat) is `flat`."""
    inner = onnx.compose.add_prefix(onnx.load_from_string(flat), _INNER)
    dims = inner.graph.output[0].type.tensor_type.shape.dim
    graph = helper.make_graph(
        [*_prologue(separator), *inner.graph.node, *_epilogue()],
        "ragged",
        [
            helper.make_tensor_value_info(ENCODER_INPUT, TensorProto.INT64, ["tokens"]),
            helper.make_tensor_value_info(RAGGED_LENGTHS, TensorProto.INT32, ["items", 1]),
        ],
        [
            helper.make_tensor_value_info(
                ENCODER_OUTPUT,
                TensorProto.FLOAT,
                ["items", *(d.dim_value or d.dim_param for d in dims[1:])],
            )
        ],
        initializer=list(inner.graph.initializer),
        value_info=list(inner.graph.value_info),
    )
    model = helper.make_model(
        graph, opset_imports=list(inner.opset_import), ir_version=inner.ir_version
    )
    model.metadata_props.extend(inner.metadata_props)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
