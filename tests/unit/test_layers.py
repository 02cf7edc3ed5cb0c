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
    assert "contract          -> (nothing of ours)" in result.stdout
