"""Deployment files, checked without a Docker engine or a cluster: lint, render, validate."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

from server.launcher.embedded import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"
KUBERNETES_VERSION = "1.30.0"


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(DOCKER / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_build_needs_only_files_of_the_project():
    copies = re.findall(r"^COPY (?:--\S+ )*(\S+) ", (DOCKER / "Dockerfile").read_text(), re.M)
    assert copies, "the Dockerfile copies nothing?"
    allowed = [
        line[1:].rstrip("/")
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for source in copies:
        assert (PROJECT_ROOT / source).exists(), f"COPY {source}: not in the project"
        assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (for `kubectl kustomize`) is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(DOCKER / "k8s" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("mode", ["embedding", "classification"])
def test_kustomize_overlays_render_valid_kubernetes(mode):
    documents = render(mode)
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    kinds = {d["kind"]: d for d in documents}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"} <= set(kinds)
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["INFERENCE_PREFERRED_MODE"] == mode
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    annotations = kinds["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8002"
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]


def test_batch_transform_job_is_valid_and_uses_the_client():
    job = yaml.safe_load((DOCKER / "k8s" / "batch-transform-job.yaml").read_text())
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    from client.cli import parser

    parsed = parser().parse_args(args)  # the job's arguments are ones the CLI accepts
    assert parsed.command == "transform" and parsed.max_concurrent_transforms == 2


def test_compose_file_is_valid():
    # YAML merge keys (<<) are resolved first, as docker compose does.
    resolved = yaml.safe_load((DOCKER / "compose.yml").read_text())
    compose = PyCompose.from_json(json.dumps(resolved))
    compose.validate()
    compose.to_spec()  # the full Compose Specification schema
    assert set(compose.service_names()) == {"object2vec-0", "object2vec-1"}
