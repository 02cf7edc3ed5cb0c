"""ONNX Runtime sessions for the exported networks, made one way wherever they run: in the
embedded server's ONNX Runtime backend and in the front door's own process (networks
`in_process`, server.launcher.host)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.flat import FLAT_FILE, SEPARATOR_KEY, flat_name
from contract.names import ENCODER_MODELS, PAIR_MODEL
from contract.neighbours import NEIGHBOURS_MODEL, QUERY_INPUT, search_outputs
from server.common.settings import SPINNING

# `auto` spins a network's threads where one run of a sequence of 64 tokens takes this long.
# There a run is many operators of real work, and handing each one to sleeping threads costs a
# wake-up per operator; where runs are short the threads would spin on between runs, through
# the front door's own work around them (both measured in docs/performance.md).
SPIN_ABOVE_S = 0.5e-3


def session(
    path: Path,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    spinning: str = "off",
    device_id: int | None = None,
    providers: list | None = None,
    timed_by: Path | None = None,
) -> ort.InferenceSession:
    """A session on `path`; on the CUDA provider when `device_id` is given and this ONNX
    Runtime build has it, on `providers` when they are given. 0 threads: ONNX Runtime's
    default (every core). `spinning` (SPINNING): whether idle threads spin, waiting for the
    next operator; `auto` decides by how long one run of `timed_by` takes, the padded graph
    of a network of token ids (spins_by_default), and is off where there is none to time (the
    catalogue's search: one large matrix product a call)."""
    if spinning not in SPINNING:
        raise ValueError(f"spinning {spinning!r}: use {', '.join(SPINNING)}")
    args = (intra_op_threads, inter_op_threads, device_id, providers)
    auto = spinning == "auto" and timed_by is not None
    spin = spinning == "on" or (auto and spins_by_default(timed_by, *args))
    return _session(path, spin, *args)


def spins_by_default(
    padded: Path, intra: int, inter: int, device_id: int | None, providers: list | None
) -> bool:
    """Whether one run of `padded` (a network whose inputs are token ids) on one sequence of
    64 tokens takes SPIN_ABOVE_S or longer, at its best of 3 (a busy host only adds)."""
    quiet = _session(padded, False, intra, inter, device_id, providers)
    feed = {i.name: np.ones((1, 64), dtype=np.int64) for i in quiet.get_inputs()}
    quiet.run(None, feed)  # the first run allocates
    took = []
    for _ in range(3):
        start = time.perf_counter()
        quiet.run(None, feed)
        took.append(time.perf_counter() - start)
    return min(took) >= SPIN_ABOVE_S


def _session(
    path: Path,
    spin: bool,
    intra_op_threads: int,
    inter_op_threads: int,
    device_id: int | None,
    providers: list | None,
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    spinning = "1" if spin else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if providers is None:
        providers = ["CPUExecutionProvider"]
        if device_id is not None and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), *providers]
    return ort.InferenceSession(str(path), options, providers=providers)


# ONNX Runtime's CPU arena keeps the peak of every call for good, most of the front door's
# memory after maximal requests; turning it off costs served throughput (docs/robustness.md),
# so the arena stays and a big call gives its chunks back when it ends (then
# server.common.memory trims the heap).
SHRINK_ABOVE_ELEMENTS = 1 << 16
_SHRINK = ort.RunOptions()
_SHRINK.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def run(session: ort.InferenceSession, outputs: list[str], feed: dict) -> list:
    """session.run; a call with more input elements than SHRINK_ABOVE_ELEMENTS gives its arena
    memory back when it ends, a small one keeps the arena's speed."""
    big = sum(array.size for array in feed.values()) > SHRINK_ABOVE_ELEMENTS
    return session.run(outputs, feed, _SHRINK if big else None)


class Networks:
    """enc0, enc1 and pair of a repository in this process, as server.frontdoor.dispatch calls them
    (a Runner), with the flat forms export wrote (contract.flat): `flat` maps an encoder to its
    separator, and `flat_name(model)` is what a call to its flat form is named; `search` is the
    catalogue index's exact search where the repository has one (a server.frontdoor.neighbours
    Searcher), else None."""

    def __init__(self, repository: Path, *options, providers: list | None = None):
        folder = Path(repository)
        padded = {
            name: folder / name / "1" / "model.onnx" for name in (*ENCODER_MODELS, PAIR_MODEL)
        }
        self.sessions = {
            name: session(path, *options, providers=providers, timed_by=path)
            for name, path in padded.items()
        }
        self.flat: dict[str, int] = {}
        for name in ENCODER_MODELS:
            path = folder / name / "1" / FLAT_FILE
            if path.exists():
                flat = session(path, *options, providers=providers, timed_by=padded[name])
                self.sessions[flat_name(name)] = flat
                self.flat[name] = int(flat.get_modelmeta().custom_metadata_map[SEPARATOR_KEY])
        self.search = None
        index = folder / NEIGHBOURS_MODEL / "1" / "model.onnx"
        if index.exists():
            searcher = session(index, *options, providers=providers)

            def search(queries, deep=False):
                outputs = list(search_outputs(deep))
                scores, items = run(searcher, outputs, {QUERY_INPUT: queries})
                return scores, items

            self.search = search

    def __call__(self, model: str, feed: dict, output: str):
        return run(self.sessions[model], [output], feed)[0]


def network_runner(
    repository: Path,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    spinning: str = "off",
    providers: list | None = None,
) -> Networks:
    """The networks of a repository in this process (see Networks)."""
    options = (intra_op_threads, inter_op_threads, spinning)
    return Networks(repository, *options, providers=providers)
