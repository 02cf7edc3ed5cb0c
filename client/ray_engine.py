"""Batch Transform on Ray Data, for when one client machine is not enough.

Input lines become a dataset of (file, line, text) rows; a pool of actors, each holding one
client per server, packs its batches into MultiRecord (or SingleRecord) requests and sends them,
retrying transient failures on the next server with backoff. The driver gathers the answers and
writes each file as the local engine does (temporary name, then rename).
"""

from __future__ import annotations

import os
import time

import numpy as np
import orjson

from client.api import Client, Object2VecError
from client.batching import (
    Failure,
    TransformOptions,
    at_line,
    make_body,
    pack,
    split_answer,
)

BATCH_ROWS = 2048


def connect(address: str | None = None) -> None:
    """ray.init on the given address, else RAY_ADDRESS, else a local Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS"),
            ignore_reinit_error=True,
            log_to_driver=False,
            include_dashboard=False,
        )


class _Sender:
    """A Ray actor: one client per server, requests spread round-robin."""

    def __init__(self, options: TransformOptions):
        self.options = options
        self.clients = [Client(url, options.protocol, options.timeout) for url in options.urls]
        self.turn = 0

    def _send(self, body: bytes, count: int) -> list[bytes]:
        opts = self.options
        for attempt in range(opts.max_attempts):
            client = self.clients[self.turn % len(self.clients)]
            self.turn += 1
            try:
                answer = client.invoke(body, opts.request_type, opts.accept)
                return split_answer(answer, opts.answer_type, count)
            except Object2VecError as error:
                if not error.retryable or attempt + 1 == opts.max_attempts:
                    raise
                time.sleep(min(30.0, 0.25 * 2**attempt))
        raise AssertionError("unreachable")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        opts = self.options
        lines = [bytes(t) for t in batch["text"]]
        answers: list[bytes] = [b""] * len(lines)
        errors: list[str] = [""] * len(lines)
        lost = np.zeros(len(lines), dtype=bool)
        for indexes, why in pack(
            lines, opts.content_type, opts.strategy, opts.max_payload_bytes, opts.max_records
        ):
            if why:
                errors[indexes[0]] = why
                continue
            try:
                outputs = self._send(
                    make_body([lines[i] for i in indexes], opts.content_type), len(indexes)
                )
            except Object2VecError as error:
                if error.retryable or len(indexes) == 1:
                    for i in indexes:
                        errors[i], lost[i] = error.message, error.retryable
                    continue
                outputs = []
                for i in indexes:  # a rejected batch: find the bad lines one by one
                    try:
                        outputs += self._send(make_body([lines[i]], opts.content_type), 1)
                    except Object2VecError as single:
                        errors[i], lost[i] = single.message, single.retryable
                        outputs.append(b"")
            for i, output in zip(indexes, outputs, strict=True):
                answers[i] = output
        return {
            "file": batch["file"],
            "line": batch["line"],
            "answer": np.array(answers, dtype=object),
            "error": np.array(errors, dtype=object),
            "lost": lost,
        }


class RayEngine:
    def __init__(self, options: TransformOptions):
        self.options = options

    def run(self, jobs, write, bar, summary) -> None:
        import ray.data

        connect()
        rows = [
            {"file": f, "line": i, "text": line}
            for f, job in enumerate(jobs)
            for i, line in enumerate(job.lines)
        ]
        for job in jobs:
            if not job.lines:
                write(job)
        if not rows:
            return
        actors = max(1, len(self.options.urls) * self.options.max_concurrent_transforms)
        dataset = ray.data.from_items(rows).map_batches(
            _Sender,
            fn_constructor_kwargs={"options": self.options},
            batch_size=BATCH_ROWS,
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_format="numpy",
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for f, i, answer, error, lost in zip(
                batch["file"],
                batch["line"],
                batch["answer"],
                batch["error"],
                batch["lost"],
                strict=True,
            ):
                job = jobs[int(f)]
                if error:
                    error = at_line(str(error), int(i) + 1)
                    summary.failures.append(Failure(job.path, int(i) + 1, error))
                    job.lost = job.lost or bool(lost)
                    answer = orjson.dumps({"error": str(error)})
                job.answers[int(i)] = answer
                job.pending -= 1
                bar.update(1)
                if job.pending == 0:
                    write(job)
