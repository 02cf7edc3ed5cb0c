"""The report of a benchmark run: per-model server statistics, the ratios table, the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.load import CONCURRENCIES, Row
from server.embedded import EmbeddedServer


def server_profile(server: EmbeddedServer) -> str:
    """Per model: requests, executions, and the mean queue / compute time of each."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    lines = [
        "| model | requests | executions | requests/execution | queue us/request "
        "| compute us/execution |",
        "|---|---|---|---|---|---|",
    ]
    for stats in client.get_inference_statistics()["model_stats"]:
        inference = stats["inference_stats"]
        requests = int(inference["success"]["count"]) or 1
        executions = int(stats["execution_count"]) or 1
        compute = sum(
            int(inference[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output")
        )
        lines.append(
            f"| {stats['name']} | {requests} | {executions} | "
            f"{requests / executions:.1f} | {int(inference['queue']['ns']) / requests / 1e3:,.0f} "
            f"| {compute / executions / 1e3:,.0f} |"
        )
    client.close()
    return "\n".join(lines) + "\n"


# ---- report ----------------------------------------------------------------------------------


def report(rows: list[Row], out: Path) -> str:
    lines = []
    keyed = {(r.model, r.workload, r.system, r.protocol, r.concurrency): r for r in rows}
    for model, workload in dict.fromkeys((r.model, r.workload) for r in rows):
        lines += [
            f"\n### {model} / {workload}\n",
            "| system | protocol | inst/s c1 | inst/s c16 | inst/s c64 | p50 ms c16 | p99 ms c16 |",
            "|---|---|---|---|---|---|---|",
        ]
        for system, protocol in dict.fromkeys(
            (r.system, r.protocol) for r in rows if (r.model, r.workload) == (model, workload)
        ):
            if system in ("ceiling-onnxruntime", "torch-eager"):
                r = keyed[(model, workload, system, protocol, 0)]
                lines.append(
                    f"| {system} | {protocol} | | {r.instances_per_s:,.0f} | | "
                    f"{r.p50_ms:.2f} (one request) | |"
                )
                continue
            cells = [keyed[(model, workload, system, protocol, c)] for c in CONCURRENCIES]
            lines.append(
                f"| {system} | {protocol} | "
                + " | ".join(f"{c.instances_per_s:,.0f}" for c in cells)
                + f" | {cells[1].p50_ms:.2f} | {cells[1].p99_ms:.2f} |"
            )
        triton = keyed.get((model, workload, "triton-perf_analyzer", "grpc", 16))
        ceiling = next(
            (
                r
                for r in rows
                if (r.model, r.workload, r.system) == (model, workload, "ceiling-onnxruntime")
            ),
            None,
        )
        ours = keyed.get((model, workload, "triton-loadgen", "http", 16))
        peer = keyed.get((model, workload, "fastapi", "http", 16))
        if triton and ceiling:
            lines.append(
                f"\nTriton gRPC / ceiling at c16: "
                f"{triton.instances_per_s / ceiling.instances_per_s:.2f}x"
            )
        if ours and peer:
            lines.append(
                f"Triton HTTP / FastAPI peer at c16 (same load generator): "
                f"{ours.instances_per_s / peer.instances_per_s:.2f}x"
            )
        single = keyed.get((model, workload, "triton-perf_analyzer", "grpc", 1))
        if single and ceiling and not np.isnan(ceiling.p50_ms):
            lines.append(
                f"Per-request overhead of Triton at c1 (gRPC p50 - in-process "
                f"single request): {(single.p50_ms - ceiling.p50_ms) * 1e3:,.0f} us"
            )
    text = "\n".join(lines)
    (out / "report.md").write_text(text + "\n")
    return text


def plot(rows: list[Row], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r.model, r.workload) for r in rows))
    figure, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for axis, (model, workload) in zip(axes[0], groups, strict=True):
        series = dict.fromkeys(
            (r.system, r.protocol)
            for r in rows
            if (r.model, r.workload) == (model, workload) and r.concurrency
        )
        for system, protocol in series:
            points = [
                r
                for r in rows
                if (r.model, r.workload, r.system, r.protocol)
                == (model, workload, system, protocol)
            ]
            axis.plot(
                [p.p99_ms for p in points],
                [p.instances_per_s for p in points],
                marker="o",
                label=f"{system} {protocol}",
            )
        axis.set(
            title=f"{model} / {workload}",
            xlabel="p99 latency (ms)",
            ylabel="instances / s",
            xscale="log",
        )
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "throughput_vs_p99.png", dpi=110)
