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

import posixpath
import time

import fsspec
from tqdm import tqdm

from client.batching import Engine, Failure, FileJob, Summary, TransformOptions
from client.local_engine import LocalEngine
from client.ray_engine import RayEngine

OUT_SUFFIX = ".out"
ENGINES: dict[str, type[Engine]] = {"local": LocalEngine, "ray": RayEngine}


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
    """An input key whose output would land outside --output-path, or an output path that
    is the input or lies inside it."""


def check_output_path(in_fs, source_root: str, files: list[str], out_fs, out_root: str) -> None:
    """Refuses an --output-path equal to an input file or inside the input folder (its
    answers would land among the inputs, or over one)."""
    if type(in_fs) is not type(out_fs):
        return
    out, top = out_root.rstrip("/"), source_root.rstrip("/")
    if out in files or (in_fs.isdir(top) and (out == top or out.startswith(top + "/"))):
        raise UnsafePath(
            f"--output-path {out_root!r} is the input or lies inside it: choose a folder "
            "outside the input"
        )


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
    check_output_path(in_fs, fsspec.core.url_to_fs(source)[1], files, out_fs, out_root)
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
        try:
            lines = _read_lines(in_fs, path)
        except OSError as error:  # a link to a folder, a link loop, no permission: skipped
            why = error.strerror or type(error).__name__
            summary.failures.append(Failure(path, 0, f"cannot be read ({why}): skipped"))
            continue
        jobs.append(FileJob(path, target, lines, [None] * len(lines), len(lines)))
    summary.records = sum(len(job.lines) for job in jobs)

    def write(job: FileJob) -> None:
        if job.lost:
            summary.unfinished.append(job.path)
            return
        partial = job.target + ".partial"
        out_fs.makedirs(job.target.rsplit("/", 1)[0], exist_ok=True)
        with out_fs.open(partial, "wb") as f:
            f.write(b"\n".join([*job.answers, b""]))
        out_fs.mv(partial, job.target)
        summary.files += 1

    with tqdm(
        total=summary.records, unit="rec", disable=not options.progress, desc="transform"
    ) as bar:
        ENGINES[engine](options).run(jobs, write, bar, summary)
    summary.seconds = time.perf_counter() - start
    return summary


__all__ = ["ENGINES", "Summary", "TransformOptions", "transform"]
