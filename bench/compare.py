"""Side-by-side table of several suite runs (tuning): perf_analyzer gRPC rows of each.

python -m bench.compare runs/tune-t0 runs/tune-t1 ...
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    runs = [Path(p) for p in (argv or sys.argv[1:])]
    table: dict[tuple, dict[str, str]] = {}
    for run in runs:
        with open(run / "results.csv") as f:
            for row in csv.DictReader(f):
                if row["system"] != "triton-perf_analyzer" or row["protocol"] != "grpc":
                    continue
                key = (row["model"], row["workload"], int(row["concurrency"]))
                cell = f"{float(row['instances_per_s']):,.0f} ({float(row['p99_ms']):.1f})"
                table.setdefault(key, {})[run.name] = cell
    print("inst/s (p99 ms), perf_analyzer gRPC\n")
    print("| model / workload / c | " + " | ".join(r.name for r in runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    for (model, workload, c), cells in sorted(table.items()):
        print(
            f"| {model} / {workload} / c{c} | "
            + " | ".join(cells.get(r.name, "") for r in runs)
            + " |"
        )
    print()
    defaults = None
    for run in runs:
        settings = json.loads((run / "settings.json").read_text())
        defaults = defaults or settings
        changed = {k: v for k, v in settings.items() if v != defaults.get(k)}
        print(f"{run.name}: {changed or 'defaults'}")


if __name__ == "__main__":
    main()
