"""A `tritonserver` child that behaves, and the supervisor both launchers run.

    process = TritonProcess(command, env, ready_url)   # a context manager for tests and tools
    sys.exit(asyncio.run(supervise(process, ...)))     # the image's and the embedded CLI's main

What it guarantees, whoever starts it (the image's entrypoint or `python -m server.embedded`):

* Ports are checked before the start: a port another process holds is refused with a message,
  instead of a "ready" answered by that other process.
* The server runs in a process group of its own, with a parent-death signal: if the launcher
  dies, even by SIGKILL, tritonserver gets SIGTERM; when tritonserver ends in any way, the rest
  of its group (the Python backend stubs) is killed and the shared-memory regions they held are
  removed.
* SIGTERM or SIGINT at any moment (starting, idle, under load) drains: the SageMaker adapter
  stops taking requests and finishes those in flight, tritonserver gets SIGTERM and finishes
  its own within `--exit-timeout-secs`, then anything left is killed; the launcher exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path


class LaunchError(RuntimeError):
    """The server can't be started as asked: the message says why."""


_PR_SET_PDEATHSIG = 1
_SHM = "/dev/shm/"


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the launcher goes, signals unblocked."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for tests and benchmarks that start servers)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_ports(host: str, ports: Mapping[str, int]) -> None:
    """Refuses ports another process already listens on, before anything starts."""
    for what, port in ports.items():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As servers do: a port left in TIME_WAIT by a previous run is free to take.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                raise LaunchError(
                    f"{what} port {port} on {host} is already in use ({error.strerror}): stop "
                    "the process holding it or choose another port"
                ) from None


def group_members(group: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
        if int(fields[2]) == group:
            members.append(int(entry.name))
    return members


def shared_memory_of(pids: list[int]) -> set[str]:
    regions = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
                if path.startswith(_SHM):
                    regions.add(path.removesuffix(" (deleted)"))
    return regions


class TritonProcess:
    """One tritonserver process: start, wait until ready, stop with a grace period."""

    def __init__(
        self,
        command: list[str],
        env: Mapping[str, str],
        ready_url: str,
        ports: Mapping[str, int] | None = None,
        host: str = "127.0.0.1",
        grace: float = 30.0,
    ):
        self.command, self.env, self.ready_url = command, dict(env), ready_url
        self.ports, self.host, self.grace = dict(ports or {}), host, grace
        self.process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, stdout=None) -> TritonProcess:
        check_ports(self.host, self.ports)
        # Signals wait until the Popen object exists, so no signal can orphan the child.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=stdout,
                stderr=subprocess.STDOUT if stdout else None,
                start_new_session=True,  # its own group: Ctrl-C reaches the launcher only
                preexec_fn=_die_with_parent,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return self

    def probe_ready(self) -> bool:
        """True when the server answers ready; LaunchError when it has exited."""
        if self.process.poll() is not None:
            self.cleanup()
            raise LaunchError(
                f"tritonserver exited with code {self.process.returncode} before it was "
                "ready: see its log above"
            )
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.probe_ready():
            if time.monotonic() > deadline:
                self.stop()
                raise LaunchError(f"tritonserver was not ready within {timeout:.0f} s")
            time.sleep(0.2)

    def stop(self) -> int | None:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL to whatever is left."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.grace)
            except subprocess.TimeoutExpired:
                pass
        self.cleanup()
        return self.process.returncode

    def cleanup(self) -> None:
        """Kills the server's process group and removes the shared memory it leaves behind."""
        group = self.process.pid
        members = group_members(group)
        regions = shared_memory_of(members)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 5
        while group_members(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        for region in regions:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(region)

    def __enter__(self) -> TritonProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# A front end started once the server is ready (the SageMaker adapter): it returns a coroutine
# function that stops it, draining its in-flight requests.
FrontEnd = Callable[[], Awaitable[Callable[[], Awaitable[None]]]]


async def supervise(
    server: TritonProcess,
    banner: str,
    front_end: FrontEnd | None = None,
    ready_timeout: float = 300.0,
) -> int:
    """Runs the server until a signal (exit 0) or its own end (its exit code)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    stop_front_end = None
    try:
        server.start()
        if front_end is not None:
            # Up at once, so /ping can say 503 (not ready) rather than refuse connections.
            stop_front_end = await front_end()
        deadline = time.monotonic() + ready_timeout
        while not await asyncio.to_thread(server.probe_ready):
            if stopping.is_set():
                return 0
            if time.monotonic() > deadline:
                raise LaunchError(f"tritonserver was not ready within {ready_timeout:.0f} s")
            await asyncio.sleep(0.2)
        if not stopping.is_set():
            print(banner, flush=True)
        while not stopping.is_set() and server.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=0.5)
        if not stopping.is_set():
            code = server.process.returncode
            print(f"tritonserver exited with code {code}", flush=True)
            return code or 1
        return 0
    finally:
        if stop_front_end is not None:
            await stop_front_end()
        await asyncio.to_thread(server.stop)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
