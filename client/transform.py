"""Batch Transform: every line of every input file answered, over many servers.

Input lines are instances (`{"in0": [...]}`, `{"in0": [...], "in1": [...]}`). For each input
file `X`, `X.out` lands in the output path with one answer line per input line, in order: the
answer that line gets when sent alone (`{"embeddings": [...]}` with JSON Lines accept, or
`{"predictions": [...]}` with JSON accept). A line the server rejects gets `{"error": "..."}`
in its place and is reported with its file and line number.

Nothing lost, nothing doubled: a request that fails for a transient reason (no connection, a
timeout, a server restarting) goes back in the queue for any server, while the server that
failed backs off exponentially; an output file is written under a temporary name and renamed
when complete; a file whose `.out` exists is skipped, so a re-run finishes an interrupted job.
"""

from __future__ import annotations

import asyncio
import posixpath
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import fsspec
import orjson
from tqdm import tqdm

from client.api import JSON, JSONLINES, AsyncClient, Object2VecError
from server.payload import DEFAULT_MAX_INSTANCES

MB = 1024 * 1024
OUT_SUFFIX = ".out"
# The front door's default limit of instances per request.
DEFAULT_MAX_RECORDS = DEFAULT_MAX_INSTANCES


@dataclass(frozen=True)
class TransformOptions:
    urls: tuple[str, ...]
    output_path: str
    protocol: str = "http"
    content_type: str = JSONLINES
    accept: str | None = None  # default: the content type
    strategy: str = "MultiRecord"  # or SingleRecord
    max_payload_mb: float = 6.0
    max_concurrent_transforms: int = 4  # requests in flight per server
    max_records: int = DEFAULT_MAX_RECORDS  # instances per request, at most
    max_attempts: int = 8  # per request, transient failures only
    timeout: float = 60.0
    progress: bool = True

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * MB)

    @property
    def answer_type(self) -> str:
        return self.accept or self.content_type


@dataclass
class Failure:
    file: str
    line: int  # 1-based
    message: str


@dataclass
class Summary:
    files: int = 0
    skipped: int = 0
    records: int = 0
    failures: list[Failure] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.unfinished

    def report(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.files} file(s) written, {self.skipped} skipped (already done), "
            f"{self.records} record(s), {len(self.failures)} failure(s), "
            f"{self.seconds:.1f} s ({rate:.0f} records/s)"
        ]
        lines += [f"  {f.file}:{f.line}: {f.message}" for f in self.failures[:50]]
        if len(self.failures) > 50:
            lines.append(f"  ... and {len(self.failures) - 50} more")
        lines += [
            f"  {name}: not finished (servers unreachable); re-run to finish it"
            for name in self.unfinished
        ]
        return "\n".join(lines)


# ---- where the files are ---------------------------------------------------------------------


def list_inputs(source: str) -> tuple[fsspec.AbstractFileSystem, list[str], str]:
    """(filesystem, input files, root): a file, every file under a folder, or a prefix."""
    fs, root = fsspec.core.url_to_fs(source)
    if fs.isfile(root):
        return fs, [root], root.rsplit("/", 1)[0] if "/" in root else ""
    if fs.isdir(root):
        files = sorted(p for p in fs.find(root) if not p.endswith(OUT_SUFFIX))
        return fs, files, root.rstrip("/")
    files = sorted(p for p in fs.glob(root + "*") if fs.isfile(p) and not p.endswith(OUT_SUFFIX))
    if not files:
        raise FileNotFoundError(f"no input matches {source!r}")
    return fs, files, root.rsplit("/", 1)[0] if "/" in root else ""


class UnsafePath(ValueError):
    """An input key whose output would land outside --output-path."""


def output_name(path: str, root: str, output_path: str) -> str:
    """Where the answers of `path` go: its place under `root`, mirrored under `output_path`.

    Keys are names chosen by whoever wrote the input (S3 allows `a/../../b`): one that would
    resolve outside `output_path` is refused rather than followed.
    """
    relative = path[len(root) :].lstrip("/") if root and path.startswith(root) else path
    relative = relative.rsplit("/", 1)[-1] if not root else relative
    normal = posixpath.normpath(relative)
    if normal.startswith(("../", "/")) or normal in ("..", ".", ""):
        raise UnsafePath(f"{path!r}: its output would land outside the output path: refused")
    return output_path.rstrip("/") + "/" + normal + OUT_SUFFIX


# ---- packing lines into requests -------------------------------------------------------------


def body_size(lines: Sequence[bytes], content_type: str) -> int:
    """Bytes of the body that carries these lines, exactly as `make_body` builds it."""
    if content_type == JSONLINES:
        return sum(len(line) + 1 for line in lines)
    return len(b'{"instances":[]}') + sum(len(line) for line in lines) + max(len(lines) - 1, 0)


def make_body(lines: Sequence[bytes], content_type: str) -> bytes:
    if content_type == JSONLINES:
        return b"".join(line + b"\n" for line in lines)
    return b'{"instances":[' + b",".join(lines) + b"]}"


