"""A launch's settings and what follows from them alone: `Launch` (read from the environment,
every variable listed in docs/configuration.md), the repository to serve with its configs,
tritonserver's arguments, and which addresses a release may listen on. server.launcher.plan
assembles them once for a start.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from contract.errors import MISCONFIGURED, ServiceError
from contract.facts import FACTS_FILE
from contract.names import FRONT_DOOR
from server.common.settings import (
    ServingSettings,
    env_texts,
    from_env,
    parse_setting,
    setting,
)
from server.launcher.configs import MODES, RECORD_FILE, refresh_configs
from server.launcher.configs import read as read_config
from server.launcher.host import Host
from server.launcher.probe import ProbeSettings
from server.launcher.process import MAX_RESTARTS
from server.sagemaker.adapter import AdapterSettings

DEFAULT_MODE = "classification"
SAGEMAKER_PORT = 8080
SAGEMAKER_PORT_VARIABLE = "SAGEMAKER_BIND_TO_PORT"
DEFAULT_EXIT_TIMEOUT_SECS = 5
# APIs that change the server or read its memory: closed unless O2V_ADMIN_KEY opens them.
RESTRICTED_APIS = "logging,trace,shared-memory,model-repository"
ADMIN_KEY_HEADER = "admin-key"
SAGEMAKER_REPOSITORY = Path("/opt/ml/model")
DEFAULT_SHM_BYTES = 64 * 1024 * 1024
CACHE_VARIABLE = "O2V_RESPONSE_CACHE_BYTES"
# The first release with every published flaw of 2.51 fixed (NGC 26.03; docs/security.md).
PATCHED_TRITON = (2, 67)
# The first with --http-max-input-size (NGC 25.06), which the launcher sets to the front door's
# body limit: bodies above it are refused before they are read, on every model.
HTTP_INPUT_LIMIT_TRITON = (2, 59)
HTTP_HEADER_ROOM = 64 * 1024  # the binary request's JSON header, beside the body
NGC_VERSION_FILE = Path("/opt/tritonserver/TRITON_VERSION")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def resolve_mode(mode: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The mode given, else INFERENCE_PREFERRED_MODE, else the default; checked."""
    chosen = mode or env.get("INFERENCE_PREFERRED_MODE") or DEFAULT_MODE
    if chosen not in MODES:
        raise ServiceError(
            MISCONFIGURED,
            f"INFERENCE_PREFERRED_MODE={chosen!r} is not a mode: choose one of {sorted(MODES)}",
        )
    return chosen


def settings_from_env(env: Mapping[str, str]) -> ServingSettings | None:
    """Config settings asked for by O2V_* variables, or None when none is set (then the
    repository's configs are served as they are)."""
    cache = env.get(CACHE_VARIABLE, "").strip()
    cache_bytes = parse_setting(Launch, "cache_bytes", cache) if cache else 0
    if not env_texts(ServingSettings, env) and not cache_bytes:
        return None
    return replace(from_env(ServingSettings, env), response_cache=cache_bytes > 0)


