"""The hosted documentation's Batch Transform, side by side with a naive script and service.

    python -m bench.batch_transform [--records 300000] [--concurrency 2 4]

The job: `in0` lines of 3-29 tokens in three files, MultiRecord, 1 MB payloads, JSON Lines, as
the documentation's encoder-embedding example. Each row runs as its own process, timed from
its start to its exit (a short job pays the client's start-up too), one after the other on the
same cores:

* `object2vec transform` against the embedded server (Triton's HTTP port), and through the
  SageMaker adapter (`--protocol sagemaker`), at each concurrency;
* `bench.naive script` against `bench.naive service` (FastAPI + ONNX Runtime) on the same ONNX
  files, at each concurrency;
* ONNX Runtime alone on the same instances, cut as the front door cuts a 1 MB body: the limit
  of this machine for this job.

Every output is checked against the naive pair's, line by line (largest difference printed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from bench.load import wait_for
from bench.local import RUNS, arguments
from bench.timing import repeat, timed
from client.batching import MB, pack
from contract.facts import Facts
from contract.names import ENCODER_OUTPUT, FRONT_DOOR, JSONLINES
from server.frontdoor.ragged import EMPTY, Ragged
from server.launcher.embedded import PROJECT_ROOT
from server.launcher.process import free_port


@dataclass
class Row:
    system: str
    concurrency: int
    records: int
    seconds: float
    cpu_seconds: float  # the client process's own CPU time
    difference: float | None = None

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def write_inputs(folder: Path, records: int, files: int, vocab: int, seed: int = 0) -> None:
    """`records` `{"in0": [...]}` lines of 3-29 tokens in `files` files."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 30, records)
    tokens = [rng.integers(0, vocab, n).tolist() for n in lengths]
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-records // files)
    for k in range(files):
        chunk = tokens[k * per_file : (k + 1) * per_file]
        lines = b"".join(orjson.dumps({"in0": t}) + b"\n" for t in chunk)
        (folder / f"part-{k}.jsonl").write_bytes(lines)


def _timed(command: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process; raises when it fails."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{command[:4]} failed ({process.returncode}): see {log}")
    return seconds, usage.ru_utime + usage.ru_stime


def _vectors(folder: Path) -> np.ndarray:
    """Every answer line's embedding, in file and line order, whichever format wrote it."""
    rows = []
    for path in sorted(folder.glob("*.out")):
        for line in path.read_bytes().splitlines():
            answer = orjson.loads(line)
            rows.append(answer["embeddings"])
    return np.asarray(rows, dtype=np.float32)


def onnxruntime_alone(repository: Path, folder: Path, max_payload_mb: float) -> dict[str, float]:
    """Seconds of enc0's session runs alone over every line, the lines of each body (as the
    transform packs them) padded and cut only at the token budget, and cut as the front door
    cuts them (by measured cost, within the budget)."""
    from server.common.onnx_sessions import network_runner
    from server.common.settings import ServingSettings
    from server.frontdoor.dispatch import measure_costs, plan
    from server.frontdoor.payload import ParsedRequest

    run = network_runner(repository, 0, 0, "auto")
    costs = measure_costs(run)
    facts = Facts.load(repository)
    bodies = []
    for path in sorted(folder.iterdir()):
        lines = path.read_bytes().splitlines()
        for group, _ in pack(lines, JSONLINES, "MultiRecord", int(max_payload_mb * MB)):
            tokens = [orjson.loads(lines[i])["in0"][: facts.max_seq_lens[0]] for i in group]
            sides = (Ragged.of(tokens), EMPTY)
            bodies.append(ParsedRequest(np.zeros(len(tokens), dtype=np.int8), sides, JSONLINES))
    seconds = {}
    for name, how in (
        ("padded, cut at the token budget only", None),
        ("cut as the front door cuts", costs),
    ):
        tokens = ServingSettings().network_max_batch_tokens
        flat = run.flat if how else None
        calls = [c for body in bodies for c in plan([body], 1 << 30, how, tokens, flat)]
        run(calls[0].model, calls[0].feed, ENCODER_OUTPUT)  # warm-up
        start = time.perf_counter()
        for call in calls:
            run(call.model, call.feed, ENCODER_OUTPUT)
        seconds[f"{name} ({len(calls)} calls)"] = time.perf_counter() - start
    return seconds


