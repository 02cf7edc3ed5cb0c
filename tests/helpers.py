"""What the tests share: clients of a running server, reference answers, small models.

Tests import this module and `conftest` fixtures, never each other.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from client.api import body_tensor
from contract.example import DOC_EXAMPLE, DOC_EXAMPLE_BODY
from contract.names import JSON, JSONLINES
from contract.neighbours import HEAD_FILE, IDS_FILE, ITEMS_FILE, Catalogue
from contract.padding import pad
from export.hyperparameters import Hyperparameters
from export.network import Object2Vec
from server.launcher.embedded import PROJECT_ROOT, EmbeddedServer
from server.launcher.process import free_port

__all__ = [
    "LAUNCHED",
    "Launcher",
    "stop_launched",
    "DOC_EXAMPLE",
    "DOC_EXAMPLE_BODY",
    "JSON",
    "JSONLINES",
    "PROTOCOLS",
    "SMALL_MODEL",
    "answer_vectors",
    "catalogue_scores",
    "check_neighbours",
    "client_for",
    "free_port",
    "infer",
    "infer_with",
    "json_body",
    "random_lines",
    "onnx_run",
    "same",
    "small_model",
    "start_server",
]

PROTOCOLS = ["http", "grpc"]

# A small model for tests that train or export.
SMALL_MODEL = {
    "enc0_max_seq_len": 40,
    "enc1_max_seq_len": 40,
    "enc0_vocab_size": 300,
    "enc1_vocab_size": 300,
    "enc_dim": 12,
    "enc0_token_embedding_dim": 8,
    "mlp_dim": 16,
}


def start_server(repository: Path, mode: str | None = None, **kwargs) -> EmbeddedServer:
    """An embedded server on free ports, its log beside the repository."""
    server = EmbeddedServer(
        repository,
        mode,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        **kwargs,
    )
    log = open(repository.parent / f"tritonserver-{server.http_port}.log", "w")  # noqa: SIM115
    return server.start(stdout=log)


def client_for(server, protocol: str):
    """(tritonclient module, client) of a server with `http_url` and `grpc_url`."""
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(server.http_url, concurrency=16)
    return grpcclient, grpcclient.InferenceServerClient(server.grpc_url)


def infer(server, protocol: str, body: bytes | str, content_type=None, accept=None) -> bytes:
    module, client = client_for(server, protocol)
    return infer_with(module, client, body, content_type, accept)


def infer_with(module, client, body, content_type=None, accept=None) -> bytes:
    """One body to the front door through an existing client; the answer's bytes."""
    data = body.encode() if isinstance(body, str) else body
    tensor = body_tensor(module, [data])
    params = {k: v for k, v in (("content_type", content_type), ("accept", accept)) if v}
    result = client.infer("object2vec", [tensor], parameters=params or None)
    return result.as_numpy("response").reshape(-1)[0]


def json_body(instances: list[dict]) -> str:
    return json.dumps({"instances": instances})


def onnx_run(repository, model: str, feed: dict) -> np.ndarray:
    """The padded graph's answer, by ONNX Runtime in this process."""
    return _session(Path(repository) / model / "1" / "model.onnx").run(None, feed)[0]


@functools.lru_cache(maxsize=8)
def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def answer_vectors(answer: bytes) -> list:
    """(key, vector) per instance of a JSON or JSON Lines answer."""
    if answer.lstrip().startswith(b'{"predictions"'):
        rows = orjson.loads(answer)["predictions"]
    else:
        rows = [orjson.loads(line) for line in answer.splitlines() if line.strip()]
    return [next(iter(row.items())) for row in rows]


def _close(key: str, got, expected) -> bool:
    if key != "neighbours":
        return np.allclose(got, expected, atol=1e-5, rtol=0)
    # Items whose scores tie within float round-off may swap places between batches: the
    # scores agree, and so do the items clear of the last one's score.
    scores = [np.array([n["score"] for n in ns]) for ns in (got, expected)]
    if len(got) != len(expected) or not np.allclose(*scores, atol=1e-5, rtol=1e-5):
        return False
    last = scores[1][-1] + 1e-5
    clear = [{n["id"] for n in ns if n["score"] > last} for ns in (got, expected)]
    return clear[0] == clear[1]


def same(a: bytes, b: bytes) -> bool:
    """The same answer, floats within 1e-5 (an instance's answer may come from another batch)."""
    got, expected = answer_vectors(a), answer_vectors(b)
    return [k for k, _ in got] == [k for k, _ in expected] and all(
        _close(k, g, e) for (k, g), (_, e) in zip(got, expected, strict=True)
    )


