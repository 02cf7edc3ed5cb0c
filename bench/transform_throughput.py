"""Batch Transform throughput: 100,000 MovieLens pair lines, one server and two, local and Ray.

    python -m bench.transform_throughput [--repository model_repository] [--records 100000]

The lines are `{"in0": [user], "in1": [movie]}` from ../shared/data/ml-100k/ua.base (cycled to
the record count; random ids of the same ranges when the data is absent). The servers are
embedded tritonservers on this machine, so "two servers" share its cores with each other and
with the client: the figure shows the client's overhead and the spreading, not a second host.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import orjson

from client.batching import TransformOptions
from client.transform import transform
from server.launcher.embedded import EmbeddedServer
from server.launcher.process import free_port

UA_BASE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "ua.base"


def movielens_lines(count: int) -> tuple[list[bytes], str]:
    if UA_BASE.exists():
        pairs = np.loadtxt(UA_BASE, dtype=np.int64, usecols=(0, 1))
        source = str(UA_BASE)
    else:
        rng = np.random.default_rng(0)
        pairs = np.stack([rng.integers(1, 944, 90570), rng.integers(1, 1683, 90570)], axis=1)
        source = "synthetic ids (ua.base absent)"
    rows = pairs[np.arange(count) % len(pairs)]
    return [orjson.dumps({"in0": [int(u)], "in1": [int(m)]}) for u, m in rows], source


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--max-payload", type=float, default=1.0, help="MB, as in the docs")
    parser.add_argument("--max-concurrent-transforms", type=int, default=2)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()

    lines, source = movielens_lines(args.records)
    work = Path(tempfile.mkdtemp(prefix="transform-bench-"))
    per_file = -(-len(lines) // args.files)
    for k in range(args.files):
        chunk = lines[k * per_file : (k + 1) * per_file]
        (work / "in").mkdir(exist_ok=True)
        (work / "in" / f"part-{k:02d}.jsonl").write_bytes(b"".join(x + b"\n" for x in chunk))
    print(f"{len(lines)} pair lines from {source} in {args.files} files", flush=True)

    logs = [open(work / f"server-{i}.log", "w") for i in range(2)]  # noqa: SIM115
    servers = [
        EmbeddedServer(
            args.repository,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
        )
        for i in range(2)
    ]
    results = []
    try:
        for server, log in zip(servers, logs, strict=True):
            server.start(stdout=log)
        runs = [("local", 1), ("local", 2)] + ([] if args.skip_ray else [("ray", 1), ("ray", 2)])
        for engine, count in runs:
            out = work / f"out-{engine}-{count}"
            options = TransformOptions(
                urls=tuple(s.http_url for s in servers[:count]),
                output_path=str(out),
                strategy="MultiRecord",
                max_payload_mb=args.max_payload,
                max_concurrent_transforms=args.max_concurrent_transforms,
                progress=False,
            )
            summary = transform(str(work / "in"), options, engine=engine)
            assert summary.ok, summary.report()
            rate = summary.records / summary.seconds
            results.append((engine, count, summary.records, summary.seconds, rate))
            print(
                f"{engine:5} {count} server(s): {summary.records} records in "
                f"{summary.seconds:.1f} s = {rate:,.0f} records/s",
                flush=True,
            )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = results[0][4]
    for engine, count, _, _, rate in results:
        print(f"  {engine:5} x{count}: {rate / base:.2f}x the local engine on one server")


if __name__ == "__main__":
    main()
