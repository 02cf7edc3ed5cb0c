"""The user's side: the client library, `invoke` and `transform`, against real servers."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import numpy as np
import orjson
import pytest

from client.api import AsyncClient, Client, Object2VecError
from client.batching import TransformOptions, make_body
from client.cli import main as cli
from client.transform import transform
from contract.names import JSON, JSONLINES
from tests.helpers import DOC_EXAMPLE, free_port, random_lines, same, start_server


def write_lines(path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def alone(server, line: bytes, content_type: str) -> bytes:
    """`invoke` of one line alone, as the output line it should produce."""
    with Client(server.http_url) as client:
        answer = client.invoke(make_body([line], content_type), content_type)
    return answer.rstrip(b"\n") if content_type == JSONLINES else orjson.dumps(orjson.loads(answer))


@pytest.fixture(scope="module")
def second_server(demo_repository):
    with start_server(demo_repository) as running:
        yield running


def options(tmp_path, servers, **overrides) -> TransformOptions:
    values = {
        "urls": tuple(s.http_url for s in servers),
        "output_path": str(tmp_path / "out"),
        "progress": False,
    } | overrides
    return TransformOptions(**values)


# ---- the library -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_typed_helpers_return_numpy_arrays(server, protocol):
    url = server.http_url if protocol == "http" else server.grpc_url
    with Client(url, protocol) as client:
        client.wait_ready(10)
        vectors = client.embed(DOC_EXAMPLE)
        assert vectors.shape == (3, 16) and vectors.dtype == np.float32
        enc1 = client.embed(DOC_EXAMPLE[:1], side="in1")
        assert not np.allclose(enc1[0], vectors[0])
        scores = client.score([(DOC_EXAMPLE[0], DOC_EXAMPLE[1])])
        assert scores.shape == (1, 2)
        np.testing.assert_allclose(scores.sum(), 1.0, atol=1e-5)
        with pytest.raises(Object2VecError) as error:
            client.embed([[1, 99999]])
        assert "outside the vocabulary of enc0" in error.value.message
        assert not error.value.retryable


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_async_client_gives_the_same_answers(server, protocol):
    url = server.http_url if protocol == "http" else server.grpc_url

    async def run():
        async with AsyncClient(url, protocol) as client:
            assert await client.is_ready()
            return await asyncio.gather(
                client.embed(DOC_EXAMPLE), client.score([(DOC_EXAMPLE[0], [5])])
            )

    vectors, scores = asyncio.run(run())
    with Client(server.http_url) as client:
        np.testing.assert_allclose(vectors, client.embed(DOC_EXAMPLE), atol=1e-6)
        np.testing.assert_allclose(scores, client.score([(DOC_EXAMPLE[0], [5])]), atol=1e-6)


class _Recorder:
    """A TCP relay to the server that keeps what went each way (the client and Triton are the
    real ones; this only listens)."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent, self.received = bytearray(), bytearray()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(self.target)
            for a, b, kept in ((client, upstream, self.sent), (upstream, client, self.received)):
                threading.Thread(target=self._pipe, args=(a, b, kept), daemon=True).start()

    @staticmethod
    def _pipe(source, sink, kept: bytearray) -> None:
        while data := source.recv(1 << 16):
            kept.extend(data)
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


def test_http_answers_come_binary_and_uncompressed(server):
    """aiohttp asks for gzip unless told otherwise, and Triton then compresses every answer
    (98 ms of a 1 MB body's 212: docs/performance.md): the clients ask for it as it is."""
    recorder = _Recorder(server.http_url)
    body = make_body([orjson.dumps({"in0": s}) for s in DOC_EXAMPLE], JSONLINES)

    async def run():
        async with AsyncClient(recorder.url) as client:
            return await client.invoke(body, JSONLINES)

    answers = [asyncio.run(run())]
    with Client(recorder.url) as client:
        answers.append(client.invoke(body, JSONLINES))
    with Client(server.http_url) as client:
        assert answers == [client.invoke(body, JSONLINES)] * 2
    requests = bytes(recorder.sent).lower()
    assert requests.count(b"accept-encoding: identity") == 2
    heads = [part.split(b"\r\n\r\n")[0] for part in bytes(recorder.received).split(b"HTTP/1.1")]
    answered = [h for h in heads if h.strip()]
    assert len(answered) == 2 and not any(b"content-encoding" in h.lower() for h in answered)
    # a binary output: its length in the JSON header, the answer's bytes after it
    assert all(b"inference-header-content-length" in h.lower() for h in answered)


def test_invoke_command_prints_the_answer(server, tmp_path, capsysbinary):
    body = tmp_path / "body.jsonl"
    write_lines(body, [orjson.dumps({"in0": s}) for s in DOC_EXAMPLE])
    code = cli(
        [
            "invoke",
            str(body),
            "--url",
            server.grpc_url,
            "--protocol",
            "grpc",
            "--content-type",
            JSONLINES,
            "--accept",
            JSON,
        ]
    )
    assert code == 0
    answer = json.loads(capsysbinary.readouterr().out)
    assert len(answer["predictions"]) == 3


