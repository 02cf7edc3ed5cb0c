"""The layers hold: `python -m bench.imports` finds no breach and no cycle (run as a command:
tests import no bench module)."""

import subprocess
import sys

from server.launcher.embedded import PROJECT_ROOT


def test_dependencies_point_one_way():
    result = subprocess.run(
        [sys.executable, "-m", "bench.imports"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
    assert "contract                    -> (nothing of ours)" in result.stdout


def _may(importer: str, imported: str) -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "bench.imports", "--may", importer, imported],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def test_each_server_process_imports_only_what_is_below_it():
    """The rules the check enforces between server's packages (server/__init__.py)."""
    assert _may("server.launcher.plan", "server.sagemaker.adapter")  # it hosts the endpoint
    assert _may("server.frontdoor.model", "server.common.drain")
    assert _may("model_repository.object2vec.1.model", "server.frontdoor.model")
    assert not _may("server.sagemaker.adapter", "server.frontdoor.payload")
    assert not _may("server.sagemaker.adapter", "server.launcher.host")
    assert not _may("server.frontdoor.model", "server.launcher.launch")
    assert not _may("server.frontdoor.dispatch", "server.sagemaker.http1")
    assert not _may("server.common.onnx_sessions", "server.frontdoor.dispatch")
    assert not _may("model_repository.object2vec.1.model", "server.launcher.plan")
    assert not _may("contract.media", "server.common.settings")