@functools.lru_cache(maxsize=4)
def _catalogue(repository: str):
    """(catalogue, ids, item vectors) of a repository's index, the vectors computed here, by
    the padded enc1 graph, not by the index builder."""
    catalogue = Catalogue.load(Path(repository))
    folder = Catalogue.folder(repository)
    kept = np.load(folder / ITEMS_FILE)
    tokens, lengths = kept["tokens"], kept["lengths"]
    starts = np.cumsum(lengths) - lengths
    sequences = [tokens[s : s + n].tolist() for s, n in zip(starts, lengths, strict=True)]
    vectors = np.concatenate(
        [
            onnx_run(repository, "enc1", {"tokens": pad(sequences[i : i + 512], 10**9)})
            for i in range(0, len(sequences), 512)
        ]
    )
    ids = orjson.loads((folder / "1" / IDS_FILE).read_bytes())
    return catalogue, ids, vectors


def catalogue_scores(repository, queries: np.ndarray) -> tuple[list, np.ndarray]:
    """(ids, [queries, items] scores) of every catalogue item for each query (an enc0
    embedding), computed one query at a time with NumPy and the pair head alone."""
    catalogue, ids, items = _catalogue(str(repository))
    queries = np.asarray(queries, dtype=np.float32).reshape(-1, items.shape[1])
    if catalogue.similarity == "dot":
        return ids, queries @ items.T
    if catalogue.similarity == "cosine":
        unit = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
        return ids, (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    if catalogue.similarity == "euclidean":
        return ids, -np.linalg.norm(queries[:, None, :] - items[None], axis=2)
    head = ort.InferenceSession(
        str(Path(repository) / "pair" / "1" / HEAD_FILE), providers=["CPUExecutionProvider"]
    )
    rows = []
    for query in queries:
        (out,) = head.run(None, {"in0": np.repeat(query[None], len(items), 0), "in1": items})
        rows.append(out[:, 0] if out.shape[1] == 1 else out @ np.arange(out.shape[1]))
    return ids, np.array(rows, dtype=np.float32)


def check_neighbours(got: list, ids: list, scores: np.ndarray, k: int, exclude=()) -> None:
    """`got` (an answer's neighbours of one query) is a top k of `scores` without the items of
    `exclude`: min(k, what remains) distinct items, best first, none excluded, each scored as
    the reference scores it, none below the k-th best remaining reference score (within float
    round-off, where items tie)."""
    position = {item: i for i, item in enumerate(ids)}
    left_out = {position[item] for item in exclude}
    remaining = np.delete(scores, sorted(left_out))
    k = min(k, len(remaining))
    assert len(got) == k and len({n["id"] for n in got}) == k
    assert not {position[n["id"]] for n in got} & left_out, "an excluded item was answered"
    served = np.array([n["score"] for n in got])
    assert np.all(np.diff(served) <= 1e-6), "best first"
    reference = scores[[position[n["id"]] for n in got]]
    np.testing.assert_allclose(served, reference, atol=1e-5, rtol=1e-5)
    if k:
        kth = np.sort(remaining)[::-1][k - 1]
        assert reference.min() >= kth - 1e-5


def small_model(**overrides) -> Object2Vec:
    torch.manual_seed(0)
    return Object2Vec(Hyperparameters.from_dict(SMALL_MODEL | overrides)).eval()


def random_lines(count: int, kind: str, seed: int = 11) -> list[bytes]:
    """JSON Lines records of the demo model's vocabulary: `in0`, `pairs` or `mixed`."""
    rng = np.random.default_rng(seed)

    def tokens() -> list[int]:
        return rng.integers(1, 12000, size=rng.integers(1, 40)).tolist()

    def instance() -> dict:
        if kind == "pairs":
            return {"in0": tokens(), "in1": tokens()}
        if kind == "mixed":
            return [{"in0": tokens()}, {"in1": tokens()}, {"in0": tokens(), "in1": tokens()}][
                int(rng.integers(3))
            ]
        return {"in0": tokens()}

    return [orjson.dumps(instance()) for _ in range(count)]


LAUNCHED: list[subprocess.Popen] = []  # every launcher a test started, stopped after it


def stop_launched() -> None:
    """Stops every launcher a test started and left (a test that failed halfway)."""
    while LAUNCHED:
        process = LAUNCHED.pop()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Launcher:
    """A launcher process and what it started."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.args = [
            *args,
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
        ]
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", *self.args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {})},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        LAUNCHED.append(self.process)

    def server_pid(self, timeout: float = 30) -> int:
        """tritonserver's pid: the launcher's child, leader of its own process group."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Any of the launcher's threads may have started it (a restart); a short-lived
            # child of another kind is not it.
            tasks = Path(f"/proc/{self.process.pid}/task").glob("*/children")
            for pid in (int(p) for task in tasks for p in task.read_text().split()):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/exe").resolve().name == "tritonserver":
                        return pid
            time.sleep(0.05)
        raise AssertionError("the launcher started no server")

    def ready(self) -> bool:
        url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 120) -> None:
        """Until Triton answers ready and the launcher has said so (its banner)."""
        deadline = time.monotonic() + timeout
        while not (self.ready() and b"is ready" in self.log.read_bytes()):
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.2)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the launcher did not exit in {timeout} s") from None
