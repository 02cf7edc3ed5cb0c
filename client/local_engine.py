"""The local Batch Transform engine: asyncio in this process, many servers at once.

`max_concurrent_transforms` workers per server share one queue of requests. A request that
fails for a transient reason goes back in the queue for any server while the one that failed
backs off; a server in back-off takes no work. A request the server rejects is split into its
lines to find the bad ones.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import orjson
from tqdm import tqdm

from client.api import AsyncClient, Object2VecError
from client.batching import (
    Failure,
    FileJob,
    Summary,
    TransformOptions,
    at_line,
    make_body,
    pack,
    split_answer,
)


@dataclass
class _Work:
    job: FileJob
    indexes: list[int]
    attempts: int = 0
    alone: bool = False  # retrying the lines of a rejected batch one by one


class _Server:
    """One URL: its client and its backoff after transient failures."""

    def __init__(self, url: str, options: TransformOptions):
        self.url = url
        self.client = AsyncClient(url, options.protocol, options.timeout)
        self.failures = 0
        self.down_until = 0.0

    def backoff(self) -> float:
        self.failures += 1
        delay = min(30.0, 0.25 * 2 ** (self.failures - 1)) * (0.5 + random.random())
        self.down_until = time.monotonic() + delay
        return delay


class LocalEngine:
    """asyncio: `max_concurrent_transforms` workers per server share one queue of requests."""

    def __init__(self, options: TransformOptions):
        self.options = options

    def run(self, jobs: list[FileJob], write, bar: tqdm, summary: Summary) -> None:
        asyncio.run(self._run(jobs, write, bar, summary))

    async def _run(self, jobs, write, bar, summary) -> None:
        opts = self.options
        queue: asyncio.Queue[_Work] = asyncio.Queue()
        for job in jobs:
            for indexes, why in pack(
                job.lines,
                opts.content_type,
                opts.strategy,
                opts.max_payload_bytes,
                opts.max_records,
            ):
                if why:
                    self._fail(job, indexes[0], why, summary, bar, write)
                else:
                    queue.put_nowait(_Work(job, indexes))
        for job in jobs:
            if not job.lines:
                write(job)  # an empty file: nothing will complete it
        servers = [_Server(url, opts) for url in opts.urls]
        workers = [
            asyncio.create_task(self._worker(server, queue, write, bar, summary))
            for server in servers
            for _ in range(opts.max_concurrent_transforms)
        ]
        await queue.join()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for server in servers:
            await server.client.close()

    async def _worker(self, server: _Server, queue, write, bar, summary) -> None:
        opts = self.options
        while True:
            # A server in back-off takes no work: what is queued stays for the others.
            wait = server.down_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            work = await queue.get()
            try:
                first, last = work.indexes[0], work.indexes[-1] + 1
                consecutive = last - first == len(work.indexes)  # as pack makes them
                lines = (
                    work.job.lines[first:last]
                    if consecutive
                    else [work.job.lines[i] for i in work.indexes]
                )
                body = make_body(lines, opts.content_type)
                try:
                    answer = await server.client.invoke(body, opts.request_type, opts.accept)
                    outputs = split_answer(answer, opts.answer_type, len(lines))
                except Object2VecError as error:
                    self._on_error(error, work, server, queue, write, bar, summary)
                    continue
                server.failures = 0
                self._done_all(work.job, work.indexes, outputs, bar, write)
            finally:
                queue.task_done()

    def _on_error(self, error, work, server, queue, write, bar, summary) -> None:
        if error.retryable:
            work.attempts += 1
            if work.attempts < self.options.max_attempts:
                server.backoff()
                queue.put_nowait(work)  # any server may take it
                return
            work.job.lost = True
            for index in work.indexes:
                self._fail(
                    work.job,
                    index,
                    f"gave up after {work.attempts} attempts: {error.message}",
                    summary,
                    bar,
                    write,
                    record=False,
                )
            return
        if len(work.indexes) > 1:
            # One bad line fails the whole request: send its lines alone to find it.
            for index in work.indexes:
                queue.put_nowait(_Work(work.job, [index], alone=True))
            return
        self._fail(work.job, work.indexes[0], error.message, summary, bar, write)

    def _fail(self, job, index, message, summary, bar, write, record: bool = True) -> None:
        message = at_line(message, index + 1)
        summary.failures.append(Failure(job.path, index + 1, message))
        self._done(job, index, orjson.dumps({"error": message}) if record else None, bar, write)

    @staticmethod
    def _done_all(job: FileJob, indexes: list[int], outputs: list[bytes], bar: tqdm, write):
        """A request's answers: one progress update, not one a record."""
        if len(outputs) != len(indexes):
            raise ValueError(f"{len(outputs)} answers for {len(indexes)} records")
        if indexes[-1] + 1 - indexes[0] == len(indexes):  # consecutive, as pack makes them
            job.answers[indexes[0] : indexes[-1] + 1] = outputs
        else:
            for index, output in zip(indexes, outputs, strict=True):
                job.answers[index] = output
        job.pending -= len(indexes)
        bar.update(len(indexes))
        if job.pending == 0:
            write(job)

    @staticmethod
    def _done(job: FileJob, index: int, output: bytes | None, bar: tqdm, write) -> None:
        job.answers[index] = output
        job.pending -= 1
        bar.update(1)
        if job.pending == 0:
            write(job)
