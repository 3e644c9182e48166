"""bench/bench_worktree.py runs end to end on a tiny repository (its figures are bench/README.md's):
every figure and RESULT line is printed, and its temp folder is gone afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_worktree.py"


def test_the_worktree_benchmark_runs_end_to_end_on_a_tiny_repository_and_removes_its_temp_folder(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--files",
            "200",
            "--megabytes",
            "1",
            "--workers",
            "4",
            "--repeat",
            "1",
            "--tmp",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "generated 200 files, 1 MB" in out
    for label in ("(a)  4 worktrees, s", "(a') commit after an attempt", "(c)  merge 4 branches", "(b)  du of one worktree"):
        assert label in out, out
    results = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 4, out
    assert "(a) 4 worktrees orchestrator/git worktree add loop = " in results[0] and "target <= 1.20x" in results[0]
    assert "(c) merge 4 branches orchestrator/merge-tree loop = " in results[2] and "target <= 1.20x" in results[2]
    assert list(tmp_path.iterdir()) == []  # the generated repository and every worktree are removed
