"""The entrypoint shared by the image and the embedded server, run for real where it can be."""

from __future__ import annotations

import json
import shutil
import stat
import urllib.request

import pytest
import tritonclient.http as httpclient

from server.entrypoint import Launch, LaunchError, settings_from_env, tritonserver_args
from tests.conftest import free_port, start_server
from tests.test_server import DOC_EXAMPLE


def test_environment_maps_to_tritonserver_options(tmp_path):
    launch = Launch.from_env(
        {
            "INFERENCE_PREFERRED_MODE": "embedding",
            "O2V_LOG_VERBOSE": "1",
            "O2V_PYTHON_SHM_BYTES": "1048576",
        },
        tmp_path,
    )
    args = tritonserver_args(launch, tmp_path)
    assert "--model-config-name=embedding" in args
    assert "--backend-config=python,shm-default-byte-size=1048576" in args
    assert "--log-verbose=1" in args and "--http-port=8000" in args
    sagemaker = tritonserver_args(Launch.from_env({}, sagemaker=True), tmp_path)
    assert "--allow-sagemaker=true" in sagemaker and "--sagemaker-port=8080" in sagemaker
    assert Launch.from_env({}).mode == "classification"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"INFERENCE_PREFERRED_MODE": "gpu"}, "INFERENCE_PREFERRED_MODE='gpu' is not a mode"),
        ({"O2V_GPU_COPIES": "0"}, "O2V_GPU_COPIES='0' must be at least 1"),
        ({"O2V_GPU_COPIES": "many"}, "O2V_GPU_COPIES='many' is not int"),
        ({"O2V_ACCELERATOR": "openvino"}, "O2V_ACCELERATOR='openvino': use cuda or tensorrt"),
        ({"O2V_TENSORRT_FP16": "maybe"}, "O2V_TENSORRT_FP16='maybe': use true or false"),
    ],
)
def test_bad_settings_fail_with_their_message(env, message):
    with pytest.raises(LaunchError) as error:
        Launch.from_env(env)
    assert message in str(error.value)


def test_gpu_settings_reach_the_configs():
    settings = settings_from_env(
        {
            "O2V_ACCELERATOR": "tensorrt",
            "O2V_TENSORRT_FP16": "true",
            "O2V_TENSORRT_ENGINE_CACHE": "/cache",
            "O2V_WARMUP": "false",
        }
    )
    assert (settings.accelerator, settings.tensorrt_fp16, settings.warmup) == (
        "tensorrt",
        True,
        False,
    )
    assert settings_from_env({}) is None  # nothing asked: the repository's configs stay


@pytest.mark.parametrize("read_only", [False, True])
def test_gpu_copies_from_the_environment_reach_the_served_config(
    demo_repository, tmp_path, monkeypatch, read_only
):
    repository = tmp_path / "model_repository"
    shutil.copytree(demo_repository, repository)
    if read_only:
        for path in [repository, *repository.rglob("*")]:
            if path.is_dir():
                path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.setenv("O2V_GPU_COPIES", "3")
    monkeypatch.setenv("INFERENCE_PREFERRED_MODE", "embedding")
    try:
        with start_server(repository) as running:
            client = httpclient.InferenceServerClient(running.http_url)
            counts = {
                m: client.get_model_config(m)["instance_group"][0]["count"]
                for m in ("enc0", "enc1", "pair")
            }
            warmup = client.get_model_config("enc0").get("model_warmup", [])
    finally:
        for path in [repository, *repository.rglob("*")]:
            if path.is_dir():
                path.chmod(stat.S_IRWXU)
    assert counts == {"enc0": 3, "enc1": 3, "pair": 1}
    assert warmup and warmup[0]["name"] == "warmup"


def test_sagemaker_ping_and_invocations(demo_repository, tmp_path):
    port = free_port()
    with start_server(demo_repository, sagemaker_port=port) as running:
        with urllib.request.urlopen(f"http://localhost:{port}/ping") as ping:
            assert ping.status == 200
        body = json.dumps({"instances": [{"in0": s} for s in DOC_EXAMPLE]}).encode()
        request = urllib.request.Request(
            f"http://localhost:{port}/invocations",
            data=body,
            headers={
                "Content-Type": "application/vnd.sagemaker-triton.binary+json;json-header-size=0"
            },
        )
        with urllib.request.urlopen(request) as response:
            header_length = int(
                response.headers.get("Inference-Header-Content-Length", 0)
                or response.headers.get("json-header-size", 0)
                or 0
            )
            raw = response.read()
        assert running.process.poll() is None
    assert b'"predictions"' in raw and raw.count(b'"embeddings"') == 3, (header_length, raw[:300])


def test_response_cache_answers_repeated_bodies_from_the_cache(
    demo_repository, tmp_path, monkeypatch
):
    from tests.test_server import infer, json_body

    repository = tmp_path / "model_repository"
    shutil.copytree(demo_repository, repository)
    monkeypatch.setenv("O2V_RESPONSE_CACHE_BYTES", str(8 * 1024 * 1024))
    with start_server(repository) as running:
        body = json_body([{"in0": s} for s in DOC_EXAMPLE])
        answers = {infer(running, "http", body, "application/json") for _ in range(5)}
        client = httpclient.InferenceServerClient(running.http_url)
        stats = client.get_inference_statistics("object2vec")["model_stats"][0]
        config = client.get_model_config("object2vec")
    assert len(answers) == 1
    assert config["response_cache"]["enable"] is True
    assert int(stats["inference_stats"]["cache_hit"]["count"]) == 4
