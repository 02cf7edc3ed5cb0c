"""docs/metrics.png: the dashboard's panels (docker/grafana/object2vec.json) from a real run.

    python -m bench.dashboard_picture [--seconds 120] [--out docs/metrics.png]

Grafana is not in Debian, so the picture is drawn from the same queries' answers: the embedded
server and Debian's Prometheus (scraping every second) run here, traffic of every kind goes to
the front door in three phases (one client, four, eight; a share of bad bodies), then each
panel's PromQL is asked of Prometheus' query_range API and plotted with matplotlib (series
that stayed at zero, such as error kinds that never happened, left out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from client.api import Client, Object2VecError  # noqa: E402
from server.launcher.embedded import PROJECT_ROOT, EmbeddedServer  # noqa: E402
from server.launcher.process import free_port  # noqa: E402

DASHBOARD = PROJECT_ROOT / "docker" / "grafana" / "object2vec.json"
# Instance counts differ by kind (4, 2, 3, 1), so each kind's line stands apart.
BODIES = [
    (
        b'{"instances": [{"in0": [1, 2, 3, 4, 5, 6, 7, 8]}, {"in0": [9, 10]}, {"in0": [3]},'
        b' {"in0": [4, 5, 6]}]}',
        "application/json",
    ),
    (b'{"instances": [{"in1": [4, 5, 6]}, {"in1": [7]}]}', "application/json"),
    (
        b'{"instances": [{"in0": [1, 2], "in1": [3, 4, 5, 6]}, {"in0": [1], "in1": [2]},'
        b' {"in0": [5, 6, 7], "in1": [8]}]}',
        "application/json",
    ),
    (b'{"instances": [{"in0": [2, 3, 4]}]}', "application/json; neighbours=5"),
    (b'{"instances": [{"in0": "bad"}]}', "application/json"),
]


def _traffic(address: str, seconds: float) -> None:
    """Three phases of growing concurrency, each client on its own connection."""
    for clients in (1, 4, 8):
        stop = time.monotonic() + seconds / 3

        def client(offset: int, stop: float = stop) -> None:
            with Client(address) as connection:
                i = offset
                while time.monotonic() < stop:
                    body, content_type = BODIES[i % len(BODIES)]
                    with contextlib.suppress(Object2VecError):  # the bad bodies' 400s
                        connection.invoke(body, content_type)
                    i += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def _query_range(prometheus: str, expr: str, start: float, end: float) -> list:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "2"})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{query}") as answer:
        return json.loads(answer.read())["data"]["result"]


def _legend(template: str, labels: dict) -> str:
    for key, value in labels.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "metrics.png")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="o2v-picture-"))
    server = EmbeddedServer(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    with open(folder / "server.log", "w") as log, server.start(stdout=log):
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {"job_name": "o2v", "static_configs": [{"targets": [server.metrics_url[7:-8]]}]}
            ],
        }
        (folder / "prometheus.yml").write_text(json.dumps(config))
        port = free_port()
        prometheus = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=(folder / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(5)
            start = time.time()
            print(f"traffic for {args.seconds:g} s ...", flush=True)
            _traffic(server.http_url, args.seconds)
            time.sleep(5)
            end = time.time()
            panels = [
                p
                for p in json.loads(DASHBOARD.read_text())["panels"]
                if "endpoint" not in p["title"]
            ]
            rows = (len(panels) + 1) // 2
            figure, axes = plt.subplots(rows, 2, figsize=(14, 3 * rows), sharex=True)
            for axis, panel in zip(axes.flat, panels, strict=False):
                for target in panel["targets"]:
                    expr = target["expr"].replace("$__rate_interval", "15s")
                    for series in _query_range(f"http://127.0.0.1:{port}", expr, start, end):
                        points = [(float(t) - start, float(v)) for t, v in series["values"]]
                        if not any(v for _, v in points):
                            continue  # an outcome that never happened: left out of the legend
                        axis.plot(
                            *zip(*points, strict=True),
                            label=_legend(target["legendFormat"], series["metric"]),
                        )
                axis.set_title(f"{panel['title']} ({panel['fieldConfig']['defaults']['unit']})")
                axis.legend(fontsize=7, loc="upper left")
                axis.grid(alpha=0.3)
            for axis in axes.flat[len(panels) :]:
                axis.axis("off")
            for axis in axes[-1]:
                axis.set_xlabel("seconds: 1, then 4, then 8 clients")
            figure.tight_layout()
            figure.savefig(args.out, dpi=80)
            print(f"wrote {args.out}")
        finally:
            prometheus.terminate()
            prometheus.wait(30)


if __name__ == "__main__":
    main()
