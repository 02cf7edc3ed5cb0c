"""What the SageMaker adapter costs, on each HTTP server: /invocations against Triton's own HTTP
API, side by side.

    python -m bench.sagemaker_adapter [--servers builtin uvicorn granian] [--seconds 10]

One launcher in SageMaker mode (`python -m server --sagemaker`): `builtin`, the
product's path (server/sagemaker/http1.py in front of Triton's HTTP API on loopback); beside it the same
Adapter as an ASGI app on uvicorn (httptools, uvloop) and on granian (bench/asgi_adapter.py),
each a process in front of the same Triton. One asyncio load generator (aiohttp, keep-alive)
sends the documentation's example body to each adapter's `/invocations` with the hosted
headers, or straight to the front door with the same bytes an adapter forwards; concurrency 1
and 16, rounds interleaved so every path sees the same machine. Prints p50/p99, requests/s and
each server's adapter/direct ratios.
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
from server.launcher.embedded import PROJECT_ROOT
from server.launcher.process import free_port, wait_until_ok
from server.sagemaker.adapter import infer_request


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


ADAPTERS = ("builtin", "uvicorn", "granian")


def _launcher(repository, port: int, triton_port: int) -> subprocess.Popen:
    """The product's path: the launcher in SageMaker mode, server/sagemaker/http1.py in front of Triton."""
    log = open(RUNS / "sagemaker_adapter_server.log", "w")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.launcher.embedded",
            "--sagemaker",
            "--http-port",
            str(triton_port),
            "--model-repository",
            str(repository),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _asgi_adapter(server: str, port: int, triton_port: int) -> subprocess.Popen:
    """The same Adapter as an ASGI app on another server (bench/asgi_adapter.py), in front of
    the launcher's Triton."""
    log = open(RUNS / f"sagemaker_adapter_{server}.log", "w")  # noqa: SIM115
    command = [sys.executable, "-m", "bench.asgi_adapter", server, str(port)]
    command.append(f"http://127.0.0.1:{triton_port}")
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    parser = arguments(__doc__, seconds=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--servers",
        nargs="+",
        default=list(ADAPTERS),
        choices=list(ADAPTERS),
        help="HTTP servers under the adapter, each an adapter process of its own",
    )
    args = parser.parse_args()
    data, header_length = infer_request(BODY, JSON, None)
    port, triton_port = free_port(), free_port()
    processes = [_launcher(args.repository, port, triton_port)]
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/ping", 180)
        paths = {
            "direct": (
                f"http://127.0.0.1:{triton_port}/v2/models/{FRONT_DOOR}/infer",
                data,
                {"Inference-Header-Content-Length": str(header_length)},
            )
        }
        for server in args.servers:
            server_port = port
            if server != "builtin":
                server_port = free_port()
                processes.append(_asgi_adapter(server, server_port, triton_port))
                wait_until_ok(f"http://127.0.0.1:{server_port}/ping", 60)
            paths[server] = (
                f"http://127.0.0.1:{server_port}/invocations",
                BODY,
                {"Content-Type": JSON},
            )
        for url, payload, headers in paths.values():  # warm-up
            asyncio.run(_load(url, payload, headers, 4, 1.0))
        results: dict = {}
        for _ in range(args.rounds):
            for concurrency in (1, 16):
                for name, (url, payload, headers) in paths.items():
                    lat, rps = asyncio.run(_load(url, payload, headers, concurrency, args.seconds))
                    results.setdefault((name, concurrency), []).append((lat, rps))
    finally:
        for process in processes[::-1]:
            process.terminate()
            process.wait(60)
    print(f"{'path':10}{'conc':>6}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    summary = {}
    for (name, concurrency), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lat = np.concatenate([r[0] for r in runs])
        rps = float(np.mean([r[1] for r in runs]))
        p50, p99 = np.percentile(lat, 50) * 1e3, np.percentile(lat, 99) * 1e3
        summary[(name, concurrency)] = (p50, p99, rps)
        print(f"{name:10}{concurrency:>6}{p50:>10.3f}{p99:>10.3f}{rps:>10.1f}")
    for server in args.servers:
        for concurrency in (1, 16):
            d, a = summary[("direct", concurrency)], summary[(server, concurrency)]
            print(
                f"{server} c={concurrency}: adapter/direct throughput {a[2] / d[2]:.3f}, "
                f"p50 +{a[0] - d[0]:.3f} ms, p99 +{a[1] - d[1]:.3f} ms"
            )


if __name__ == "__main__":
    main()
