"""An encoder's ragged form (export.ragged) answers as its padded graph, fed the way Triton's
ragged batching feeds it: any lengths in one batch, padded [B, L] requests among them."""

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.flat import RAGGED_FILE, RAGGED_LENGTHS
from contract.names import ENCODER_INPUT
from contract.padding import pad
from export.onnx_export import export
from tests.helpers import small_model

VOCABULARY = 300  # tests.helpers.SMALL_MODEL's
_requests = st.lists(  # each request: B sequences, sent padded as one [B, L] tensor
    st.lists(st.lists(st.integers(1, VOCABULARY - 1), max_size=12), min_size=1, max_size=3),
    min_size=1,
    max_size=6,
)


@pytest.fixture(scope="module", params=["hcnn", "pooled_embedding"])
def sessions(request, tmp_path_factory):
    repository = tmp_path_factory.mktemp(request.param)
    export(small_model(enc0_network=request.param, enc1_network=request.param), repository)

    def load(name):
        path = repository / "enc0" / "1" / name
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    return load("model.onnx"), load(RAGGED_FILE)


def _triton_feed(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """What Triton gives a ragged `tokens` with a BATCH_ITEM_SHAPE `lengths`."""
    lengths = [[a.shape[1]] for a in arrays for _ in range(a.shape[0])]
    return {
        ENCODER_INPUT: np.concatenate([a.reshape(-1) for a in arrays]),
        RAGGED_LENGTHS: np.array(lengths, dtype=np.int32).reshape(-1, 1),
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(requests=_requests, data=st.data())
def test_a_batch_of_any_lengths_answers_as_each_request_alone(sessions, requests, data):
    padded, ragged = sessions
    arrays = [pad(sequences, 1 << 10) for sequences in requests]
    if data.draw(st.booleans(), label="a bad id in the first request"):
        arrays[0][0, 0] = VOCABULARY + data.draw(st.integers(0, 10**9))
    (got,) = ragged.run(None, _triton_feed(arrays))
    want = np.concatenate([padded.run(None, {ENCODER_INPUT: a})[0] for a in arrays])
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))  # the id guard, row by row
    scale = max(1.0, float(np.nanmax(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=0, atol=1e-5 * scale)


def test_an_empty_sequence_is_answered_with_nan_and_alone(sessions):
    _, ragged = sessions
    arrays = [np.array([[5, 6, 7]]), np.zeros((1, 0), dtype=np.int64), np.array([[5, 6, 7]])]
    (got,) = ragged.run(None, _triton_feed(arrays))
    assert np.isnan(got[1]).all() and not np.isnan(got[[0, 2]]).any()
    np.testing.assert_array_equal(got[0], got[2])