def served(http: str, grpc: str, body: bytes, rounds: int = 7) -> dict[str, dict[str, float]]:
    """Per protocol, median milliseconds of one body answered (seen by the client, requests one
    at a time) and Triton's own per-request times for the front door (its statistics)."""
    from client.api import Client

    def stats() -> dict[str, int]:
        with urllib.request.urlopen(f"http://{http}/v2/models/{FRONT_DOOR}/stats") as answer:
            found = orjson.loads(answer.read())["model_stats"][0]["inference_stats"]
        return {k: int(v["ns"]) for k, v in found.items()} | {"n": found["success"]["count"]}

    out = {}
    for protocol, url in (("http", http), ("grpc", grpc)):
        with Client(url, protocol) as client:
            client.invoke(body, JSONLINES)
            before = stats()
            times = [s * 1e3 for s in repeat(lambda: client.invoke(body, JSONLINES), rounds)]
            after = stats()
        n = after["n"] - before["n"]
        triton = {k: (after[k] - before[k]) / n / 1e6 for k in TRITON_STEPS}
        out[protocol] = {"client sees": float(np.median(times)), **triton}
    return out


TRITON_STEPS = ("queue", "compute_input", "compute_infer", "compute_output")


def breakdown(repository: Path, body: bytes, rounds: int = 7) -> dict[str, float]:
    """Median milliseconds of each step of the front door's path for one body, in process,
    with the garbage collector as the front door sets it (this process keeps it so)."""
    from server.common.memory import quiet_collector
    from server.common.onnx_sessions import network_runner
    from server.common.settings import ServingSettings
    from server.frontdoor.dispatch import measure_costs, plan, run_calls, scatter
    from server.frontdoor.payload import Limits, format_response, parse_request

    settings = ServingSettings()
    limits = Limits.of(Facts.load(repository), settings.max_body_bytes)
    run = network_runner(repository, 0, 0, "auto")
    costs = measure_costs(run)
    lines = body.splitlines()
    times: dict[str, list[float]] = {}
    quiet_collector()

    def step(name, f, *a):
        took, out = timed(f, *a)
        times.setdefault(name, []).append(took * 1e3)
        return out

    for _ in range(rounds):
        step("orjson.loads of every line (reference)", lambda: list(map(orjson.loads, lines)))
        parsed = step("parse_request", parse_request, body, JSONLINES, None, limits)
        calls = step(
            "plan",
            plan,
            [parsed],
            settings.network_max_batch_size,
            costs,
            settings.network_max_batch_tokens,
            run.flat,
        )
        done = step("ONNX Runtime", run_calls, calls, run)
        answers = step("scatter", scatter, [parsed], *done)
        step("format_response", format_response, answers[0], parsed.accept)
    return {name: float(np.median(t)) for name, t in times.items()}


