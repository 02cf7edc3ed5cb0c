"""Mixed lengths: the front door against a naive one-request-at-a-time service, side by side.

    python -m bench.mixed_lengths [--seconds 10] [--models demo,realistic] [--metrics-cost]

`--metrics-cost`: instead, the front door with its metrics on (the default) against the same
server with them off (O2V_METRICS_INTERVAL_S=0), alternating the same way (docs/metrics.md).

Workloads: one body of three `in0` instances, 80, 50 and 20 tokens for the realistic model
(hcnn, enc_dim 512, 4 layers: milliseconds of compute per instance), the documentation's 20, 19
and 4 for the demo model; 64 bodies of those lengths cycled. The same bytes go to both sides
through one asyncio HTTP load generator (bench.load) at concurrency 1 and 16: raw to Triton's
HTTP infer endpoint (the front door reads the body as it is), as `application/json` to
`bench.naive service` (FastAPI + ONNX Runtime on the same ONNX files, padding within a
request). Also printed: the tokens each side computes per real token, the front door's from
its own plan for 1 and for 16 requests batched (its measured call costs, server.frontdoor.cutting).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson

from bench.load import Workload, loadgen, wait_for
from bench.local import RUNS, arguments
from bench.suite import TRITON_RAW, build_model
from contract.example import DOC_EXAMPLE
from contract.facts import Facts
from contract.names import JSON
from server.common.onnx_sessions import network_runner
from server.common.settings import ServingSettings
from server.frontdoor.dispatch import measure_costs, plan
from server.frontdoor.payload import Limits, parse_request
from server.launcher.embedded import PROJECT_ROOT, EmbeddedServer
from server.launcher.process import free_port

LENGTHS = {"realistic": (80, 50, 20), "demo": tuple(len(s) for s in DOC_EXAMPLE)}


def bodies(model: str, vocab: int, count: int = 64, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        orjson.dumps(
            {"instances": [{"in0": rng.integers(1, vocab, n).tolist()} for n in LENGTHS[model]]}
        )
        for _ in range(count)
    ]


def token_ratios(repository: Path, body: bytes) -> dict[str, float]:
    """Tokens computed per real token: padded within one request (the naive service), and the
    front door's plan for 1 and for 16 such requests in one execute."""
    limits = Limits.of(Facts.load(repository), 1 << 24)
    request = parse_request(body, None, None, limits)
    real = int(request.sides[0].lengths.sum())
    networks = network_runner(repository)
    costs = measure_costs(networks)
    out = {"naive (one call a request)": len(request) * int(request.sides[0].lengths.max()) / real}
    for n in (1, 16):
        settings = ServingSettings()
        bounds = (settings.network_max_batch_size, costs, settings.network_max_batch_tokens)
        calls = plan([request] * n, *bounds, networks.flat)
        # a flat call computes its row's positions (the gather only picks); a padded call
        # its whole array
        computed = sum(
            c.feed["tokens"].size if c.separator else sum(a.size for a in c.feed.values())
            for c in calls
        )
        out[f"front door, {n} request(s) an execute"] = computed / (n * real)
    return out


