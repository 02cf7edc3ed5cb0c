"""The machine a server runs on, and the settings that follow from it.

Two serving settings are `auto` by default and are decided here, when the launcher writes the
configs it serves (`server.launcher.configs`):

* `networks`: where the front door runs the ONNX networks. `bls` sends them to the enc0 / enc1 /
  pair models (Triton's dynamic batching across front door copies, the GPU copies, the C++ ONNX
  Runtime backend on the NGC image). `in_process` runs the same ONNX files in the front door's
  own process: on the embedded server the network models are Python-backend models too, and
  a BLS call to one costs as much as a whole request from the client (docs/performance.md), so
  with no GPU and no C++ backend the hop only adds latency.
* `front_door_copies`: parsing and formatting are Python, one request batch at a time per
  copy, so a host with many cores gets more copies, at most 16: one per two cores. Measured
  with `python -m bench.front_door_copies` (docs/performance.md, "Front-door copies"): since
  the front door's scanner, one copy per core takes a bulk job only 8-11% further than one
  per two cores with networks that answer at once (as on a GPU), and costs small requests
  14%; on a CPU host it would also halve each copy's ONNX Runtime threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from server.common.settings import ServingSettings

NGC_BACKENDS = Path("/opt/tritonserver/backends")
CPP_ONNXRUNTIME = Path("onnxruntime") / "libtriton_onnxruntime.so"
MAX_FRONT_DOOR_COPIES = 16


def _gpu_count(env: dict[str, str]) -> int:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


@dataclass(frozen=True)
class Host:
    cores: int
    gpus: int
    cpp_onnxruntime: bool  # Triton's C++ ONNX Runtime backend is installed

    @classmethod
    def detect(cls, backend_directory: Path = NGC_BACKENDS, env=None) -> Host:
        env = dict(os.environ if env is None else env)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return cls(
            cores=max(1, cores or 1),
            gpus=_gpu_count(env),
            cpp_onnxruntime=(Path(backend_directory) / CPP_ONNXRUNTIME).exists(),
        )


# What a plain `tritonserver --model-repository model_repository` (no launcher) gets: the
# committed front door config. One copy, the networks behind BLS (the NGC image's layout).
PLAIN_TRITON = Host(cores=1, gpus=0, cpp_onnxruntime=True)


def resolve(settings: ServingSettings, host: Host) -> ServingSettings:
    """`settings` with every `auto` decided for `host`."""
    networks = settings.networks
    if networks == "auto":
        networks = "bls" if host.gpus or host.cpp_onnxruntime else "in_process"
    copies = settings.front_door_copies or min(MAX_FRONT_DOOR_COPIES, max(1, host.cores // 2))
    threads = settings.intra_op_thread_count
    if networks == "in_process" and not threads and copies > 1:
        threads = max(1, host.cores // copies)  # the copies share the cores, not each all of them
    return replace(
        settings, networks=networks, front_door_copies=copies, intra_op_thread_count=threads
    )
