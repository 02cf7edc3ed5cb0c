"""A small request beside a maximal one: how long the small one waits.

    python -m bench.small_beside_maximal [--repository model_repository] [--seconds 10]

The embedded server on the repository. First the documentation's example alone, one at a time
(p50/p99); then the same while another client keeps sending maximal requests (the instance
limit, 10,000 instances of the example's first sequence, about 0.9 MB); and the maximal
request's own latency. Both clients over gRPC, same machine, one run.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient

from bench.local import arguments, embedded_server
from client.api import body_tensor
from contract.example import DOC_EXAMPLE_BODY as DOC_EXAMPLE
from contract.names import DEFAULT_MAX_INSTANCES, JSON

FIRST = json.loads(DOC_EXAMPLE)["instances"][0]
MAXIMAL = json.dumps({"instances": [FIRST] * DEFAULT_MAX_INSTANCES}).encode()


def call(client: grpcclient.InferenceServerClient, body: bytes) -> float:
    tensor = body_tensor(grpcclient, [body])
    start = time.perf_counter()
    client.infer("object2vec", [tensor], parameters={"content_type": JSON}, client_timeout=120)
    return time.perf_counter() - start


def small_latencies(url: str, seconds: float) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    stop, out = time.perf_counter() + seconds, []
    while time.perf_counter() < stop:
        out.append(call(client, DOC_EXAMPLE))
    return np.array(out)


def main() -> None:
    parser = arguments(__doc__, seconds=10.0)
    args = parser.parse_args()
    with embedded_server(args.repository, "small_beside_maximal") as server:
        small_latencies(server.grpc_url, 1.0)  # warm-up
        alone = small_latencies(server.grpc_url, args.seconds)
        stop, big = threading.Event(), []

        def maximal() -> None:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            while not stop.is_set():
                big.append(call(client, MAXIMAL))

        thread = threading.Thread(target=maximal)
        thread.start()
        time.sleep(1.0)
        beside = small_latencies(server.grpc_url, args.seconds)
        stop.set()
        thread.join()
    big_ms = np.array(big) * 1e3
    print(f"maximal request: {len(MAXIMAL) / 1e6:.2f} MB, {DEFAULT_MAX_INSTANCES} instances")
    print(f"{'':26}{'n':>7}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, lat in (("small alone", alone * 1e3), ("small beside maximal", beside * 1e3)):
        print(
            f"{name:26}{len(lat):>7}{np.percentile(lat, 50):>10.2f}"
            f"{np.percentile(lat, 99):>10.2f}{lat.max():>10.2f}"
        )
    print(
        f"{'maximal itself':26}{len(big_ms):>7}{np.percentile(big_ms, 50):>10.2f}"
        f"{np.percentile(big_ms, 99):>10.2f}{big_ms.max():>10.2f}"
    )


if __name__ == "__main__":
    main()
