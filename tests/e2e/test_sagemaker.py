"""SageMaker's container contract on a real server: `python -m server --sagemaker`.

What the hosted Object2Vec's clients send: raw HTTP with its headers, boto3's
`sagemaker-runtime` `invoke_endpoint`, and a Batch Transform over `/invocations`. Answers must
equal the front door's own (reached through Triton on loopback), errors keep its messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import orjson
import pytest
from botocore.config import Config

from client.api import Client, Object2VecError
from client.cli import main as cli
from server.launcher.embedded import PROJECT_ROOT
from tests.helpers import DOC_EXAMPLE, JSON, JSONLINES, free_port, json_body, same

pytestmark = pytest.mark.local  # starts servers of its own


@dataclass
class SageMakerServer:
    port: int
    triton_port: int
    process: subprocess.Popen
    log: Path
    pings: list[int] = field(default_factory=list)  # /ping statuses seen while starting

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def front_door(self, body: bytes, content_type: str | None, accept: str | None) -> bytes:
        """The same body straight to the front door, through Triton's own API."""
        with Client(f"127.0.0.1:{self.triton_port}") as client:
            return client.invoke(body, content_type, accept)


def _launch(repository: Path, log: Path, env: dict | None = None) -> SageMakerServer:
    port, triton_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.launcher.embedded",
            "--sagemaker",
            "--model-repository",
            str(repository),
            "--http-port",
            str(triton_port),
            "--metrics-port",
            str(free_port()),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), **(env or {})},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return SageMakerServer(port, triton_port, process, log)


def _wait_ready(servers: list[SageMakerServer], timeout: float = 120) -> None:
    """Polls every server's /ping in turn, recording what each said, until all say 200."""
    deadline = time.monotonic() + timeout
    waiting = list(servers)
    while waiting:
        assert time.monotonic() < deadline, "the SageMaker endpoints were not ready in time"
        for server in list(waiting):
            assert server.process.poll() is None, server.log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{server.url}/ping", timeout=2) as response:
                    server.pings.append(response.status)
                    waiting.remove(server)
            except urllib.error.HTTPError as error:
                server.pings.append(error.code)
            except OSError:
                pass
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sagemaker_servers(demo_repository, tmp_path_factory):
    logs = tmp_path_factory.mktemp("sagemaker")
    # The second waits less for Triton: test_a_stopped_triton_... stops its tritonserver.
    servers = [
        _launch(demo_repository, logs / "server0.log"),
        _launch(demo_repository, logs / "server1.log", {"O2V_UPSTREAM_TIMEOUT_S": "3"}),
    ]
    try:
        _wait_ready(servers)
        yield servers
    finally:
        for server in servers:
            server.process.terminate()
            assert server.process.wait(60) == 0


@pytest.fixture(scope="module")
def sagemaker(sagemaker_servers) -> SageMakerServer:
    return sagemaker_servers[0]


