"""The embedded server: a real `tritonserver` with no Docker and no GPU.

    python -m server.embedded [--model-repository model_repository] [--mode classification]

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
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

from export.facts import FACTS_FILE
from server.entrypoint import (
    DEFAULT_MODE,
    SAGEMAKER_PORT,
    Launch,
    LaunchError,
    prepare_repository,
    server_environment,
    tritonserver_args,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_ORT_BACKEND = Path(__file__).resolve().parent / "onnxruntime_backend" / "model.py"


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError:
        raise LaunchError("nvidia-pytriton is not installed: run `make install`") from None
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def prepare_backends(target: Path) -> Path:
    """Builds the backend folder for this interpreter (idempotent)."""
    triton = _pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise LaunchError(f"nvidia-pytriton has no Python backend stub for Python {version}")
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
    env = server_environment(launch)
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
        self.launch = launch or Launch.from_env(
            os.environ,
            Path(model_repository),
            mode=mode,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            cache_directory=_pytriton_dir() / "caches",
            **launch_fields,
        )
        self.backend_directory = PROJECT_ROOT / ".triton" / "backends"
        self.process: subprocess.Popen | None = None

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

    def command(self, repository: Path) -> list[str]:
        binary = _pytriton_dir() / "bin" / "tritonserver"
        return [
            str(binary),
            f"--backend-directory={self.backend_directory}",
            *tritonserver_args(self.launch, repository),
        ]

    def start(self, timeout: float = 120.0, stdout=None) -> EmbeddedServer:
        repository = Path(self.launch.model_repository)
        if not (repository / FACTS_FILE).exists():
            raise LaunchError(
                f"{repository} holds no exported model ({FACTS_FILE} missing): "
                "run `make demo` or `python -m export.onnx_export CHECKPOINT`"
            )
        prepare_backends(self.backend_directory)
        served = prepare_repository(self.launch)
        self.process = subprocess.Popen(
            self.command(served),
            env=embedded_environment(self.launch),
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = (
            f"http://localhost:{self.launch.sagemaker_port}/ping"
            if self.launch.sagemaker_port
            else f"http://{self.http_url}/v2/health/ready"
        )
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LaunchError(
                    f"tritonserver exited with code {self.process.returncode} "
                    "before it was ready: see its log above"
                )
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise LaunchError(f"tritonserver was not ready within {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGINT)  # Triton's own clean shutdown path
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> EmbeddedServer:
        return self if self.process else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model-repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument(
        "--mode",
        help="INFERENCE_PREFERRED_MODE: embedding or classification "
        f"(default: that variable, else {DEFAULT_MODE})",
    )
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--sagemaker",
        action="store_true",
        help=f"also answer /ping and /invocations on port {SAGEMAKER_PORT}",
    )
    parser.add_argument("extra", nargs="*", help="more tritonserver options, after --")
    args = parser.parse_args(argv)
    try:
        server = EmbeddedServer(
            args.model_repository,
            args.mode,
            args.http_port,
            args.grpc_port,
            args.metrics_port,
            sagemaker_port=SAGEMAKER_PORT if args.sagemaker else None,
            extra_args=tuple(args.extra),
        )
        # Ctrl-C reaches the server through the process group; SIGTERM is forwarded by hand.
        signal.signal(signal.SIGTERM, lambda *_: server.stop())
        server.start()
    except LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sagemaker = (
        f"\n  SageMaker http://localhost:{SAGEMAKER_PORT}/invocations" if args.sagemaker else ""
    )
    print(
        f"Object2Vec on Triton is ready (INFERENCE_PREFERRED_MODE={server.launch.mode})\n"
        f"  HTTP    http://{server.http_url}/v2/models/object2vec/infer\n"
        f"  gRPC    {server.grpc_url}\n"
        f"  metrics {server.metrics_url}{sagemaker}\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    try:
        return server.process.wait()
    except KeyboardInterrupt:
        return server.stop() or 0


if __name__ == "__main__":
    sys.exit(main())