def _naive_service(repository: Path, port: int, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "bench.naive", "service", "--repository", str(repository)]
    process = subprocess.Popen(
        command + ["--port", str(port)], cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    return wait_for(f"http://localhost:{port}/ping", process, "the naive service")


def measure(repository: Path, workload: Workload, seconds: float, rounds: int, logs: Path):
    """{system: [(c1 row, c16 row) per round]}: both servers up, their runs alternating, so that
    what else the host does lands on both sides alike."""
    model = workload.name
    found: dict[str, list] = {FRONT_DOOR_ROW: [], NAIVE_ROW: []}
    port = free_port()
    with (
        open(logs / f"mixed-{model}-triton.log", "w") as triton_log,
        open(logs / f"mixed-{model}-naive.log", "w") as naive_log,
        EmbeddedServer(
            repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
        ).start(stdout=triton_log) as server,
    ):
        naive = _naive_service(repository, port, naive_log)
        targets = {
            FRONT_DOOR_ROW: (f"http://{server.http_url}/v2/models/object2vec/infer", TRITON_RAW),
            NAIVE_ROW: (f"http://localhost:{port}/invocations", {"Content-Type": JSON}),
        }
        try:
            for _ in range(rounds):
                for system, (url, headers) in targets.items():
                    rows = loadgen(url, headers, workload, system, model, seconds, (1, 16))
                    found[system].append(rows)
        finally:
            naive.terminate()
            naive.wait(30)
    return found


FRONT_DOOR_ROW = "front door (Triton HTTP, raw body)"
NAIVE_ROW = "naive FastAPI + ONNX Runtime"
METRICS_OFF_ROW = "front door, metrics off"
METRICS_ON_ROW = "front door, metrics on"


def measure_metrics_cost(
    repository: Path, workload: Workload, seconds: float, rounds: int, logs: Path
):
    """{metrics off, on: [(c1 row, c16 row) per round]}: two servers up, alternating. Each
    writes its configs into the repository before it loads, off first: on is what stays."""
    found: dict[str, list] = {METRICS_OFF_ROW: [], METRICS_ON_ROW: []}
    model = workload.name
    with contextlib.ExitStack() as stack:
        urls = {}
        for system, interval in ((METRICS_OFF_ROW, 0.0), (METRICS_ON_ROW, 1.0)):
            log = stack.enter_context(open(logs / f"metrics-{model}-{interval:g}.log", "w"))
            server = EmbeddedServer(
                repository,
                http_port=free_port(),
                grpc_port=free_port(),
                metrics_port=free_port(),
                settings=ServingSettings(metrics_interval_s=interval),
            )
            stack.enter_context(server.start(stdout=log))
            urls[system] = f"http://{server.http_url}/v2/models/object2vec/infer"
        for _ in range(rounds):
            for system, url in urls.items():
                rows = loadgen(url, TRITON_RAW, workload, system, model, seconds, (1, 16))
                found[system].append(rows)
    return found


def _median(rows: list, concurrency: int, field: str) -> float:
    return float(np.median([getattr(pair[concurrency], field) for pair in rows]))


def main() -> None:
    parser = arguments(__doc__, 6.0)
    parser.add_argument("--models", default="demo,realistic")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RUNS / "bench")
    parser.add_argument("--metrics-cost", action="store_true", help="metrics on against off")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"Medians of {args.rounds} alternating rounds of {args.seconds:g} s per concurrency.",
        "",
        "| model | system | req/s c1 | p50 ms c1 | req/s c16 | p50 ms c16 | p99 ms c16 |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios_lines = []
    for model in args.models.split(","):
        repository, _ = build_model(model, args.out / "models", ServingSettings())
        vocab = Facts.load(repository).vocab_sizes[0]
        workload = Workload(model, bodies(model, vocab), 1)
        how = measure_metrics_cost if args.metrics_cost else measure
        found = how(repository, workload, args.seconds, args.rounds, args.out)
        rate = {}
        for system, rows in found.items():
            rate[system] = [_median(rows, c, "instances_per_s") for c in (0, 1)]
            lines.append(
                f"| {model} | {system} | {rate[system][0]:,.0f} | {_median(rows, 0, 'p50_ms'):.2f}"
                f" | {rate[system][1]:,.0f} | {_median(rows, 1, 'p50_ms'):.2f}"
                f" | {_median(rows, 1, 'p99_ms'):.2f} |"
            )
        base, new = (
            (METRICS_OFF_ROW, METRICS_ON_ROW) if args.metrics_cost else (NAIVE_ROW, FRONT_DOOR_ROW)
        )
        ours, theirs = rate[new], rate[base]
        label = "metrics on / off" if args.metrics_cost else "front door / naive"
        lines.append(
            f"| {model} | **{label}** | {ours[0] / theirs[0]:.3f}x | "
            f"| {ours[1] / theirs[1]:.3f}x | | |"
        )
        for name, ratio in token_ratios(repository, workload.bodies[0]).items():
            ratios_lines.append(f"| {model} | {name} | {ratio:.2f} |")
    report = "\n".join(lines) + "\n"
    if not args.metrics_cost:
        report += "\nTokens computed per real token:\n\n| model | how | ratio |\n|---|---|---|\n"
        report += "\n".join(ratios_lines) + "\n"
    (args.out / ("metrics_cost.md" if args.metrics_cost else "mixed_lengths.md")).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