def _random_key() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Launch:
    """Everything a tritonserver start needs, whoever starts it; its fields with a variable are
    read from the environment by `server.common.settings` (one parser, one rule for each type)."""

    model_repository: Path = setting(
        Path("model_repository"),
        "MODEL_REPOSITORY",
        help=(
            "the model repository served (the image: /models; SageMaker: /opt/ml/model when "
            "the model artifact holds one)"
        ),
    )
    mode: str = setting(
        DEFAULT_MODE,
        "INFERENCE_PREFERRED_MODE",
        choices=MODES,
        help="which network gets the GPU copies (--model-config-name); --mode wins over it",
        read_by="resolve_mode",
    )
    http_port: int = setting(8000, "O2V_HTTP_PORT", minimum=1, help="Triton's HTTP port")
    grpc_port: int = setting(8001, "O2V_GRPC_PORT", minimum=1, help="Triton's gRPC port")
    metrics_port: int = setting(
        8002, "O2V_METRICS_PORT", minimum=1, help="Triton's Prometheus metrics port"
    )
    # None: not SageMaker mode
    sagemaker_port: int | None = setting(
        None,
        SAGEMAKER_PORT_VARIABLE,
        minimum=1,
        help=f"the SageMaker endpoint's port, {SAGEMAKER_PORT} where unset (SageMaker mode only: "
        "the image's `serve`, the embedded server's --sagemaker)",
        read_by="Launch.from_env",
    )
    host: str = "0.0.0.0"  # the image: every address; the embedded server: loopback
    exit_timeout_secs: int = setting(
        DEFAULT_EXIT_TIMEOUT_SECS,
        "O2V_EXIT_TIMEOUT_SECS",
        minimum=0,
        help="how long a stop waits for requests in flight, in seconds",
    )
    # Restarts of tritonserver after a dead stub within RESTART_WINDOW, before giving up.
    max_restarts: int = setting(
        MAX_RESTARTS,
        "O2V_MAX_RESTARTS",
        minimum=0,
        help=(
            "restarts of tritonserver after a dead stub or a stalled protocol within 10 "
            "minutes, before the launcher exits 3 (0: exit at the first, for the orchestrator "
            "to replace it)"
        ),
    )
    admin_key: str = field(
        default_factory=_random_key,
        repr=False,
        metadata={
            "env": "O2V_ADMIN_KEY",
            "variable": "O2V_ADMIN_KEY",
            "help": "opens the restricted APIs (logging, trace, shared memory, model repository) "
            "to requests carrying `admin-key: <key>`; unset: a random key no one knows",
        },
    )
    settings: ServingSettings | None = None  # None: the repository's configs as they are
    python_shm_bytes: int = setting(
        DEFAULT_SHM_BYTES,
        "O2V_PYTHON_SHM_BYTES",
        minimum=1,
        help="shared memory of each Python backend instance, in bytes",
    )
    log_verbose: int = setting(
        0,
        "O2V_LOG_VERBOSE",
        minimum=0,
        help=(
            "tritonserver's --log-verbose level (also shows the CUDA warnings hidden on a CPU host)"
        ),
    )
    # Triton's request tracing (docs/metrics.md): the front door's network calls are children
    # of the request they serve.
    trace_mode: str = setting(
        "off",
        "O2V_TRACE_MODE",
        choices=("off", "triton", "opentelemetry"),
        help=(
            "Triton's request tracing: triton (JSON to O2V_TRACE_TARGET, a file) or "
            "opentelemetry (OTLP/HTTP to O2V_TRACE_TARGET, a collector's URL)"
        ),
    )
    trace_target: str = setting(
        "",
        "O2V_TRACE_TARGET",
        help="where traces go: a file (triton) or http://collector:4318/v1/traces (opentelemetry)",
    )
    trace_rate: int = setting(
        1000, "O2V_TRACE_RATE", minimum=1, help="one request traced in this many"
    )
    # Triton's local response cache; 0: off.
    cache_bytes: int = setting(
        0,
        CACHE_VARIABLE,
        minimum=0,
        help=(
            "size of Triton's response cache for the front door in bytes (0: off); it keys on "
            "the body alone, not on content_type / accept"
        ),
    )
    cache_directory: Path | None = None  # where the cache library is, if not Triton's default
    # What /execution-parameters says in SageMaker mode; 0: derived from the host.
    max_concurrent_transforms: int = setting(
        0,
        "O2V_MAX_CONCURRENT_TRANSFORMS",
        minimum=0,
        help=(
            "what /execution-parameters says for MaxConcurrentTransforms (0: two per network "
            "copy on GPUs, one per core on a CPU host)"
        ),
    )
    max_payload_mb: int = setting(
        0,
        "O2V_MAX_PAYLOAD_IN_MB",
        minimum=0,
        help=(
            "what /execution-parameters says for MaxPayloadInMB (0: 6, or less where the body "
            "limit is lower)"
        ),
    )
    adapter: AdapterSettings = field(default_factory=AdapterSettings)  # O2V_HTTP_*, O2V_UPSTREAM_*
    probe: ProbeSettings = field(default_factory=ProbeSettings)  # O2V_PROBE_*
    extra_args: tuple[str, ...] = field(default=())
    # The release tritonserver is ("2.75.0"), where known: its flaws and its options follow it.
    triton_version: str | None = None

    @property
    def release(self) -> tuple[int, ...] | None:
        if self.triton_version is None:
            return None
        return tuple(int(part) for part in self.triton_version.split(".")[:2] if part.isdigit())

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        repository: Path | None = None,
        sagemaker: bool = False,
        **overrides,
    ) -> Launch:
        if sagemaker and (SAGEMAKER_REPOSITORY / FACTS_FILE).exists():
            # SageMaker unpacks the model artifact here; it wins over a baked-in repository.
            repository = repository or SAGEMAKER_REPOSITORY
        launch = replace(
            from_env(cls, env),
            adapter=from_env(AdapterSettings, env),
            probe=from_env(ProbeSettings, env),
        )
        port = env.get(SAGEMAKER_PORT_VARIABLE, "").strip()
        sagemaker_port = (
            parse_setting(cls, "http_port", port, label=SAGEMAKER_PORT_VARIABLE)
            if port
            else SAGEMAKER_PORT
        )
        values = {
            "mode": resolve_mode(overrides.pop("mode", None), env),
            "settings": settings_from_env(env),
            "sagemaker_port": sagemaker_port if sagemaker else None,
        }
        if repository:
            values["model_repository"] = Path(repository)
        return replace(launch, **(values | overrides))


