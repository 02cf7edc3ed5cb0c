"""Networks that answer at once: a repository's ONNX graphs rewritten to zeros of their shapes.

What a benchmark on such a repository measures is the front door alone, as on a GPU host,
where the networks cost a small fraction of what the front door's Python does (issue 36:
the PyTorch encoder ran 27.7x faster on an H100 than on two cores). Every graph keeps its
inputs and outputs, names, types, symbolic dimensions and metadata, so configs, checks and the
front door's plan are the real ones; each output becomes ConstantOfShape of the batch
dimension it shares with an input. The neighbours index is left out (it would refuse an enc1
it was not built from).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from contract.names import ENCODER_MODELS, PAIR_MODEL
from contract.neighbours import NEIGHBOURS_MODEL


def _dims(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def instant_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same signature; every output zeros, its first dimension taken from the input that
    carries the same symbolic dimension."""
    graph = model.graph
    nodes, initializers = [], []
    for n, output in enumerate(graph.output):
        batch, *rest = _dims(output)
        source, axis = next(
            (value.name, _dims(value).index(batch))
            for value in graph.input
            if batch in _dims(value)
        )
        shape, rows, tail = f"shape_{n}", f"rows_{n}", f"tail_{n}"
        initializers.append(numpy_helper.from_array(np.array(rest, dtype=np.int64), tail))
        nodes += [
            helper.make_node("Shape", [source], [shape]),
            helper.make_node("Slice", [shape, f"start_{n}", f"end_{n}"], [rows]),
            helper.make_node("Concat", [rows, tail], [f"dims_{n}"], axis=0),
            helper.make_node(
                "ConstantOfShape",
                [f"dims_{n}"],
                [output.name],
                value=helper.make_tensor("zero", output.type.tensor_type.elem_type, [1], [0]),
            ),
        ]
        initializers += [
            numpy_helper.from_array(np.array([axis], dtype=np.int64), f"start_{n}"),
            numpy_helper.from_array(np.array([axis + 1], dtype=np.int64), f"end_{n}"),
        ]
    instant = helper.make_graph(
        nodes, f"{graph.name}_instant", list(graph.input), list(graph.output), initializers
    )
    out = helper.make_model(instant, opset_imports=model.opset_import)
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)  # the flat form's separator, and the like
    onnx.checker.check_model(out)
    return out


def instant_repository(source: Path, target: Path) -> Path:
    """A copy of `source` whose networks answer at once (no neighbours index)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(NEIGHBOURS_MODEL))
    for name in (*ENCODER_MODELS, PAIR_MODEL):
        for path in (target / name / "1").glob("*.onnx"):
            onnx.save(instant_graph(onnx.load(path)), path)
    return target
