"""The entrypoint shared by the image and the embedded server, run for real where it can be."""

from __future__ import annotations

import json
import shutil
import stat
import urllib.error
import urllib.request

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from server.configs import ServingSettings, write_configs
from server.entrypoint import Launch, LaunchError, settings_from_env, tritonserver_args
from tests.conftest import start_server
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
    assert "--http-address=0.0.0.0" in args  # the image: every address
    restricted = [a for a in args if a.startswith(("--http-restricted", "--grpc-restricted"))]
    assert len(restricted) == 2 and all("logging,trace,shared-memory" in a for a in restricted)
    sagemaker_launch = Launch.from_env({"SAGEMAKER_BIND_TO_PORT": "9090"}, sagemaker=True)
    sagemaker = tritonserver_args(sagemaker_launch, tmp_path)
    # Triton on loopback behind the adapter, which takes SageMaker's port.
    assert "--http-address=127.0.0.1" in sagemaker and "--allow-grpc=false" in sagemaker
    assert sagemaker_launch.sagemaker_port == 9090
    assert Launch.from_env({}, sagemaker=True).sagemaker_port == 8080
    assert Launch.from_env({}).mode == "classification"
    keyed = Launch.from_env({"O2V_ADMIN_KEY": "s3cret"})
    assert (
        "--http-restricted-api=logging,trace,shared-memory,model-repository:admin-key=s3cret"
        in (tritonserver_args(keyed, tmp_path))
    )
    assert Launch.from_env({}).admin_key != Launch.from_env({}).admin_key  # closed: unguessable
    zeros = Launch.from_env({"O2V_LOG_VERBOSE": "0", "O2V_RESPONSE_CACHE_BYTES": "0"})
    assert (zeros.log_verbose, zeros.cache_bytes) == (0, 0)


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


def test_restricted_apis_are_closed_and_the_key_opens_them(demo_repository, tmp_path, monkeypatch):
    monkeypatch.setenv("O2V_ADMIN_KEY", "open-sesame")
    with start_server(demo_repository) as running:
        url = f"http://{running.http_url}/v2/logging"
        body = json.dumps({"log_verbose_level": 1}).encode()
        refused = urllib.request.Request(url, data=body)
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(refused)
        assert "restricted" in error.value.read().decode()
        allowed = urllib.request.Request(url, data=body, headers={"admin-key": "open-sesame"})
        with urllib.request.urlopen(allowed) as response:
            assert response.status == 200
        client = grpcclient.InferenceServerClient(running.grpc_url)
        with pytest.raises(InferenceServerException):
            client.register_system_shared_memory("stolen", "/triton_python_backend_shm_region_1", 8)
        assert client.is_model_ready("object2vec")


def test_a_quote_in_a_setting_cannot_inject_config_lines(tmp_path, demo_repository):
    repository = tmp_path / "model_repository"
    shutil.copytree(demo_repository, repository)
    evil = '/cache" } ] } }\nmax_batch_size: 1\n#'
    settings = settings_from_env({"O2V_ACCELERATOR": "tensorrt", "O2V_TENSORRT_ENGINE_CACHE": evil})
    write_configs(repository, settings)
    config = model_config_pb2.ModelConfig()
    text_format.Parse((repository / "pair" / "config.pbtxt").read_text(), config)
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["trt_engine_cache_path"] == evil
    assert config.max_batch_size == ServingSettings().network_max_batch_size


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
