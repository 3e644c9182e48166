"""bench/bench_graph.py (the task-graph benchmark; its figures are bench/README.md's): the seeded graph
has the asked depth, the critical path is the longest path by duration, and a small graph runs end
to end through the real Engine, printing its RESULT line and removing its workspace."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from bench_graph import longest_path, make_graph  # noqa: E402


def depth_of(deps):
    level = {}
    for task_id, before in deps.items():  # prerequisites come first
        level[task_id] = 1 + max((level[d] for d in before), default=0)
    return max(level.values())


def test_the_graph_is_seeded_and_as_deep_as_asked():
    deps = make_graph(200, 10, seed=13)
    assert deps == make_graph(200, 10, seed=13) and deps != make_graph(200, 10, seed=14)
    assert list(deps) == [f"t{i}" for i in range(1, 201)]
    assert depth_of(deps) == 10
    order = {t: i for i, t in enumerate(deps)}
    assert all(order[d] < order[t] for t, before in deps.items() for d in before), "prerequisites come first"
    assert sum(1 for before in deps.values() if not before) >= 1


def test_the_critical_path_is_the_longest_path_by_duration():
    # a -> b -> d and a -> c -> d: c is slow, so the path goes through it
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}
    assert longest_path(deps, {"a": 1.0, "b": 1.0, "c": 5.0, "d": 1.0, "e": 6.0}) == (7.0, ["a", "c", "d"])
    assert longest_path(deps, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 6.0}) == (6.0, ["e"])


@pytest.mark.slow
def test_the_graph_benchmark_runs_end_to_end_and_removes_its_workspace(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, str(BENCH / "bench_graph.py"), "--tasks", "12", "--depth", "4", "--repeat", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "bench_graph: 12 no-op tasks (`true`), depth 4" in out
    for label in ("wall time", "critical path (attempt durations)", "hand-off p50", "last end to the job terminal"):
        assert label in out, out
    assert re.search(r"RESULT wall/critical path = [\d.]+x \(.*\); target <= 1\.1x \+ 5 ms/task = [\d.]+ s: (met|not met)\n", out)
    assert not list(tmp_path.glob("bench-graph-*")), "the workspace is removed"
