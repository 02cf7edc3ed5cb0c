"""One entrypoint for the NGC image and the embedded server: settings -> tritonserver options.

    python -m server.entrypoint            # in the image: exec tritonserver on $MODEL_REPOSITORY
    python -m server.entrypoint serve      # SageMaker: /ping and /invocations on port 8080,
                                           # the repository at /opt/ml/model when the model
                                           # artifact holds one, else $MODEL_REPOSITORY

Environment (all optional):

    INFERENCE_PREFERRED_MODE    embedding | classification (default): which network gets the
                                GPU copies (--model-config-name)
    MODEL_REPOSITORY            where the model repository is (image: /models)
    O2V_GPU_COPIES              copies of the preferred network per GPU
    O2V_ACCELERATOR             cuda (ONNX Runtime's CUDA provider) | tensorrt
    O2V_TENSORRT_FP16           true | false
    O2V_TENSORRT_ENGINE_CACHE   a folder where TensorRT engines are kept across restarts
    O2V_WARMUP                  true | false: one warm-up request per model instance at load
    O2V_PYTHON_SHM_BYTES        shared memory of each Python backend instance (default 64 MB)
    O2V_LOG_VERBOSE             tritonserver --log-verbose level (default 0)
    O2V_RESPONSE_CACHE_BYTES    size of Triton's response cache for the front door (default 0:
                                off); it keys on the body alone, not on content_type/accept

Setting any O2V_* config variable regenerates the configs from the defaults plus those values
(`server.configs`); otherwise the repository's configs are used as they are. A read-only
repository is served from a writable copy (model files linked, not copied).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from export.facts import FACTS_FILE, FRONT_DOOR
from server.configs import MODES, ServingSettings, write_configs

DEFAULT_MODE = "classification"
SAGEMAKER_PORT = 8080
SAGEMAKER_REPOSITORY = Path("/opt/ml/model")
DEFAULT_SHM_BYTES = 64 * 1024 * 1024

# O2V_* variable -> ServingSettings field
_CONFIG_VARIABLES = {
    "O2V_GPU_COPIES": "gpu_copies",
    "O2V_ACCELERATOR": "accelerator",
    "O2V_TENSORRT_FP16": "tensorrt_fp16",
    "O2V_TENSORRT_ENGINE_CACHE": "tensorrt_engine_cache",
    "O2V_WARMUP": "warmup",
}
CACHE_VARIABLE = "O2V_RESPONSE_CACHE_BYTES"


class LaunchError(RuntimeError):
    """The server can't be started as asked: the message says why."""


