"""Processes behave: the launcher, as `docker stop`, Kubernetes and Ctrl-C treat it.

Each test starts the real launcher (`python -m server.embedded`, or the image's entrypoint
`python -m server.entrypoint` on the same binary) and checks that a signal at any moment ends
everything with exit 0, and that nothing is left: no process of the server's group, no shared
memory region it held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from server.embedded import PROJECT_ROOT, _pytriton_dir, embedded_environment, prepare_backends
from server.entrypoint import Launch
from server.process import group_members, shared_memory_of
from tests.helpers import DOC_EXAMPLE, free_port, json_body

pytestmark = pytest.mark.local  # starts servers of its own


class Launcher:
    """A launcher process and what it started."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.http_port = free_port()
        self.args = [
            *args,
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
        ]
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", *self.args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {})},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def server_pid(self, timeout: float = 30) -> int:
        """tritonserver's pid: the launcher's child, leader of its own process group."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            if pids:
                return int(pids[0])
            time.sleep(0.05)
        raise AssertionError("the launcher started no server")

    def ready(self) -> bool:
        url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 120) -> None:
        """Until Triton answers ready and the launcher has said so (its banner)."""
        deadline = time.monotonic() + timeout
        while not (self.ready() and b"is ready" in self.log.read_bytes()):
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.2)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the launcher did not exit in {timeout} s") from None


def assert_nothing_left(group: int, regions: set[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while group_members(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_members(group), "processes of the server's group are left"
    assert not [r for r in regions if os.path.exists(r)], "shared memory regions are left"


def _load(port: int, stop: threading.Event, answered: list) -> None:
    body = json_body([{"in0": s} for s in DOC_EXAMPLE]).encode()
    while not stop.is_set():
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/object2vec/infer",
            data=body,
            headers={"Inference-Header-Content-Length": "0"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answered.append(response.status)
        except OSError:
            time.sleep(0.01)


@pytest.mark.parametrize(
    "moment, signum",
    [
        ("starting", signal.SIGTERM),
        ("starting", signal.SIGINT),
        ("idle", signal.SIGINT),
        ("under-load", signal.SIGTERM),
    ],
)
def test_a_signal_at_any_moment_stops_everything_and_exits_0(
    demo_repository, tmp_path, moment, signum
):
    launcher = Launcher(
        ["server.embedded", "--model-repository", str(demo_repository)], tmp_path / "log"
    )
    group = launcher.server_pid()
    stop, answered, load = threading.Event(), [], None
    if moment == "starting":
        time.sleep(1.0)
        assert not launcher.ready()
    else:
        launcher.wait_ready()
        if moment == "under-load":
            load = [
                threading.Thread(target=_load, args=(launcher.http_port, stop, answered))
                for _ in range(4)
            ]
            for thread in load:
                thread.start()
            time.sleep(2.0)
            assert answered, "no load reached the server"
    regions = shared_memory_of(group_members(group))
    launcher.process.send_signal(signum)
    code = launcher.wait()
    stop.set()
    for thread in load or []:
        thread.join()
    assert code == 0, launcher.log.read_text()[-2000:]
    assert_nothing_left(group, regions)
    if moment != "starting":
        assert regions, "the Python stubs held shared memory: the check above checked something"


def test_a_killed_server_takes_its_stubs_and_memory_along(demo_repository, tmp_path):
    launcher = Launcher(
        ["server.embedded", "--model-repository", str(demo_repository)], tmp_path / "log"
    )
    group = launcher.server_pid()
    launcher.wait_ready()
    regions = shared_memory_of(group_members(group))
    assert len(group_members(group)) > 1, "the stubs are in the server's group"
    os.kill(group, signal.SIGKILL)
    assert launcher.wait() != 0  # the server died: not a clean stop
    assert_nothing_left(group, regions)


def test_a_killed_launcher_takes_the_server_along(demo_repository, tmp_path):
    launcher = Launcher(
        ["server.embedded", "--model-repository", str(demo_repository)], tmp_path / "log"
    )
    group = launcher.server_pid()
    launcher.wait_ready()
    launcher.process.kill()  # SIGKILL: no handler runs; the parent-death signal does the work
    launcher.process.wait()
    assert_nothing_left(group, set(), timeout=30)


def test_a_port_already_taken_is_refused_with_a_message(demo_repository, tmp_path):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "server.embedded",
                "--model-repository",
                str(demo_repository),
                "--http-port",
                str(port),
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"HTTP port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "ready" not in result.stdout


def test_the_image_entrypoint_is_supervised_the_same_way(demo_repository, tmp_path):
    """`python -m server.entrypoint` (the image's ENTRYPOINT) on the embedded binary."""
    prepare_backends(PROJECT_ROOT / ".triton" / "backends")
    wrapper = tmp_path / "tritonserver"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec "{_pytriton_dir() / "bin" / "tritonserver"}" '
        f'--backend-directory="{PROJECT_ROOT / ".triton" / "backends"}" "$@"\n'
    )
    wrapper.chmod(0o755)
    env = embedded_environment(Launch(demo_repository))
    env |= {"TRITONSERVER": str(wrapper), "MODEL_REPOSITORY": str(demo_repository)}
    ports = {name: str(free_port()) for name in ("HTTP", "GRPC", "METRICS")}
    env |= {f"O2V_{name}_PORT": port for name, port in ports.items()}
    log = tmp_path / "log"
    process = subprocess.Popen(
        [sys.executable, "-m", "server.entrypoint"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    launcher = Launcher.__new__(Launcher)
    launcher.process, launcher.log, launcher.http_port = process, log, int(ports["HTTP"])
    launcher.wait_ready()
    group = launcher.server_pid()
    regions = shared_memory_of(group_members(group))
    process.send_signal(signal.SIGTERM)
    assert launcher.wait() == 0, log.read_text()[-2000:]
    assert_nothing_left(group, regions)
    text = log.read_text()
    assert "listening on 0.0.0.0" in text  # the image listens on every address
    assert "admin-key=" not in text  # the key is not printed
