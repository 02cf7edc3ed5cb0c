"""How many front-door copies a host's cores can feed, with the networks out of the way.

    python -m bench.front_door_copies [--copies 1 2 4] [--records 300000] [--rounds 3]
        [--seconds 6] [--networks instant|real]

On a GPU host the networks cost a small fraction of the front door's Python, so how many
copies parse and format in parallel decides the throughput. Here the networks are stand-ins
that answer at once (bench.stand_in: the repository's graphs rewritten to zeros), and for each
number of copies (O2V_FRONT_DOOR_COPIES) the same server runs:

* the documentation's Batch Transform (bench.batch_transform's job: JSON Lines of 3-29 tokens,
  MultiRecord, 1 MB payloads), `object2vec transform` over HTTP at 4 and 8 requests in flight;
* the mixed-lengths bodies (bench.mixed_lengths, the demo model's 20/19/4 tokens) at c16.

The client runs on the same cores, as in the other benchmarks. Every server is up at once and
each round measures them in turn; the table has the medians. Writes
runs/bench/front_door_copies.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.batch_transform import _timed, write_inputs
from bench.load import Workload, loadgen
from bench.local import RUNS, arguments
from bench.mixed_lengths import bodies
from bench.stand_in import instant_repository
from bench.suite import TRITON_RAW
from contract.facts import Facts
from server.common.settings import ServingSettings
from server.launcher.embedded import EmbeddedServer
from server.launcher.process import free_port

BULK_CONCURRENCY = (4, 8)


def main() -> None:
    parser = arguments(__doc__, 6.0)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--networks",
        choices=("instant", "real"),
        default="instant",
        help="stand-ins that answer at once (a GPU host), or the repository's own (this CPU)",
    )
    parser.add_argument("--out", type=Path, default=RUNS / "bench")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="front-door-copies-"))
    source = args.repository.resolve()
    logs = args.out / "front_door_copies"
    logs.mkdir(parents=True, exist_ok=True)
    found: dict[int, list[list[float]]] = {copies: [] for copies in args.copies}
    with contextlib.ExitStack() as stack:
        servers = {}
        # All up at once, each on its own copy of the repository (a server writes its configs
        # into it), and measured in turn, round after round: what else the host does lands on
        # every row alike.
        for copies in args.copies:
            repository = work / f"repository-{copies}"
            if args.networks == "instant":
                instant_repository(source, repository)
            else:
                shutil.copytree(source, repository)
            server = EmbeddedServer(
                repository,
                http_port=free_port(),
                grpc_port=free_port(),
                metrics_port=free_port(),
                settings=ServingSettings(front_door_copies=copies),
            )
            log = stack.enter_context(open(logs / f"server-{copies}.log", "w"))
            servers[copies] = stack.enter_context(server.start(stdout=log))
        vocab = Facts.load(repository).vocab_sizes[0]
        write_inputs(work / "in", args.records, 1, vocab)
        workload = Workload("demo", bodies("demo", vocab), 1)
        for round_ in range(args.rounds):
            for copies, server in servers.items():
                rates = [
                    _bulk_job(server, work, args.records, concurrency, logs)
                    for concurrency in BULK_CONCURRENCY
                ]
                url = f"http://{server.http_url}/v2/models/object2vec/infer"
                (row,) = loadgen(url, TRITON_RAW, workload, "", "demo", args.seconds, (16,))
                found[copies].append([*rates, row.instances_per_s, row.p50_ms, row.p99_ms])
                print(f"round {round_ + 1}, {copies} copies: {found[copies][-1]}", flush=True)
    lines = [
        f"{len(os.sched_getaffinity(0))} cores, "
        + (
            "networks that answer at once (bench.stand_in)"
            if args.networks == "instant"
            else "the repository's own networks, on these cores"
        )
        + "; "
        f"the bulk job: {args.records:,} records, 1 MB payloads; mixed lengths: "
        f"{args.seconds:g} s at c16; medians of {args.rounds} rounds.",
        "",
        "| copies | "
        + " | ".join(f"bulk job c{c} (records/s)" for c in BULK_CONCURRENCY)
        + " | mixed lengths c16 (req/s) | p50 / p99 ms |",
        "|---|" + "---|" * len(BULK_CONCURRENCY) + "---|---|",
    ]
    for copies, rounds in found.items():
        *bulk, rate, p50, p99 = np.median(np.array(rounds), axis=0)
        lines.append(
            f"| {copies} | "
            + " | ".join(f"{r:,.0f}" for r in bulk)
            + f" | {rate:,.0f} | {p50:.1f} / {p99:.1f} |"
        )
    report = "\n".join(lines) + "\n"
    (args.out / "front_door_copies.md").write_text(report)
    print(report)


def _bulk_job(server: EmbeddedServer, work: Path, records: int, concurrency: int, logs: Path):
    """Records/s of `object2vec transform` over HTTP with the documentation's settings."""
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))  # a fresh one: transform resumes
    command = [sys.executable, "-m", "client.cli", "transform", str(work / "in")]
    command += ["--output-path", str(out), "--url", server.http_url]
    command += ["--max-concurrent-transforms", str(concurrency)]
    command += ["--max-payload", "1", "--strategy", "MultiRecord", "--quiet"]
    command += ["--content-type", "application/jsonlines"]
    seconds, _ = _timed(command, logs / f"transform-{out.name}.log")
    return records / seconds


if __name__ == "__main__":
    main()