def resolve_mode(mode: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The mode given, else INFERENCE_PREFERRED_MODE, else the default; checked."""
    chosen = mode or env.get("INFERENCE_PREFERRED_MODE") or DEFAULT_MODE
    if chosen not in MODES:
        raise LaunchError(
            f"INFERENCE_PREFERRED_MODE={chosen!r} is not a mode: choose one of {sorted(MODES)}"
        )
    return chosen


def _parse(variable: str, text: str, kind: type):
    if kind is bool:
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise LaunchError(f"{variable}={text!r}: use true or false")
        return text.lower() in ("1", "true", "yes")
    try:
        value = kind(text)
    except ValueError:
        raise LaunchError(f"{variable}={text!r} is not {kind.__name__}") from None
    if variable == "O2V_ACCELERATOR" and value not in ("cuda", "tensorrt"):
        raise LaunchError(f"O2V_ACCELERATOR={text!r}: use cuda or tensorrt")
    if kind is int and value < 1:
        raise LaunchError(f"{variable}={text!r} must be at least 1")
    return value


def cache_bytes_from_env(env: Mapping[str, str]) -> int:
    text = env.get(CACHE_VARIABLE, "").strip()
    return _parse(CACHE_VARIABLE, text, int) if text else 0


def settings_from_env(env: Mapping[str, str]) -> ServingSettings | None:
    """Config settings asked for by O2V_* variables, or None when none is set."""
    given = {v: env[v] for v in _CONFIG_VARIABLES if env.get(v, "").strip()}
    cache = cache_bytes_from_env(env) > 0
    if not given and not cache:
        return None
    types = {f.name: type(f.default) for f in fields(ServingSettings)}
    values = {
        _CONFIG_VARIABLES[v]: _parse(v, text.strip(), types[_CONFIG_VARIABLES[v]])
        for v, text in given.items()
    }
    return replace(ServingSettings(), response_cache=cache, **values)


@dataclass(frozen=True)
class Launch:
    """Everything a tritonserver start needs, whoever starts it."""

    model_repository: Path
    mode: str = DEFAULT_MODE
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    sagemaker_port: int | None = None
    settings: ServingSettings | None = None  # None: the repository's configs as they are
    python_shm_bytes: int = DEFAULT_SHM_BYTES
    log_verbose: int = 0
    cache_bytes: int = 0  # Triton's local response cache; 0: off
    cache_directory: Path | None = None  # where the cache library is, if not Triton's default
    extra_args: tuple[str, ...] = field(default=())

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        repository: Path | None = None,
        sagemaker: bool = False,
        **overrides,
    ) -> Launch:
        default_repo = Path("model_repository")
        if sagemaker and (SAGEMAKER_REPOSITORY / FACTS_FILE).exists():
            # SageMaker unpacks the model artifact here; it wins over a baked-in repository.
            repository = repository or SAGEMAKER_REPOSITORY
        shm = env.get("O2V_PYTHON_SHM_BYTES", "").strip()
        verbose = env.get("O2V_LOG_VERBOSE", "").strip()
        values = {
            "model_repository": Path(repository or env.get("MODEL_REPOSITORY") or default_repo),
            "mode": resolve_mode(overrides.pop("mode", None), env),
            "settings": settings_from_env(env),
            "python_shm_bytes": _parse("O2V_PYTHON_SHM_BYTES", shm, int)
            if shm
            else DEFAULT_SHM_BYTES,
            "log_verbose": int(_parse("O2V_LOG_VERBOSE", verbose, int)) if verbose else 0,
            "sagemaker_port": SAGEMAKER_PORT if sagemaker else None,
            "cache_bytes": cache_bytes_from_env(env),
        }
        return cls(**(values | overrides))


def prepare_repository(launch: Launch) -> Path:
    """The repository to serve: configs regenerated if settings ask for it."""
    repository = Path(launch.model_repository)
    if launch.settings is None:
        return repository
    try:
        write_configs(repository, launch.settings)
        return repository
    except OSError:
        pass  # read-only (a mounted volume, SageMaker's model folder): work on a copy
    copy = Path(tempfile.mkdtemp(prefix="o2v-repository-")) / "model_repository"
    shutil.copytree(
        repository,
        copy,
        copy_function=os.symlink,
        ignore=shutil.ignore_patterns("config.pbtxt", "configs"),
    )
    write_configs(copy, launch.settings)
    return copy


def tritonserver_args(launch: Launch, repository: Path) -> list[str]:
    args = [
        f"--model-repository={Path(repository).resolve()}",
        f"--model-config-name={launch.mode}",
        f"--backend-config=python,shm-default-byte-size={launch.python_shm_bytes}",
        f"--log-verbose={launch.log_verbose}",
        "--exit-on-error=true",
        "--strict-readiness=true",
    ]
    if launch.cache_bytes:
        # The directory must come first: tritonserver resolves the cache when it reads the config.
        if launch.cache_directory:
            args.append(f"--cache-directory={launch.cache_directory}")
        args.append(f"--cache-config=local,size={launch.cache_bytes}")
    if launch.sagemaker_port:
        args += [
            "--allow-sagemaker=true",
            f"--sagemaker-port={launch.sagemaker_port}",
            "--allow-http=false",
            "--allow-grpc=false",
            "--allow-metrics=false",
        ]
    else:
        args += [
            f"--http-port={launch.http_port}",
            f"--grpc-port={launch.grpc_port}",
            f"--metrics-port={launch.metrics_port}",
        ]
    return args + list(launch.extra_args)


def server_environment(launch: Launch, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    env = dict(base)
    if launch.sagemaker_port:
        env.setdefault("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME", FRONT_DOOR)
    return env


def main(argv: list[str] | None = None) -> int:
    """The image's entrypoint: exec tritonserver (found on PATH) with the options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sagemaker = bool(argv) and argv[0] == "serve"
    extra = tuple(argv[1:] if sagemaker else argv)
    try:
        launch = Launch.from_env(os.environ, sagemaker=sagemaker, extra_args=extra)
        repository = prepare_repository(launch)
    except (LaunchError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = ["tritonserver", *tritonserver_args(launch, repository)]
    print(" ".join(command), flush=True)
    os.execvpe(command[0], command, server_environment(launch))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
