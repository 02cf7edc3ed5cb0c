"""What the Batch Transform engines share: the job's options, the files in flight, packing
lines into requests and splitting answers back into lines, and the engine interface.

`client.transform` runs a job with an engine: `client.local_engine` (asyncio, this process) or
`client.ray_engine` (Ray Data). Both pack and split with the functions here, so a line gets the
same answer whichever engine sends it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from tqdm import tqdm

from client.api import Object2VecError, neighbours_type
from contract.names import DEFAULT_MAX_INSTANCES, JSONLINES

MB = 1024 * 1024
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
    neighbours: int = 0  # > 0: each in0 line is answered its k nearest catalogue items
    catalogue: str | None = None

    @property
    def request_type(self) -> str:
        """The content type each request carries: the content type, asking for neighbours
        where the job does."""
        if not self.neighbours:
            return self.content_type
        return neighbours_type(self.neighbours, self.catalogue, self.content_type)

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * MB)

    @property
    def answer_type(self) -> str:
        return self.accept or self.content_type


@dataclass
class Failure:
    file: str
    line: int  # 1-based; 0: the whole file
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
        lines += [
            f"  {f.file}:{f.line}: {f.message}" if f.line else f"  {f.file}: {f.message}"
            for f in self.failures[:50]
        ]
        if len(self.failures) > 50:
            lines.append(f"  ... and {len(self.failures) - 50} more")
        lines += [
            f"  {name}: not finished (servers unreachable); re-run to finish it"
            for name in self.unfinished
        ]
        return "\n".join(lines)


# How the front door names the one line of a body sent alone, as JSON Lines or as JSON.
_ALONE = re.compile(r"^(line 1|instances\[0\]): ")


def at_line(message: str, line: int) -> str:
    """The server's message about a line sent alone ("line 1: ...", "instances[0]: ...") with
    the line's number in its file, as the job's summary names it."""
    return _ALONE.sub(f"line {line}: ", message, count=1)


def body_size(lines: Sequence[bytes], content_type: str) -> int:
    """Bytes of the body that carries these lines, exactly as `make_body` builds it."""
    if content_type == JSONLINES:
        return sum(len(line) + 1 for line in lines)
    return len(b'{"instances":[]}') + sum(len(line) for line in lines) + max(len(lines) - 1, 0)


def make_body(lines: Sequence[bytes], content_type: str) -> bytes:
    if content_type == JSONLINES:
        return b"\n".join([*lines, b""])
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
    Sizes are body_size's, summed here a line at a time (this loop runs for every line of a
    job: no call per line).
    """
    jsonlines = content_type == JSONLINES
    empty = body_size([], content_type)
    group: list[int] = []
    size = empty
    for index, length in enumerate(map(len, lines)):
        alone = empty + length + jsonlines
        blank = not length or lines[index].isspace()  # (strip() would copy every line)
        if blank or alone > max_bytes:
            why = (
                "blank line: no instance"
                if blank
                else f"record of {alone} bytes exceeds max_payload ({max_bytes} bytes)"
            )
            yield [index], why
            continue
        if strategy == "SingleRecord":
            yield [index], None
            continue
        # A newline after every JSON Lines record; a comma between JSON instances.
        added = length + (1 if jsonlines or group else 0)
        if group and (size + added > max_bytes or len(group) >= max_records):
            yield group, None
            group, size = [], empty
            added = length + jsonlines
        group.append(index)
        size += added
    if group:
        yield group, None


def split_answer(answer: bytes, accept: str, count: int) -> list[bytes]:
    """One output line per instance, as that instance would be answered alone."""
    if accept == JSONLINES:
        lines = answer.split(b"\n")
        if lines and not lines[-1]:  # the answer's last newline
            lines.pop()
        if len(lines) != count or not all(lines):  # blank lines among them: dropped
            lines = [line for line in lines if line.strip()]
    else:
        lines = [orjson.dumps({"predictions": [p]}) for p in orjson.loads(answer)["predictions"]]
    if len(lines) != count:
        raise Object2VecError(f"the server answered {len(lines)} lines for {count} records")
    return lines


@dataclass
class FileJob:
    """One input file: its lines, and their answers as they come."""

    path: str
    target: str
    lines: list[bytes]
    answers: list[bytes | None]
    pending: int
    lost: bool = False


# Called with a FileJob once every line of it is answered (or lost).
Writer = Callable[[FileJob], None]


class Engine(Protocol):
    """Answers every line of every job, calling `write` as each job completes."""

    def run(self, jobs: list[FileJob], write: Writer, bar: tqdm, summary: Summary) -> None: ...
