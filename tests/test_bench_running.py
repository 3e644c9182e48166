"""bench/bench_running.py (what running workers cost the server; its figures are bench/README.md's):
a small run goes end to end through the real Engine, with the disk cap and without, printing its
RESULT line and removing its repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.slow
def test_the_running_benchmark_runs_end_to_end_and_removes_its_repository(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, str(BENCH / "bench_running.py"), "--files", "50", "--workers", "2", "--seconds", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "bench_running: 2 sleeping workers in worktree isolation, 50 files, 1 s" in out
    assert re.search(r"with the disk cap \(default\) +[\d.]+ ms of server CPU a second", out), out
    assert re.search(r"without \(max_disk_mb: 0\) +[\d.]+ ms of server CPU a second", out), out
    assert re.search(r"one reading of a worker's disk use .*: [\d.]+ ms of CPU; so each worker's is read every [\d.]+ s", out), (
        out
    )
    assert re.search(r"RESULT running: server CPU with the disk cap / without = [\d.]+x \([\d.]+ / [\d.]+ ms a second\)\n", out)
    assert not list(tmp_path.glob("bench-running-*")), "the repository is removed"
