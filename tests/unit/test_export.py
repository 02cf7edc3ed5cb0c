import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from contract.facts import Facts
from export import checkpoint, demo
from export.onnx_export import ExportMismatch, export
from tests.helpers import small_model as small


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "setup",
    [
        {"enc0_network": "pooled_embedding", "comparator_list": "hadamard"},
        {"enc0_network": "hcnn", "comparator_list": "concat"},
        {"enc0_network": "bilstm", "comparator_list": "abs_diff,concat"},
        {"enc0_network": "hcnn", "enc1_network": "bilstm", "output_layer": "mean_squared_error"},
        {
            "enc0_network": "bilstm",
            "enc1_network": "pooled_embedding",
            "num_classes": 5,
            "mlp_layers": 0,
        },
    ],
    ids=lambda s: "-".join(map(str, s.values())),
)
def test_onnx_runtime_agrees_with_torch(tmp_path, setup):
    model = small(**setup)
    reports = export(model, tmp_path)
    flat = {
        f"enc{side} {form}"
        for side in (0, 1)
        for form in ("flat", "ragged")
        if hasattr(model.enc0 if side == 0 else model.enc1, "flat")
    }
    assert {r.name for r in reports} == {"enc0", "enc1", "pair", "pair head"} | flat
    assert all(r.max_difference <= 1e-5 for r in reports)
    assert not any(m.training for m in model.modules())  # export leaves the model in eval mode
    for name in ("enc0", "enc1", "pair"):
        onnx.checker.check_model(onnx.load(tmp_path / name / "1" / "model.onnx"))
    # Independent of export's own check: a fresh batch shape, through the written files.
    rng = np.random.default_rng(42)
    tokens = [rng.integers(1, 300, size=n).tolist() for n in (2, 9, 31)]
    import torch

    from contract.padding import pad

    array = pad(tokens, 40)
    (got,) = _session(tmp_path / "enc1" / "1" / "model.onnx").run(None, {"tokens": array})
    with torch.no_grad():
        want = model.encode(1, torch.from_numpy(array)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    (scores,) = _session(tmp_path / "pair" / "1" / "model.onnx").run(
        None, {"in0": array, "in1": array[::-1].copy()}
    )
    assert scores.shape == (3, model.hp.output_dim)
    facts = Facts.load(tmp_path)
    assert facts.enc_dim == 12 and facts.output_dim == model.hp.output_dim


def test_a_disagreeing_export_is_refused_and_writes_nothing(tmp_path):
    with pytest.raises(ExportMismatch, match="not written"):
        export(small(), tmp_path, tolerance=-1.0)  # nothing can be that close
    assert not list(tmp_path.rglob("*.onnx")) and not (tmp_path / "facts.json").exists()


def test_the_demo_model_builds_and_learned_its_task(tmp_path):
    start = time.perf_counter()
    metrics = demo.build(tmp_path / "repo", tmp_path / "demo.pt", progress=False)
    took = time.perf_counter() - start
    facts = Facts.load(tmp_path / "repo")
    assert facts.vocab_sizes[0] > 10178 and facts.enc_dim == 16
    assert metrics["accuracy"] > 0.6  # chance is 0.5: the task has structure and it was learned
    assert checkpoint.load(tmp_path / "demo.pt").hp.enc0_network == "hcnn"
    print(f"demo model built in {took:.1f} s")


@pytest.mark.parametrize("network", ["hcnn", "pooled_embedding"])
def test_a_checkpoint_from_before_residual_hcnn_is_refused_only_for_hcnn(tmp_path, network):
    path = tmp_path / "old.pt"
    checkpoint.save(small(enc0_network=network), path)
    saved = torch.load(path, weights_only=True)
    del saved["format"]  # as written before the format was recorded
    torch.save(saved, path)
    if network == "hcnn":
        with pytest.raises(ValueError, match="retrain"):
            checkpoint.load(path)
    else:
        assert checkpoint.load(path).hp.enc0_network == network


def test_a_model_with_large_outputs_exports_with_the_default_tolerance(tmp_path):
    """Round-off grows with the outputs: a fixed absolute bound refused the realistic model
    (1.5e-05 off on outputs in the tens). The tolerance is relative to the outputs' size."""
    model = small(enc0_network="hcnn", enc0_layers=4)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3.0)  # encodings in the thousands
    reports = export(model, tmp_path)
    assert all(r.max_difference <= 1e-5 for r in reports)
    tokens = np.array([[5, 9, 2, 7, 1, 3]], dtype=np.int64)
    (embedding,) = _session(tmp_path / "enc0" / "1" / "model.onnx").run(None, {"tokens": tokens})
    assert np.abs(embedding).max() > 100, "the outputs were large: the test tested something"


def test_a_graph_that_computes_something_else_is_refused(tmp_path):
    """A real mismatch: the graph of one model checked against a module whose weights differ
    by 0.1%, far less than any bug would, is still refused at the default tolerance."""
    from export.onnx_export import TOLERANCE, _EncoderGraph, _to_onnx, _verify

    model = small()
    tokens = torch.tensor([[5, 9, 2, 7]])
    graph = _to_onnx(_EncoderGraph(model, 0).eval(), (tokens,), ["tokens"], "embedding")
    other = small()
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.mul_(1.001)
    with pytest.raises(ExportMismatch, match="of the outputs' size"):
        _verify(
            "enc0", graph, _EncoderGraph(other, 0).eval(), [{"tokens": tokens.numpy()}], TOLERANCE
        )


@pytest.mark.parametrize("network", ["hcnn", "pooled_embedding"])
def test_flat_forms_answer_as_the_padded_graphs(tmp_path, network):
    """Through the written files, fresh lengths: the flat form (contract.flat) gives each
    sequence the padded graph's answer, and NaN to a sequence with an id outside the
    vocabulary without touching the others."""
    from contract.flat import SEPARATOR_KEY, flat_layout
    from contract.padding import pad

    model = small(enc0_network=network, enc1_network="enc0")
    export(model, tmp_path)
    rng = np.random.default_rng(7)
    tokens = [rng.integers(1, 300, size=n).tolist() for n in (1, 2, 9, 31, 4, 40)]
    tokens[3][5] = 300  # outside the vocabulary (ids 0..299)
    padded = pad(tokens, 40)
    (want,) = _session(tmp_path / "enc0" / "1" / "model.onnx").run(None, {"tokens": padded})
    flat = _session(tmp_path / "enc0" / "1" / "flat.onnx")
    separator = int(flat.get_modelmeta().custom_metadata_map[SEPARATOR_KEY])
    lengths = np.array([len(t) for t in tokens])
    feed = flat_layout(np.concatenate(tokens), lengths, separator)
    (got,) = flat.run(None, feed)
    assert np.isnan(got[3]).all() and np.isnan(want[3]).all()
    good = [0, 1, 2, 4, 5]
    scale = max(1.0, float(np.abs(want[good]).max()))
    assert float(np.abs(got[good] - want[good]).max()) / scale <= 1e-5
    # fewer positions computed than padded: the point of the form
    assert feed["tokens"].size < padded.size
