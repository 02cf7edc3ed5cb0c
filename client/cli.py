"""object2vec: talk to an Object2Vec server on Triton.

    object2vec invoke --url localhost:8000 < request.json
    object2vec transform s3://bucket/input/ --output-path s3://bucket/output/ \
        --url host-a:8000 --url host-b:8000 --strategy MultiRecord --max-payload 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.api import PROTOCOLS, Client, Object2VecError, execution_parameters
from client.batching import TransformOptions
from client.ray_engine import connect
from client.transform import UnsafePath, transform
from contract.names import JSON, JSONLINES


def _add_connection(parser: argparse.ArgumentParser, many: bool) -> None:
    parser.add_argument(
        "--url",
        action="append" if many else "store",
        default=None,
        help="server host:port (HTTP 8000, gRPC 8001 by default)"
        + (
            "; repeat it to spread the job over several servers (the instance_count)"
            if many
            else ""
        ),
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="http",
        help="http or grpc: Triton's API (tritonclient); sagemaker: POST /invocations of any "
        "SageMaker-contract endpoint (ours with --sagemaker, or any container speaking the "
        "hosted format) (default: http)",
    )
    parser.add_argument(
        "--content-type",
        default=JSONLINES if many else JSON,
        help=f"request format: {JSON} or {JSONLINES}, optionally with '; infer_max_seqlens=L0,L1'",
    )
    parser.add_argument("--accept", default=None, help="answer format (default: the content type)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")


def _default_url(protocol: str) -> str:
    return {"grpc": "localhost:8001", "sagemaker": "localhost:8080"}.get(protocol, "localhost:8000")


def _invoke(args: argparse.Namespace) -> int:
    body = Path(args.input).read_bytes() if args.input != "-" else sys.stdin.buffer.read()
    with Client(args.url or _default_url(args.protocol), args.protocol, args.timeout) as client:
        answer = client.invoke(body, args.content_type, args.accept)
    sys.stdout.buffer.write(answer if answer.endswith(b"\n") else answer + b"\n")
    return 0


def _job_settings(args: argparse.Namespace, urls: tuple[str, ...]) -> tuple[float, int]:
    """--max-payload and --max-concurrent-transforms: given, else what a SageMaker endpoint's
    /execution-parameters says (as a Batch Transform job does), else 6 MB and 4."""
    payload, concurrency = args.max_payload, args.max_concurrent_transforms
    if args.protocol == "sagemaker" and (payload is None or concurrency is None):
        found = execution_parameters(urls[0])
        if found:
            print(f"{urls[0]}/execution-parameters: {found}", file=sys.stderr)
        payload = payload if payload is not None else found.get("MaxPayloadInMB")
        concurrency = (
            concurrency if concurrency is not None else found.get("MaxConcurrentTransforms")
        )
    return float(payload or 6.0), int(concurrency or 4)


def _transform(args: argparse.Namespace) -> int:
    if args.neighbours < 0 or (args.catalogue and not args.neighbours):
        raise Object2VecError("--neighbours K asks for K >= 1 neighbours; --catalogue needs it")
    urls = tuple(args.url or [_default_url(args.protocol)])
    max_payload, max_concurrent = _job_settings(args, urls)
    options = TransformOptions(
        urls=urls,
        output_path=args.output_path,
        protocol=args.protocol,
        content_type=args.content_type,
        accept=args.accept,
        strategy=args.strategy,
        max_payload_mb=max_payload,
        max_concurrent_transforms=max_concurrent,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        progress=not args.quiet,
        neighbours=args.neighbours,
        catalogue=args.catalogue,
    )
    if args.engine == "ray":
        connect(args.ray_address)
    summary = transform(args.input, options, engine=args.engine)
    print(summary.report(), file=sys.stderr)
    return 0 if summary.ok else 1


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="object2vec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True)

    invoke = commands.add_parser(
        "invoke",
        help="send one body, print the answer",
        description="Send one request body to the front door and print its answer on stdout.",
    )
    invoke.add_argument(
        "input", nargs="?", default="-", help="file holding the body (default: stdin)"
    )
    _add_connection(invoke, many=False)
    invoke.set_defaults(run=_invoke)

    job = commands.add_parser(
        "transform",
        help="Batch Transform: answer every line of many files",
        description="For each input file X, write X.out in --output-path with one answer line "
        "per input line, in order. Input lines are instances "
        '({"in0": [...]} and/or "in1"). Finished files are skipped on a re-run.',
    )
    job.add_argument(
        "input", help="a file, a folder or a prefix; local or an fsspec URL (s3://bucket/prefix)"
    )
    job.add_argument("--output-path", required=True, help="folder or URL for the .out files")
    _add_connection(job, many=True)
    job.add_argument(
        "--strategy",
        choices=("MultiRecord", "SingleRecord"),
        default="MultiRecord",
        help="MultiRecord packs as many lines as fit under --max-payload into one "
        "request; SingleRecord sends one line per request",
    )
    job.add_argument(
        "--max-payload",
        type=float,
        default=None,
        help="largest request body in MB (default: the endpoint's /execution-parameters with "
        "--protocol sagemaker, else 6)",
    )
    job.add_argument(
        "--max-concurrent-transforms",
        type=int,
        default=None,
        help="requests in flight per server (default: the endpoint's /execution-parameters "
        "with --protocol sagemaker, else 4)",
    )
    job.add_argument(
        "--max-attempts",
        type=int,
        default=8,
        help="tries per request on transient failures (default: 8)",
    )
    job.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: asyncio in this process; ray: a Ray Data job (scale-out)",
    )
    job.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)",
    )
    job.add_argument(
        "--neighbours",
        type=int,
        default=0,
        metavar="K",
        help="answer each in0 line with its K nearest items of the server's catalogue index "
        '({"neighbours": [{"id": ..., "score": ...}, ...]}): bulk recommendations',
    )
    job.add_argument("--catalogue", default=None, help="with --neighbours: the index's name")
    job.add_argument("--quiet", action="store_true", help="no progress bar")
    job.set_defaults(run=_transform)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except Object2VecError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except (FileNotFoundError, UnsafePath) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
