"""What the SageMaker adapter costs: /invocations against Triton's own HTTP API, side by side.

    python -m bench.sagemaker_adapter [--repository model_repository] [--seconds 10]

One launcher in SageMaker mode (`python -m server.embedded --sagemaker`): the adapter on its
port, Triton's HTTP API on loopback behind it. One asyncio load generator (aiohttp, keep-alive)
sends the documentation's example body either to `/invocations` with the hosted headers, or
straight to the front door with the same bytes the adapter forwards; concurrency 1 and 16,
rounds interleaved so both see the same machine. Prints p50/p99 and requests/s, and the ratios.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aiohttp
import numpy as np

from bench.local import RUNS, arguments
from contract.example import DOC_EXAMPLE_BODY as BODY
from contract.names import FRONT_DOOR, JSON
from server.embedded import PROJECT_ROOT
from server.process import free_port, wait_until_ok
from server.sagemaker import infer_request


async def _load(url: str, data: bytes, headers: dict, concurrency: int, seconds: float):
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                async with session.post(url, data=data, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - begin
    return np.array(latencies), len(latencies) / elapsed


def main() -> None:
    parser = arguments(__doc__, seconds=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    port, triton_port = free_port(), free_port()
    RUNS.mkdir(exist_ok=True)
    log = open(RUNS / "sagemaker_adapter_server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.embedded",
            "--sagemaker",
            "--http-port",
            str(triton_port),
            "--model-repository",
            str(args.repository),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/ping", 180)
        data, header_length = infer_request(BODY, JSON, None)
        paths = {
            "direct": (
                f"http://127.0.0.1:{triton_port}/v2/models/{FRONT_DOOR}/infer",
                data,
                {"Inference-Header-Content-Length": str(header_length)},
            ),
            "adapter": (f"http://127.0.0.1:{port}/invocations", BODY, {"Content-Type": JSON}),
        }
        for url, payload, headers in paths.values():  # warm-up
            asyncio.run(_load(url, payload, headers, 4, 1.0))
        results: dict = {}
        for _ in range(args.rounds):
            for concurrency in (1, 16):
                for name, (url, payload, headers) in paths.items():
                    lat, rps = asyncio.run(_load(url, payload, headers, concurrency, args.seconds))
                    results.setdefault((name, concurrency), []).append((lat, rps))
    finally:
        server.terminate()
        server.wait(60)
    print(f"{'path':10}{'conc':>6}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    summary = {}
    for (name, concurrency), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lat = np.concatenate([r[0] for r in runs])
        rps = float(np.mean([r[1] for r in runs]))
        p50, p99 = np.percentile(lat, 50) * 1e3, np.percentile(lat, 99) * 1e3
        summary[(name, concurrency)] = (p50, p99, rps)
        print(f"{name:10}{concurrency:>6}{p50:>10.3f}{p99:>10.3f}{rps:>10.1f}")
    for concurrency in (1, 16):
        d, a = summary[("direct", concurrency)], summary[("adapter", concurrency)]
        print(
            f"c={concurrency}: adapter/direct throughput {a[2] / d[2]:.3f}, "
            f"p50 +{a[0] - d[0]:.3f} ms, p99 +{a[1] - d[1]:.3f} ms"
        )


if __name__ == "__main__":
    main()
