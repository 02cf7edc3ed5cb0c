"""The supervisor's look at each protocol: a real inference, not a health endpoint.

Triton's `/v2/health/ready` answers from its HTTP thread whatever the gRPC frontend is doing:
one gRPC message of 300,000 inputs kept Triton 2.51's gRPC frontend busy for minutes (its
`ValidateRequestInputs` builds a message quadratic in the inputs; still so in core's main of
2026-06) while readiness said 200 and nothing restarted it. So the launcher sends a
one-token inference to enc0 over each protocol Triton opens, every `interval_s`; a protocol
that answers none of `failures` probes in a row, each within `timeout_s`, is reported
(`stalled`) and the supervisor restarts tritonserver (server.launcher.process.supervise). A failed
probe also makes the SageMaker endpoint's /ping say 503 until one succeeds (`answering`).

enc0, not the front door: the front door's queue is the clients' (a probe queued behind
maximal neighbours requests once restarted a busy, healthy server: docs/security.md),
while enc0 answers one token at once wherever it runs (in process, its own Triton model is
idle; behind BLS, it batches the front door's calls). What is probed is the protocol and
Triton's request path, which is what stalled.

The probes run on a daemon thread of their own, so a probe waiting on a stalled server never
delays a stop.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass

import numpy as np
import orjson

from contract.names import ENCODER_INPUT, ENCODER_MODELS
from server.common.settings import setting

PROBE_MODEL = ENCODER_MODELS[0]
# One sequence of one token (id 1: inside any vocabulary, 0 being padding).
PROBE_REQUEST = orjson.dumps(
    {"inputs": [{"name": ENCODER_INPUT, "shape": [1, 1], "datatype": "INT64", "data": [1]}]}
)


@dataclass(frozen=True)
class ProbeSettings:
    interval_s: float = setting(
        2.0,
        "O2V_PROBE_INTERVAL_S",
        minimum=0.0,
        help="seconds between the supervisor's probes, one inference over HTTP and gRPC (0: off)",
    )  # 0: no probes
    timeout_s: float = setting(
        5.0,
        "O2V_PROBE_TIMEOUT_S",
        minimum=0.1,
        help="a probe not answered within this many seconds failed",
    )
    failures: int = setting(
        3,
        "O2V_PROBE_FAILURES",
        minimum=1,
        help="probes failed in a row before tritonserver is restarted",
    )


def http_inference(port: int, timeout: float) -> None:
    """The probe over Triton's HTTP API; raises unless it is answered 200 within `timeout`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            "POST",
            f"/v2/models/{PROBE_MODEL}/infer",
            PROBE_REQUEST,
            {"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
    finally:
        connection.close()


class GrpcInference:
    """The probe over gRPC; a client kept across probes."""

    def __init__(self, port: int):
        import tritonclient.grpc as grpcclient  # the launcher's own dependency, loaded late

        self.client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        self.inputs = [grpcclient.InferInput(ENCODER_INPUT, [1, 1], "INT64")]
        self.inputs[0].set_data_from_numpy(np.ones((1, 1), dtype=np.int64))

    def __call__(self, timeout: float) -> None:
        self.client.infer(PROBE_MODEL, self.inputs, client_timeout=timeout)

    def close(self) -> None:
        self.client.close()


class Probe:
    """Probes each protocol on a thread; `stalled` names one that stopped answering."""

    def __init__(self, http_port: int, grpc_port: int | None, settings: ProbeSettings):
        self.http_port, self.grpc_port, self.settings = http_port, grpc_port, settings
        self.streaks = {"HTTP": 0} | ({"gRPC": 0} if grpc_port else {})
        self.lock = threading.Lock()
        self.active = threading.Event()  # probes only while the server is up and ready
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.interval_s > 0

    def start(self) -> Probe:
        if self.enabled and self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="o2v-probe", daemon=True)
            self.thread.start()
        return self

    def resume(self) -> None:
        """The server is ready: probes begin again, from a clean slate."""
        with self.lock:
            self.streaks = dict.fromkeys(self.streaks, 0)
        self.active.set()

    def pause(self) -> None:
        self.active.clear()

    def stop(self) -> None:
        self.stopped.set()
        self.active.set()  # wakes the thread, which then ends

    def answering(self) -> bool:
        with self.lock:
            return not any(self.streaks.values())

    def stalled(self) -> str | None:
        """What to say of a protocol that answered none of the last `failures` probes."""
        with self.lock:
            for protocol, streak in self.streaks.items():
                if streak >= self.settings.failures:
                    return (
                        f"{protocol} answered none of {streak} inferences in a row "
                        f"(each allowed {self.settings.timeout_s:g} s, O2V_PROBE_*)"
                    )
        return None

    def _loop(self) -> None:
        grpc = None
        while not self.stopped.is_set():
            self.active.wait()
            if self.stopped.is_set():
                break
            for protocol in list(self.streaks):
                try:
                    if protocol == "HTTP":
                        http_inference(self.http_port, self.settings.timeout_s)
                    else:
                        grpc = grpc or GrpcInference(self.grpc_port)
                        grpc(self.settings.timeout_s)
                    failed = False
                except Exception:  # noqa: BLE001 - any failure is a failed probe
                    failed = True
                    if protocol == "gRPC" and grpc is not None:
                        grpc.close()  # a fresh channel next time
                        grpc = None
                if not self.active.is_set():
                    break  # a restart began meanwhile: this probe says nothing
                with self.lock:
                    self.streaks[protocol] = self.streaks[protocol] + 1 if failed else 0
            self.stopped.wait(self.settings.interval_s)
        if grpc is not None:
            grpc.close()