def _copy_configs_link_the_rest(source: str, target: str) -> None:
    if source.endswith((".pbtxt", RECORD_FILE)):
        shutil.copy2(source, target)  # written again: a copy of its own
    else:
        os.symlink(source, target)  # model files: read only, shared


def prepare_repository(launch: Launch, host: Host) -> Path:
    """The repository to serve, its configs brought up to date with its facts.json (export
    writes the model and facts.json; configs are the server's side: server.launcher.configs
    .refresh_configs). O2V_* settings, when given, win over the settings recorded and over
    hand edits. The configs follow `host`: its cores, GPUs and the backends tritonserver will
    load (server.launcher.host)."""
    repository = Path(launch.model_repository)
    explicit = launch.settings is not None
    try:
        kept = refresh_configs(repository, launch.settings, host, overwrite=explicit)
    except OSError:
        # Read-only (a mounted volume, SageMaker's model folder) and out of date: a copy.
        copy = Path(tempfile.mkdtemp(prefix="o2v-repository-")) / "model_repository"
        shutil.copytree(repository, copy, copy_function=_copy_configs_link_the_rest)
        kept = refresh_configs(copy, launch.settings, host, overwrite=explicit)
        repository = copy
    for path in kept:
        print(
            f"{path}: edited by hand, served as it is (delete it to have it generated from "
            f"{FACTS_FILE} again)",
            flush=True,
        )
    return repository


def served_front_door(repository: Path, mode: str) -> str:
    """What the served front door config says of its copies and networks, as the banner
    prints it: the settings recorded in the repository decide them where none are given."""
    config = read_config(Path(repository) / FRONT_DOOR / "configs" / f"{mode}.pbtxt")
    copies = sum(group.count for group in config.instance_group) or 1
    networks = config.parameters["networks"].string_value
    return f"{copies} front door cop{'y' if copies == 1 else 'ies'}, networks {networks}"


def front_door_max_body(repository: Path) -> int:
    """The body limit the front door enforces: its config's, which may differ from the
    defaults."""
    front_door = read_config(Path(repository) / FRONT_DOOR / "config.pbtxt")
    return int(front_door.parameters["max_body_bytes"].string_value)


