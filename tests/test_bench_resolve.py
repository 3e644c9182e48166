"""bench/bench_resolve.py runs end to end in one round (its figures are bench/README.md's): both
strategies' rows and the RESULT lines are printed, resolve lands all 8 conflicts and auto none,
the resolver ran confined where the machine has the sandbox, and its temp folder is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.process.backends import probe

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_resolve.py"


def test_the_resolve_benchmark_runs_one_round_lands_every_conflict_with_resolve_and_removes_its_temp_folder(tmp_path):
    sandboxed = probe().available
    argv = [sys.executable, str(BENCH), "--repeat", "1", "--sandbox", "auto" if sandboxed else "off", "--tmp", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for label in ("last worker's end -> merge starts", "the merge (merge_branches)", "last worker's end -> published"):
        assert label in out, out
    rows = {line[:46].strip(): line[46:].split() for line in out.splitlines() if "(of " in line[:46]}
    assert rows["workers in the result (of 16)"] == ["1", "16"], out
    assert rows["conflicts in the result (of 8)"] == ["0", "8"], out
    assert "resolver attempts per job 8 (8 accepted) for 8 conflicts" in out
    results = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 2 and "conflicts in the result: resolve 8/8, auto 0/8" in results[0], out
    assert "ms per resolution (median)" in results[1], out
    assert f"resolver confined: {'yes' if sandboxed else 'no: it wrote outside its worktree'}" in out
    assert f"workers sandboxed: {'bubblewrap' if sandboxed else 'none'}" in out
    assert list(tmp_path.iterdir()) == []
