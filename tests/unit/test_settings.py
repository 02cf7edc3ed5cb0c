"""Settings: environment to tritonserver options and configs, without a server."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from contract.errors import ServiceError
from contract.facts import Facts
from server.common.settings import ServingSettings
from server.launcher.configs import write_configs
from server.launcher.embedded import PROJECT_ROOT
from server.launcher.launch import (
    HTTP_HEADER_ROOM,
    Launch,
    check_exposure,
    settings_from_env,
    trace_args,
    tritonserver_args,
)

FACTS = Facts(
    vocab_sizes=(100, 50), max_seq_lens=(8, 4), enc_dim=16, output_layer="softmax", output_dim=2
)


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
    with pytest.raises(ServiceError) as error:
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


def test_a_quote_in_a_setting_cannot_inject_config_lines(tmp_path):
    repository = tmp_path / "model_repository"
    repository.mkdir()
    FACTS.save(repository)
    evil = '/cache" } ] } }\nmax_batch_size: 1\n#'
    settings = settings_from_env({"O2V_ACCELERATOR": "tensorrt", "O2V_TENSORRT_ENGINE_CACHE": evil})
    write_configs(repository, settings)
    config = model_config_pb2.ModelConfig()
    text_format.Parse((repository / "pair" / "config.pbtxt").read_text(), config)
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["trt_engine_cache_path"] == evil
    assert config.max_batch_size == ServingSettings().network_max_batch_size


@pytest.mark.parametrize(
    "host, sagemaker, version, refused",
    [
        ("0.0.0.0", False, "2.51.0", True),  # the embedded release beyond loopback
        ("::", False, "2.51.0", True),
        ("0.0.0.0", True, "2.51.0", False),  # only the adapter faces it; Triton on loopback
        ("127.0.0.1", False, "2.51.0", False),
        ("0.0.0.0", False, "2.75.0", False),  # the image's release
        ("0.0.0.0", False, None, False),  # unknown (not the NGC image): as asked
    ],
)
def test_tritons_ports_beyond_loopback_need_a_patched_release(host, sagemaker, version, refused):
    launch = Launch.from_env({}, sagemaker=sagemaker, host=host, triton_version=version)
    if refused:
        with pytest.raises(ServiceError, match="has public flaws"):
            check_exposure(launch)
    else:
        check_exposure(launch)


def test_a_release_that_bounds_http_input_gets_the_front_doors_body_limit(tmp_path):
    (tmp_path / "object2vec").mkdir()
    committed = PROJECT_ROOT / "model_repository" / "object2vec" / "config.pbtxt"
    (tmp_path / "object2vec" / "config.pbtxt").write_text(committed.read_text())
    image = tritonserver_args(Launch.from_env({}, triton_version="2.75.0"), tmp_path)
    limit = ServingSettings().max_body_bytes + HTTP_HEADER_ROOM
    assert f"--http-max-input-size={limit}" in image
    embedded = tritonserver_args(Launch.from_env({}, triton_version="2.51.0"), tmp_path)
    assert not [a for a in embedded if a.startswith("--http-max-input-size")]  # 2.51 has none


def test_docs_configuration_is_what_the_settings_declare():
    """docs/configuration.md is generated; a setting changed without it fails here."""
    from server.launcher import reference

    assert reference.DOCUMENT.read_text() == reference.markdown(), (
        "docs/configuration.md is stale: run python -m server.launcher.reference"
    )


def test_every_setting_has_its_help_and_both_mains_list_every_variable():
    from server.launcher import reference

    variables = reference.every_variable()
    assert {"INFERENCE_PREFERRED_MODE", "O2V_CALL_CUTTING", "O2V_SPINNING"} <= variables
    assert "O2V_MAX_CONCURRENT_TRANSFORMS" in variables and "O2V_MAX_PAYLOAD_IN_MB" in variables
    for _, cls, _ in reference.GROUPS:
        for row in reference.settings(cls):
            assert row[5].strip(), f"{row[0] or row[1]} has no help"
    for main in (["server", "--help"], ["server.launcher.entrypoint", "--help"]):
        shown = subprocess.run(
            [sys.executable, "-m", *main], capture_output=True, text=True, check=True
        ).stdout
        assert all(name in shown for name in variables), main


def test_the_docs_name_no_variable_the_settings_lack():
    """A variable in the README or docs/ that no setting declares is a typo or a removed
    setting: either way the docs are wrong."""
    from server.launcher import reference

    known = reference.every_variable()
    root = reference.DOCUMENT.parent.parent
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        named = set(re.findall(r"\bO2V_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
        assert named <= known, f"{path.name} names unknown settings {sorted(named - known)}"


def test_tracing_settings_become_tritons_trace_config():
    assert "--trace-config" not in " ".join(trace_args(Launch.from_env({})))
    launch = Launch.from_env(
        {
            "O2V_TRACE_MODE": "opentelemetry",
            "O2V_TRACE_TARGET": "http://collector:4318/v1/traces",
            "O2V_TRACE_RATE": "10",
        }
    )
    assert trace_args(launch) == [
        "--trace-config=mode=opentelemetry",
        "--trace-config=opentelemetry,url=http://collector:4318/v1/traces",
        "--trace-config=rate=10",
        "--trace-config=level=TIMESTAMPS",
    ]
    with pytest.raises(ServiceError, match="needs O2V_TRACE_TARGET"):
        trace_args(Launch.from_env({"O2V_TRACE_MODE": "triton"}))
