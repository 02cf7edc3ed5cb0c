"""End to end: a real tritonserver on the demo model, over HTTP and gRPC."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from contract.errors import ServiceError
from contract.facts import Facts
from contract.padding import pad
from server.common.settings import ServingSettings
from server.launcher.configs import read, write_configs
from server.launcher.embedded import PROJECT_ROOT
from tests.helpers import (
    DOC_EXAMPLE,
    JSON,
    JSONLINES,
    PROTOCOLS,
    client_for,
    infer,
    infer_with,
    json_body,
    onnx_run,
    start_server,
)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_documentation_example_equals_onnx_runtime(each_server, demo_repository, protocol):
    answer = orjson.loads(
        infer(each_server, protocol, json_body([{"in0": s} for s in DOC_EXAMPLE]), JSON)
    )
    embeddings = np.array([p["embeddings"] for p in answer["predictions"]])
    assert embeddings.shape == (3, Facts.load(demo_repository).enc_dim)
    expected = onnx_run(demo_repository, "enc0", {"tokens": pad(DOC_EXAMPLE, 100)})
    np.testing.assert_allclose(embeddings, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_jsonlines_in_and_out_and_accept_differing(server, protocol):
    lines = "".join(json.dumps({"in0": s}) + "\n" for s in DOC_EXAMPLE)
    as_lines = infer(server, protocol, lines, JSONLINES).decode().splitlines()
    assert len(as_lines) == 3 and all("embeddings" in json.loads(line) for line in as_lines)
    as_json = orjson.loads(infer(server, protocol, lines, JSONLINES, JSON))
    assert [p["embeddings"] for p in as_json["predictions"]] == [
        json.loads(line)["embeddings"] for line in as_lines
    ]
    back = infer(server, protocol, json_body([{"in0": s} for s in DOC_EXAMPLE]), JSON, JSONLINES)
    assert back.decode().splitlines() == as_lines


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pairs_return_softmax_scores(each_server, demo_repository, protocol):
    pairs = [{"in0": DOC_EXAMPLE[0], "in1": DOC_EXAMPLE[1]}, {"in0": [5], "in1": [6, 7]}]
    scores = np.array(
        [
            p["scores"]
            for p in orjson.loads(infer(each_server, protocol, json_body(pairs), JSON))[
                "predictions"
            ]
        ]
    )
    assert scores.shape == (2, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    expected = onnx_run(
        demo_repository,
        "pair",
        {"in0": pad([p["in0"] for p in pairs], 100), "in1": pad([p["in1"] for p in pairs], 100)},
    )
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)


def test_mixed_requests_answer_each_instance_with_what_it_asks_for(each_server, demo_repository):
    instances = [{"in0": [5, 6]}, {"in1": [7, 8, 9]}, {"in0": [1], "in1": [2]}, {"in0": [3]}]
    answer = orjson.loads(infer(each_server, "grpc", json_body(instances), JSON))["predictions"]
    assert [list(p) for p in answer] == [["embeddings"], ["embeddings"], ["scores"], ["embeddings"]]
    enc1 = onnx_run(demo_repository, "enc1", {"tokens": pad([[7, 8, 9]], 100)})
    np.testing.assert_allclose(answer[1]["embeddings"], enc1[0], atol=1e-5, rtol=0)


def test_infer_max_seqlens_and_truncation(server):
    long = list(range(1, 151))  # 150 tokens; the demo's max_seq_len is 100

    def embed(tokens, content_type=JSON):
        body = json_body([{"in0": tokens}])
        return orjson.loads(infer(server, "http", body, content_type))["predictions"][0]

    assert embed(long) == embed(long[:100])
    cut = "application/json; infer_max_seqlens=5,5"
    assert embed(long, cut) == embed(long[:5])
    assert embed(long, cut) != embed(long)


def test_extra_keys_are_tolerated(server):
    body = json_body([{"in0": [5, 6], "label": 1, "note": "x"}])
    assert orjson.loads(infer(server, "grpc", body, JSON)) == orjson.loads(
        infer(server, "grpc", json_body([{"in0": [5, 6]}]), JSON)
    )


def test_raw_http_body_with_inference_header_content_length_zero(server):
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/object2vec/infer",
        data=json_body([{"in0": s} for s in DOC_EXAMPLE]).encode(),
        headers={
            "Inference-Header-Content-Length": "0",
            "Content-Type": "application/octet-stream",
        },
    )
    with urllib.request.urlopen(request) as response:
        header_length = int(response.headers["Inference-Header-Content-Length"])
        raw = response.read()
    header = json.loads(raw[:header_length])
    assert header["outputs"][0]["name"] == "response"
    (size,) = struct.unpack("<I", raw[header_length : header_length + 4])
    answer = json.loads(raw[header_length + 4 : header_length + 4 + size])
    assert len(answer["predictions"]) == 3  # sniffed as JSON: no content type reached the model


BAD_REQUESTS = [
    ('{"instances": [{"in0": [1]}', JSON, "malformed JSON"),
    ('{"in0": [1]}\n{"in0": [1', JSONLINES, "line 2: malformed JSON Lines"),
    ('{"records": []}', JSON, '"instances"'),
    ('{"instances": [{"in0": [1]}, {"label": 1}]}', JSON, "instances[1]: has neither in0 nor in1"),
    ('{"instances": [{"in0": [1, 2.5]}]}', JSON, "instances[0]: in0 holds 2.5"),
    ('{"instances": [{"in0": [-1]}]}', JSON, "instances[0]: in0 holds -1"),
    (
        '{"in0": [1]}\n{"in1": [12000]}',
        JSONLINES,
        "line 2: in1 holds token id 12000, outside the vocabulary of enc1",
    ),
    ('{"instances": [{"in0": []}]}', JSON, "instances[0]: in0 is empty"),
    ('{"instances": [{"in0": [1]}]}', "text/csv", "unsupported content type"),
    ("", JSON, "empty body"),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "body, content_type, message", BAD_REQUESTS, ids=[m for _, _, m in BAD_REQUESTS]
)
def test_bad_requests_get_a_clear_client_error(server, protocol, body, content_type, message):
    with pytest.raises(InferenceServerException) as error:
        infer(server, protocol, body, content_type)
    assert message in error.value.message()
    expected_status = "400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"
    assert str(error.value.status()) == expected_status


def test_unknown_accept_type_and_oversized_body(server):
    with pytest.raises(InferenceServerException, match="unsupported accept type"):
        infer(server, "http", json_body([{"in0": [1]}]), JSON, "text/html")
    limit = ServingSettings().max_body_bytes
    huge = json_body([{"in0": [1] * 1000}] * (limit // 3000 + 1))
    assert len(huge) > limit
    with pytest.raises(InferenceServerException, match=f"exceeds the limit of {limit} bytes"):
        infer(server, "grpc", huge, JSON)


def test_a_bad_request_fails_alone_in_its_batch(each_server):
    """Good and bad requests sent at once: batched together, only the bad ones fail."""
    module, client = client_for(each_server, "grpc")
    stats_before = client.get_inference_statistics("object2vec", as_json=True)
    enc0_before = client.get_inference_statistics("enc0", as_json=True)
    good = json_body([{"in0": s} for s in DOC_EXAMPLE])
    bodies = [(good, JSON) if i % 2 else BAD_REQUESTS[i % len(BAD_REQUESTS)][:2] for i in range(64)]
    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(lambda b: _try(module, client, *b), bodies))
    expected = infer_with(module, client, good, JSON)
    for i, outcome in enumerate(outcomes):
        if i % 2:
            assert outcome == expected
        else:
            assert isinstance(outcome, InferenceServerException)
    stats = client.get_inference_statistics("object2vec", as_json=True)
    executions = _count(stats, "execution_count") - _count(stats_before, "execution_count")
    assert executions < 64, "requests were not batched together; the test proves nothing"
    enc0_calls = _count(
        client.get_inference_statistics("enc0", as_json=True), "execution_count"
    ) - _count(enc0_before, "execution_count")
    if _networks(client) == "bls":  # one call to enc0 per front door execute, not per request
        assert 1 <= enc0_calls <= executions
    else:  # in_process: the front door ran the network itself
        assert enc0_calls == 0
    assert client.is_server_live() and client.is_model_ready("object2vec")


def _try(module, client, body, content_type):
    try:
        return infer_with(module, client, body, content_type)
    except InferenceServerException as error:
        return error


def _networks(client) -> str:
    config = client.get_model_config("object2vec", as_json=True)["config"]
    return config["parameters"]["networks"]["string_value"]


def _count(stats: dict, key: str) -> int:
    return int(stats["model_stats"][0][key])


def test_200_concurrent_requests_equal_the_same_instances_sent_alone(each_server):
    rng = np.random.default_rng(7)

    def random_instance() -> dict:
        kind = rng.integers(3)
        make = lambda: rng.integers(1, 12000, size=rng.integers(1, 60)).tolist()  # noqa: E731
        return [{"in0": make()}, {"in1": make()}, {"in0": make(), "in1": make()}][kind]

    requests = [[random_instance() for _ in range(rng.integers(1, 4))] for _ in range(200)]
    module, client = client_for(each_server, "grpc")
    with ThreadPoolExecutor(64) as pool:
        together = list(
            pool.map(
                lambda r: orjson.loads(infer_with(module, client, json_body(r), JSON)), requests
            )
        )
    for instances, answer in zip(requests, together, strict=True):
        for instance, prediction in zip(instances, answer["predictions"], strict=True):
            alone = orjson.loads(infer_with(module, client, json_body([instance]), JSON))
            (key,) = prediction
            np.testing.assert_allclose(
                prediction[key], alone["predictions"][0][key], atol=1e-5, rtol=0
            )


@pytest.fixture(scope="module")
def mode_repository(demo_repository, tmp_path_factory):
    """The demo model with 3 GPU copies for the preferred network, so the modes differ."""
    repository = tmp_path_factory.mktemp("modes") / "model_repository"
    shutil.copytree(demo_repository, repository)
    write_configs(repository, ServingSettings(gpu_copies=3, cpu_copies=1))
    return repository


@pytest.mark.local
@pytest.mark.parametrize(
    "mode, preferred", [("embedding", {"enc0", "enc1"}), ("classification", {"pair"})]
)
def test_each_mode_loads_and_gives_the_preferred_network_its_copies(
    mode_repository, mode, preferred
):
    with start_server(mode_repository, mode) as running:
        client = httpclient.InferenceServerClient(running.http_url)
        for model in ("enc0", "enc1", "pair"):
            (group,) = client.get_model_config(model)["instance_group"]
            # KIND_AUTO resolves to the CPU on this GPU-less machine; the count tells the mode.
            assert group["kind"] == "KIND_CPU"
            assert group["count"] == (3 if model in preferred else 1), (mode, model, group)
        answer = orjson.loads(infer(running, "http", json_body([{"in0": [1], "in1": [2]}]), JSON))
        assert len(answer["predictions"][0]["scores"]) == 2


@pytest.mark.local
def test_regression_models_answer_one_score(tmp_path_factory):
    from export.onnx_export import export
    from tests.helpers import small_model as small

    repository = tmp_path_factory.mktemp("regression") / "model_repository"
    shutil.copytree(
        PROJECT_ROOT / "model_repository" / "object2vec",
        repository / "object2vec",
        ignore=shutil.ignore_patterns("config.pbtxt", "__pycache__"),
    )
    export(small(output_layer="mean_squared_error"), repository)
    write_configs(repository, ServingSettings(gpu_copies=1))
    with start_server(repository) as running:
        answer = orjson.loads(
            infer(running, "grpc", json_body([{"in0": [3], "in1": [4, 5]}]), JSON)
        )
    assert len(answer["predictions"][0]["scores"]) == 1


def _launch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.local
def test_launcher_refuses_an_unknown_mode_and_a_missing_model(tmp_path):
    import os

    env = dict(os.environ, INFERENCE_PREFERRED_MODE="turbo")
    result = _launch("--model-repository", str(tmp_path), env=env)
    assert result.returncode != 0 and "INFERENCE_PREFERRED_MODE='turbo'" in result.stderr
    result = _launch("--model-repository", str(tmp_path))
    assert result.returncode != 0 and "holds no exported model" in result.stderr


@pytest.mark.local
def test_a_model_exported_over_the_demo_is_served_with_its_own_configs(
    server, demo_repository, tmp_path_factory
):
    """Issue 19: the demo's configs (enc0 [16], pair [2]) stayed when another model was
    exported over it. Now the next start serves configs of the model that is there, and a
    config edited by hand to disagree with the graph is refused at load, as the C++ ONNX
    Runtime backend of the NGC image refuses it."""
    from export.onnx_export import export
    from tests.helpers import small_model as small

    repository = tmp_path_factory.mktemp("reexport") / "model_repository"
    shutil.copytree(demo_repository, repository)  # with the configs the demo was served with
    assert read(repository / "enc0" / "configs" / "classification.pbtxt").output[0].dims == [16]
    export(small(output_layer="mean_squared_error", enc_dim=48), repository)
    with start_server(repository) as running:
        client = httpclient.InferenceServerClient(running.http_url)
        served = {m: client.get_model_config(m)["output"][0]["dims"] for m in ("enc0", "pair")}
        answer = orjson.loads(infer(running, "http", json_body([{"in0": [3, 4]}]), JSON))
    assert served == {"enc0": [48], "pair": [1]}
    assert len(answer["predictions"][0]["embeddings"]) == 48
    edited = repository / "enc0" / "configs" / "classification.pbtxt"
    edited.write_text(edited.read_text().replace("dims: 48", "dims: 47"))
    with pytest.raises(ServiceError):
        start_server(repository).stop()
    logs = sorted(repository.parent.glob("tritonserver-*.log"), key=lambda p: p.stat().st_mtime)
    text = logs[-1].read_text()
    assert "tensor 'embedding': the model expects 2 dimensions (shape [-1,48])" in text
