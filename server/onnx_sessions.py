"""ONNX Runtime sessions for the exported networks, made one way wherever they run: in the
embedded server's ONNX Runtime backend and in the front door's own process (networks
`in_process`, server.host)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from contract.names import ENCODER_MODELS, PAIR_MODEL
from server.dispatch import Runner


def session(
    path: Path,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    allow_spinning: bool = False,
    device_id: int | None = None,
    providers: list | None = None,
) -> ort.InferenceSession:
    """A session on `path`; on the CUDA provider when `device_id` is given and this ONNX
    Runtime build has it, on `providers` when they are given. 0 threads: ONNX Runtime's
    default (every core)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    # Idle ONNX Runtime threads spin, waiting for work; on a small CPU they take the cores the
    # front door needs.
    spinning = "1" if allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime's CPU arena keeps the peak of every call for good: after maximal requests
    # it held ~410 MB of the front door's ~545 MB; without it that memory goes back, at no
    # measurable cost (in process, demo model, 2 cores: the documentation's request 208-228
    # against 228-262 us, 64 instances 2.20-2.28 against 2.12-2.41 ms; docs/robustness.md).
    options.enable_cpu_mem_arena = False
    if providers is None:
        providers = ["CPUExecutionProvider"]
        if device_id is not None and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), *providers]
    return ort.InferenceSession(str(path), options, providers=providers)


def network_runner(
    repository: Path,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    allow_spinning: bool = False,
    providers: list | None = None,
) -> Runner:
    """enc0, enc1 and pair of a repository in this process, as server.dispatch calls them."""
    sessions = {
        name: session(
            Path(repository) / name / "1" / "model.onnx",
            intra_op_threads,
            inter_op_threads,
            allow_spinning,
            providers=providers,
        )
        for name in (*ENCODER_MODELS, PAIR_MODEL)
    }
    return lambda model, feed, output: sessions[model].run([output], feed)[0]
