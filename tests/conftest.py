"""Fixtures: a demo model repository built once, and a real tritonserver on it.

The end-to-end tests run against a server this session starts (the embedded tritonserver), or
against one already running, anywhere: the NGC image on a GPU host, for example.

    pytest tests/e2e --server-url HOST:8000 --grpc-url HOST:8001 \\
        --model-repository PATH   # the repository that server serves (for reference answers)
        [--sagemaker-url HOST:8080]   # its SageMaker endpoint, for tests/e2e/test_security.py

Tests that start servers of their own (signals, SageMaker mode, the modes, restarts) are
marked `local` and skipped then, with that reason.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from export import demo
from server.common.settings import ServingSettings
from server.launcher.embedded import PROJECT_ROOT
from tests.helpers import start_server

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

# Hypothesis's 200 ms deadline per example failed a pure-NumPy property once while a benchmark
# had just loaded this 2-core machine: what these tests check is answers, not time.
settings.register_profile("object2vec", deadline=None)
settings.load_profile("object2vec")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("object2vec", "the server under test")
    group.addoption("--server-url", help="HTTP host:port of a running server (else one starts)")
    group.addoption("--grpc-url", help="gRPC host:port of that server")
    group.addoption(
        "--model-repository", type=Path, help="the repository that server serves (reference)"
    )
    group.addoption(
        "--sagemaker-url",
        help="host:port of a running SageMaker endpoint (tests/e2e/test_security.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "local: starts servers of its own (skipped remotely)")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if not config.getoption("--server-url"):
        return
    skip = pytest.mark.skip(reason="starts its own servers; --server-url was given")
    for item in items:
        if "local" in item.keywords:
            item.add_marker(skip)


@dataclass
class RemoteServer:
    """A server someone else runs: the addresses the tests talk to."""

    http_url: str
    grpc_url: str


@pytest.fixture(scope="session")
def demo_repository(request, tmp_path_factory) -> Path:
    """The repository the server serves: given with --model-repository, or a fresh demo one
    (the committed front door plus the demo model exported into it)."""
    given = request.config.getoption("--model-repository")
    if given:
        return Path(given).resolve()
    repository = tmp_path_factory.mktemp("demo") / "model_repository"
    shutil.copytree(
        PROJECT_ROOT / "model_repository" / "object2vec",
        repository / "object2vec",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    demo.build(repository, repository.parent / "demo.pt", progress=False)
    return repository


@pytest.fixture(scope="session")
def server(request, demo_repository):
    url = request.config.getoption("--server-url")
    if url:
        grpc_url = request.config.getoption("--grpc-url")
        if not grpc_url:
            pytest.exit("--server-url needs --grpc-url too", returncode=4)
        yield RemoteServer(url, grpc_url)
        return
    with start_server(demo_repository) as running:
        yield running


@pytest.fixture(scope="session")
def bls_server(request, demo_repository, tmp_path_factory):
    """A second server whose front door calls the network models over BLS: the production
    path of the NGC image, where `networks: auto` picks bls (the embedded default on a CPU
    picks in_process)."""
    if request.config.getoption("--server-url"):
        pytest.skip("starts its own server; --server-url was given")
    repository = tmp_path_factory.mktemp("bls") / "model_repository"
    shutil.copytree(demo_repository, repository, ignore=shutil.ignore_patterns("config*"))
    with start_server(repository, settings=ServingSettings(networks="bls")) as running:
        yield running


@pytest.fixture(params=["server", "bls_server"])
def each_server(request):
    """Each way the front door runs the networks: the default server, then the BLS one."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
