"""bench/bench_sandbox.py runs end to end at a small size (its figures are bench/README.md's): both
modes' rows, the flag breakdown and the RESULT lines are printed, and its temp folder is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.process.backends import probe

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not probe().available, reason="no sandbox on this machine")]

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_sandbox.py"


def test_the_sandbox_benchmark_runs_end_to_end_at_a_small_size_and_removes_its_temp_folder(tmp_path):
    argv = [sys.executable, str(BENCH), "--workers", "20", "--concurrency", "4", "--repeat", "1", "--starts", "3"]
    done = subprocess.run([*argv, "--tmp", str(tmp_path)], capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "run 1/1 sandbox off" in out and "run 1/1 sandbox on" in out
    assert "the sandbox adds" in out and "the orchestrator's (+ ipc, uts, cap-drop, binds)" in out
    assert "RESULT sandbox/no sandbox per-worker wall = " in out and "(target <= 1.25x)" in out
    assert list(tmp_path.iterdir()) == []
