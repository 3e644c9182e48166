"""engine/garbage.py: an engine's start paces its process's garbage collector once, collecting
what is garbage before it freezes the rest, and leaves a process whose collector is off alone.
Each case in a fresh interpreter: the collector is the process's, and this one's is paced already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.engine import garbage

pytestmark = pytest.mark.slow  # a real interpreter per case

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import gc, json, sys, weakref
sys.path.insert(0, {root!r})
from tests.conftest import make_settings
from orchestrator.engine.core import Engine
from pathlib import Path

if {disable!r}:
    gc.disable()
before = gc.get_threshold()

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a

old = cycle()
gc.collect()  # now in the oldest generation: only a full collection frees it once dropped
old_gone = []
weakref.finalize(old, old_gone.append, True)
del old

engine = Engine(make_settings(Path({tmp!r})))
try:
    at_start = {{"old_gone": bool(old_gone), "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}}
    young_gone = []
    young = cycle()
    weakref.finalize(young, young_gone.append, True)
    del young
    keep = [[] for _ in range(3 * {young!r})]  # allocations enough for the paced young collection
    at_start["young_gone"] = bool(young_gone)
finally:
    engine.shutdown(timeout=10)
print(json.dumps({{"before": before, **at_start}}))
"""


def run_case(tmp_path: Path, *, disable: bool) -> dict:
    code = SCRIPT.format(root=str(ROOT), tmp=str(tmp_path), disable=disable, young=garbage.YOUNG_THRESHOLD)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_engines_start_paces_the_collector_and_frees_the_garbage_it_would_freeze(tmp_path):
    found = run_case(tmp_path, disable=False)
    assert found["before"][0] < garbage.YOUNG_THRESHOLD  # Python's default: the start changed it
    assert found["threshold"] == [garbage.YOUNG_THRESHOLD, *found["before"][1:]]
    assert found["frozen"] > 1000  # the modules, classes and settings the process holds for its life
    # A cycle dropped before the start (old: only a full collection finds it) was collected, not frozen.
    assert found["old_gone"] is True
    # Garbage made after the start is still collected by the collector alone (no gc.collect()).
    assert found["young_gone"] is True


def test_a_process_whose_collector_is_off_is_left_alone(tmp_path):
    found = run_case(tmp_path, disable=True)
    assert found["threshold"] == found["before"]
    assert found["frozen"] == 0
    assert found["old_gone"] is False  # nothing collected it: the start ran no collection either
