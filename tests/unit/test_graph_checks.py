"""The stand-in backend refuses at load what the NGC image's C++ ONNX Runtime backend refuses:
each check of its ValidateInputs / ValidateOutputs, on a real ONNX Runtime session."""

import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from contract.errors import ServiceError
from server.onnxruntime_backend.graph_checks import check_config


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """tokens int64 [batch, length] -> embedding float [batch, 16], as the encoders are."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, 16], [0.5] * 16)
    nodes = [
        helper.make_node("Cast", ["tokens"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["as_float"], ["summed"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["summed", "w"], ["embedding"]),
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "encoder",
            [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "length"])],
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 16])],
            [weights],
        ),
        opset_imports=[helper.make_opsetid("", 11)],
    )
    path = tmp_path_factory.mktemp("graph") / "model.onnx"
    onnx.save(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.get_inputs(), session.get_outputs()


def config(**changes) -> dict:
    base = {
        "name": "enc0",
        "max_batch_size": 64,
        "input": [{"name": "tokens", "data_type": "TYPE_INT64", "dims": [-1]}],
        "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [16]}],
    }
    return base | changes


def test_the_generated_kind_of_config_loads(graph):
    check_config(config(), *graph)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [48]}]},
            "the model expects 2 dimensions (shape [-1,16]) but the model configuration "
            "specifies 2 dimensions (an initial batch dimension",
        ),
        (
            {"input": [{"name": "tokens", "data_type": "TYPE_INT32", "dims": [-1]}]},
            "configuration expects datatype TYPE_INT32 for input 'tokens', model provides "
            "TYPE_INT64",
        ),
        (
            {"output": [{"name": "embedding", "data_type": "TYPE_FP16", "dims": [16]}]},
            "configuration expects datatype TYPE_FP16 for output 'embedding'",
        ),
        (
            {"input": [{"name": "ids", "data_type": "TYPE_INT64", "dims": [-1]}]},
            "unexpected inference input 'ids', allowed inputs are: 'tokens'",
        ),
        (
            {"output": [{"name": "scores", "data_type": "TYPE_FP32", "dims": [16]}]},
            "unexpected inference output 'scores', allowed outputs are: 'embedding'",
        ),
        (
            {
                "input": [
                    {"name": "tokens", "data_type": "TYPE_INT64", "dims": [-1]},
                    {"name": "extra", "data_type": "TYPE_INT64", "dims": [-1]},
                ]
            },
            "configuration expects 2 inputs, model provides 1",
        ),
        (
            {"input": [{"name": "tokens", "data_type": "TYPE_INT64", "dims": [-1, 4]}]},
            "tensor 'tokens': the model expects 2 dimensions",
        ),
        (
            {"max_batch_size": 0},
            "tensor 'tokens': the model expects 2 dimensions (shape [-1,-1]) but the model "
            "configuration specifies 1 dimensions (shape [-1])",
        ),
        (
            {
                "input": [
                    {
                        "name": "tokens",
                        "data_type": "TYPE_INT64",
                        "dims": [-1],
                        "allow_ragged_batch": True,
                    }
                ]
            },
            "configuration expects model provides input with shape [-1]  for ragged input "
            "'tokens', model provides [-1,-1]",
        ),
        (
            {
                "batch_input": [
                    {
                        "kind": "BATCH_ITEM_SHAPE",
                        "target_name": ["lengths"],
                        "data_type": "TYPE_INT32",
                        "source_input": ["tokens"],
                    }
                ]
            },
            "configuration expects 2 inputs, model provides 1",
        ),
    ],
    ids=[
        "output dims",
        "input type",
        "output type",
        "input name",
        "output name",
        "input count",
        "input rank",
        "no batch dimension",
        "ragged",
        "batch input counted",
    ],
)
def test_what_the_cpp_backend_refuses_is_refused(graph, changes, message):
    with pytest.raises(ServiceError) as refused:
        check_config(config(**changes), *graph)
    assert message in str(refused.value)
