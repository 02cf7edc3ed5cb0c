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
from tritonclient.utils import InferenceServerException

from tests.helpers import DOC_EXAMPLE, JSON, infer, json_body, start_server

pytestmark = pytest.mark.local  # starts servers of its own


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


def test_response_cache_answers_repeated_bodies_from_the_cache(
    demo_repository, tmp_path, monkeypatch
):
    repository = tmp_path / "model_repository"
    shutil.copytree(demo_repository, repository)
    monkeypatch.setenv("O2V_RESPONSE_CACHE_BYTES", str(8 * 1024 * 1024))
    with start_server(repository) as running:
        body = json_body([{"in0": s} for s in DOC_EXAMPLE])
        answers = {infer(running, "http", body, JSON) for _ in range(5)}
        client = httpclient.InferenceServerClient(running.http_url)
        stats = client.get_inference_statistics("object2vec")["model_stats"][0]
        config = client.get_model_config("object2vec")
    assert len(answers) == 1
    assert config["response_cache"]["enable"] is True
    assert int(stats["inference_stats"]["cache_hit"]["count"]) == 4
