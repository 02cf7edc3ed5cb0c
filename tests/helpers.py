"""What the tests share: clients of a running server, reference answers, small models.

Tests import this module and `conftest` fixtures, never each other.
"""

from __future__ import annotations

import json
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
from export.hyperparameters import Hyperparameters
from export.network import Object2Vec
from server.embedded import EmbeddedServer
from server.process import free_port

__all__ = [
    "DOC_EXAMPLE",
    "DOC_EXAMPLE_BODY",
    "JSON",
    "JSONLINES",
    "PROTOCOLS",
    "SMALL_MODEL",
    "answer_vectors",
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
    session = ort.InferenceSession(
        str(Path(repository) / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feed)[0]


def answer_vectors(answer: bytes) -> list:
    """(key, vector) per instance of a JSON or JSON Lines answer."""
    if answer.lstrip().startswith(b'{"predictions"'):
        rows = orjson.loads(answer)["predictions"]
    else:
        rows = [orjson.loads(line) for line in answer.splitlines() if line.strip()]
    return [next(iter(row.items())) for row in rows]


def same(a: bytes, b: bytes) -> bool:
    """The same answer, floats within 1e-5 (an instance's answer may come from another batch)."""
    got, expected = answer_vectors(a), answer_vectors(b)
    return [k for k, _ in got] == [k for k, _ in expected] and all(
        np.allclose(g, e, atol=1e-5, rtol=0) for (_, g), (_, e) in zip(got, expected, strict=True)
    )


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
