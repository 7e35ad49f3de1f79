"""The server's garbage-collector settings (broker.server.tune_gc), in a child
process: they are process-wide and must not leak into the test run."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import gc
from broker.server import GC_THRESHOLDS, tune_gc

assert gc.get_freeze_count() == 0
tune_gc()
assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold()
assert gc.get_freeze_count() > 1000  # what starting made is out of every collection
# Cyclic garbage made afterwards is still collected.
class Node:
    pass
a, b = Node(), Node()
a.peer, b.peer = b, a
del a, b
assert gc.collect() >= 2
print("ok")
"""


def test_tune_gc_raises_the_thresholds_freezes_startup_and_still_collects() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
