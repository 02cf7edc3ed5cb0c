"""A tritonserver start, assembled once and then run: the one path both mains take.

    sys.exit(serve(lambda: assemble(launch, binary, backend_directory, env)))

`assemble` makes every decision once, in this order:

    exposure      which addresses this release may listen on (server.launcher.launch)
    host          cores, GPUs, backends: detected once (server.launcher.host)
    repository    its configs brought up to date for that host (server.launcher.configs)
    command       tritonserver's arguments

and `serve` runs the plan, supervised until a signal, or exits 2 saying why it cannot.

`run` starts tritonserver (server.launcher.process), the probe that checks it answers
(server.launcher.probe) and, in SageMaker mode, the endpoint in front (server.sagemaker),
which learns what it needs (body limit, host) from the plan, not by looking again.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import uvloop

from contract.errors import ServiceError
from contract.names import FRONT_DOOR
from server.common.settings import ServingSettings
from server.launcher.host import NGC_BACKENDS, Host
from server.launcher.launch import (
    Launch,
    check_exposure,
    front_door_max_body,
    prepare_repository,
    served_front_door,
    tritonserver_args,
)
from server.launcher.probe import Probe
from server.launcher.process import (
    GPU_NOISE,
    FrontEnd,
    TritonProcess,
    check_ports,
    supervise,
)
from server.sagemaker.adapter import default_execution_parameters, start_adapter


@dataclass(frozen=True)
class Plan:
    """Everything a start needs, decided: nothing below looks at the machine again."""

    launch: Launch
    host: Host
    repository: Path  # the one served: configs up to date (a copy where the original is read-only)
    command: list[str]
    env: Mapping[str, str]

    @property
    def max_body_bytes(self) -> int:
        return front_door_max_body(self.repository)


def assemble(
    launch: Launch, binary: str, backend_directory: Path | None, env: Mapping[str, str]
) -> Plan:
    """The plan for `launch`: tritonserver at `binary`, loading backends from
    `backend_directory` (None: tritonserver's own, the NGC image's), in `env`. A ServiceError
    (MISCONFIGURED) says what cannot work."""
    check_exposure(launch)  # before anything else: what may listen where
    host = Host.detect(backend_directory or NGC_BACKENDS, env)
    repository = prepare_repository(launch, host)
    backends = [f"--backend-directory={backend_directory}"] if backend_directory else []
    command = [binary, *backends, *tritonserver_args(launch, repository)]
    return Plan(launch, host, repository, command, dict(env))


def _local(host: str) -> str:
    """Where this machine reaches a server bound to `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def triton_process(plan: Plan) -> TritonProcess:
    """The process for a plan: its ports checked, readiness on Triton's HTTP health."""
    launch = plan.launch
    if launch.sagemaker_port:
        host, ports = "127.0.0.1", {"HTTP": launch.http_port, "metrics": launch.metrics_port}
    else:
        host = launch.host
        ports = {"HTTP": launch.http_port, "gRPC": launch.grpc_port}
        ports["metrics"] = launch.metrics_port
    return TritonProcess(
        plan.command,
        plan.env,
        f"http://{_local(host)}:{launch.http_port}/v2/health/ready",
        ports=ports,
        host=host,
        drain_timeout=launch.exit_timeout_secs,
        hide=GPU_NOISE if not plan.host.gpus and not launch.log_verbose else (),
    )


def banner(launch: Launch, repository: Path) -> str:
    here = _local(launch.host)
    if launch.sagemaker_port:
        urls = (
            f"  SageMaker http://{here}:{launch.sagemaker_port}/invocations "
            "(/ping, /execution-parameters, /metrics)\n"
        )
    else:
        urls = (
            f"  HTTP    http://{here}:{launch.http_port}/v2/models/{FRONT_DOOR}/infer\n"
            f"  gRPC    {here}:{launch.grpc_port}\n"
            f"  metrics http://{here}:{launch.metrics_port}/metrics\n"
        )
    return (
        f"Object2Vec on Triton is ready (INFERENCE_PREFERRED_MODE={launch.mode}, "
        f"listening on {launch.host})\n{urls}"
        f"  serving {served_front_door(repository, launch.mode)} ({repository})\n"
        "Ctrl-C or SIGTERM stops it."
    )


def sagemaker_front_end(plan: Plan, process: TritonProcess, probe: Probe) -> FrontEnd:
    """Starts the SageMaker endpoint on the launch's host and SageMaker port; its /ping says
    503 at once while the supervisor sees tritonserver or a model's stub dead."""
    launch = plan.launch
    settings = launch.settings or ServingSettings()
    max_body = plan.max_body_bytes
    parameters = default_execution_parameters(
        max_body,
        settings.gpu_copies,
        plan.host.gpus,
        plan.host.cores,
        launch.max_concurrent_transforms,
        launch.max_payload_mb,
    )

    def start():
        return start_adapter(
            launch.host,
            launch.sagemaker_port,
            f"http://127.0.0.1:{launch.http_port}",
            max_body,
            parameters,
            launch.adapter,
            healthy=lambda: process.running and not process.dead_stubs() and probe.answering(),
            triton_metrics_url=f"http://127.0.0.1:{launch.metrics_port}/metrics",
        )

    return start


def run(plan: Plan) -> int:
    """Supervises tritonserver (and the SageMaker endpoint) until a signal or its end."""
    launch = plan.launch
    process = triton_process(plan)
    # gRPC is probed where Triton opens it (not behind the SageMaker endpoint)
    grpc_port = None if launch.sagemaker_port else launch.grpc_port
    probe = Probe(launch.http_port, grpc_port, launch.probe)
    front_end = None
    if launch.sagemaker_port:
        check_ports(launch.host, {"SageMaker": launch.sagemaker_port})
        front_end = sagemaker_front_end(plan, process, probe)
    return uvloop.run(
        supervise(
            process,
            banner(launch, plan.repository),
            front_end,
            max_restarts=launch.max_restarts,
            probe=probe,
        )
    )


def serve(make: Callable[[], Plan]) -> int:
    """A main's end: the plan `make` assembles, run; exit 2 with the reason where it cannot be
    assembled or started (a setting, a port, a missing model or binary)."""
    try:
        return run(make())
    except (ServiceError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
