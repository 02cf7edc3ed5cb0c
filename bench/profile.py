"""Where the front door's time goes: py-spy on its Python stub under load, and Triton's own
statistics per model, in one run.

    python -m bench.profile [--model demo] [--workload doc-example-3] [--concurrency 16]
        [--seconds 10] [--out runs/profile]

The model is built (or reused) as `bench.suite` builds it, the embedded server starts on it,
perf_analyzer loads the front door over gRPC, and py-spy samples the front door's stub
process (`--native` off: Python frames only). Prints the functions with the most samples,
inclusive (the function and what it calls) and self (the function's own lines), and the
per-model table of bench.report.server_profile; writes the collapsed stacks (flame-graph
input) under --out.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

from bench import perf_analyzer as pa
from bench.report import server_profile
from bench.suite import build_model, workloads
from contract.names import FRONT_DOOR
from server.common.settings import ServingSettings
from server.launcher.embedded import PROJECT_ROOT, EmbeddedServer
from server.launcher.process import free_port, group_members


def front_door_stub(server: EmbeddedServer) -> int:
    """The pid of the front door's Python stub (its command line names the model)."""
    for pid in group_members(server.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "triton_python_backend_stub" in command and f"/{FRONT_DOOR}/" in command:
            return pid
    raise RuntimeError("no front door stub found among the server's processes")


FRAME = re.compile(r"(?P<function>.*) \((?P<file>[^:()]*):(?P<line>\d+)\)$")


def _frame(text: str, with_line: bool) -> str:
    match = FRAME.match(text)
    if not match:
        return text
    where = Path(match["file"]).name + (f":{match['line']}" if with_line else "")
    return f"{match['function']} ({where})"


def summarize(collapsed: Path, top: int = 15) -> str:
    """Sample shares from py-spy's raw (collapsed) output: inclusive per function (it and what
    it calls), self per line."""
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        samples = int(count)
        total += samples
        for function in {_frame(f, with_line=False) for f in frames}:
            inclusive[function] += samples
        own[_frame(frames[-1], with_line=True)] += samples
    lines = [f"{total} samples of the front door's stub (busy time only)\n", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="demo", choices=("demo", "realistic"))
    parser.add_argument("--workload", default="doc-example-3")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "runs" / "profile")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    repository, _ = build_model(
        args.model, PROJECT_ROOT / "runs" / "bench" / "models", ServingSettings()
    )
    workload = next(w for w in workloads(args.model) if w.name == args.workload)
    data = pa.input_data(workload.bodies, args.out / "input.json")
    collapsed = args.out / f"{args.model}-{args.workload}-c{args.concurrency}.collapsed.txt"
    with open(args.out / "tritonserver.log", "w") as log:
        server = EmbeddedServer(
            repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
        ).start(stdout=log)
        try:
            load = subprocess.Popen(
                pa.command(
                    server.grpc_url,
                    "grpc",
                    data,
                    f"{args.concurrency}:{args.concurrency}",
                    args.out / "perf.csv",
                    measurement_ms=int(args.seconds * 1000) + 4000,
                ),
                env=pa.environment(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(2.0)  # past the warm-up
            subprocess.run(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(front_door_stub(server)),
                    "--duration",
                    str(int(args.seconds)),
                    "--format",
                    "raw",
                    "--output",
                    str(collapsed),
                    "--nonblocking",
                ],
                check=True,
                capture_output=True,
            )
            load.terminate()
            load.wait()
            print(summarize(collapsed))
            print("\nTriton's statistics per model (whole run):\n")
            print(server_profile(server))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
