"""bench/bench_spawn.py runs end to end at a small size (its figures are bench/README.md's): every
method's row and the RESULT lines are printed, and no worker of it is left running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.process import procscan, supervisor

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not supervisor.supported(), reason="the supervisor needs Linux pidfds")]

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_spawn.py"


def test_the_spawn_benchmark_runs_end_to_end_at_a_small_size():
    bench = subprocess.Popen(
        [sys.executable, str(BENCH), "--workers", "20", "--concurrency", "4", "--repeat", "1", "--ballast-mb", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = bench.communicate(timeout=120)
    assert bench.returncode == 0, out
    for method in ("Popen", "shim", "supervisor"):
        assert f"round 1 {method:11}" in out, out
    assert "RESULT supervisor/Popen per worker = " in out and "RESULT shim/Popen per worker = " in out
    assert procscan.scan(lambda tag: tag.startswith(f"bench-spawn-{bench.pid}.")) == {}
