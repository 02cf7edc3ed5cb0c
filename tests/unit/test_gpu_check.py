"""The prepared GPU check runs in its CPU mode here, so it is known to work before a GPU."""

import json
import subprocess
import sys

from server.launcher.embedded import PROJECT_ROOT


def test_gpu_check_runs_in_cpu_mode(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "bench" / "gpu_check.py"),
            "--device",
            "cpu",
            "--small",
            "--seconds",
            "0.3",
            "--batch",
            "8",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["system"], r["device"]) for r in rows] == [
        ("pytorch fp32", "cpu"),
        ("onnxruntime", "cpu"),
    ]
    assert all(r["sequences_per_s"] > 0 for r in rows)
    assert "onnxruntime on cpu:" in result.stdout
