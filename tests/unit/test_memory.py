"""The front door's garbage collector: start-up frozen, young collections every 10,000
allocations (server/common/memory.py), in a process of its own."""

import subprocess
import sys

from tests.helpers import PROJECT_ROOT

PROBE = """
import gc
from server.common.memory import COLLECTOR_THRESHOLDS, quiet_collector
made = [[i] for i in range(1000)]
quiet_collector()
assert gc.get_threshold() == COLLECTOR_THRESHOLDS, gc.get_threshold()
assert gc.get_freeze_count() >= len(made), gc.get_freeze_count()
before = gc.get_stats()[0]["collections"]
kept = [[i] for i in range(COLLECTOR_THRESHOLDS[0] // 2)]  # a bulk body's records
assert gc.get_stats()[0]["collections"] == before, "a young collection within half the threshold"
cycle = []
cycle.append(cycle)
del cycle
kept += [[i] for i in range(COLLECTOR_THRESHOLDS[0])]
assert gc.get_stats()[0]["collections"] > before, "no young collection after one and a half"
print("ok")
"""


def test_the_collector_walks_a_bulk_body_at_most_once():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
