"""The embedded server: a real `tritonserver` with no Docker and no GPU.

    python -m server [--model-repository model_repository] [--mode classification]

It runs the `tritonserver` binary shipped in `nvidia-pytriton` (Triton 2.51, the release of the
NGC 24.10 container) on the same model repository the GPU image serves. That binary carries only
the Python backend, so a backend folder is prepared under `.triton/backends/`:

    python/        libtriton_python.so, the stub for the running Python, its utils module
    onnxruntime/   model.py: an ONNX Runtime backend written in Python (server/onnxruntime_backend)

Models with `backend: "onnxruntime"` then run on that Python backend, while on the NGC container
they run on the C++ one; nothing in the repository changes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from contract.errors import MISCONFIGURED, ServiceError
from contract.facts import FACTS_FILE
from server.launcher.launch import DEFAULT_MODE, SAGEMAKER_PORT, SAGEMAKER_PORT_VARIABLE, Launch
from server.launcher.plan import Plan, assemble, serve, triton_process
from server.launcher.process import TritonProcess
from server.launcher.reference import plain

DEFAULT_HOST = "127.0.0.1"  # this machine only; beyond it, only the SageMaker adapter
EMBEDDED_TRITON = "2.51.0"  # the release nvidia-pytriton 0.7.0 ships (docs/security.md)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_ORT_BACKEND = PROJECT_ROOT / "server" / "onnxruntime_backend" / "model.py"


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError:
        raise ServiceError(
            MISCONFIGURED, "nvidia-pytriton is not installed: run `make install`"
        ) from None
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def prepare_backends(target: Path) -> Path:
    """Builds the backend folder for this interpreter (idempotent)."""
    triton = _pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServiceError(
            MISCONFIGURED, f"nvidia-pytriton has no Python backend stub for Python {version}"
        )
    python_dir, ort_dir = target / "python", target / "onnxruntime"
    for folder in (python_dir, ort_dir):
        folder.mkdir(parents=True, exist_ok=True)
    sources = {
        python_dir / "libtriton_python.so": triton / "backends/python/libtriton_python.so",
        python_dir / "triton_python_backend_utils.py": triton
        / "backends/python/triton_python_backend_utils.py",
        python_dir / "triton_python_backend_stub": stub,
        ort_dir / "model.py": _ORT_BACKEND,
    }
    # Copies, not links: Triton refuses backend files that resolve outside the backend folder.
    for copy, source in sources.items():
        if copy.is_symlink():
            copy.unlink()
        if not copy.exists() or copy.read_bytes() != source.read_bytes():
            shutil.copy2(source, copy)
    return target


def embedded_environment(launch: Launch) -> dict[str, str]:
    """Library and module paths the server and its Python stubs need."""
    triton = _pytriton_dir()
    libs = [str(triton.parent.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR")]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    paths = [str(PROJECT_ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths + [env.get("PYTHONPATH", "")]))
    return env


class EmbeddedServer:
    """A `tritonserver` process on a model repository; a context manager for tests and tools."""

    def __init__(
        self,
        model_repository: Path = PROJECT_ROOT / "model_repository",
        mode: str | None = None,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        launch: Launch | None = None,
        **launch_fields,
    ):
        launch_fields.setdefault("host", DEFAULT_HOST)
        self.launch = launch or Launch.from_env(
            os.environ,
            Path(model_repository),
            mode=mode,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            cache_directory=_pytriton_dir() / "caches",
            triton_version=EMBEDDED_TRITON,
            **launch_fields,
        )
        self.backend_directory = PROJECT_ROOT / ".triton" / "backends"
        self.triton: TritonProcess | None = None

    @property
    def process(self):
        return self.triton.process if self.triton else None

    @property
    def http_url(self) -> str:
        return f"localhost:{self.launch.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.launch.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://localhost:{self.launch.metrics_port}/metrics"

    @property
    def http_port(self) -> int:
        return self.launch.http_port

    def prepare(self) -> Plan:
        """The start's plan: what is served, and how (server.launcher.plan)."""
        repository = Path(self.launch.model_repository)
        if not (repository / FACTS_FILE).exists():
            raise ServiceError(
                MISCONFIGURED,
                f"{repository} holds no exported model ({FACTS_FILE} missing): "
                "run `make demo` or `python -m export.onnx_export CHECKPOINT`",
            )
        binary = str(_pytriton_dir() / "bin" / "tritonserver")
        prepare_backends(self.backend_directory)
        env = embedded_environment(self.launch)
        return assemble(self.launch, binary, self.backend_directory, env)

    def start(self, timeout: float = 120.0, stdout=None) -> EmbeddedServer:
        self.triton = triton_process(self.prepare()).start(stdout)
        self.triton.wait_ready(timeout)
        return self

    def stop(self) -> int | None:
        return self.triton.stop() if self.triton else None

    def __enter__(self) -> EmbeddedServer:
        return self if self.triton else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=plain(), formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model-repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument(
        "--mode",
        help="INFERENCE_PREFERRED_MODE: embedding or classification "
        f"(default: that variable, else {DEFAULT_MODE})",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only). Triton "
        f"{EMBEDDED_TRITON} has public flaws, so only the SageMaker adapter may listen beyond "
        "loopback (--sagemaker --host 0.0.0.0); docs/security.md",
    )
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--sagemaker",
        action="store_true",
        help="SageMaker's contract instead: /ping, /invocations and /execution-parameters on "
        f"${SAGEMAKER_PORT_VARIABLE} (default {SAGEMAKER_PORT}); Triton on loopback",
    )
    parser.add_argument("extra", nargs="*", help="more tritonserver options, after --")
    args = parser.parse_args(argv)

    def make() -> Plan:
        launch = Launch.from_env(
            os.environ,
            args.model_repository,
            sagemaker=args.sagemaker,
            mode=args.mode,
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            cache_directory=_pytriton_dir() / "caches",
            extra_args=tuple(args.extra),
            triton_version=EMBEDDED_TRITON,
        )
        return EmbeddedServer(launch=launch).prepare()

    return serve(make)


if __name__ == "__main__":
    sys.exit(main())
