"""What the benchmark scripts share: their command line's start, and a server of their own."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from server.launcher.embedded import PROJECT_ROOT, EmbeddedServer
from server.launcher.process import free_port

RUNS = PROJECT_ROOT / "runs"


def arguments(doc: str, seconds: float) -> argparse.ArgumentParser:
    """--repository and --seconds, which every script takes; add the rest."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--seconds", type=float, default=seconds)
    return parser


@contextlib.contextmanager
def embedded_server(repository: Path, name: str) -> Iterator[EmbeddedServer]:
    """The embedded server on free loopback ports, its log in runs/<name>_server.log."""
    RUNS.mkdir(exist_ok=True)
    with (
        open(RUNS / f"{name}_server.log", "w") as log,
        EmbeddedServer(
            repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
        ).start(stdout=log) as server,
    ):
        yield server
