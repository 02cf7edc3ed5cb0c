"""Processes behave: the launcher, as `docker stop`, Kubernetes and Ctrl-C treat it.

Each test starts the real launcher (`python -m server`, or the image's entrypoint `python -m
server.launcher.entrypoint` on the same binary) and checks that a signal at any moment ends
everything with exit 0, and that nothing is left: no process of the server's group, no shared memory
region it held.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from server.launcher.configs import read as read_config
from server.launcher.embedded import (
    PROJECT_ROOT,
    _pytriton_dir,
    embedded_environment,
    prepare_backends,
)
from server.launcher.launch import Launch
from server.launcher.process import GAVE_UP, group_members, shared_memory_of, stubs_of
from tests.helpers import DOC_EXAMPLE, LAUNCHED, Launcher, free_port, json_body, stop_launched

pytestmark = pytest.mark.local  # starts servers of its own


@pytest.fixture(autouse=True)
def _no_launcher_outlives_its_test():
    """A test that fails halfway must not leave its launcher (and tritonserver) running."""
    yield
    stop_launched()


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
    launcher = Launcher(["server", "--model-repository", str(demo_repository)], tmp_path / "log")
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
    """With no restarts allowed, a killed server ends the launcher (a restart:
    test_a_tritonserver_killed_by_a_signal_is_restarted)."""
    launcher = Launcher(
        ["server", "--model-repository", str(demo_repository)],
        tmp_path / "log",
        env={"O2V_MAX_RESTARTS": "0"},
    )
    group = launcher.server_pid()
    launcher.wait_ready()
    regions = shared_memory_of(group_members(group))
    assert len(group_members(group)) > 1, "the stubs are in the server's group"
    os.kill(group, signal.SIGKILL)
    assert launcher.wait() == GAVE_UP  # the server died: not a clean stop
    assert_nothing_left(group, regions)


def test_a_killed_launcher_takes_the_server_along(demo_repository, tmp_path):
    launcher = Launcher(["server", "--model-repository", str(demo_repository)], tmp_path / "log")
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
                "server.launcher.embedded",
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
    """`python -m server.launcher.entrypoint` (the image's ENTRYPOINT) on the embedded binary."""
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
        [sys.executable, "-m", "server.launcher.entrypoint"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    LAUNCHED.append(process)
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
    # what the served front door config holds (its copies and where the networks run)
    serving = re.search(r"serving (\d+) front door cop(?:y|ies), networks (\w+) \((.+)\)", text)
    assert serving, text[-1500:]
    served = read_config(Path(serving[3]) / "object2vec" / "configs" / "classification.pbtxt")
    assert int(serving[1]) == served.instance_group[0].count
    assert serving[2] == served.parameters["networks"].string_value
    assert "admin-key=" not in text  # the key is not printed


def _grpc_load(port: int, stop: threading.Event, outcomes: list) -> None:
    """The documentation's request over gRPC until `stop`: (monotonic time, status) each."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from tests.helpers import infer_with

    client = grpcclient.InferenceServerClient(f"localhost:{port}")
    body = json_body([{"in0": s} for s in DOC_EXAMPLE]).encode()
    while not stop.is_set():
        try:
            infer_with(grpcclient, client, body, "application/json")
            outcomes.append((time.monotonic(), "OK"))
        except InferenceServerException as error:
            status = str(error.status()).removeprefix("StatusCode.")
            if status not in ("UNAVAILABLE",):
                status += f" ({error.message()[:100]!r})"
            outcomes.append((time.monotonic(), status))
            time.sleep(0.005)


def test_a_stop_under_load_answers_in_flight_and_refuses_the_rest_retryably(
    demo_repository, tmp_path
):
    """Triton's own drain answered NOT_FOUND ("unknown model") during its exit timeout; ours
    answers what is in flight, then UNAVAILABLE or a refused connection (server/common/drain.py)."""
    launcher = Launcher(["server", "--model-repository", str(demo_repository)], tmp_path / "log")
    grpc_port = int(launcher.args[launcher.args.index("--grpc-port") + 1])
    group = launcher.server_pid()
    launcher.wait_ready()
    stop, outcomes = threading.Event(), []
    load = [threading.Thread(target=_grpc_load, args=(grpc_port, stop, outcomes)) for _ in range(6)]
    for thread in load:
        thread.start()
    time.sleep(2.0)
    regions = shared_memory_of(group_members(group))
    signalled = time.monotonic()
    launcher.process.send_signal(signal.SIGTERM)
    code = launcher.wait()
    time.sleep(0.5)
    stop.set()
    for thread in load:
        thread.join()
    assert code == 0, launcher.log.read_text()[-2000:]
    assert_nothing_left(group, regions)
    before = Counter(s for t, s in outcomes if t < signalled)
    during = Counter(s for t, s in outcomes if t >= signalled)
    print(f"before the stop {dict(before)}, from it on {dict(during)}")
    assert set(before) == {"OK"}
    assert set(during) <= {"OK", "UNAVAILABLE"}, during  # never NOT_FOUND or INTERNAL
    assert during["UNAVAILABLE"] > 0, "new requests during the drain were refused"


def _request_status(port: int, instance: str) -> int | str:
    """One request on a fresh connection: to the front door, or straight to enc0."""
    if instance == "enc0":
        url = f"http://127.0.0.1:{port}/v2/models/enc0/infer"
        data = b'{"inputs": [{"name": "tokens", "shape": [1, 3], "datatype": "INT64", '
        data += b'"data": [1, 2, 3]}]}'
        headers = {}
    else:
        url = f"http://127.0.0.1:{port}/v2/models/object2vec/infer"
        data, headers = b'{"in0": [1, 2, 3]}', {"Inference-Header-Content-Length": "0"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return "refused"


@pytest.mark.parametrize("instance", ["object2vec", "enc0"])
def test_a_dead_stub_is_replaced_and_readiness_says_so_meanwhile(
    demo_repository, tmp_path, instance
):
    """kill -9 of a model's stub: Triton alone answered 500 "Stub process is not healthy"
    forever while every health check said 200. Now the server is restarted within 30 s, and
    past the watch's period readiness is never 200 while a request would fail."""
    launcher = Launcher(["server", "--model-repository", str(demo_repository)], tmp_path / "log")
    group = launcher.server_pid()
    launcher.wait_ready()
    stubs = stubs_of(group_members(group))
    victim = next(s for s in stubs if s.instance.startswith(instance))
    assert _request_status(launcher.http_port, instance) == 200
    killed = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    samples, recovered = [], None
    while time.monotonic() - killed < 30 and recovered is None:
        ready, status = launcher.ready(), _request_status(launcher.http_port, instance)
        samples.append((time.monotonic() - killed, ready, status))
        if b"ready again" in launcher.log.read_bytes() and ready and status == 200:
            recovered = samples[-1][0]
        time.sleep(0.05)
    print(
        f"{instance}: answering again {recovered} s after the kill; while down:",
        sorted({(r, s) for _, r, s in samples}, key=str),
    )
    assert recovered is not None, "not serving again within 30 s"
    assert any(status != 200 for _, _, status in samples), "the kill did something"
    # Past the watch's period and the drain (about 1 s), a ready server answers.
    lying = [(t, s) for t, ready, s in samples if t > 1.5 and ready and s != 200]
    assert not lying, f"ready while requests failed: {lying[:3]}"
    new_group = launcher.server_pid()
    assert new_group != group
    launcher.process.send_signal(signal.SIGTERM)
    assert launcher.wait() == 0
    assert_nothing_left(new_group, {s.region for s in stubs})
    assert not os.path.exists(victim.region), "the dead stub's shared memory is removed"


def test_with_no_restarts_allowed_a_dead_stub_ends_the_launcher(demo_repository, tmp_path):
    launcher = Launcher(
        ["server", "--model-repository", str(demo_repository)],
        tmp_path / "log",
        env={"O2V_MAX_RESTARTS": "0"},
    )
    group = launcher.server_pid()
    launcher.wait_ready()
    stubs = stubs_of(group_members(group))
    os.kill(next(s.pid for s in stubs if s.instance.startswith("object2vec")), signal.SIGKILL)
    started = time.monotonic()
    assert launcher.wait(30) == GAVE_UP
    print(f"exited {time.monotonic() - started:.1f} s after the kill")
    assert_nothing_left(group, {s.region for s in stubs})


def test_a_tritonserver_killed_by_a_signal_is_restarted(demo_repository, tmp_path):
    """Triton 2.51 itself aborts (SIGABRT, a boost lock_exception in the Python backend) when
    a stub is killed in the middle of an execute: a server killed by a signal is restarted as
    a dead stub is, and nothing of the first one is left."""
    launcher = Launcher(["server", "--model-repository", str(demo_repository)], tmp_path / "log")
    group = launcher.server_pid()
    launcher.wait_ready()
    stubs = stubs_of(group_members(group))
    os.kill(group, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while b"ready again" not in launcher.log.read_bytes():
        assert time.monotonic() < deadline, "not restarted within 60 s"
        assert launcher.process.poll() is None, launcher.log.read_text()[-2000:]
        time.sleep(0.1)
    assert _request_status(launcher.http_port, "object2vec") == 200
    assert b"signal 9" in launcher.log.read_bytes()
    new_group = launcher.server_pid()
    assert new_group != group
    assert_nothing_left(group, {s.region for s in stubs})
    launcher.process.send_signal(signal.SIGTERM)
    assert launcher.wait() == 0
    assert_nothing_left(new_group, set())
