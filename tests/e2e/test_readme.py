"""The commands of the README and of docs/*.md, run as written, so the documentation cannot
drift from the product.

Every ```bash and ```python block of README.md and docs/*.md carries a marker on the line before it:
`<!-- readme-test: server -->` (run against the embedded server on the README's ports,
8000/8001/8002), `<!-- readme-test: sagemaker -->` (against `--sagemaker` on 8080), or
`<!-- readme-test: skip (why) -->` for what needs a GPU, Docker, AWS or minutes. A block
without a marker fails the test: whoever adds one decides.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from contract.errors import ServiceError
from server.launcher.embedded import PROJECT_ROOT
from server.launcher.process import wait_until_ok
from tests.helpers import free_port

pytestmark = pytest.mark.local  # starts servers of its own, on fixed ports

DOCUMENTS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- readme-test: (server|sagemaker|skip \(.+\)) -->")


def blocks() -> list[tuple[str, str, str, str]]:
    """(where, language, marker, code) of every bash and python block of every document."""
    found = []
    for document in DOCUMENTS:
        lines = document.read_text().splitlines()
        for number, line in enumerate(lines):
            if line in ("```bash", "```python"):
                end = lines.index("```", number + 1)
                previous = lines[number - 1] if number else ""
                match = MARKER.fullmatch(previous.strip())
                kind = match[1] if match else ""
                where = f"{document.relative_to(PROJECT_ROOT)} line {number + 1}"
                found.append((where, line[3:], kind, "\n".join(lines[number + 1 : end])))
    return found


def test_every_block_says_whether_it_is_run():
    unmarked = [line for line, _, kind, _ in blocks() if not kind]
    assert not unmarked, f"blocks without a readme-test marker: {unmarked}"
    assert sum(kind in ("server", "sagemaker") for _, _, kind, _ in blocks()) >= 8


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module", params=["server", "sagemaker"])
def launched(request, demo_repository, tmp_path_factory):
    """The README's server, on the README's ports."""
    kind = request.param
    ports = (8000, 8001, 8002) if kind == "server" else (8080,)
    if not all(_free(p) for p in ports):
        pytest.skip(f"the README's commands talk to ports {ports}, which something holds")
    args = [sys.executable, "-m", "server", "--model-repository", str(demo_repository)]
    env = dict(os.environ)
    if kind == "sagemaker":
        args += ["--sagemaker", "--http-port", str(free_port()), "--metrics-port", str(free_port())]
        env["SAGEMAKER_BIND_TO_PORT"] = "8080"
    log = tmp_path_factory.mktemp("readme") / f"{kind}.log"
    process = subprocess.Popen(
        args, cwd=PROJECT_ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        ready = "localhost:8000/v2/health/ready" if kind == "server" else "localhost:8080/ping"
        try:
            wait_until_ok(f"http://{ready}", 120, lambda: process.poll() is None)
        except ServiceError as error:
            raise AssertionError(f"{error}: {log.read_text()[-2000:]}") from None
        yield kind
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        (PROJECT_ROOT / "request.json").unlink(missing_ok=True)


def test_the_readme_commands_run_as_written(launched):
    ran = 0
    for where, language, kind, code in blocks():
        if kind != launched:
            continue
        command = ["bash", "-euo", "pipefail", "-c", code]
        if language == "python":
            command = [sys.executable, "-c", code]
        result = subprocess.run(
            command, cwd=PROJECT_ROOT, capture_output=True, timeout=600, env=dict(os.environ)
        )
        output = result.stdout.decode(errors="replace")
        assert result.returncode == 0, f"{where}: {result.stderr.decode()[-2000:]}"
        assert output.strip(), f"{where}: printed nothing"
        assert '"error"' not in output, f"{where}: {output[:500]}"
        ran += 1
    assert ran, f"no {launched} block"
