"""How a stop drains the models Triton runs in Python: refuse new work, finish what is in flight.

Triton 2.51 drains badly by itself: on SIGTERM it unloads every model at once, so a request
that arrives during its exit timeout gets NOT_FOUND ("unknown model ... has no available
versions"), which a client cannot tell from a wrong model name, and it polls for the end of
in-flight work once a second. So the launcher drains first, through a folder it shares with
every model instance (`O2V_RUN_DIR`, set in tritonserver's environment):

* each Python model instance holds an exclusive lock on a file of its own in that folder for
  as long as one `execute` runs (`Gate.busy`);
* a stop writes `draining` there (`begin`): from then on, after a short grace that lets the
  requests already queued through, each instance answers new requests UNAVAILABLE (HTTP 503,
  gRPC UNAVAILABLE: retry elsewhere) without running them (`Gate.refusing`);
* the launcher waits until no instance holds its lock (`wait_idle`), then kills the server,
  whose ports then refuse connections. A request in flight is answered; a new one gets a
  retryable answer or a refused connection, never NOT_FOUND.

A stub that dies releases its lock with its last breath, so a crash never blocks a drain.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from contract import errors

RUN_DIR_VARIABLE = "O2V_RUN_DIR"
DRAINING = "draining"
# Requests already queued when a stop begins are served for this long, as in-flight work.
GRACE_SECONDS = 0.25
REFUSAL = "the server is shutting down: retry the request (on another replica)"
# Marks the front door's BLS calls: part of a request in flight, served while draining.
IN_FLIGHT_PARAMETER = "o2v_in_flight"


def in_flight(parameters: str) -> bool:
    """Whether a request's parameters (JSON text) mark it as part of one in flight."""
    return f'"{IN_FLIGHT_PARAMETER}"' in parameters


class Gate:
    """One model instance's side: its busy lock and whether it must refuse new work."""

    def __init__(self, run_dir: Path | None, name: str):
        self._flag = run_dir / DRAINING if run_dir else None
        self._lock = None
        if run_dir is not None:
            path = run_dir / f"busy-{name}-{os.getpid()}"
            self._lock = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @classmethod
    def from_env(cls, name: str) -> Gate:
        folder = os.environ.get(RUN_DIR_VARIABLE)
        return cls(Path(folder) if folder and Path(folder).is_dir() else None, name)

    def refusing(self) -> bool:
        """True once a stop began more than the grace ago (one stat call: about 1 us)."""
        if self._flag is None:
            return False
        try:
            began = self._flag.stat().st_mtime
        except FileNotFoundError:
            return False
        return time.time() - began >= GRACE_SECONDS

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        if self._lock is None:
            yield
            return
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)


def refusals(pb_utils, count: int) -> list:
    """`count` UNAVAILABLE responses, for a model's `execute` (`pb_utils`: the Python backend's
    utils module, which only a stub can import). One TritonError each: the Python backend frees
    an error's shared memory with the first response that carries it, so one shared error
    reached the others garbled, or crashed tritonserver (SIGSEGV in libtriton_python.so)."""
    return [
        pb_utils.InferenceResponse(
            error=errors.triton_error(pb_utils, errors.ServiceError(errors.OVERLOADED, REFUSAL))
        )
        for _ in range(count)
    ]


def begin(run_dir: Path) -> None:
    """From now on (after the grace), every instance refuses new requests."""
    (run_dir / DRAINING).touch()


def end(run_dir: Path) -> None:
    """A fresh start: instances serve again, and the locks of dead instances are forgotten."""
    for entry in run_dir.iterdir():
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()


def busy_instances(run_dir: Path) -> list[str]:
    """The instances inside an `execute` now."""
    busy = []
    for path in run_dir.glob("busy-*"):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            busy.append(path.name.removeprefix("busy-"))
        finally:
            os.close(fd)
    return busy


def wait_idle(run_dir: Path, timeout: float) -> list[str]:
    """Waits the grace, then until no instance is busy or `timeout`; returns those still busy."""
    time.sleep(GRACE_SECONDS)
    deadline = time.monotonic() + timeout
    while (busy := busy_instances(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return busy