@pytest.mark.local
@pytest.mark.parametrize("content_type", [JSONLINES, JSON])
def test_transform_over_two_servers_equals_invoke_line_by_line(
    server, second_server, tmp_path, content_type
):
    inputs = tmp_path / "in"
    files = {
        "embed.jsonl": random_lines(150, "single"),
        "pairs.jsonl": random_lines(150, "pairs"),
        "deep/mixed.jsonl": random_lines(100, "mixed"),
    }
    for name, lines in files.items():
        write_lines(inputs / name, lines)
    stats = _request_counts([server, second_server])
    summary = transform(
        str(inputs),
        options(tmp_path, [server, second_server], content_type=content_type, max_payload_mb=0.002),
    )
    assert summary.ok and summary.files == 3 and summary.records == 400
    served = [a - b for a, b in zip(_request_counts([server, second_server]), stats, strict=True)]
    assert all(n > 0 for n in served), f"work was not spread over both servers: {served}"
    for name, lines in files.items():
        out = (tmp_path / "out" / (name + ".out")).read_bytes().splitlines()
        assert len(out) == len(lines)
        for line, answer in zip(lines, out, strict=True):
            assert same(answer, alone(server, line, content_type))


def _request_counts(servers) -> list[int]:
    counts = []
    for s in servers:
        with Client(s.http_url) as c:
            stats = c._client.get_inference_statistics("object2vec")
        counts.append(int(stats["model_stats"][0]["inference_count"]))
    return counts


@pytest.mark.parametrize("strategy, expect_requests", [("SingleRecord", 60), ("MultiRecord", 1)])
def test_strategy_decides_requests_per_line(server, tmp_path, strategy, expect_requests):
    write_lines(tmp_path / "in.jsonl", random_lines(60, "single"))
    before = _request_counts([server])[0]
    summary = transform(str(tmp_path / "in.jsonl"), options(tmp_path, [server], strategy=strategy))
    assert summary.ok
    assert _request_counts([server])[0] - before == expect_requests


def test_bad_and_oversized_lines_are_reported_and_the_rest_answered(server, tmp_path, capsys):
    lines = random_lines(30, "single")
    lines[4] = b'{"in0": [1, -5]}'
    lines[11] = b'{"in0": [1, 2], "in1": [' + b"3," * 3000 + b"3]}"
    lines[20] = b'{"in0": [1, 2'
    write_lines(tmp_path / "in" / "part-0.jsonl", lines)
    code = cli(
        [
            "transform",
            str(tmp_path / "in"),
            "--output-path",
            str(tmp_path / "out"),
            "--url",
            server.http_url,
            "--max-payload",
            "0.004",
            "--quiet",
        ]
    )
    assert code != 0
    report = capsys.readouterr().err
    # The line's own number, not "line 1" of the one-line body it was sent alone in.
    assert "part-0.jsonl:5: line 5: in0 holds -5" in report
    assert "part-0.jsonl:12: record of" in report and "exceeds max_payload" in report
    assert "part-0.jsonl:21: line 21: malformed JSON Lines record" in report
    out = (tmp_path / "out" / "part-0.jsonl.out").read_bytes().splitlines()
    assert len(out) == 30
    for i, (line, answer) in enumerate(zip(lines, out, strict=True)):
        if i in (4, 11, 20):
            assert b'"error"' in answer
            assert i == 11 or f"line {i + 1}: ".encode() in answer
        else:
            assert same(answer, alone(server, line, JSONLINES))


def test_rerun_skips_finished_files(server, tmp_path):
    write_lines(tmp_path / "in" / "a.jsonl", random_lines(10, "single"))
    write_lines(tmp_path / "in" / "b.jsonl", random_lines(10, "pairs"))
    first = transform(str(tmp_path / "in"), options(tmp_path, [server]))
    assert (first.files, first.skipped) == (2, 0)
    (tmp_path / "out" / "b.jsonl.out").unlink()
    second = transform(str(tmp_path / "in"), options(tmp_path, [server]))
    assert (second.files, second.skipped, second.records) == (1, 1, 10)


@pytest.mark.local
def test_a_server_restarting_mid_job_loses_and_doubles_nothing(demo_repository, tmp_path):
    lines = random_lines(10000, "mixed")  # long enough to be mid-job after 1 s
    write_lines(tmp_path / "in.jsonl", lines)
    restarting = start_server(demo_repository)
    try:
        opts = options(
            tmp_path,
            [restarting],
            strategy="SingleRecord",
            max_concurrent_transforms=2,
            max_attempts=12,
            timeout=10,
        )
        result: dict = {}
        job = threading.Thread(
            target=lambda: result.update(summary=transform(str(tmp_path / "in.jsonl"), opts))
        )
        job.start()
        time.sleep(1.0)
        assert job.is_alive(), "the job ended before the restart: make it longer"
        restarting.stop()
        time.sleep(1.0)
        restarting.start()
        job.join(timeout=240)
        summary = result["summary"]
        assert summary.ok, summary.report()
        out = (tmp_path / "out" / "in.jsonl.out").read_bytes().splitlines()
        assert len(out) == len(lines)
        for i in range(0, len(lines), 50):
            assert same(out[i], alone(restarting, lines[i], JSONLINES))
    finally:
        restarting.stop()


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }.items():
        monkeypatch.setenv(key, value)
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3")
    if not fs.exists("bucket"):  # moto keeps its buckets for the whole process
        fs.mkdir("bucket")
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
    moto.stop()


