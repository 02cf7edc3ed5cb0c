"""A `tritonserver` child that behaves, and the supervisor both launchers run.

    process = TritonProcess(command, env, ready_url)   # a context manager for tests and tools
    sys.exit(asyncio.run(supervise(process, ...)))     # the image's and the embedded CLI's main

What it guarantees, whoever starts it (the image's entrypoint or `python -m server`):

* Ports are checked before the start: a port another process holds is refused with a message,
  instead of a "ready" answered by that other process.
* The server runs in a process group of its own, with a parent-death signal: if the launcher
  dies, even by SIGKILL, tritonserver gets SIGTERM; when tritonserver ends in any way, the rest
  of its group (the Python backend stubs) is killed and the shared-memory regions they held are
  removed.
* SIGTERM or SIGINT at any moment (starting, idle, under load) drains: the SageMaker adapter
  stops taking requests and finishes those in flight; the Python models answer new requests
  with a retryable UNAVAILABLE and finish those in flight (server/common/drain.py, within
  `exit_timeout`), then the server's group is killed, so its ports refuse connections rather
  than answer NOT_FOUND as Triton's own unloading does; the launcher exits 0.
* A Python backend stub that dies (a model instance: the front door, a network on the Python
  ONNX Runtime backend) is noticed within a second, and Triton never replaces one itself: the
  server is drained and started again, its readiness false until the new one is ready; after
  `MAX_RESTARTS` such restarts within `RESTART_WINDOW` seconds the launcher gives up and exits
  non-zero, for the orchestrator to replace it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from contract.errors import MISCONFIGURED, ServiceError
from server.common import drain
from server.launcher.probe import Probe

# What tritonserver says at every start on a host without a GPU: true, harmless, and read by
# newcomers as failures. Hidden there (one line says so) unless O2V_LOG_VERBOSE is set.
GPU_NOISE = (
    "pinned system memory",
    "CUDA memory pool disabled",
    "CudaDriverHelper has not been initialized",
    "Failed to initialize NVML",
    "DCGM unable to start",
    "Forcing CPU only input tensors",
)
_NOISE_NOTE = (
    "(no GPU here: tritonserver's CUDA, NVML, DCGM and pinned-memory warnings are hidden; "
    "O2V_LOG_VERBOSE=1 shows them)\n"
)

_PR_SET_PDEATHSIG = 1
_SHM = "/dev/shm/"
_STUB = "triton_python_backend_stub"
MAX_RESTARTS = 5
RESTART_WINDOW = 600.0
WATCH_SECONDS = 0.5
GAVE_UP = 3  # the launcher's exit code when stubs keep dying


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the launcher goes, signals unblocked."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now and not handed out before by this process.

    For tests and benchmarks that start servers. The kernel may give the same ephemeral port
    to two probes in a row once the first is closed (CI saw two SageMaker endpoints both told
    57013), so each port is handed out once.
    """
    while True:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


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
                raise ServiceError(
                    MISCONFIGURED,
                    f"{what} port {port} on {host} is already in use ({error.strerror}): stop "
                    "the process holding it or choose another port",
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


@dataclass(frozen=True)
class Stub:
    """One Python backend stub: the process behind one model instance."""

    pid: int
    instance: str  # e.g. object2vec_0_0
    region: str  # its shared-memory region, /dev/shm/...


def stubs_of(pids: list[int]) -> list[Stub]:
    """The Python backend stubs among these processes, read from their command lines
    (`<stub> <model> <region> <sizes> <parent> <lib> <ipc> <instance> <backend>`)."""
    stubs = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(_STUB.encode()) and len(argv) > 8:
            stubs.append(Stub(pid, argv[8].decode(), _SHM + argv[2].decode()))
    return stubs


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent (a dead stub stays one until Triton's
    shutdown reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_until_ok(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Polls `url` until it answers 200; ServiceError after `timeout` or once `alive()` is
    false (the process that should answer has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ServiceError(MISCONFIGURED, f"the process behind {url} exited")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise ServiceError(MISCONFIGURED, f"{url} did not answer 200 within {timeout:.0f} s")


class TritonProcess:
    """One tritonserver process: start, wait until ready, watch its stubs, drain and stop."""

    def __init__(
        self,
        command: list[str],
        env: Mapping[str, str],
        ready_url: str,
        ports: Mapping[str, int] | None = None,
        host: str = "127.0.0.1",
        drain_timeout: float = 5.0,
        hide: tuple[str, ...] = (),
    ):
        self.command, self.env, self.ready_url = command, dict(env), ready_url
        self.ports, self.host = dict(ports or {}), host
        self.drain_timeout = drain_timeout
        self.hide = hide  # lines of tritonserver's own output dropped when it writes to ours
        self.process: subprocess.Popen | None = None
        self.run_dir = Path(tempfile.mkdtemp(prefix="o2v-run-"))  # server/common/drain.py
        self.env[drain.RUN_DIR_VARIABLE] = str(self.run_dir)
        self.stubs: list[Stub] = []  # learnt once the server is ready
        self.regions: set[str] = set()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, stdout=None) -> TritonProcess:
        check_ports(self.host, self.ports)
        self.run_dir.mkdir(exist_ok=True)
        drain.end(self.run_dir)
        self.stubs, self.stdout = [], stdout
        filtered = stdout is None and bool(self.hide)
        # Signals wait until the Popen object exists, so no signal can orphan the child.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=subprocess.PIPE if filtered else stdout,
                stderr=subprocess.STDOUT if stdout or filtered else None,
                start_new_session=True,  # its own group: Ctrl-C reaches the launcher only
                preexec_fn=_die_with_parent,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if filtered:
            threading.Thread(target=self._copy_output, daemon=True).start()
        return self

    def _copy_output(self) -> None:
        """tritonserver's output to ours, without the lines in `hide`."""
        out, noted = sys.stdout.buffer, False
        patterns = [p.encode() for p in self.hide]
        for line in self.process.stdout:
            if any(p in line for p in patterns):
                if not noted:
                    out.write(_NOISE_NOTE.encode())
                    noted = True
                continue
            out.write(line)
            out.flush()

    def probe_ready(self) -> bool:
        """True when the server answers ready; ServiceError when it has exited."""
        if self.process.poll() is not None:
            self.cleanup()
            raise ServiceError(
                MISCONFIGURED,
                f"tritonserver exited with code {self.process.returncode} before it was "
                "ready: see its log above",
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
                raise ServiceError(
                    MISCONFIGURED, f"tritonserver was not ready within {timeout:.0f} s"
                )
            time.sleep(0.2)

    def learn_stubs(self) -> list[Stub]:
        """The stubs of the ready server (its model instances), watched from now on."""
        self.stubs = stubs_of(group_members(self.process.pid))
        self.regions |= {stub.region for stub in self.stubs}
        return self.stubs

    def dead_stubs(self) -> list[Stub]:
        return [stub for stub in self.stubs if not alive(stub.pid)]

    def halt(self, drain_timeout: float) -> None:
        """Drains the Python models (server/common/drain.py), then kills the server's group."""
        if self.process.poll() is None:
            drain.begin(self.run_dir)
            left = drain.wait_idle(self.run_dir, drain_timeout)
            if left:
                print(f"still busy after {drain_timeout:.0f} s, stopped anyway: {', '.join(left)}")
        self.cleanup()

    def stop(self) -> int | None:
        if self.process is None:
            return None
        self.halt(self.drain_timeout)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        return self.process.returncode

    def cleanup(self) -> None:
        """Kills the server's process group and removes the shared memory it leaves behind."""
        group = self.process.pid
        members = group_members(group)
        # A dead stub's region is mapped by no one any more: known from its command line.
        regions = shared_memory_of(members) | self.regions | {s.region for s in stubs_of(members)}
        # tritonserver first, then its stubs: the server never sees a stub die under it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            self.process.kill()
        self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
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


async def _until_ready(server: TritonProcess, stopping: asyncio.Event, timeout: float) -> bool:
    """True once the server is ready (its stubs then watched), False if a stop came first."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(server.probe_ready):
        if stopping.is_set():
            return False
        if time.monotonic() > deadline:
            raise ServiceError(MISCONFIGURED, f"tritonserver was not ready within {timeout:.0f} s")
        await asyncio.sleep(0.2)
    server.learn_stubs()
    return not stopping.is_set()


def _failure(server: TritonProcess, probe: Probe | None) -> str | None:
    """What went wrong with a running server, if anything: ServiceError-free, for the loop."""
    if not server.running:
        # Killed by a signal: Triton 2.51 aborts (a boost lock_exception in the Python
        # backend) when a stub is killed in the middle of an execute, as a dead stub.
        return f"tritonserver was killed (signal {-server.process.returncode})"
    dead = server.dead_stubs()
    if dead:
        stubs = ", ".join(f"{s.instance} (pid {s.pid})" for s in dead)
        return f"the Python backend stub of {stubs} died and Triton does not replace it"
    return probe.stalled() if probe is not None else None


async def supervise(
    server: TritonProcess,
    banner: str,
    front_end: FrontEnd | None = None,
    ready_timeout: float = 300.0,
    max_restarts: int = MAX_RESTARTS,
    probe: Probe | None = None,
) -> int:
    """Runs the server until a signal (exit 0), its own exit (its exit code) or failures that
    keep coming (GAVE_UP); a stub that dies once, tritonserver killed by a signal (as Triton
    2.51 aborts when a stub dies mid-execute), or a protocol that stopped answering the
    probe's inferences (server.launcher.probe) gets the server restarted."""
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
        if not await _until_ready(server, stopping, ready_timeout):
            return 0
        print(banner, flush=True)
        if probe is not None:
            probe.start().resume()
        restarts: list[float] = []
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=WATCH_SECONDS)
            if stopping.is_set():
                break
            if not server.running and server.process.returncode >= 0:
                code = server.process.returncode  # its own decision: the caller's to act on
                print(f"tritonserver exited with code {code}", flush=True)
                return code or 1
            failure = _failure(server, probe)
            if failure is None:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < RESTART_WINDOW] + [now]
            if len(restarts) > max_restarts:
                print(
                    f"{failure} ({len(restarts)} failures in {RESTART_WINDOW:.0f} s, "
                    f"O2V_MAX_RESTARTS={max_restarts}): giving up, exit {GAVE_UP}",
                    flush=True,
                )
                return GAVE_UP
            print(f"{failure}: restarting tritonserver (not ready meanwhile)", flush=True)
            if probe is not None:
                probe.pause()
            await asyncio.to_thread(server.halt, 1.0)
            # On this thread, as the first start: the parent-death signal follows the thread
            # that forked, not the process.
            server.start(server.stdout)
            if not await _until_ready(server, stopping, ready_timeout):
                break
            if probe is not None:
                probe.resume()
            print("tritonserver restarted: ready again", flush=True)
        return 0
    finally:
        if probe is not None:
            probe.stop()
        if stop_front_end is not None:
            await stop_front_end()
        await asyncio.to_thread(server.stop)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
