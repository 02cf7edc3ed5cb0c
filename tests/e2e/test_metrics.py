"""Operators' metrics (docs/metrics.md), exact: after known requests of each kind, and refused
ones of each error kind, every counter moved by exactly that much, over HTTP, gRPC and the
SageMaker endpoint; then a real Prometheus (Debian's `prometheus`, which the test command
installs) scrapes the server, evaluates the autoscaling rule of docker/k8s/base and the
dashboard's every query.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
import yaml
from tritonclient.utils import InferenceServerException

from contract import metrics as m
from contract.flat import FLAT_FILE, SEPARATOR_KEY
from server.launcher.embedded import PROJECT_ROOT
from server.launcher.launch import front_door_max_body
from server.launcher.process import group_members, stubs_of
from tests.helpers import LAUNCHED, Launcher, free_port, infer, json_body

pytestmark = pytest.mark.local  # starts servers (and a Prometheus) of its own

INTERVAL_S = 0.2  # the front door's metric updates, fast for the test
ENV = {"O2V_METRICS_INTERVAL_S": str(INTERVAL_S)}
RULES = PROJECT_ROOT / "docker" / "k8s" / "base" / "prometheus-adapter-rules.yaml"
DASHBOARD = PROJECT_ROOT / "docker" / "grafana" / "object2vec.json"

# Each request carries two instances of equal lengths (a call is never cut inside one).
ASKED = {
    "embedding_in0": ([{"in0": [1, 2, 3]}, {"in0": [4, 5, 6]}], None),
    "embedding_in1": ([{"in1": [7, 8]}, {"in1": [9, 10]}], None),
    "pair_score": ([{"in0": [1, 2], "in1": [3, 4, 5]}, {"in0": [6, 7], "in1": [8, 9, 10]}], None),
    "neighbours": (
        [{"in0": [2, 3, 4, 5]}, {"in0": [6, 7, 8, 9]}],
        "application/json; neighbours=2",
    ),
}
# (content type, accept, body) the front door refuses, by the error kind it says
REFUSED = {
    "bad_request": (None, None, b'{"instances": [{"in0": "not ids"}]}'),
    "unsupported_media_type": ("text/csv", None, b"1,2,3"),
    "not_acceptable": (None, "text/html", json_body([{"in0": [1]}]).encode()),
    "too_large": (None, None, None),  # a body one byte over the front door's limit
}
N, M = 3, 2  # requests of each kind asked, refused


@dataclass
class Server:
    http_url: str
    grpc_url: str
    metrics_url: str


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> dict[tuple, float]:
    """Every sample as Prometheus stores it: (name, sorted labels) -> value. (prometheus_client's
    parser renames a counter's samples, `_total` added: not what the queries see.)"""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found:
            name, labels, value = found.groups()
            key = (name, tuple(sorted(_LABEL.findall(labels or ""))))
            samples[key] = float(value)
    return samples


def moved(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def settled(url: str, before: dict, name: str, expected: float, **labels) -> dict:
    """The scrape once `name` moved by `expected` and one more update went out."""
    deadline = time.monotonic() + 10
    while moved(before, scrape(url), name, **labels) < expected:
        assert time.monotonic() < deadline, f"{name} never moved by {expected}"
        time.sleep(INTERVAL_S / 2)
    time.sleep(2 * INTERVAL_S)
    return scrape(url)


def _launched(repository: Path, log: Path, args: tuple = (), env: dict | None = None):
    launcher = Launcher(["server", *args, "--model-repository", str(repository)], log, env)
    LAUNCHED.remove(launcher.process)  # the module's, stopped here
    return launcher


def _stopped(launcher: Launcher) -> None:
    launcher.process.terminate()
    assert launcher.wait() == 0


@pytest.fixture(scope="module")
def launched(demo_repository, tmp_path_factory):
    launcher = _launched(demo_repository, tmp_path_factory.mktemp("metrics") / "log", env=ENV)
    try:
        launcher.wait_ready()
        yield launcher
    finally:
        _stopped(launcher)


@pytest.fixture(scope="module")
def server(launched) -> Server:
    return Server(
        f"localhost:{launched.http_port}",
        f"localhost:{launched.grpc_port}",
        f"http://127.0.0.1:{launched.metrics_port}/metrics",
    )


def _separator(repository: Path, network: str) -> int | None:
    """The flat form's separator export wrote (None: the network runs padded)."""
    path = repository / network / "1" / FLAT_FILE
    if not path.exists():
        return None
    metadata = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    return int(metadata[SEPARATOR_KEY])


def expected_tokens_and_positions(repository: Path) -> tuple[dict, dict]:
    """What N requests of each kind send each network, and the positions it computes: padded,
    rows x the longest, per input; flat, the tokens plus a separator per sequence."""
    tokens = dict.fromkeys(m.NETWORKS, 0)
    positions = dict.fromkeys(m.NETWORKS, 0)
    for asked, (instances, _) in ASKED.items():
        sides = ["in0", "in1"] if asked == "pair_score" else ["in1" if "in1" in asked else "in0"]
        network = "pair" if asked == "pair_score" else ("enc1" if sides == ["in1"] else "enc0")
        separator = _separator(repository, network) if network != "pair" else None
        for side in sides:
            lengths = [len(i[side]) for i in instances]
            tokens[network] += N * sum(lengths)
            if separator is None:
                positions[network] += N * len(lengths) * max(lengths)
            else:
                positions[network] += N * (sum(lengths) + separator * len(lengths))
    return tokens, positions


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_front_door_counter_moves_by_exactly_what_was_sent(server, demo_repository, protocol):
    before = scrape(server.metrics_url)
    sent, answered = 0, 0
    for instances, content_type in ASKED.values():
        body = json_body(instances)
        for _ in range(N):
            answer = infer(server, protocol, body, content_type)
            sent, answered = sent + len(body), answered + len(answer)
    for content_type, accept, body in REFUSED.values():
        body = body or b" " * (front_door_max_body(demo_repository) + 1)
        for _ in range(M):
            with pytest.raises(InferenceServerException):
                infer(server, protocol, body, content_type, accept)
            sent += len(body)
    requests = N * len(ASKED) + M * len(REFUSED)
    after = settled(server.metrics_url, before, "o2v_request_duration_seconds_count", requests)

    assert moved(before, after, "o2v_requests_total", outcome="answered") == N * len(ASKED)
    for kind in REFUSED:
        assert moved(before, after, "o2v_requests_total", outcome=kind) == M, kind
    for asked, (instances, _) in ASKED.items():
        got = moved(before, after, "o2v_instances_total", asked=asked, outcome="answered")
        assert got == N * len(instances), asked
    tokens, positions = expected_tokens_and_positions(demo_repository)
    for network in m.NETWORKS:
        assert moved(before, after, "o2v_tokens_total", network=network) == tokens[network]
        assert moved(before, after, "o2v_positions_total", network=network) == positions[network]
    assert moved(before, after, "o2v_body_bytes_total", direction="in") == sent
    assert moved(before, after, "o2v_body_bytes_total", direction="out") == answered
    # one request an execute (they were sent one after the other): Triton counts the same
    executes = moved(before, after, "nv_inference_exec_count", model="object2vec", version="1")
    assert executes == requests
    assert moved(before, after, "o2v_execute_duration_seconds_count") == executes
    assert moved(before, after, "o2v_execute_duration_seconds_bucket", le="+Inf") == executes
    for stage in ("parse", "format"):
        assert moved(before, after, "o2v_stage_duration_seconds_count", stage=stage) == executes
    planned = N * len(ASKED)  # the executes with something parsed
    for stage in ("plan", "networks"):
        assert moved(before, after, "o2v_stage_duration_seconds_count", stage=stage) == planned
    assert moved(before, after, "o2v_stage_duration_seconds_count", stage="neighbours") == N
    assert moved(before, after, "o2v_execute_network_calls_count") == planned
    calls = {"enc0": 2 * N, "enc1": N, "pair": N}  # neighbours' queries are enc0's
    for network, count in calls.items():
        assert moved(before, after, "o2v_network_call_rows_count", network=network) == count
        assert moved(before, after, "o2v_network_call_rows_sum", network=network) == 2 * count
    assert moved(before, after, "o2v_execute_network_calls_sum") == 4 * N
    assert moved(before, after, "o2v_drain_refusals_total") == 0
    assert after[("o2v_front_door_copies", ())] >= 1
    durations = moved(before, after, "o2v_stage_duration_seconds_sum", stage="parse")
    assert 0 < durations < moved(before, after, "o2v_execute_duration_seconds_sum")


@pytest.fixture(scope="module")
def sagemaker(demo_repository, tmp_path_factory):
    port = free_port()
    env = {**ENV, "SAGEMAKER_BIND_TO_PORT": str(port), "O2V_HTTP_READ_TIMEOUT_S": "1"}
    log = tmp_path_factory.mktemp("metrics") / "sagemaker.log"
    launcher = _launched(demo_repository, log, ("--sagemaker",), env)
    try:
        launcher.wait_ready()
        yield f"http://127.0.0.1:{port}"
    finally:
        _stopped(launcher)


def _post(url: str, body: bytes, headers: dict) -> int:
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def _raw(url: str, data: bytes) -> bytes:
    """Bytes on a fresh connection, and whatever comes back before it closes."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(data)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_the_sagemaker_endpoint_counts_each_answer_and_refusal_and_carries_tritons(sagemaker):
    url = f"{sagemaker}/metrics"
    before = scrape(url)
    json_headers = {"Content-Type": "application/json"}
    for _ in range(N):
        body = json_body([{"in0": [1, 2]}]).encode()
        assert _post(f"{sagemaker}/invocations", body, json_headers) == 200
        assert _post(f"{sagemaker}/invocations", b"{not json", json_headers) == 400
        assert _post(f"{sagemaker}/nowhere", b"", {}) == 404
    for _ in range(M):
        # over the body limit, said by Content-Length: refused from the head
        head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n"
        assert _raw(sagemaker, head).startswith(b"HTTP/1.1 413")
        assert _raw(sagemaker, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
        head = b"GET /ping HTTP/1.1\r\nX-Long: " + b"x" * 70_000 + b"\r\n\r\n"
        assert _raw(sagemaker, head).startswith(b"HTTP/1.1 431")
        # a body that never finishes arriving: 408 after O2V_HTTP_READ_TIMEOUT_S
        head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"
        assert _raw(sagemaker, head).startswith(b"HTTP/1.1 408")
    after = settled(url, before, "o2v_requests_total", N, outcome="answered")

    def endpoint(route, status):
        return moved(before, after, "o2v_endpoint_requests_total", route=route, status=str(status))

    assert endpoint("invocations", 200) == N
    assert endpoint("invocations", 400) == N
    assert endpoint("other", 404) == N
    assert endpoint("invocations", 413) == M
    assert endpoint("invocations", 408) == M
    assert endpoint("other", 400) == M  # the malformed request's head never arrived
    assert moved(before, after, "o2v_endpoint_refusals_total", limit="body_bytes") == M
    assert moved(before, after, "o2v_endpoint_refusals_total", limit="malformed") == M
    assert moved(before, after, "o2v_endpoint_refusals_total", limit="head_bytes") == M
    assert endpoint("other", 431) == M  # refused before its head was complete
    assert moved(before, after, "o2v_endpoint_refusals_total", limit="read_timeout") == M
    assert moved(before, after, "o2v_endpoint_upstream_duration_seconds_count") == 2 * N
    assert moved(before, after, "o2v_endpoint_upstream_timeouts_total") == 0
    assert after[("o2v_endpoint_requests_in_flight", ())] == 0
    # Triton's and the front door's, in the same scrape
    assert moved(before, after, "o2v_requests_total", outcome="answered") == N
    assert moved(before, after, "o2v_requests_total", outcome="bad_request") == N
    assert (
        moved(before, after, "o2v_instances_total", asked="embedding_in0", outcome="answered") == N
    )


# -- a real Prometheus


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen

    def query(self, promql: str, at: float) -> list:
        query = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=10) as answer:
            reply = json.loads(answer.read())
        assert reply["status"] == "success", reply
        return reply["data"]["result"]

    def scraped(self) -> bool:
        """Both targets scraped, and up."""
        try:
            return sum(float(s["value"][1]) for s in self.query("up", time.time())) == 2
        except OSError:  # not listening yet
            return False


@pytest.fixture(scope="module")
def prometheus(launched, sagemaker, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: `make test` installs Debian's package")
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "object2vec",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{launched.metrics_port}"],
                        # what Kubernetes service discovery adds, and the rule groups by
                        "labels": {"namespace": "test", "pod": "object2vec-0"},
                    }
                ],
            },
            {  # the SageMaker endpoint's /metrics: its own, then its Triton's
                "job_name": "object2vec-sagemaker",
                "static_configs": [
                    {
                        "targets": [urllib.parse.urlsplit(sagemaker).netloc],
                        "labels": {"namespace": "test", "pod": "object2vec-sagemaker"},
                    }
                ],
            },
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=(folder / "log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    found = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 30
        while not found.scraped():
            assert process.poll() is None, (folder / "log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus scraped nothing"
            time.sleep(0.5)
        yield found
    finally:
        process.terminate()
        process.wait(30)


def adapter_query() -> str:
    """The autoscaling rule's PromQL as prometheus-adapter sends it for our test pod."""
    rules = yaml.safe_load(yaml.safe_load(RULES.read_text())["data"]["rules.yaml"])
    (rule,) = rules
    assert rule["name"]["as"] == "object2vec_front_door_busy"
    query = rule["metricsQuery"].replace(
        "<<.LabelMatchers>>", 'namespace="test",pod="object2vec-0"'
    )
    return query.replace("<<.GroupBy>>", "pod")


def _saturate(server: Server, seconds: float, concurrency: int = 4) -> int:
    body = json_body([{"in0": list(range(1, 30))} for _ in range(32)])
    stop, answered = time.monotonic() + seconds, []

    def client():
        while time.monotonic() < stop:
            infer(server, "http", body)
            answered.append(1)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(answered)


def test_the_autoscaling_rule_gives_the_busy_share_prometheus_saw(server, prometheus):
    """Over the rule's one-minute window, all of the front door's traffic is a saturating load
    whose busy seconds the test reads itself: the rule must give them per second per copy."""
    time.sleep(3)  # earlier tests' traffic falls before the window
    start = time.time()
    before = scrape(server.metrics_url)
    assert _saturate(server, 20) > 0
    time.sleep(3 * INTERVAL_S)
    after = scrape(server.metrics_url)
    at = start + 59.5  # the window [start - 0.5 s, start + 59.5 s] holds the load
    time.sleep(max(0.0, at + 2 - time.time()))  # and Prometheus has scraped past its end

    (sample,) = prometheus.query(adapter_query(), at)
    value = float(sample["value"][1])
    busy = moved(before, after, "o2v_execute_duration_seconds_sum")
    copies = after[("o2v_front_door_copies", ())]
    expected = busy / 60 / copies
    print(f"rule: {value:.4f}; busy {busy:.2f} s of 60 on {copies:g} copies: {expected:.4f}")
    assert expected > 0.1, f"the load kept the front door busy {busy:.1f} s of 60 only"
    assert value == pytest.approx(expected, rel=0.1), (value, expected)
    assert sample["metric"] == {"pod": "object2vec-0"}

    # every panel of the dashboard is a query this Prometheus answers with data
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expression = target["expr"].replace("$__rate_interval", "1m")
            assert prometheus.query(expression, at), (panel["title"], expression)


def test_counters_restart_from_zero_with_tritonserver_and_prometheus_counts_across(
    launched, server, prometheus
):
    """A dead stub makes the supervisor restart tritonserver: every counter starts again from
    zero, and Prometheus takes the drop as a reset (docs/metrics.md). Last in this module: it
    restarts the module's server."""
    series = 'o2v_requests_total{outcome="answered",pod="object2vec-0"}'
    time.sleep(3)
    first = time.time()  # nothing reached the front door in the 3 s before
    before = scrape(server.metrics_url)
    body = json_body([{"in0": [1, 2, 3]}])
    for _ in range(5):
        infer(server, "http", body)
    settled(server.metrics_url, before, "o2v_requests_total", 5, outcome="answered")
    time.sleep(2)  # scraped by Prometheus
    (stub,) = [
        s for s in stubs_of(group_members(launched.server_pid())) if "object2vec" in s.instance
    ]
    os.kill(stub.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while launched.log.read_bytes().count(b"ready again") < 1:
        assert time.monotonic() < deadline, "not restarted within 60 s"
        time.sleep(0.1)
    for _ in range(3):
        infer(server, "http", body)
    after = settled(server.metrics_url, {}, "o2v_requests_total", 3, outcome="answered")
    assert after[("o2v_requests_total", (("outcome", "answered"),))] == 3  # from zero
    time.sleep(3)
    # from 2 s before the first request: a scrape of the quiet value is in it, however rounded
    window = f"{math.ceil(time.time() - first) + 2}s"
    (resets,) = prometheus.query(f"resets({series}[{window}])", time.time())
    assert float(resets["value"][1]) == 1
    (increase,) = prometheus.query(f"increase({series}[{window}])", time.time())
    # both sides of the reset (Prometheus extrapolates to the window's edges: a little more)
    assert 5 + 3 <= float(increase["value"][1]) <= (5 + 3) * 1.25
