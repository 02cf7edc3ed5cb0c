"""Latency and throughput of the documentation's example request, served and in-process.

    python -m bench.serving_latency [--repository model_repository] [--seconds 10]

Served: the embedded tritonserver over gRPC, p50/p99 latency at concurrency 1 and throughput at
concurrency 16. In-process: the same body parsed, run by ONNX Runtime and formatted with the
front door's own modules, no server. Both on the same model and cores, in one run.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from bench.peers import Pipeline
from client.api import body_tensor
from contract.example import DOC_EXAMPLE_BODY
from contract.names import JSON
from server.common.onnx_sessions import network_runner
from server.launcher.embedded import EmbeddedServer
from server.launcher.process import free_port

DOC_EXAMPLE = DOC_EXAMPLE_BODY


def served_call(client: grpcclient.InferenceServerClient) -> None:
    tensor = body_tensor(grpcclient, [DOC_EXAMPLE])
    client.infer("object2vec", [tensor], parameters={"content_type": JSON})


def in_process_call(repository: Path):
    pipeline = Pipeline(repository, network_runner(repository))
    return lambda: pipeline.answer(DOC_EXAMPLE, JSON)


def measure(call, concurrency: int, seconds: float) -> tuple[np.ndarray, float]:
    """Per-call latencies (s) and calls per second, `concurrency` threads for `seconds`."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        while time.perf_counter() < stop:
            start = time.perf_counter()
            call()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(latencies), len(latencies) / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    local = in_process_call(args.repository)
    with (
        open(Path("runs") / "serving_latency_server.log", "w") as log,
        EmbeddedServer(
            args.repository,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
        ).start(stdout=log) as server,
    ):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for _ in range(50):  # warm-up
            served_call(client)
        rows = []
        for name, call in (("triton gRPC", lambda: served_call(client)), ("in-process", local)):
            lat, _ = measure(call, 1, args.seconds)
            _, throughput = measure(call, 16, args.seconds)
            rows.append(
                (name, np.percentile(lat, 50) * 1e3, np.percentile(lat, 99) * 1e3, throughput)
            )
    print(f"{'':14}{'p50 ms (c=1)':>14}{'p99 ms (c=1)':>14}{'req/s (c=16)':>14}")
    for name, p50, p99, rps in rows:
        print(f"{name:14}{p50:14.3f}{p99:14.3f}{rps:14.1f}")
    (_, p50_t, _, rps_t), (_, p50_l, _, rps_l) = rows
    print(
        f"ratio triton/in-process: p50 latency x{p50_t / p50_l:.1f}, "
        f"throughput x{rps_t / rps_l:.2f}"
    )


if __name__ == "__main__":
    main()
