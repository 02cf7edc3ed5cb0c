"""The benchmark suite: Triton measured by perf_analyzer, beside its peers, in one run.

    python -m bench.suite [--quick] [--models demo,realistic] [--out runs/bench]

Models: the demo model, and a realistic one (hcnn, enc_dim 512, token embedding 300, 4 layers,
vocabulary 50,000, sequences of 20 to 80 tokens, random weights). Workloads: the documentation's
three-instance embedding request, single-instance embedding requests, MovieLens pair requests
(ids from ../shared/data/ml-100k/ua.base, random ids of the same ranges when it is absent).

For each: perf_analyzer 2.51 over gRPC and HTTP at concurrency 1, 16 and 64 (its CSVs kept),
and the same against the floor (an empty Python-backend model on the same server answering the
same bodies, bench/empty_model); the same bodies from one asyncio HTTP load generator against
Triton (raw body), a FastAPI + ONNX Runtime service and Ray Serve with @serve.batch (its
batching chosen per workload by a sweep at concurrency 16); the in-process ceiling (ONNX
Runtime, the front door's parsing and formatting, no server, length-bucketed batches at the
best batch size) and PyTorch eager the same way. Writes results.csv, report.md (with the
ratios of the goals) and throughput_vs_p99.png under --out.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import orjson

from bench import perf_analyzer as pa
from bench.load import (
    CONCURRENCIES,
    Row,
    Workload,
    load_once,
    loadgen,
    start_fastapi,
    wait_for,
)
from bench.peers import Pipeline, best_batch_rate, torch_runner
from bench.realistic import REALISTIC, TOKENS_PER_SEQUENCE
from bench.report import plot, report, server_profile
from bench.timing import repeat
from contract.example import DOC_EXAMPLE
from contract.names import FRONT_DOOR, JSON
from server.common.onnx_sessions import network_runner
from server.common.settings import ServingSettings, from_texts
from server.launcher.configs import read as read_config
from server.launcher.configs import write_configs
from server.launcher.embedded import PROJECT_ROOT, EmbeddedServer
from server.launcher.host import Host
from server.launcher.process import free_port

# The embedded server's host: this machine, without the C++ ONNX Runtime backend.
BENCH_HOST = Host.detect(PROJECT_ROOT / ".triton" / "backends")

UA_BASE = PROJECT_ROOT.parent / "shared" / "data" / "ml-100k" / "ua.base"


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


EMPTY_MODEL = "empty"


def install_floor(repository: Path) -> None:
    """The empty model beside the front door, with the front door's own config (its name
    changed): same input, output, batching and instance count."""
    config = read_config(repository / "object2vec" / "configs" / "classification.pbtxt")
    config.name = EMPTY_MODEL
    config.ClearField("parameters")
    folder = repository / EMPTY_MODEL
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(str(config))
    shutil.copy2(Path(__file__).parent / "empty_model" / "1" / "model.py", folder / "1")


def build_model(name: str, out: Path, settings: ServingSettings) -> tuple[Path, Path]:
    """(repository, checkpoint) of the named model, built once under `out`."""
    repository, ckpt = out / name / "model_repository", out / name / "model.pt"
    if (repository / "facts.json").exists() and ckpt.exists():
        # The model is reused; the front door is the project's current one.
        shutil.copy2(
            PROJECT_ROOT / "model_repository" / "object2vec" / "1" / "model.py",
            repository / "object2vec" / "1" / "model.py",
        )
        write_configs(repository, settings, BENCH_HOST)
        install_floor(repository)
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
    write_configs(repository, settings, BENCH_HOST)
    install_floor(repository)
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


PA_TIMEOUT_S = 150  # one perf_analyzer run; a run that hangs is reported and skipped


def perf_analyzer(
    url: str,
    workload: Workload,
    protocol: str,
    out: Path,
    model: str,
    quick: bool,
    target: str = FRONT_DOOR,
    system: str = "triton-perf_analyzer",
    concurrencies: tuple[int, ...] = CONCURRENCIES,
) -> list[Row]:
    data = pa.input_data(workload.bodies, out / f"{model}-{workload.name}.json")
    rows = []
    for concurrency in concurrencies:
        csv_path = out / f"{model}-{target}-{workload.name}-{protocol}-c{concurrency}.csv"
        args = pa.command(
            url,
            protocol,
            data,
            f"{concurrency}:{concurrency}",
            csv_path,
            measurement_ms=2000 if quick else 4000,
            # Asynchronous requests: perf_analyzer 2.51's synchronous HTTP client hung at
            # concurrency 64 against this server (reproduced alone; --async and c32 were fine).
            extra=["--async"],
            model=target,
        )
        csv_path.unlink(missing_ok=True)
        try:
            result = subprocess.run(
                args, capture_output=True, text=True, env=pa.environment(), timeout=PA_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            print(f"  perf_analyzer {protocol} c{concurrency}: no result in {PA_TIMEOUT_S} s")
            continue
        if result.returncode != 0 and not csv_path.exists():
            raise RuntimeError(f"perf_analyzer failed:\n{result.stdout}\n{result.stderr}")
        with open(csv_path) as f:
            record = next(csv.DictReader(f))
        rows.append(
            Row(
                model,
                workload.name,
                system,
                protocol,
                concurrency,
                float(record["Inferences/Second"]) * workload.instances,
                float(record["p50 latency"]) / 1e3,
                float(record["p99 latency"]) / 1e3,
            )
        )
    return rows


TRITON_RAW = {"Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"}


# ---- in process ------------------------------------------------------------------------------


BATCH_SIZES = (1, 8, 32, 128, 512)


def single_request_ms(pipeline: Pipeline, bodies: list[bytes], seconds: float = 1.0) -> float:
    """Median time of one request in process (parse, run, format), bodies cycled."""
    cycle = itertools.cycle(bodies)
    times = repeat(lambda: pipeline.answer(next(cycle)), seconds=seconds, at_least=20)
    return float(np.median(times)) * 1e3


def in_process(
    pipeline: Pipeline,
    workload: Workload,
    system: str,
    model: str,
    seconds: float,
    cut: tuple[bool, ...] = (False, True),
) -> Row:
    """The best of the batch sizes, each with one call per network and with calls cut by the
    measured costs (`cut`)."""
    bodies = workload.bodies
    best = (0.0, "")
    costs, flat = pipeline.costs, pipeline.flat
    for cutting in cut:
        pipeline.costs, pipeline.flat = (costs, flat) if cutting else (None, None)

        def call(size: int) -> None:
            pipeline.answer_many([bodies[i % len(bodies)] for i in range(size)])

        size, rate = best_batch_rate(call, BATCH_SIZES, seconds)
        best = max(best, (rate, f"batch {size}" + (", as the front door cuts" if cutting else "")))
    pipeline.costs, pipeline.flat = costs, flat
    rate, how = best
    return Row(
        model,
        workload.name,
        system,
        how,
        0,
        rate * workload.instances,
        single_request_ms(pipeline, bodies),
        float("nan"),
    )


# ---- Ray Serve -------------------------------------------------------------------------------

# (max_batch_size, batch_wait_timeout_s) tried per workload at concurrency 16.
RAY_SWEEP = ((1, 0.0), (8, 0.0005), (16, 0.001), (64, 0.002))


def start_ray_peer(repository: Path, port: int, log) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.ray_peer", str(repository), "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for(f"http://127.0.0.1:{port}/ping", process, "the Ray Serve peer", timeout=180)
    return process


def ray_serve(
    port: int, workload: Workload, model: str, seconds: float, sweep_seconds: float
) -> list[Row]:
    url = f"http://127.0.0.1:{port}"
    best, best_rate = RAY_SWEEP[0], 0.0
    for size, wait in RAY_SWEEP:
        urllib.request.urlopen(
            urllib.request.Request(
                f"{url}/configure?max_batch_size={size}&wait_s={wait}", method="POST"
            ),
            timeout=30,
        ).read()
        rate = load_once(f"{url}/invocations", {"Content-Type": JSON}, workload, 16, sweep_seconds)
        print(f"  ray serve max_batch_size={size} wait={wait}s: {rate:,.0f} req/s at c16")
        if rate > best_rate:
            best, best_rate = (size, wait), rate
    urllib.request.urlopen(
        urllib.request.Request(
            f"{url}/configure?max_batch_size={best[0]}&wait_s={best[1]}", method="POST"
        ),
        timeout=30,
    ).read()
    system = f"ray-serve (batch {best[0]}, {best[1] * 1e3:g} ms)"
    return loadgen(f"{url}/invocations", {"Content-Type": JSON}, workload, system, model, seconds)


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
        help="a serving setting (server/common/settings.py ServingSettings), for tuning",
    )
    args = parser.parse_args(argv)
    out = args.out
    (out / "perf_analyzer").mkdir(parents=True, exist_ok=True)
    seconds = 2.0 if args.quick else 5.0
    rows: list[Row] = []
    # The same parser as the launchers' and the config CLI's (server.common.settings).
    settings = from_texts(ServingSettings, dict(item.split("=", 1) for item in args.set))
    settings = replace(settings, response_cache=args.response_cache_bytes > 0)
    (out / "settings.json").write_text(json.dumps(asdict(settings), indent=2))
    for model in args.models.split(","):
        repository, ckpt = build_model(model, out / "models", settings)
        chosen = [w for w in workloads(model) if w.name in args.workloads.split(",")]
        with open(out / f"{model}-triton.log", "w") as log:
            server = EmbeddedServer(
                repository,
                http_port=free_port(),
                grpc_port=free_port(),
                metrics_port=free_port(),
                cache_bytes=args.response_cache_bytes,
            ).start(stdout=log)
            try:
                for workload in chosen:
                    for protocol in ("grpc", "http"):
                        url = server.grpc_url if protocol == "grpc" else server.http_url
                        rows += perf_analyzer(
                            url, workload, protocol, out / "perf_analyzer", model, args.quick
                        )
                    rows += perf_analyzer(
                        server.grpc_url,
                        workload,
                        "grpc",
                        out / "perf_analyzer",
                        model,
                        args.quick,
                        target=EMPTY_MODEL,
                        system="floor-empty-model",
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
            peer_port = free_port()
            peer = start_fastapi(repository, peer_port, log)
            try:
                for workload in chosen:
                    rows += loadgen(
                        f"http://localhost:{peer_port}/invocations",
                        {"Content-Type": JSON},
                        workload,
                        "fastapi",
                        model,
                        seconds,
                    )
            finally:
                peer.terminate()
                peer.wait()
        with open(out / f"{model}-ray.log", "w") as log:
            ray_port = free_port()
            ray = start_ray_peer(repository, ray_port, log)
            try:
                for workload in chosen:
                    rows += ray_serve(ray_port, workload, model, seconds, seconds / 2)
            finally:
                ray.terminate()
                ray.wait(timeout=120)
        ceiling = Pipeline(repository, network_runner(repository))
        eager = Pipeline(repository, torch_runner(ckpt), measured=False)
        for workload in chosen:
            rows.append(in_process(ceiling, workload, "ceiling-onnxruntime", model, seconds / 2))
            rows.append(in_process(eager, workload, "torch-eager", model, seconds / 2, (False,)))
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
