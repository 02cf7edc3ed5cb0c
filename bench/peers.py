"""What Triton is compared with: the same request format answered without Triton.

* `Pipeline` with ONNX Runtime: the body parsed and formatted by the front door's own modules,
  the networks run in-process. Fed many requests at once, it is the ceiling (no server at all).
* `Pipeline` with PyTorch eager: the same, on the PyTorch model.
* `fastapi_app`: what a user would build instead, a plain JSON-over-HTTP service (FastAPI on
  uvicorn) that answers each request with the ONNX Runtime pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response

from bench.timing import rate
from contract.errors import ServiceError
from contract.facts import Facts
from contract.names import ENCODER_MODELS, JSON, PAIR_MODEL
from server.common.onnx_sessions import network_runner
from server.common.settings import ServingSettings
from server.frontdoor.dispatch import Runner, dispatch, measure_costs
from server.frontdoor.payload import Limits, format_response, parse_request


def torch_runner(checkpoint_path: Path, threads: int = 0) -> Runner:
    import torch

    from export import checkpoint

    if threads:
        torch.set_num_threads(threads)
    model = checkpoint.load(checkpoint_path)

    @torch.no_grad()
    def run(name: str, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
        tensors = [torch.from_numpy(a) for a in inputs.values()]
        if name == PAIR_MODEL:
            return model.scores(*tensors).numpy()
        return model.encode(ENCODER_MODELS.index(name), tensors[0]).numpy()

    return run


class Pipeline:
    """Parse, run, format: the front door's work without Triton, calls cut by the networks'
    measured costs and encoders in their flat forms as the front door runs them (`measured`
    False: one padded call per network)."""

    def __init__(self, repository: Path, run: Runner, measured: bool = True):
        self.limits = Limits.of(Facts.load(repository), ServingSettings().max_body_bytes)
        self.run = run
        self.flat = getattr(run, "flat", None) if measured else None
        self.costs = measure_costs(run, skip=self.flat or ()) if measured else None

    def run_parsed(self, requests: list) -> list:
        """Each parsed request's answers, or its error."""
        settings = ServingSettings()
        return dispatch(
            requests,
            self.run,
            settings.network_max_batch_size,
            self.costs,
            settings.network_max_batch_tokens,
            self.flat,
        )

    def answer_many(self, bodies: Sequence[bytes], content_type: str | None = None) -> list[bytes]:
        requests = [parse_request(b, content_type, None, self.limits) for b in bodies]
        answers = []
        for rows, request in zip(self.run_parsed(requests), requests, strict=True):
            if isinstance(rows, BaseException):
                raise rows
            answers.append(format_response(rows, request.accept))
        return answers

    def answer(self, body: bytes, content_type: str | None = None) -> bytes:
        return self.answer_many([body], content_type)[0]


def fastapi_app(repository: Path, threads: int = 1):
    """A FastAPI service answering the hosted request format on POST /invocations."""
    # one call per network per request, padded within it: what a user would build
    pipeline = Pipeline(repository, network_runner(repository, threads), measured=False)
    app = FastAPI()

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        body = await request.body()
        try:
            answer = pipeline.answer(body, request.headers.get("content-type"))
        except ServiceError as error:
            raise HTTPException(400, str(error)) from None
        return Response(answer, media_type=JSON)

    @app.get("/ping")
    async def ping() -> dict:
        return {"status": "ok"}

    return app


def app_from_environment():
    """uvicorn factory: `uvicorn --factory bench.peers:app_from_environment`."""
    return fastapi_app(
        Path(os.environ["O2V_PEER_REPOSITORY"]), int(os.environ.get("O2V_PEER_THREADS", "1"))
    )


def best_batch_rate(
    call: Callable[[int], None], sizes: Sequence[int], seconds: float
) -> tuple[int, float]:
    """(batch size, requests per second) of the fastest batch size."""
    best = (sizes[0], 0.0)
    for size in sizes:
        call(size)  # warm-up
        per_second = rate(lambda size=size: call(size), seconds, per_call=size)
        if per_second > best[1]:
            best = (size, per_second)
    return best