def pack(
    lines: Sequence[bytes],
    content_type: str,
    strategy: str,
    max_bytes: int,
    max_records: int = DEFAULT_MAX_RECORDS,
) -> Iterator[tuple[list[int], str | None]]:
    """Groups of line indexes, each a request under `max_bytes` and `max_records`; (index, why)
    when a line can't be sent: too big alone, or blank (it still gets its error record, so the
    output stays line for line with the input).

    MultiRecord packs as many consecutive lines as fit; SingleRecord sends one line a request.
    """
    group: list[int] = []
    size = body_size([], content_type)
    for index, line in enumerate(lines):
        if not line.strip():
            yield [index], "blank line: no instance"
            continue
        alone = body_size([line], content_type)
        if alone > max_bytes:
            yield [index], f"record of {alone} bytes exceeds max_payload ({max_bytes} bytes)"
            continue
        if strategy == "SingleRecord":
            yield [index], None
            continue
        # A newline after every JSON Lines record; a comma between JSON instances.
        added = len(line) + (1 if content_type == JSONLINES or group else 0)
        if group and (size + added > max_bytes or len(group) >= max_records):
            yield group, None
            group, size = [], body_size([], content_type)
            added = len(line) + (1 if content_type == JSONLINES else 0)
        group.append(index)
        size += added
    if group:
        yield group, None


def split_answer(answer: bytes, accept: str, count: int) -> list[bytes]:
    """One output line per instance, as that instance would be answered alone."""
    if accept == JSONLINES:
        lines = [line for line in answer.split(b"\n") if line.strip()]
    else:
        lines = [orjson.dumps({"predictions": [p]}) for p in orjson.loads(answer)["predictions"]]
    if len(lines) != count:
        raise Object2VecError(f"the server answered {len(lines)} lines for {count} records")
    return lines


# ---- the local engine ------------------------------------------------------------------------


@dataclass
class _FileJob:
    path: str
    target: str
    lines: list[bytes]
    answers: list[bytes | None]
    pending: int
    lost: bool = False


@dataclass
class _Work:
    job: _FileJob
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

    def run(self, jobs: list[_FileJob], write, bar: tqdm, summary: Summary) -> None:
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
                lines = [work.job.lines[i] for i in work.indexes]
                body = make_body(lines, opts.content_type)
                try:
                    answer = await server.client.invoke(body, opts.content_type, opts.accept)
                    outputs = split_answer(answer, opts.answer_type, len(lines))
                except Object2VecError as error:
                    self._on_error(error, work, server, queue, write, bar, summary)
                    continue
                server.failures = 0
                for index, output in zip(work.indexes, outputs, strict=True):
                    self._done(work.job, index, output, bar, write)
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
        summary.failures.append(Failure(job.path, index + 1, message))
        self._done(job, index, orjson.dumps({"error": message}) if record else None, bar, write)

    @staticmethod
    def _done(job: _FileJob, index: int, output: bytes | None, bar: tqdm, write) -> None:
        job.answers[index] = output
        job.pending -= 1
        bar.update(1)
        if job.pending == 0:
            write(job)


# ---- the job ---------------------------------------------------------------------------------


def _read_lines(fs, path: str) -> list[bytes]:
    """Every line, blank ones too: line N of X.out answers line N of X."""
    with fs.open(path, "rb") as f:
        return f.read().splitlines()


def transform(source: str, options: TransformOptions, engine: str = "local") -> Summary:
    """Runs the job; the summary says what was done and what failed."""
    start = time.perf_counter()
    summary = Summary()
    in_fs, files, root = list_inputs(source)
    out_fs, out_root = fsspec.core.url_to_fs(options.output_path)
    out_fs.makedirs(out_root, exist_ok=True)
    jobs = []
    for path in files:
        try:
            target = output_name(path, root, out_root)
        except UnsafePath as error:
            summary.failures.append(Failure(path, 0, str(error)))
            continue
        if out_fs.exists(target):
            summary.skipped += 1
            continue
        lines = _read_lines(in_fs, path)
        jobs.append(_FileJob(path, target, lines, [None] * len(lines), len(lines)))
    summary.records = sum(len(job.lines) for job in jobs)

    def write(job: _FileJob) -> None:
        if job.lost:
            summary.unfinished.append(job.path)
            return
        partial = job.target + ".partial"
        out_fs.makedirs(job.target.rsplit("/", 1)[0], exist_ok=True)
        with out_fs.open(partial, "wb") as f:
            f.write(b"".join(answer + b"\n" for answer in job.answers))
        out_fs.mv(partial, job.target)
        summary.files += 1

    with tqdm(
        total=summary.records, unit="rec", disable=not options.progress, desc="transform"
    ) as bar:
        if engine == "ray":
            from client.ray_engine import RayEngine

            RayEngine(options).run(jobs, write, bar, summary)
        else:
            LocalEngine(options).run(jobs, write, bar, summary)
    summary.seconds = time.perf_counter() - start
    return summary


__all__ = ["JSON", "JSONLINES", "Summary", "TransformOptions", "transform"]
