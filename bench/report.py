"""The report of a benchmark run: per-model server statistics, the ratios table, the plot."""

from __future__ import annotations

from pathlib import Path

from bench.load import CONCURRENCIES, Row
from server.launcher.embedded import EmbeddedServer


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
            cells = [keyed.get((model, workload, system, protocol, c)) for c in CONCURRENCIES]
            middle = cells[1]
            lines.append(
                f"| {system} | {protocol} | "
                + " | ".join(f"{c.instances_per_s:,.0f}" if c else "-" for c in cells)
                + (f" | {middle.p50_ms:.2f} | {middle.p99_ms:.2f} |" if middle else " | - | - |")
            )
    text = "\n".join(lines + ["", goals(rows)])
    (out / "report.md").write_text(text + "\n")
    return text


def _find(rows: list[Row], model: str, workload: str, system: str, concurrency: int, protocol=None):
    """The row of a system (by name prefix: Ray Serve's name carries its batching)."""
    return next(
        (
            r
            for r in rows
            if (r.model, r.workload, r.concurrency) == (model, workload, concurrency)
            and r.system.startswith(system)
            and protocol in (None, r.protocol)
        ),
        None,
    )


def goals(rows: list[Row]) -> str:
    """The ratios the performance goals are stated in, per model and workload, from one run:
    Triton against Ray Serve and FastAPI at c16 (the same load generator, HTTP), Triton's
    per-request overhead at c1 (gRPC p50 minus one request in process) against the empty
    model's p50 (the floor), p50 at c1 against FastAPI's, and Triton's best throughput against
    the in-process ceiling."""
    lines = [
        "### Goals\n",
        "| model / workload | Triton / Ray Serve c16 | Triton / FastAPI c16 "
        "| overhead c1 / floor | p50 c1 Triton vs FastAPI (ms) | Triton best / ceiling |",
        "|---|---|---|---|---|---|",
    ]

    def ratio(a: Row | None, b: Row | None) -> str:
        return f"{a.instances_per_s / b.instances_per_s:.2f}x" if a and b else "-"

    for model, workload in dict.fromkeys((r.model, r.workload) for r in rows):
        ours = _find(rows, model, workload, "triton-loadgen", 16)
        ceiling = _find(rows, model, workload, "ceiling-onnxruntime", 0)
        single = _find(rows, model, workload, "triton-perf_analyzer", 1, "grpc")
        floor = _find(rows, model, workload, "floor-empty-model", 1, "grpc")
        overhead = "-"
        if single and floor and ceiling:
            spent = single.p50_ms - ceiling.p50_ms
            overhead = (
                f"{spent * 1e3:,.0f} / {floor.p50_ms * 1e3:,.0f} us = {spent / floor.p50_ms:.2f}x"
            )
        ours1 = _find(rows, model, workload, "triton-loadgen", 1)
        peer1 = _find(rows, model, workload, "fastapi", 1)
        p50 = f"{ours1.p50_ms:.2f} vs {peer1.p50_ms:.2f}" if ours1 and peer1 else "-"
        served = [
            r
            for r in rows
            if (r.model, r.workload, r.system) == (model, workload, "triton-perf_analyzer")
        ]
        best = max(served, key=lambda r: r.instances_per_s) if served else None
        lines.append(
            f"| {model} / {workload} | {ratio(ours, _find(rows, model, workload, 'ray-serve', 16))}"
            f" | {ratio(ours, _find(rows, model, workload, 'fastapi', 16))} | {overhead} | {p50}"
            f" | {ratio(best, ceiling)}"
            + (f" ({best.protocol} c{best.concurrency})" if best else "")
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], out: Path) -> None:
    """Throughput against p99 latency, one panel per model and workload; the in-process
    ceiling as a dashed line. Log scales: the floor and the peers differ by 100x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in rows))
    workloads = list(dict.fromkeys(r.workload for r in rows))
    figure, axes = plt.subplots(
        len(models), len(workloads), figsize=(5 * len(workloads), 4 * len(models)), squeeze=False
    )
    for (m, model), (w, workload) in (
        (mm, ww) for mm in enumerate(models) for ww in enumerate(workloads)
    ):
        axis = axes[m][w]
        mine = [r for r in rows if (r.model, r.workload) == (model, workload)]
        for system, protocol in dict.fromkeys(
            (r.system, r.protocol) for r in mine if r.concurrency
        ):
            points = [r for r in mine if (r.system, r.protocol) == (system, protocol)]
            axis.plot(
                [p.p99_ms for p in points],
                [p.instances_per_s for p in points],
                marker="o",
                label=f"{system} {protocol}",
            )
        for r in mine:
            if r.system == "ceiling-onnxruntime":
                axis.axhline(r.instances_per_s, linestyle="--", color="black", label="ceiling")
        axis.set(
            title=f"{model} / {workload}",
            xlabel="p99 latency (ms)",
            ylabel="instances / s",
            xscale="log",
            yscale="log",
        )
        axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(out / "throughput_vs_p99.png", dpi=100)


def read_rows(path: Path) -> list[Row]:
    import csv

    with open(path) as f:
        return [
            Row(
                r["model"],
                r["workload"],
                r["system"],
                r["protocol"],
                int(r["concurrency"]),
                float(r["instances_per_s"]),
                float(r["p50_ms"]),
                float(r["p99_ms"]),
            )
            for r in csv.DictReader(f)
        ]


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.report runs/bench`: report.md and the plot again from results.csv."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    rows = read_rows(args.folder / "results.csv")
    plot(rows, args.folder)
    print(report(rows, args.folder))


if __name__ == "__main__":
    main()
