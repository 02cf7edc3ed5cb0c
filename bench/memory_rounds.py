"""Memory under maximal requests: a high-water mark or a leak? Rounds of maximal requests.

    python -m bench.memory_rounds [--rounds 3] [--requests 200] [--clients 8]

Starts the embedded server, then sends `--rounds` rounds of `--requests` maximal requests
(10,000 instances, just under the 16 MB body limit; enc0 and pair alternating) from
`--clients` concurrent clients over HTTP (bench.load), and after each round (and `--settle`
seconds of quiet) prints the resident memory of the server's process group, of tritonserver
and of each stub, and the size of the stubs' shared-memory regions. A leak grows every round;
a high-water mark stops growing after the first. RSS counts a shared-memory page in every
process that touched it, as the issue's figures did.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson

from bench.load import load
from bench.local import arguments, embedded_server
from contract.names import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INSTANCES
from server.launcher.process import group_members, stubs_of


def maximal_bodies() -> list[bytes]:
    """Two maximal bodies: enc0 embeddings, and pairs; each just under the body limit."""
    tokens = [11_999 - i for i in range(230)]
    enc0 = orjson.dumps({"instances": [{"in0": tokens}] * DEFAULT_MAX_INSTANCES})
    pairs = orjson.dumps(
        {"instances": [{"in0": tokens[:115], "in1": tokens[115:]}] * DEFAULT_MAX_INSTANCES}
    )
    assert max(len(enc0), len(pairs)) < DEFAULT_MAX_BODY_BYTES
    return [enc0, pairs]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def snapshot(group: int) -> dict[str, float]:
    members = group_members(group)
    stubs = {s.pid: s for s in stubs_of(members)}
    out = {"group": sum(rss_mb(p) for p in members), "tritonserver": rss_mb(group)}
    for pid, stub in sorted(stubs.items(), key=lambda kv: kv[1].instance):
        out[stub.instance] = rss_mb(pid)
        try:
            out[f"{stub.instance} shm"] = os.path.getsize(stub.region) / 2**20
        except OSError:
            pass
    return out


def round_of(url: str, bodies: list[bytes], requests: int, clients: int) -> int:
    """Sends `requests` maximal requests; returns how many were not answered 200."""
    failures: list[int] = []
    headers = {"Inference-Header-Content-Length": "0"}
    asyncio.run(load(url, bodies, headers, clients, requests=requests, failures=failures))
    return len(failures)


def main() -> None:
    parser = arguments(__doc__, seconds=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--settle", type=float, default=10.0)
    args = parser.parse_args()
    bodies = maximal_bodies()
    sizes = ", ".join(f"{len(b) / 2**20:.1f} MB" for b in bodies)
    print(f"maximal bodies (enc0, pairs): {sizes}")
    with embedded_server(args.repository, "memory_rounds") as server:
        url = f"http://{server.http_url}/v2/models/object2vec/infer"
        group = server.process.pid
        before = snapshot(group)
        print("start   " + "  ".join(f"{k} {v:.0f}" for k, v in before.items()))
        previous = before["group"]
        for number in range(1, args.rounds + 1):
            started = time.monotonic()
            failed = round_of(url, bodies, args.requests, args.clients)
            took = time.monotonic() - started
            time.sleep(args.settle)
            now = snapshot(group)
            growth = (now["group"] - previous) / previous * 100
            print(
                f"round {number} ({took:.0f} s, {failed} not 200): group {now['group']:.0f} MB "
                f"({growth:+.1f}% on the round before)\n        "
                + "  ".join(f"{k} {v:.0f}" for k, v in now.items() if k != "group")
            )
            previous = now["group"]


if __name__ == "__main__":
    main()
