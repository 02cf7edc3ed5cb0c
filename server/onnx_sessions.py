"""ONNX Runtime sessions for the exported networks, made one way wherever they run: in the
embedded server's ONNX Runtime backend and in the front door's own process (networks
`in_process`, server.host)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from contract.flat import FLAT_FILE, SEPARATOR_KEY
from contract.names import ENCODER_MODELS, PAIR_MODEL
from contract.neighbours import ITEMS_OUTPUT, NEIGHBOURS_MODEL, QUERY_INPUT, SCORES_OUTPUT
from server.dispatch import flat_name


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
    if providers is None:
        providers = ["CPUExecutionProvider"]
        if device_id is not None and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), *providers]
    return ort.InferenceSession(str(path), options, providers=providers)


# ONNX Runtime's CPU arena keeps the peak of every call for good: after maximal requests it
# held ~410 MB of the front door's ~545 MB. Turning it off cost ~10% of the served throughput
# (make perf, gRPC: 720-750 / 1,420-1,530 req/s at c1 / c16 against 819-821 / 1,530-1,640),
# so the arena stays and a big call gives its chunks back when it ends (then server.memory
# trims the heap): in process, 6 maximal requests in a row left 142-151 MB, against 544.
SHRINK_ABOVE_ELEMENTS = 1 << 16
_SHRINK = ort.RunOptions()
_SHRINK.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def run(session: ort.InferenceSession, outputs: list[str], feed: dict) -> list:
    """session.run; a call with more input elements than SHRINK_ABOVE_ELEMENTS gives its arena
    memory back when it ends, a small one keeps the arena's speed."""
    big = sum(array.size for array in feed.values()) > SHRINK_ABOVE_ELEMENTS
    return session.run(outputs, feed, _SHRINK if big else None)


class Networks:
    """enc0, enc1 and pair of a repository in this process, as server.dispatch calls them (a
    Runner), with the flat forms export wrote (contract.flat): `flat` maps an encoder to its
    separator, and `flat_name(model)` is what a call to its flat form is named; `search` is
    the catalogue index's exact search where the repository has one (a server.neighbours
    Searcher), else None."""

    def __init__(self, repository: Path, *options, providers: list | None = None):
        folder = Path(repository)
        self.sessions = {
            name: session(folder / name / "1" / "model.onnx", *options, providers=providers)
            for name in (*ENCODER_MODELS, PAIR_MODEL)
        }
        self.flat: dict[str, int] = {}
        for name in ENCODER_MODELS:
            path = folder / name / "1" / FLAT_FILE
            if path.exists():
                flat = session(path, *options, providers=providers)
                self.sessions[flat_name(name)] = flat
                self.flat[name] = int(flat.get_modelmeta().custom_metadata_map[SEPARATOR_KEY])
        self.search = None
        index = folder / NEIGHBOURS_MODEL / "1" / "model.onnx"
        if index.exists():
            searcher = session(index, *options, providers=providers)

            def search(queries):
                scores, items = run(searcher, [SCORES_OUTPUT, ITEMS_OUTPUT], {QUERY_INPUT: queries})
                return scores, items

            self.search = search

    def __call__(self, model: str, feed: dict, output: str):
        return run(self.sessions[model], [output], feed)[0]


def network_runner(
    repository: Path,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    allow_spinning: bool = False,
    providers: list | None = None,
) -> Networks:
    """The networks of a repository in this process (see Networks)."""
    options = (intra_op_threads, inter_op_threads, allow_spinning)
    return Networks(repository, *options, providers=providers)
