"""A bounded soak of the service boundary: good traffic beside bad, errors and memory growth.

    python -m bench.soak [--seconds 600] [--concurrency 32] [--bad 0.1]

Starts the embedded server on the repository (free ports, loopback), then `--concurrency`
asyncio clients send for `--seconds`: the documentation's example (checked against its answer
alone) and, with probability `--bad`, a bad request of one of several kinds (malformed JSON,
bad ids, a parameter of the wrong type, several bodies one of them bad, too many instances,
bad ids straight to enc0, an empty sequence straight to enc1). Every 30 s and at the end it
prints requests, good requests failed or changed, bad requests answered with the wrong class,
and the resident memory of the server's whole process group (tritonserver and its stubs).
Not part of CI: it runs for minutes by design.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np
import orjson

from bench.local import arguments, embedded_server
from contract.body import BODY_DATATYPE, encode_bodies
from contract.example import DOC_EXAMPLE_BODY as DOC_EXAMPLE
from contract.names import JSON
from server.launcher.process import group_members
from server.sagemaker.adapter import binary_answer, infer_request


def group_rss_mb(group: int) -> float:
    total = 0
    for pid in group_members(group):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _with_header(header: dict, rows: list[bytes]) -> tuple[bytes, dict]:
    array = encode_bodies(rows)
    header["inputs"][0]["shape"] = list(array.shape)
    header["inputs"][0]["parameters"] = {"binary_data_size": array.nbytes}
    head = orjson.dumps(header)
    data = head + array.tobytes()
    return data, {"Inference-Header-Content-Length": str(len(head))}


def bad_requests(base: str) -> list[tuple[str, str, bytes, dict]]:
    """(kind, url, data, headers) of each kind of bad request."""
    front = f"{base}/v2/models/object2vec/infer"
    raw = {"Inference-Header-Content-Length": "0"}
    body_input = {"name": "body", "shape": [1, 1], "datatype": BODY_DATATYPE}
    kinds = [
        ("malformed", front, b'{"instances": [{"in0": [1', raw),
        ("bad ids", front, b'{"instances": [{"in0": [-5, 99999]}]}', raw),
        ("true as id", front, b'{"in0": [true]}', raw),
        ("too many instances", front, orjson.dumps({"instances": [{"in0": [1]}] * 10_001}), raw),
    ]
    data, headers = _with_header(
        {"inputs": [dict(body_input)], "parameters": {"content_type": 5}}, [DOC_EXAMPLE]
    )
    kinds.append(("parameter type", front, data, headers))
    data, headers = _with_header({"inputs": [dict(body_input, shape=[2, 1])]}, [DOC_EXAMPLE, b"{"])
    kinds.append(("two bodies, one bad", front, data, headers))
    network = {"Content-Type": JSON}
    enc0 = orjson.dumps(
        {"inputs": [{"name": "tokens", "shape": [1, 2], "datatype": "INT64", "data": [-5, 10**6]}]}
    )
    enc1 = orjson.dumps(
        {"inputs": [{"name": "tokens", "shape": [1, 0], "datatype": "INT64", "data": []}]}
    )
    kinds.append(("enc0 bad ids", f"{base}/v2/models/enc0/infer", enc0, network))
    kinds.append(("enc1 empty", f"{base}/v2/models/enc1/infer", enc1, network))
    return kinds


def _same(answer: bytes, expected: bytes) -> bool:
    """Equal, up to float noise between batch shapes."""
    if answer == expected:
        return True
    a, b = orjson.loads(answer)["predictions"], orjson.loads(expected)["predictions"]
    return len(a) == len(b) and all(
        np.allclose(x["embeddings"], y["embeddings"], atol=1e-5) for x, y in zip(a, b, strict=True)
    )


async def soak(base: str, seconds: float, concurrency: int, bad: float, group: int) -> Counter:
    good_data, good_length = infer_request(DOC_EXAMPLE, JSON, None)
    good_headers = {"Inference-Header-Content-Length": str(good_length)}
    front = f"{base}/v2/models/object2vec/infer"
    kinds = bad_requests(base)
    counts: Counter = Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async with session.post(front, data=good_data, headers=good_headers) as response:
            raw = await response.read()
            expected = binary_answer(raw, int(response.headers["Inference-Header-Content-Length"]))
        stop = time.monotonic() + seconds
        rng = random.Random(0)

        async def client() -> None:
            while time.monotonic() < stop:
                if rng.random() < bad:
                    kind, url, data, headers = rng.choice(kinds)
                    async with session.post(url, data=data, headers=headers) as response:
                        await response.read()
                        status = response.status
                    counts["bad sent"] += 1
                    # enc0/enc1 answer bad ids with NaN rows (200): defined, harmless.
                    if status >= 500:
                        counts[f"bad answered {status}: {kind}"] += 1
                    continue
                try:
                    async with session.post(front, data=good_data, headers=good_headers) as r:
                        raw = await r.read()
                        status = r.status
                        length = r.headers.get("Inference-Header-Content-Length")
                except aiohttp.ClientError:
                    counts["good failed (connection)"] += 1
                    continue
                counts["good sent"] += 1
                if status != 200:
                    counts[f"good failed {status}"] += 1
                elif not _same(binary_answer(raw, int(length)), expected):
                    counts["good changed"] += 1

        async def report() -> None:
            start_rss = group_rss_mb(group)
            counts["rss start MB"] = round(start_rss)
            began = time.monotonic()
            while time.monotonic() < stop:
                await asyncio.sleep(min(30, max(0.1, stop - time.monotonic())))
                rss = group_rss_mb(group)
                print(
                    f"{time.monotonic() - began:6.0f} s  good {counts['good sent']:>8}  "
                    f"bad {counts['bad sent']:>7}  rss {rss:7.0f} MB "
                    f"(+{rss - start_rss:.0f})",
                    flush=True,
                )
            counts["rss end MB"] = round(group_rss_mb(group))

        await asyncio.gather(report(), *(client() for _ in range(concurrency)))
    return counts


def main() -> None:
    parser = arguments(__doc__, seconds=600.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--bad", type=float, default=0.1, help="fraction of bad requests")
    args = parser.parse_args()
    with embedded_server(args.repository, "soak") as server:
        counts = asyncio.run(
            soak(
                f"http://{server.http_url}",
                args.seconds,
                args.concurrency,
                args.bad,
                server.launcher.process.pid,
            )
        )
    for key, value in sorted(counts.items()):
        print(f"{key:40} {value}")
    failed = sum(v for k, v in counts.items() if k.startswith(("good failed", "good changed")))
    print(
        f"good requests failed or changed: {failed} of {counts['good sent']}; "
        f"RSS {counts['rss start MB']} -> {counts['rss end MB']} MB"
    )


if __name__ == "__main__":
    main()