def post(server: SageMakerServer, body: bytes, headers: dict, path: str = "/invocations"):
    request = urllib.request.Request(server.url + path, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


DOC_BODY = json_body([{"in0": s} for s in DOC_EXAMPLE]).encode()
MIXED_LINES = b'{"in0": [6, 17, 606]}\n{"in1": [22, 1016]}\n{"in0": [774, 14], "in1": [21, 206]}\n'


def test_ping_says_503_until_every_model_is_ready_then_200(sagemaker_servers):
    for server in sagemaker_servers:
        assert server.pings[-1] == 200
        assert 503 in server.pings, f"no 503 before ready: {server.pings[:5]}"


@pytest.mark.parametrize(
    "body, content_type, accept",
    [
        (DOC_BODY, JSON, None),
        (DOC_BODY, JSON, JSONLINES),
        (MIXED_LINES, JSONLINES, None),
        (MIXED_LINES, JSONLINES, JSON),
        (MIXED_LINES, f"{JSONLINES}; infer_max_seqlens=2,1", JSON),
        (DOC_BODY, f"{JSON};infer_max_seqlens=3,3", "*/*"),
    ],
)
def test_hosted_headers_get_the_front_doors_answer_as_a_plain_body(
    sagemaker, body, content_type, accept
):
    headers = {"Content-Type": content_type} | ({"Accept": accept} if accept else {})
    status, response_headers, answer = post(sagemaker, body, headers)
    assert status == 200, answer
    answered_as = accept if accept in (JSON, JSONLINES) else content_type.split(";")[0]
    assert response_headers["Content-Type"] == answered_as
    assert same(answer, sagemaker.front_door(body, content_type, accept))
    if answered_as == JSON:
        assert orjson.loads(answer)["predictions"]
    else:
        assert all(orjson.loads(line) for line in answer.splitlines())


def test_pairs_and_single_inputs_in_one_request(sagemaker):
    status, _, answer = post(sagemaker, MIXED_LINES, {"Content-Type": JSONLINES})
    kinds = [next(iter(orjson.loads(line))) for line in answer.splitlines()]
    assert status == 200 and kinds == ["embeddings", "embeddings", "scores"]


@pytest.mark.parametrize(
    "content_type, accept, status, message",
    [
        ("text/csv", None, 415, "unsupported content type 'text/csv'"),
        (JSON, "text/html", 406, "unsupported accept type 'text/html'"),
        (JSON, f"{JSONLINES};q=0, text/html", 406, "unsupported accept type"),
    ],
)
def test_media_types_the_service_does_not_speak_get_415_and_406(
    sagemaker, content_type, accept, status, message
):
    headers = {"Content-Type": content_type} | ({"Accept": accept} if accept else {})
    got, response_headers, answer = post(sagemaker, DOC_BODY, headers)
    assert got == status, answer
    assert message in orjson.loads(answer)["message"]


def test_accept_q_values_choose_the_answer_type(sagemaker):
    headers = {"Content-Type": JSON, "Accept": f"{JSONLINES};q=0, {JSON}"}
    status, response_headers, answer = post(sagemaker, DOC_BODY, headers)
    assert status == 200 and response_headers["Content-Type"] == JSON
    assert same(answer, sagemaker.front_door(DOC_BODY, JSON, JSON))
    headers = {"Content-Type": JSON, "Accept": f"{JSON};q=0.5, {JSONLINES};q=0.9"}
    status, response_headers, answer = post(sagemaker, DOC_BODY, headers)
    assert status == 200 and response_headers["Content-Type"] == JSONLINES


@pytest.mark.parametrize(
    "body, content_type, accept, message",
    [
        (b'{"instances": [{"in0": [1]}', JSON, None, "malformed JSON"),
        (b'{"in0": [1]}\n{"in0": [2}', JSONLINES, None, "line 2: malformed JSON Lines"),
        (b'{"instances": [{"label": 3}]}', JSON, None, "instances[0]: has neither in0 nor in1"),
        (b'{"instances": [{"in1": [12000]}]}', JSON, None, "outside the vocabulary of enc1"),
        (b'{"instances": [{"in0": [-1]}]}', JSON, None, "token ids are non-negative integers"),
        (DOC_BODY, f"{JSON}; infer_max_seqlens=0,9", None, "infer_max_seqlens='0,9'"),
        (b"", JSON, None, "empty body"),
    ],
)
def test_bad_input_gets_400_with_the_front_doors_message(
    sagemaker, body, content_type, accept, message
):
    headers = {"Content-Type": content_type} | ({"Accept": accept} if accept else {})
    status, response_headers, answer = post(sagemaker, body, headers)
    assert status == 400, answer
    assert response_headers["Content-Type"].startswith("application/json")
    assert message in orjson.loads(answer)["error"]


def test_a_body_over_the_limit_gets_413_before_it_is_read(sagemaker):
    huge = b'{"instances": [' + b" " * (17 * 1024 * 1024) + b"]}"
    status, _, answer = post(sagemaker, huge, {"Content-Type": JSON})
    assert status == 413 and b"exceeds the limit" in answer
    status, _, _ = post(sagemaker, DOC_BODY, {"Content-Type": JSON})
    assert status == 200  # and it keeps serving


def test_execution_parameters_for_batch_transform(sagemaker):
    with urllib.request.urlopen(f"{sagemaker.url}/execution-parameters") as response:
        parameters = json.loads(response.read())
    assert parameters["BatchStrategy"] == "MULTI_RECORD"
    assert 1 <= parameters["MaxPayloadInMB"] <= 6
    assert parameters["MaxConcurrentTransforms"] >= 1


@pytest.fixture
def runtime(sagemaker, monkeypatch):
    """boto3's sagemaker-runtime client against the local endpoint (any keys: none is checked)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    return boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url=sagemaker.url,
        config=Config(retries={"max_attempts": 1}),
    )


def test_boto3_invoke_endpoint_works_unchanged(sagemaker, runtime):
    response = runtime.invoke_endpoint(
        EndpointName="object2vec-endpoint",
        Body=DOC_BODY,
        ContentType=JSON,
        Accept=JSONLINES,
    )
    answer = response["Body"].read()
    assert response["ContentType"] == JSONLINES
    assert same(answer, sagemaker.front_door(DOC_BODY, JSON, JSONLINES))
    with pytest.raises(runtime.exceptions.ClientError) as error:
        runtime.invoke_endpoint(EndpointName="e", Body=b"{", ContentType=JSON)
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_neighbours_through_the_adapter_and_boto3(sagemaker, runtime):
    """The content type's `neighbours=k` travels as the hosted clients send it: a header."""
    body = b'{"in0": [8, 16, 24]}\n{"in0": [9, 17]}\n'
    asked = f"{JSONLINES}; neighbours=4"
    status, headers, answer = post(sagemaker, body, {"Content-Type": asked})
    assert status == 200 and headers["Content-Type"] == JSONLINES
    assert same(answer, sagemaker.front_door(body, asked, None))
    assert [len(orjson.loads(line)["neighbours"]) for line in answer.splitlines()] == [4, 4]
    response = runtime.invoke_endpoint(
        EndpointName="object2vec", Body=body, ContentType=asked, Accept=JSON
    )
    found = orjson.loads(response["Body"].read())["predictions"]
    assert [p["neighbours"] for p in found] == [
        orjson.loads(x)["neighbours"] for x in answer.splitlines()
    ]
    best = [n["id"] for n in found[0]["neighbours"]]
    with Client(f"localhost:{sagemaker.port}", protocol="sagemaker") as client:
        assert [n.id for n in client.neighbours([[8, 16, 24]], k=4)[0]] == best
        # the first two left out: the other two lead, as the user's history would be skipped
        rest = client.neighbours([[8, 16, 24]], k=4, exclude=[best[:2]])[0]
        assert [n.id for n in rest][:2] == best[2:] and not {n.id for n in rest} & set(best[:2])
    status, _, answer = post(sagemaker, body, {"Content-Type": f"{JSONLINES}; neighbours=500"})
    assert status == 400 and b"at most 100 a query" in answer
    unknown = b'{"in0": [8], "exclude": ["doc-x"]}\n'
    status, _, answer = post(sagemaker, unknown, {"Content-Type": asked})
    assert status == 400 and b"line 1: exclude[0] = 'doc-x' is not an id" in answer


def test_boto3_errors_carry_the_front_doors_message(sagemaker, runtime):
    """What a boto3 user reads: the ClientError's text names the error and says what is wrong
    (botocore reads `x-amzn-ErrorType` and the body's `message`)."""
    bad = b'{"instances": [{"in1": [12000]}]}'
    with pytest.raises(Object2VecError) as direct:
        sagemaker.front_door(bad, JSON, None)
    with pytest.raises(runtime.exceptions.ClientError) as error:
        runtime.invoke_endpoint(EndpointName="e", Body=bad, ContentType=JSON)
    assert error.value.response["Error"]["Code"] == "ValidationError"
    assert error.value.response["Error"]["Message"] == direct.value.message
    assert str(error.value).endswith(
        f"when calling the InvokeEndpoint operation: {direct.value.message}"
    )
    assert "outside the vocabulary of enc1" in str(error.value)
    with pytest.raises(runtime.exceptions.ClientError) as error:
        runtime.invoke_endpoint(EndpointName="e", Body=b"{}", ContentType=JSON, Accept="text/html")
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 406
    assert "text/html" in str(error.value)


def _tritonserver_of(server: SageMakerServer) -> int:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    for pid in children.read_text().split():
        if Path(f"/proc/{pid}/comm").read_text().strip() == "tritonserver":
            return int(pid)
    raise AssertionError("no tritonserver under the launcher")


def test_a_stopped_triton_gets_504_in_time_and_ping_503_within_2_s(sagemaker_servers):
    server = sagemaker_servers[1]
    triton = _tritonserver_of(server)
    os.kill(triton, signal.SIGSTOP)
    try:
        start = time.monotonic()
        try:
            with urllib.request.urlopen(f"{server.url}/ping", timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        assert status == 503 and time.monotonic() - start < 2.0
        start = time.monotonic()
        status, headers, answer = post(server, DOC_BODY, {"Content-Type": JSON})
        elapsed = time.monotonic() - start
        assert status == 504 and headers["x-amzn-ErrorType"] == "ServiceUnavailable"
        assert "did not answer within 3 s" in orjson.loads(answer)["message"]
        assert 3.0 <= elapsed < 4.5
    finally:
        os.kill(triton, signal.SIGCONT)
    _wait_ready([server], timeout=30)
    status, _, answer = post(server, DOC_BODY, {"Content-Type": JSON})
    assert status == 200, answer


def test_transform_through_sagemaker_endpoints(sagemaker_servers, tmp_path, capsys):
    lines = [
        json.dumps({"in0": DOC_EXAMPLE[i % 3][: 1 + i % 7]}).encode()
        if i % 2
        else json.dumps({"in0": [1 + i % 50], "in1": [2 + i % 30]}).encode()
        for i in range(400)
    ]
    lines[17] = b""  # a blank line keeps its place
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    code = cli(
        [
            "transform",
            str(tmp_path / "in"),
            "--output-path",
            str(tmp_path / "out"),
            "--protocol",
            "sagemaker",
            *[a for s in sagemaker_servers for a in ("--url", f"127.0.0.1:{s.port}")],
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert "execution-parameters" in err  # no --max-payload: the endpoint's own were read
    assert code == 1 and "part.jsonl:18: blank line" in err
    out = (tmp_path / "out" / "part.jsonl.out").read_bytes().splitlines()
    assert len(out) == len(lines)
    for i in (0, 1, 2, 16, 18, 399):
        expected = sagemaker_servers[0].front_door(lines[i], JSONLINES, None).strip()
        assert same(out[i], expected)
    assert b"error" in out[17]


def _connections_to(port: int) -> int:
    """Established TCP connections whose far end is 127.0.0.1:port (/proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if state == "01" and int(remote.split(":")[1], 16) == port:
            count += 1
    return count


def test_the_pool_toward_triton_stays_bounded_under_many_clients(sagemaker):
    import aiohttp

    async def many(clients: int) -> list[int]:
        statuses = []

        async def one() -> None:
            async with aiohttp.ClientSession() as session:  # a connection of its own
                for _ in range(3):
                    async with session.post(
                        f"{sagemaker.url}/invocations",
                        data=DOC_BODY,
                        headers={"Content-Type": JSON},
                    ) as response:
                        await response.read()
                        statuses.append(response.status)

        await asyncio.gather(*(one() for _ in range(clients)))
        return statuses

    statuses = asyncio.run(many(200))
    assert statuses.count(200) == len(statuses) == 600
    assert _connections_to(sagemaker.triton_port) <= 64  # O2V_UPSTREAM_CONNECTIONS
