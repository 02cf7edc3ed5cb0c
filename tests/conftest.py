"""Shared fixtures: a demo model repository built once, and a real tritonserver on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from export import demo
from server.embedded import PROJECT_ROOT, EmbeddedServer
from server.process import free_port  # noqa: F401 - the tests' import of it

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def start_server(repository: Path, mode: str | None = None, **kwargs) -> EmbeddedServer:
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


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory) -> Path:
    """A fresh repository: the committed front door plus the demo model exported into it."""
    repository = tmp_path_factory.mktemp("demo") / "model_repository"
    shutil.copytree(
        PROJECT_ROOT / "model_repository" / "object2vec",
        repository / "object2vec",
        ignore=shutil.ignore_patterns("config.pbtxt", "__pycache__"),
    )
    demo.build(repository, repository.parent / "demo.pt", progress=False)
    return repository


@pytest.fixture(scope="session")
def server(demo_repository) -> EmbeddedServer:
    with start_server(demo_repository) as running:
        yield running


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
