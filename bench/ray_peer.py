"""The peer a user picks for server-side batching without Triton: Ray Serve with @serve.batch.

    python -m bench.ray_peer MODEL_REPOSITORY --port 8100

One replica (ONNX Runtime on every core, the same CPU budget as Triton's) answers the hosted format
on POST /invocations: each request is parsed by the front door's own module
(server.frontdoor.payload), the parsed requests of one @serve.batch batch are routed and run
together (server.frontdoor.dispatch, the same ONNX files) and each answer is formatted as the front
door does.
POST /configure?max_batch_size=N&wait_s=S changes the batching in place (the benchmark's sweep).
SIGTERM or SIGINT shuts Serve and Ray down.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from bench.peers import Pipeline
from contract.errors import ServiceError
from contract.names import JSON
from server.common.onnx_sessions import network_runner
from server.frontdoor.payload import format_response, parse_request


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
class Object2VecPeer:
    def __init__(self, repository: str, max_batch_size: int, wait_s: float):
        self.pipeline = Pipeline(Path(repository), network_runner(Path(repository)))
        self.configure(max_batch_size, wait_s)

    def configure(self, max_batch_size: int, wait_s: float) -> None:
        self.answer_batch.set_max_batch_size(max_batch_size)
        self.answer_batch.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.001)
    async def answer_batch(self, requests: list) -> list:
        answers = self.pipeline.run_parsed(requests)
        return [
            a if isinstance(a, BaseException) else format_response(a, r.accept)
            for a, r in zip(answers, requests, strict=True)
        ]

    async def __call__(self, request: Request) -> Response:
        if request.url.path.endswith("/configure"):
            query = request.query_params
            self.configure(int(query["max_batch_size"]), float(query["wait_s"]))
            return Response(b"{}", media_type=JSON)
        if request.method == "GET":
            return Response(b"{}", media_type=JSON)
        try:
            parsed = parse_request(
                await request.body(),
                request.headers.get("content-type"),
                request.headers.get("accept"),
                self.pipeline.limits,
            )
        except ServiceError as error:
            return Response(str(error).encode(), status_code=400)
        answer = await self.answer_batch(parsed)
        if isinstance(answer, BaseException):
            return Response(f"internal error: {answer}".encode(), status_code=500)
        return Response(answer, media_type=parsed.accept or JSON)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("repository", type=Path)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--wait-s", type=float, default=0.001)
    args = parser.parse_args(argv)
    import ray

    cores = len(os.sched_getaffinity(0))
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(
        Object2VecPeer.bind(str(args.repository.resolve()), args.max_batch_size, args.wait_s),
        route_prefix="/",
    )
    print(f"ray serve peer ready on http://127.0.0.1:{args.port}/invocations", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