def _start(command: list[str], log: Path, ready: str, env: dict | None = None):
    out = open(log, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env
    )
    return wait_for(ready, process, command[2], timeout=120)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = arguments(__doc__, 0)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--max-payload", type=float, default=1.0, help="MB, as in the docs")
    parser.add_argument("--skip-sagemaker", action="store_true")
    parser.add_argument("--out", type=Path, default=RUNS / "bench", help="report and logs here")
    args = parser.parse_args()
    repository = args.repository.resolve()
    facts = Facts.load(repository)
    work = Path(tempfile.mkdtemp(prefix="batch-transform-"))
    logs = args.out / "batch_transform"
    logs.mkdir(parents=True, exist_ok=True)
    write_inputs(work / "in", args.records, args.files, facts.vocab_sizes[0])
    print(f"{args.records} in0 lines of 3-29 tokens in {args.files} files ({work / 'in'})")
    lines = next(iter(sorted((work / "in").iterdir()))).read_bytes().splitlines()
    first, _ = next(pack(lines, JSONLINES, "MultiRecord", int(args.max_payload * MB)))
    body = b"".join(lines[i] + b"\n" for i in first)  # the first request of the job
    python = sys.executable
    rows: list[Row] = []
    job = [
        "--max-payload", str(args.max_payload), "--strategy", "MultiRecord",
        "--content-type", "application/jsonlines", "--quiet",
    ]  # fmt: skip

    def transform(system: str, url: str, protocol: str, c: int, defaults: bool = False) -> None:
        """The job with the documentation's settings, or with the command's own defaults
        (then only the URL is given)."""
        out = work / f"out-{len(rows)}"
        command = [python, "-m", "client.cli", "transform", str(work / "in"), "--output-path"]
        command += [str(out), "--url", url, "--protocol", protocol]
        if not defaults:
            command += ["--max-concurrent-transforms", str(c), *job]
        seconds, cpu = _timed(command, logs / f"transform-{len(rows)}.log")
        rows.append(Row(system, c, args.records, seconds, cpu, _difference(out)))
        print(f"  {system} c{c}: {rows[-1].rate:,.0f} records/s", flush=True)

    def _difference(out: Path) -> float:
        reference = work / f"out-naive-{args.concurrency[0]}"  # every naive run answers alike
        return float(np.abs(_vectors(out) - _vectors(reference)).max())

    port = free_port()
    service = _start(
        [python, "-m", "bench.naive", "service", "--repository", str(repository)]
        + ["--port", str(port)],
        logs / "naive-service.log",
        f"http://localhost:{port}/ping",
    )
    try:
        for c in args.concurrency:
            out = work / f"out-naive-{c}"
            command = [python, "-m", "bench.naive", "script", str(work / "in"), str(out)]
            command += ["--url", f"localhost:{port}", "--connections", str(c)]
            command += ["--max-payload", str(args.max_payload)]
            seconds, cpu = _timed(command, logs / f"naive-{c}.log")
            rows.append(Row("naive script + naive service", c, args.records, seconds, cpu))
            print(f"  naive c{c}: {rows[-1].rate:,.0f} records/s", flush=True)
    finally:
        _stop(service)

    http, grpc = free_port(), free_port()
    triton = _start(
        [python, "-m", "server", "--model-repository", str(repository)]
        + ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(free_port())],
        logs / "embedded.log",
        f"http://localhost:{http}/v2/models/object2vec/ready",
    )
    try:
        for c in args.concurrency:
            transform("object2vec transform (Triton HTTP)", f"localhost:{http}", "http", c)
            transform("object2vec transform (Triton gRPC)", f"localhost:{grpc}", "grpc", c)
        # its defaults: 4 requests in flight, 6 MB (10,000 lines at most) a request
        defaults = "object2vec transform (Triton HTTP), its defaults"
        transform(defaults, f"localhost:{http}", "http", 4, defaults=True)
        latency = served(f"localhost:{http}", f"localhost:{grpc}", body)
        one = work / "one"
        one.mkdir()
        (one / "line.jsonl").write_bytes(lines[0] + b"\n")
        start_up = []
        for k in range(3):
            command = [python, "-m", "client.cli", "transform", str(one), "--output-path"]
            command += [str(work / f"one-out-{k}"), "--url", f"localhost:{http}", "--quiet"]
            start_up.append(_timed(command, logs / "start-up.log")[0])
    finally:
        _stop(triton)

    if not args.skip_sagemaker:
        sagemaker = free_port()
        adapter = _start(
            [python, "-m", "server", "--sagemaker", "--model-repository", str(repository)]
            + ["--http-port", str(free_port()), "--grpc-port", str(free_port())]
            + ["--metrics-port", str(free_port())],
            logs / "sagemaker.log",
            f"http://localhost:{sagemaker}/ping",
            env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(sagemaker)},
        )
        try:
            for c in args.concurrency:
                transform(
                    "object2vec transform (SageMaker adapter)",
                    f"localhost:{sagemaker}",
                    "sagemaker",
                    c,
                )
        finally:
            _stop(adapter)

    alone = onnxruntime_alone(repository, work / "in", args.max_payload)
    steps = breakdown(repository, body)
    report = _report(rows, args.records, alone)
    report += f"\nOne request of the job ({len(first)} lines, {len(body):,} bytes), in process "
    report += "(median ms):\n\n| step | ms |\n|---|---|\n"
    report += "".join(f"| {name} | {ms:.1f} |\n" for name, ms in steps.items())
    report += "\nServed, one at a time (median ms; Triton's statistics for the front door):\n\n"
    report += "| protocol | client sees | " + " | ".join(TRITON_STEPS) + " |\n"
    report += "|---|---|" + "---|" * len(TRITON_STEPS) + "\n"
    for protocol, times in latency.items():
        report += f"| {protocol} | " + " | ".join(f"{v:.1f}" for v in times.values()) + " |\n"
    report += f"\nClient start-up, a one-line job: {np.median(start_up):.2f} s (median of 3)\n"
    (args.out / "batch_transform.md").write_text(report)
    print(report)


def _report(rows: list[Row], records: int, alone: dict[str, float]) -> str:
    naive = {r.concurrency: r.rate for r in rows if r.system.startswith("naive")}
    lines = [
        "| system | concurrent | records/s | vs naive | client CPU share | max difference |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = "" if r.difference is None else f"{r.difference:.1e}"
        ratio = f"{r.rate / naive[r.concurrency]:.2f}x" if r.concurrency in naive else ""
        lines.append(
            f"| {r.system} | {r.concurrency} | {r.rate:,.0f} | {ratio}"
            f" | {r.cpu_seconds / r.seconds:.0%} of one core | {diff} |"
        )
    for how, seconds in alone.items():
        lines.append(f"| ONNX Runtime alone, {how} | | {records / seconds:,.0f} | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
