"""The naive pair Batch Transform is measured against: what a user writes in an afternoon.

* `service`: FastAPI + ONNX Runtime, one request at a time, on the repository's own ONNX files:
  `{"instances": [...]}` in, each network's instances padded to the request's longest, one
  session call per network, `{"predictions": [...]}` out. No checks beyond what Python raises.
* `script`: stdlib threads, the input lines packed into ~1 MB JSON bodies, POSTed over N
  keep-alive connections, the answers written in order, one `.out` line per input line.

    python -m bench.naive service --repository model_repository --port 8090
    python -m bench.naive script IN_DIR OUT_DIR --url localhost:8090 --connections 2

Neither is part of the product: they are the baseline of `bench.batch_transform`.
"""

import argparse
import http.client
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson

MB = 1024 * 1024


def app(repository: Path):
    import onnxruntime as ort
    from fastapi import FastAPI, Request, Response

    sessions = {
        name: ort.InferenceSession(str(repository / name / "1" / "model.onnx"))
        for name in ("enc0", "enc1", "pair")
    }
    service = FastAPI()

    def padded(lists: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(lists), max(map(len, lists))), dtype=np.int64)
        for row, tokens in enumerate(lists):
            out[row, : len(tokens)] = tokens
        return out

    @service.get("/ping")
    async def ping() -> Response:
        return Response(b"")

    @service.post("/invocations")
    async def invocations(request: Request) -> Response:
        instances = orjson.loads(await request.body())["instances"]
        groups: dict[str, list[int]] = {"enc0": [], "enc1": [], "pair": []}
        for i, instance in enumerate(instances):
            name = "pair" if len(instance) == 2 else ("enc0" if "in0" in instance else "enc1")
            groups[name].append(i)
        predictions: list = [None] * len(instances)
        for name, rows in groups.items():
            if not rows:
                continue
            if name == "pair":
                feed = {key: padded([instances[i][key] for i in rows]) for key in ("in0", "in1")}
                key = "scores"
            else:
                side = "in0" if name == "enc0" else "in1"
                feed = {"tokens": padded([instances[i][side] for i in rows])}
                key = "embeddings"
            out = sessions[name].run(None, feed)[0]
            for i, vector in zip(rows, out.tolist(), strict=True):
                predictions[i] = {key: vector}
        return Response(orjson.dumps({"predictions": predictions}), media_type="application/json")

    return service


def _bodies(lines: list[bytes], max_bytes: int):
    """(first line, count, body): consecutive lines in JSON bodies under max_bytes."""
    start, size = 0, 0
    for i, line in enumerate(lines):
        if i > start and size + len(line) + 1 > max_bytes:
            yield start, i - start, b'{"instances":[' + b",".join(lines[start:i]) + b"]}"
            start, size = i, 0
        size += len(line) + 1
    if start < len(lines):
        yield start, len(lines) - start, b'{"instances":[' + b",".join(lines[start:]) + b"]}"


def script(
    inputs: Path, outputs: Path, url: str, connections: int, max_mb: float = 1.0
) -> tuple[int, float]:
    """(records, seconds): every file of `inputs` answered into `outputs`."""
    start = time.perf_counter()
    outputs.mkdir(parents=True, exist_ok=True)
    host, _, port = url.partition(":")
    files = sorted(inputs.iterdir())
    answers: list[list] = []
    work: queue.Queue = queue.Queue()
    for number, path in enumerate(files):
        lines = path.read_bytes().splitlines()
        answers.append([None] * len(lines))
        for first, count, body in _bodies(lines, int(max_mb * MB)):
            work.put((number, first, count, body))

    def worker() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        while True:
            try:
                number, first, count, body = work.get_nowait()
            except queue.Empty:
                return
            connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            predictions = orjson.loads(connection.getresponse().read())["predictions"]
            answers[number][first : first + count] = [orjson.dumps(p) for p in predictions]

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for path, mine in zip(files, answers, strict=True):
        (outputs / (path.name + ".out")).write_bytes(b"".join(a + b"\n" for a in mine))
    return sum(map(len, answers)), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("service")
    serve.add_argument("--repository", type=Path, default=Path("model_repository"))
    serve.add_argument("--port", type=int, default=8090)
    run = commands.add_parser("script")
    run.add_argument("inputs", type=Path)
    run.add_argument("outputs", type=Path)
    run.add_argument("--url", default="localhost:8090")
    run.add_argument("--connections", type=int, default=2)
    run.add_argument("--max-payload", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.command == "service":
        import uvicorn

        uvicorn.run(app(args.repository), port=args.port, log_level="warning")
        return 0
    records, seconds = script(
        args.inputs, args.outputs, args.url, args.connections, args.max_payload
    )
    print(f"{records} records in {seconds:.2f} s ({records / seconds:.0f} records/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
