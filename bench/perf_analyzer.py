"""perf_analyzer against the front door, as a user runs it: a body in, Triton's numbers out.

    python -m bench.perf_analyzer request.json [--url localhost:8001] [--protocol grpc]
        [--content-type application/json] [--concurrency 1:16:15] [-- more perf_analyzer options]
    make perf BODY=request.json [URL=localhost:8001 PROTOCOL=grpc]

The body (a file: JSON or JSON Lines, one request's worth) is written into perf_analyzer's
`--input-data` format for the front door's one input (raw bytes: contract/body.py). Over gRPC
the content type (and `--accept`) go as request parameters; over HTTP perf_analyzer can't send
parameters, so the front door tells JSON from JSON Lines by the body.

No root and no system packages: perf_analyzer 2.51 (in the tritonclient wheel) needs
`libb64.so.0d` and `libcudart.so.12`, and the nvidia-pytriton wheel already ships both under
hashed names; a folder of links with the names perf_analyzer asks for goes on its
LD_LIBRARY_PATH (.triton/perf_analyzer_libs).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from contract.names import ACCEPT_PARAMETER, BODY_INPUT, CONTENT_TYPE_PARAMETER, FRONT_DOOR
from server.launcher.embedded import PROJECT_ROOT

LIBRARIES = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


def binary() -> Path:
    path = Path(sys.executable).parent / "perf_analyzer"
    if not path.exists():
        raise SystemExit("perf_analyzer is not installed: it comes with tritonclient[all]==2.51.0")
    return path


def library_folder(target: Path = PROJECT_ROOT / ".triton" / "perf_analyzer_libs") -> Path:
    """Links named as perf_analyzer asks, to the copies the nvidia-pytriton wheel ships."""
    import pytriton

    shipped = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
    target.mkdir(parents=True, exist_ok=True)
    for name, pattern in LIBRARIES.items():
        found = sorted(shipped.glob(pattern))
        if not found:
            raise SystemExit(f"{shipped} has no {pattern}: is nvidia-pytriton==0.7.0 installed?")
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(found[0])
    return target


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(library_folder()), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


def input_data(bodies: list[bytes], path: Path) -> Path:
    """perf_analyzer's --input-data file: one entry per body, for the front door's input."""
    entries = [{BODY_INPUT: {"content": list(b), "shape": [len(b)]}} for b in bodies]
    path.write_text(json.dumps({"data": entries}))
    return path


def command(
    url: str,
    protocol: str,
    data: Path,
    concurrency: str,
    csv_path: Path,
    content_type: str | None = None,
    accept: str | None = None,
    measurement_ms: int = 4000,
    extra: list[str] | None = None,
    model: str = FRONT_DOOR,
) -> list[str]:
    args = [
        str(binary()),
        "-m",
        model,
        "-u",
        url,
        "-i",
        protocol,
        "--input-data",
        str(data),
        "--concurrency-range",
        concurrency,
        "--measurement-interval",
        str(measurement_ms),
        "--stability-percentage",
        "1000",
        "--max-trials",
        "3",
        "--percentile",
        "99",
        "-f",
        str(csv_path),
    ]
    if protocol == "grpc":
        for key, value in ((CONTENT_TYPE_PARAMETER, content_type), (ACCEPT_PARAMETER, accept)):
            if value:
                args += ["--request-parameter", f"{key}:{value}:string"]
    return args + list(extra or [])


def run(args: list[str], csv_path: Path) -> list[dict[str, str]]:
    """Runs perf_analyzer (its output on this terminal) and returns its CSV rows."""
    result = subprocess.run(args, env=environment())
    if result.returncode != 0 and not csv_path.exists():
        raise SystemExit(f"perf_analyzer failed with exit code {result.returncode}")
    with open(csv_path) as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("body", type=Path, help="a request body: JSON or JSON Lines")
    parser.add_argument("--url", default=None, help="default localhost:8001 (gRPC) or :8000")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--content-type", default=None, help="gRPC only (HTTP: sniffed)")
    parser.add_argument("--accept", default=None, help="gRPC only")
    parser.add_argument("--concurrency", default="1:16:15", help="perf_analyzer's range")
    parser.add_argument("--measurement-ms", type=int, default=4000)
    parser.add_argument("--csv", type=Path, default=None, help="keep perf_analyzer's CSV here")
    # Everything after `--` is perf_analyzer's, wherever the other options are (argparse alone
    # refuses `body --opt -- --measurement-mode count_windows`).
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser.epilog = "more perf_analyzer options go after --"
    args = parser.parse_args(argv)
    args.extra = extra
    url = args.url or ("localhost:8001" if args.protocol == "grpc" else "localhost:8000")
    with tempfile.TemporaryDirectory() as folder:
        data = input_data([args.body.read_bytes()], Path(folder) / "input.json")
        csv_path = args.csv or Path(folder) / "result.csv"
        rows = run(
            command(
                url,
                args.protocol,
                data,
                args.concurrency,
                csv_path,
                args.content_type,
                args.accept,
                args.measurement_ms,
                args.extra,
            ),
            csv_path,
        )
    print(f"\n{'concurrency':>12}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
    for row in sorted(rows, key=lambda r: int(r["Concurrency"])):
        print(
            f"{row['Concurrency']:>12}{float(row['Inferences/Second']):>12.1f}"
            f"{float(row['p50 latency']) / 1e3:>10.3f}{float(row['p99 latency']) / 1e3:>10.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
