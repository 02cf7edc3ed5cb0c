"""`spinning auto`: a network's threads spin where its runs are long, sleep where short."""

import pytest

from export.onnx_export import export
from server.common import onnx_sessions
from server.common.onnx_sessions import network_runner
from tests.helpers import small_model


def _spinning(networks) -> dict[str, str]:
    return {
        name: s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        for name, s in networks.sessions.items()
    }


def test_auto_spins_only_where_a_run_takes_long(tmp_path, monkeypatch):
    export(small_model(enc0_network="hcnn", enc1_network="pooled_embedding"), tmp_path)
    # the small model's runs take microseconds: asleep, as "off"
    assert set(_spinning(network_runner(tmp_path, 1, 1, "auto")).values()) == {"0"}
    assert set(_spinning(network_runner(tmp_path, 1, 1, "on")).values()) == {"1"}
    monkeypatch.setattr(onnx_sessions, "SPIN_ABOVE_S", 0.0)  # every run is long enough now
    spinning = _spinning(network_runner(tmp_path, 1, 1, "auto"))
    assert spinning == {"enc0": "1", "enc1": "1", "pair": "1", "enc0/flat": "1", "enc1/flat": "1"}
    assert set(_spinning(network_runner(tmp_path, 1, 1, "off")).values()) == {"0"}
    with pytest.raises(ValueError, match="use auto, on, off"):
        network_runner(tmp_path, 1, 1, "sometimes")
