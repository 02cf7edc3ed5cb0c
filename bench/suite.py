"""The benchmark suite: Triton measured by perf_analyzer, beside its peers, in one run.

    python -m bench.suite [--quick] [--models demo,realistic] [--out runs/bench]

Models: the demo model, and a realistic one (hcnn, enc_dim 512, token embedding 300, 4 layers,
vocabulary 50,000, sequences of 20 to 80 tokens, random weights). Workloads: the documentation's
three-instance embedding request, single-instance embedding requests, MovieLens pair requests
(ids from ../shared/data/ml-100k/ua.base, random ids of the same ranges when it is absent).

For each: perf_analyzer 2.51 over gRPC and HTTP at concurrency 1, 16 and 64 (its CSVs kept);
the same bodies from one asyncio HTTP load generator against Triton (raw body) and against a
FastAPI + ONNX Runtime service; the in-process ceiling (ONNX Runtime, the front door's parsing
and formatting, no server, best batch size) and PyTorch eager the same way. Writes
results.csv, report.md and throughput_vs_p99.png under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import orjson

from bench.peers import Pipeline, best_batch_rate, onnx_runner, torch_runner
from bench.realistic import REALISTIC, TOKENS_PER_SEQUENCE
from server.configs import write_configs
from server.embedded import PROJECT_ROOT, EmbeddedServer
from server.settings import ServingSettings, from_texts

UA_BASE = PROJECT_ROOT.parent / "shared" / "data" / "ml-100k" / "ua.base"
CONCURRENCIES = (1, 16, 64)
DOC_EXAMPLE = [
    [6, 17, 606, 19, 53, 67, 52, 12, 5, 10, 15, 10178, 7, 33, 652, 80, 15, 69, 821, 4],
    [22, 1016, 32, 13, 25, 11, 5, 64, 573, 45, 5, 80, 15, 67, 21, 7, 9, 107, 4],
    [774, 14, 21, 206],
]


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


# ---- models and workloads --------------------------------------------------------------------


def _fresh_repository(target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(
        PROJECT_ROOT / "model_repository" / "object2vec",
        target / "object2vec",
        ignore=shutil.ignore_patterns("config.pbtxt", "__pycache__"),
    )
    return target


def build_model(name: str, out: Path, settings: ServingSettings) -> tuple[Path, Path]:
    """(repository, checkpoint) of the named model, built once under `out`."""
    repository, ckpt = out / name / "model_repository", out / name / "model.pt"
    if (repository / "facts.json").exists() and ckpt.exists():
        # The model is reused; the front door is the project's current one.
        shutil.copy2(
            PROJECT_ROOT / "model_repository" / "object2vec" / "1" / "model.py",
            repository / "object2vec" / "1" / "model.py",
        )
        write_configs(repository, settings)
        return repository, ckpt
    _fresh_repository(repository)
    if name == "demo":
        from export import demo

        demo.build(repository, ckpt, progress=False)
    else:
        import torch

        from export import checkpoint
        from export.hyperparameters import Hyperparameters
        from export.network import Object2Vec
        from export.onnx_export import export

        torch.manual_seed(0)
        model = Object2Vec(Hyperparameters.from_dict(REALISTIC)).eval()
        checkpoint.save(model, ckpt)
        export(model, repository)
    write_configs(repository, settings)
    return repository, ckpt


def workloads(name: str, count: int = 64, seed: int = 0) -> list[Workload]:
    rng = np.random.default_rng(seed)
    vocab = 12_000 if name == "demo" else 50_000
    lengths = (3, 30) if name == "demo" else TOKENS_PER_SEQUENCE

    def sequence() -> list[int]:
        return rng.integers(1, vocab, size=rng.integers(*lengths)).tolist()

    if UA_BASE.exists():
        ratings = np.loadtxt(UA_BASE, dtype=np.int64, usecols=(0, 1))
    else:
        ratings = np.stack([rng.integers(1, 944, 5000), rng.integers(1, 1683, 5000)], axis=1)
    picks = ratings[rng.integers(0, len(ratings), count)]

    def body(instances: list[dict]) -> bytes:
        return orjson.dumps({"instances": instances})

    return [
        Workload("doc-example-3", [body([{"in0": s} for s in DOC_EXAMPLE])], 3),
        Workload("embed-1", [body([{"in0": sequence()}]) for _ in range(count)], 1),
        Workload(
            "movielens-pair-1", [body([{"in0": [int(u)], "in1": [int(m)]}]) for u, m in picks], 1
        ),
    ]


# ---- Triton through perf_analyzer ------------------------------------------------------------


def perf_analyzer_env() -> dict[str, str]:
    import nvidia.cuda_runtime

    lib = Path(nvidia.cuda_runtime.__path__[0]) / "lib"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{lib}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


def perf_analyzer(
    server: EmbeddedServer, workload: Workload, protocol: str, out: Path, model: str, quick: bool
) -> list[Row]:
    data = out / f"{model}-{workload.name}.json"
    data.write_text(json.dumps({"data": [{"body": [b.decode()]} for b in workload.bodies]}))
    rows = []
    for concurrency in CONCURRENCIES:
        csv_path = out / f"{model}-{workload.name}-{protocol}-c{concurrency}.csv"
        command = [
            str(Path(sys.executable).parent / "perf_analyzer"),
            "-m",
            "object2vec",
            "-u",
            server.grpc_url if protocol == "grpc" else server.http_url,
            "-i",
            protocol,
            "--input-data",
            str(data),
            "--shape",
            "body:1",
            "--concurrency-range",
            f"{concurrency}:{concurrency}",
            "--measurement-interval",
            "2000" if quick else "4000",
            "--stability-percentage",
            "1000",
            "--max-trials",
            "3",
            "--percentile",
            "99",
            "-f",
            str(csv_path),
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=perf_analyzer_env())
        if result.returncode != 0 and not csv_path.exists():
            raise RuntimeError(f"perf_analyzer failed:\n{result.stdout}\n{result.stderr}")
        with open(csv_path) as f:
            record = next(csv.DictReader(f))
        rows.append(
            Row(
                model,
                workload.name,
                "triton-perf_analyzer",
                protocol,
                concurrency,
                float(record["Inferences/Second"]) * workload.instances,
                float(record["p50 latency"]) / 1e3,
                float(record["p99 latency"]) / 1e3,
            )
        )
    return rows


# ---- one HTTP load generator for Triton and the FastAPI peer ----------------------------------


async def _load(
    url: str, bodies: list[bytes], headers: dict, concurrency: int, seconds: float
) -> tuple[list[float], float]:
    import aiohttp

    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                start = time.perf_counter()
                async with session.post(
                    url, data=bodies[i % len(bodies)], headers=headers
                ) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}: HTTP {response.status}")
                latencies.append(time.perf_counter() - start)
                i += concurrency

        begin = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return latencies, time.perf_counter() - begin


def loadgen(
    url: str, headers: dict, workload: Workload, system: str, model: str, seconds: float
) -> list[Row]:
    rows = []
    asyncio.run(_load(url, workload.bodies, headers, 4, 1.0))  # warm-up
    for concurrency in CONCURRENCIES:
        latencies, took = asyncio.run(_load(url, workload.bodies, headers, concurrency, seconds))
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


TRITON_RAW = {"Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"}


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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/ping", timeout=1):
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the FastAPI peer did not start")


# ---- in process ------------------------------------------------------------------------------


def in_process(
    pipeline: Pipeline, workload: Workload, system: str, model: str, seconds: float
) -> Row:
    bodies = workload.bodies

    def call(size: int) -> None:
        pipeline.answer_many([bodies[i % len(bodies)] for i in range(size)])

    size, rate = best_batch_rate(call, (1, 8, 32, 128), seconds)
    start = time.perf_counter()
    pipeline.answer(bodies[0])
    single_ms = (time.perf_counter() - start) * 1e3
    return Row(
        model,
        workload.name,
        system,
        f"batch {size}",
        0,
        rate * workload.instances,
        single_ms,
        float("nan"),
    )


# ---- where the time goes, by the server's own statistics --------------------------------------


def server_profile(server: EmbeddedServer) -> str:
    """Per model: requests, executions, and the mean queue / compute time of each."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    lines = [
        "| model | requests | executions | requests/execution | queue us/request "
        "| compute us/execution |",
        "|---|---|---|---|---|---|",
    ]
    for stats in client.get_inference_statistics()["model_stats"]:
        inference = stats["inference_stats"]
        requests = int(inference["success"]["count"]) or 1
        executions = int(stats["execution_count"]) or 1
        compute = sum(
            int(inference[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output")
        )
        lines.append(
            f"| {stats['name']} | {requests} | {executions} | "
            f"{requests / executions:.1f} | {int(inference['queue']['ns']) / requests / 1e3:,.0f} "
            f"| {compute / executions / 1e3:,.0f} |"
        )
    client.close()
    return "\n".join(lines) + "\n"


# ---- report ----------------------------------------------------------------------------------


def report(rows: list[Row], out: Path) -> str:
    lines = []
    keyed = {(r.model, r.workload, r.system, r.protocol, r.concurrency): r for r in rows}
    for model, workload in dict.fromkeys((r.model, r.workload) for r in rows):
        lines += [
            f"\n### {model} / {workload}\n",
            "| system | protocol | inst/s c1 | inst/s c16 | inst/s c64 | p50 ms c16 | p99 ms c16 |",
            "|---|---|---|---|---|---|---|",
        ]
        for system, protocol in dict.fromkeys(
            (r.system, r.protocol) for r in rows if (r.model, r.workload) == (model, workload)
        ):
            if system in ("ceiling-onnxruntime", "torch-eager"):
                r = keyed[(model, workload, system, protocol, 0)]
                lines.append(
                    f"| {system} | {protocol} | | {r.instances_per_s:,.0f} | | "
                    f"{r.p50_ms:.2f} (one request) | |"
                )
                continue
            cells = [keyed[(model, workload, system, protocol, c)] for c in CONCURRENCIES]
            lines.append(
                f"| {system} | {protocol} | "
                + " | ".join(f"{c.instances_per_s:,.0f}" for c in cells)
                + f" | {cells[1].p50_ms:.2f} | {cells[1].p99_ms:.2f} |"
            )
        triton = keyed.get((model, workload, "triton-perf_analyzer", "grpc", 16))
        ceiling = next(
            (
                r
                for r in rows
                if (r.model, r.workload, r.system) == (model, workload, "ceiling-onnxruntime")
            ),
            None,
        )
        ours = keyed.get((model, workload, "triton-loadgen", "http", 16))
        peer = keyed.get((model, workload, "fastapi", "http", 16))
        if triton and ceiling:
            lines.append(
                f"\nTriton gRPC / ceiling at c16: "
                f"{triton.instances_per_s / ceiling.instances_per_s:.2f}x"
            )
        if ours and peer:
            lines.append(
                f"Triton HTTP / FastAPI peer at c16 (same load generator): "
                f"{ours.instances_per_s / peer.instances_per_s:.2f}x"
            )
        single = keyed.get((model, workload, "triton-perf_analyzer", "grpc", 1))
        if single and ceiling and not np.isnan(ceiling.p50_ms):
            lines.append(
                f"Per-request overhead of Triton at c1 (gRPC p50 - in-process "
                f"single request): {(single.p50_ms - ceiling.p50_ms) * 1e3:,.0f} us"
            )
    text = "\n".join(lines)
    (out / "report.md").write_text(text + "\n")
    return text


def plot(rows: list[Row], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r.model, r.workload) for r in rows))
    figure, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for axis, (model, workload) in zip(axes[0], groups, strict=True):
        series = dict.fromkeys(
            (r.system, r.protocol)
            for r in rows
            if (r.model, r.workload) == (model, workload) and r.concurrency
        )
        for system, protocol in series:
            points = [
                r
                for r in rows
                if (r.model, r.workload, r.system, r.protocol)
                == (model, workload, system, protocol)
            ]
            axis.plot(
                [p.p99_ms for p in points],
                [p.instances_per_s for p in points],
                marker="o",
                label=f"{system} {protocol}",
            )
        axis.set(
            title=f"{model} / {workload}",
            xlabel="p99 latency (ms)",
            ylabel="instances / s",
            xscale="log",
        )
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "throughput_vs_p99.png", dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "runs" / "bench")
    parser.add_argument("--models", default="demo,realistic")
    parser.add_argument("--workloads", default="doc-example-3,embed-1,movielens-pair-1")
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    parser.add_argument("--no-peers", action="store_true", help="Triton only")
    parser.add_argument(
        "--response-cache-bytes",
        type=int,
        default=0,
        help="turn on Triton's response cache for the front door, this size",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a serving setting (server/settings.py ServingSettings), for tuning",
    )
    args = parser.parse_args(argv)
    out = args.out
    (out / "perf_analyzer").mkdir(parents=True, exist_ok=True)
    seconds = 2.0 if args.quick else 5.0
    rows: list[Row] = []
    # The same parser as the launchers' and the config CLI's (server.settings).
    settings = from_texts(ServingSettings, dict(item.split("=", 1) for item in args.set))
    settings = replace(settings, response_cache=args.response_cache_bytes > 0)
    (out / "settings.json").write_text(json.dumps(asdict(settings), indent=2))
    for model in args.models.split(","):
        repository, ckpt = build_model(model, out / "models", settings)
        chosen = [w for w in workloads(model) if w.name in args.workloads.split(",")]
        with open(out / f"{model}-triton.log", "w") as log:
            server = EmbeddedServer(
                repository,
                http_port=18200,
                grpc_port=18201,
                metrics_port=18202,
                cache_bytes=args.response_cache_bytes,
            ).start(stdout=log)
            try:
                for workload in chosen:
                    for protocol in ("grpc", "http"):
                        rows += perf_analyzer(
                            server, workload, protocol, out / "perf_analyzer", model, args.quick
                        )
                    if not args.no_peers:
                        rows += loadgen(
                            f"http://{server.http_url}/v2/models/object2vec/infer",
                            TRITON_RAW,
                            workload,
                            "triton-loadgen",
                            model,
                            seconds,
                        )
                    print(f"[{model}/{workload.name}] triton done", flush=True)
                profile = server_profile(server)
                (out / f"{model}-triton-profile.md").write_text(profile)
                print(profile, flush=True)
            finally:
                server.stop()
        if args.no_peers:
            continue
        with open(out / f"{model}-fastapi.log", "w") as log:
            peer = start_fastapi(repository, 18300, log)
            try:
                for workload in chosen:
                    rows += loadgen(
                        "http://localhost:18300/invocations",
                        {"Content-Type": "application/json"},
                        workload,
                        "fastapi",
                        model,
                        seconds,
                    )
            finally:
                peer.terminate()
                peer.wait()
        ceiling = Pipeline(repository, onnx_runner(repository))
        eager = Pipeline(repository, torch_runner(ckpt))
        for workload in chosen:
            rows.append(in_process(ceiling, workload, "ceiling-onnxruntime", model, seconds))
            rows.append(in_process(eager, workload, "torch-eager", model, seconds))
            print(f"[{model}/{workload.name}] peers done", flush=True)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    plot(rows, out)
    print(report(rows, out))
    print(f"\nresults: {out / 'results.csv'}, {out / 'report.md'}, {out / 'throughput_vs_p99.png'}")


if __name__ == "__main__":
    main()
