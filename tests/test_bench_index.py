"""bench/bench_index.py (the job-index benchmark (b); its figures are bench/README.md's): the written
workspace is seeded, and a small run lists every page through the index and by scanning, with the
same answers, printing its RESULT line and removing its workspace."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.workspace.layout import Workspace

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from bench_index import write_jobs  # noqa: E402


@pytest.mark.slow
def test_the_written_jobs_are_seeded_finished_root_trees(tmp_path):
    one = write_jobs(Workspace(tmp_path / "a", durable=False), 30, seed=14)
    two = write_jobs(Workspace(tmp_path / "b", durable=False), 30, seed=14)
    assert [j.to_dict() for j in one] == [j.to_dict() for j in two]
    assert len({j.status for j in one}) > 1 and all(j.status.terminal and j.is_root for j in one)
    jobs, workers = Workspace(tmp_path / "a").load_tree(one[0].id)
    assert [j.id for j in jobs] == [one[0].id] and len(workers) == len(one[0].worker_names)


@pytest.mark.slow
def test_the_index_benchmark_runs_end_to_end_and_removes_its_workspace(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, str(BENCH / "bench_index.py"), "--jobs", "300", "--page", "20", "--scan-pages", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "bench_index: 300 root jobs, pages of 20 filtered by status=failed" in out
    assert "through the index, 3 by scanning; the same jobs on each" in out
    for label in ("page p50 (ms)", "page p99 (ms)", "rebuild from the workspace (s)"):
        assert label in out, out
    assert re.search(
        r"RESULT index page p50 [\d.]+ ms vs scan [\d.]+ ms = \d+x faster; rebuild [\d.]+ s; target .*: (met|not met)\n", out
    )
    assert not list(tmp_path.glob("bench-index-*")), "the workspace is removed"
