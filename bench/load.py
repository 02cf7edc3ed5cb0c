"""Load generation: one asyncio HTTP load generator for Triton and its peers alike.

Each body is POSTed as is (`headers` say how the server reads it); `loadgen` runs a warm-up
and then every concurrency of the sweep, and returns one `Row` per concurrency.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.launcher.embedded import PROJECT_ROOT

CONCURRENCIES = (1, 16, 64)


@dataclass
class Row:
    model: str
    workload: str
    system: str  # triton-perf_analyzer, triton-loadgen, fastapi, ceiling-onnxruntime, torch
    protocol: str
    concurrency: int
    instances_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass
class Workload:
    name: str
    bodies: list[bytes]
    instances: int  # per body


async def load(
    url: str,
    bodies: list[bytes],
    headers: dict,
    concurrency: int,
    seconds: float = 0.0,
    requests: int = 0,
    failures: list[int] | None = None,
) -> tuple[list[float], float]:
    """The one network load generator: `concurrency` clients POST `bodies` (cycled) to `url`
    for `seconds`, or until `requests` are sent; (each answered request's latency, the wall
    time). A status other than 200 raises, or is appended to `failures` where one is given."""
    import aiohttp

    latencies: list[float] = []
    sent = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = time.perf_counter() + seconds

        def more() -> int | None:
            index = next(sent)
            if requests:
                return index if index < requests else None
            return index if time.perf_counter() < stop else None

        async def worker() -> None:
            while (index := more()) is not None:
                start = time.perf_counter()
                async with session.post(
                    url, data=bodies[index % len(bodies)], headers=headers
                ) as response:
                    await response.read()
                    if response.status != 200:
                        if failures is None:
                            raise RuntimeError(f"{url}: HTTP {response.status}")
                        failures.append(response.status)
                        continue
                latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - begin


def load_once(
    url: str, headers: dict, workload: Workload, concurrency: int, seconds: float
) -> float:
    """Requests per second at one concurrency (a sweep's probe)."""
    latencies, took = asyncio.run(load(url, workload.bodies, headers, concurrency, seconds))
    return len(latencies) / took


def loadgen(
    url: str,
    headers: dict,
    workload: Workload,
    system: str,
    model: str,
    seconds: float,
    concurrencies: tuple[int, ...] = CONCURRENCIES,
) -> list[Row]:
    rows = []
    asyncio.run(load(url, workload.bodies, headers, 4, 1.0))  # warm-up
    for concurrency in concurrencies:
        latencies, took = asyncio.run(load(url, workload.bodies, headers, concurrency, seconds))
        lat = np.array(latencies) * 1e3
        rows.append(
            Row(
                model,
                workload.name,
                system,
                "http",
                concurrency,
                len(lat) * workload.instances / took,
                float(np.percentile(lat, 50)),
                float(np.percentile(lat, 99)),
            )
        )
    return rows


def start_fastapi(repository: Path, port: int, log) -> subprocess.Popen:
    # One worker with ONNX Runtime on all cores. (`--workers 2` was tried: uvicorn's
    # multi-process mode answered every request 40 ms late here, a Nagle/delayed-ACK stall.)
    env = dict(os.environ, O2V_PEER_REPOSITORY=str(repository), O2V_PEER_THREADS="0")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.peers:app_from_environment",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return wait_for(f"http://localhost:{port}/ping", process, "the FastAPI peer")


def wait_for(
    url: str, process: subprocess.Popen, what: str, timeout: float = 60
) -> subprocess.Popen:
    """Returns once `url` answers; kills `process` and raises if it does not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{what} did not start (see its log)")