def tritonserver_args(launch: Launch, repository: Path) -> list[str]:
    restricted = f"{RESTRICTED_APIS}:{ADMIN_KEY_HEADER}={launch.admin_key}"
    args = [
        f"--model-repository={Path(repository).resolve()}",
        f"--model-config-name={launch.mode}",
        f"--backend-config=python,shm-default-byte-size={launch.python_shm_bytes}",
        f"--log-verbose={launch.log_verbose}",
        "--exit-on-error=true",
        "--strict-readiness=true",
        f"--exit-timeout-secs={launch.exit_timeout_secs}",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
    ]
    args += trace_args(launch)
    if launch.release is not None and launch.release >= HTTP_INPUT_LIMIT_TRITON:
        limit = front_door_max_body(repository) + HTTP_HEADER_ROOM
        args.append(f"--http-max-input-size={limit}")
    if launch.cache_bytes:
        # The directory must come first: tritonserver resolves the cache when it reads the config.
        if launch.cache_directory:
            args.append(f"--cache-directory={launch.cache_directory}")
        args.append(f"--cache-config=local,size={launch.cache_bytes}")
    if launch.sagemaker_port:
        # Triton stays on loopback; the SageMaker adapter (server.sagemaker.adapter) faces the
        # caller, and its GET /metrics carries Triton's.
        args += [
            "--http-address=127.0.0.1",
            f"--http-port={launch.http_port}",
            "--allow-grpc=false",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={launch.metrics_port}",
        ]
    else:
        args += [
            f"--http-address={launch.host}",
            f"--http-port={launch.http_port}",
            f"--grpc-address={launch.host}",
            f"--grpc-port={launch.grpc_port}",
            f"--metrics-address={launch.host}",
            f"--metrics-port={launch.metrics_port}",
        ]
    return args + list(launch.extra_args)


def trace_args(launch: Launch) -> list[str]:
    """tritonserver's --trace-config for the launch's tracing settings."""
    if launch.trace_mode == "off":
        return []
    if not launch.trace_target:
        raise ServiceError(
            MISCONFIGURED, f"O2V_TRACE_MODE={launch.trace_mode} needs O2V_TRACE_TARGET"
        )
    where = "file" if launch.trace_mode == "triton" else "url"
    args = [
        f"--trace-config=mode={launch.trace_mode}",
        f"--trace-config={launch.trace_mode},{where}={launch.trace_target}",
        f"--trace-config=rate={launch.trace_rate}",
        "--trace-config=level=TIMESTAMPS",
    ]
    if launch.trace_mode == "triton":
        # each trace written as it ends (FILE.0, FILE.1, ...): 2.51 keeps unwritten ones in
        # memory and a stop loses them
        args.append("--trace-config=triton,log-frequency=1")
    return args


def loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def check_exposure(launch: Launch) -> None:
    """Refuses to open Triton's own ports beyond loopback on a release with public flaws
    (docs/security.md): one request kills 2.51's HTTP frontend. The SageMaker adapter, our
    own HTTP server, may face any address: Triton then stays on loopback behind it."""
    if launch.sagemaker_port or loopback(launch.host) or launch.release is None:
        return
    if launch.release >= PATCHED_TRITON:
        return
    raise ServiceError(
        MISCONFIGURED,
        f"Triton {launch.triton_version} has public flaws that let one request crash it "
        f"(docs/security.md), so its ports stay on loopback: --host {launch.host} is refused. "
        "Beyond this machine, serve the SageMaker endpoint (--sagemaker --host "
        f"{launch.host}: our hardened HTTP server in front, Triton on loopback), or run the "
        "image (docker/Dockerfile: Triton "
        f"{'.'.join(map(str, PATCHED_TRITON))} or later)",
    )


def installed_triton_version(version_file: Path = NGC_VERSION_FILE) -> str | None:
    """The NGC image's Triton release (its TRITON_VERSION file), None where unknown."""
    try:
        return version_file.read_text().strip() or None
    except OSError:
        return None