def test_s3_input_and_output(server, tmp_path, s3):
    lines = random_lines(40, "pairs")
    s3.pipe("bucket/input/part-0.jsonl", b"".join(line + b"\n" for line in lines))
    s3.pipe("bucket/input/part-1.jsonl", lines[0] + b"\n")
    summary = transform(
        "s3://bucket/input/part-", options(tmp_path, [server], output_path="s3://bucket/output")
    )
    assert summary.ok and summary.files == 2
    out = s3.cat("bucket/output/part-0.jsonl.out").splitlines()
    assert len(out) == 40 and same(out[7], alone(server, lines[7], JSONLINES))
    assert not [p for p in s3.find("bucket/output") if p.endswith(".partial")]
    again = transform(
        "s3://bucket/input/", options(tmp_path, [server], output_path="s3://bucket/output")
    )
    assert again.skipped == 2 and again.files == 0


@pytest.mark.local
def test_ray_engine_gives_the_same_outputs_as_the_local_engine(server, second_server, tmp_path):
    pytest.importorskip("ray")
    lines = random_lines(300, "mixed")
    lines[9] = b'{"in1": [12000]}'
    write_lines(tmp_path / "in" / "x.jsonl", lines)
    local = transform(
        str(tmp_path / "in"),
        options(tmp_path / "local", [server, second_server], max_payload_mb=0.003),
    )
    ray_run = transform(
        str(tmp_path / "in"),
        options(
            tmp_path / "ray",
            [server, second_server],
            max_payload_mb=0.003,
            max_concurrent_transforms=1,
        ),
        engine="ray",
    )
    assert [(f.file, f.line) for f in ray_run.failures] == [
        (f.file, f.line) for f in local.failures
    ]
    a = (tmp_path / "local" / "out" / "x.jsonl.out").read_bytes().splitlines()
    b = (tmp_path / "ray" / "out" / "x.jsonl.out").read_bytes().splitlines()
    assert len(a) == len(b) == 300
    assert all(same(x, y) if b"error" not in x else x == y for x, y in zip(a, b, strict=True))


# ---- the boundary: paths, blank lines, dead servers -----------------------------------------


def test_s3_keys_with_dot_dot_are_refused_and_nothing_lands_outside(server, tmp_path, s3):
    line = random_lines(1, "pairs")[0] + b"\n"
    s3.mkdir("traversal")
    s3.pipe("traversal/input/good.jsonl", line)
    s3.pipe("traversal/input/x/../../../escaped.jsonl", line)
    listed = s3.find("traversal/input")
    summary = transform(
        "s3://traversal/input/",
        options(tmp_path, [server], output_path="s3://traversal/output/"),
    )
    written = [p for p in s3.find("traversal") if p.endswith(".out")]
    assert written == ["traversal/output/good.jsonl.out"], (listed, written)
    assert any(".." in p for p in listed), listed  # the store keeps the key as given
    assert [f.line for f in summary.failures] == [0]
    assert "outside the output path" in summary.failures[0].message


def test_blank_lines_keep_their_place_and_line_numbers_are_right(server, tmp_path):
    lines = random_lines(6, "mixed")
    lines[1] = b""
    lines[4] = b"   "
    write_lines(tmp_path / "in.jsonl", lines)
    summary = transform(str(tmp_path / "in.jsonl"), options(tmp_path, [server]))
    out = (tmp_path / "out" / "in.jsonl.out").read_bytes().splitlines()
    assert len(out) == len(lines)
    assert [f.line for f in summary.failures] == [2, 5]
    assert b"blank line" in out[1] and b"blank line" in out[4]
    for i in (0, 2, 3, 5):
        assert same(out[i], alone(server, lines[i], JSONLINES))


def test_a_dead_server_holds_no_work_while_it_backs_off(server, tmp_path):
    lines = random_lines(300, "mixed")
    write_lines(tmp_path / "in.jsonl", lines)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    summary = transform(
        str(tmp_path / "in.jsonl"),
        options(
            tmp_path,
            [server],
            urls=(dead, server.http_url),
            strategy="SingleRecord",
            max_concurrent_transforms=2,
        ),
    )
    elapsed = time.monotonic() - start
    assert summary.ok, summary.report()
    # A worker that kept its request through a back-off would hold it for up to 30 s; the
    # live server takes every request while the dead one waits, so the job ends long before.
    assert elapsed < 20, f"{elapsed:.1f} s: work waited on the dead server"
