"""bench/bench_cgroups.py runs end to end at a small size (its figures are bench/README.md's): every
row and RESULT line is printed, and no cgroup of its own is left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.process.cgroups import cgroup_name, hierarchies

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hierarchies().bases, reason="no cgroup for this user")]

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_cgroups.py"


def test_the_cgroups_benchmark_runs_end_to_end_at_a_small_size_and_leaves_no_cgroup():
    bench = subprocess.Popen(
        [sys.executable, str(BENCH), "--attempts", "5", "--repeat", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = bench.communicate(timeout=120)
    assert bench.returncode == 0, out
    for caps in ("no caps", "default caps"):
        for shape in ("empty", "joined", "reading"):
            assert f"{caps:14} {shape:10}" in out, out
        assert f"RESULT cgroup lifecycle per attempt ({caps}, empty: create+end) = " in out
        assert f"RESULT cgroup lifecycle per attempt ({caps}, joined: create+join+end) = " in out
        assert f"RESULT monitor reading per sample ({caps}) = " in out
    # Its cgroups (attempts, probes and floors) are all named after its pid: none is left
    assert list(hierarchies().find_prefix(cgroup_name(f"bench-cg-{bench.pid}"))) == []
    for base in {base for _, base in hierarchies().bases.values()}:
        assert not list(base.glob(cgroup_name(f"bench-cg-{bench.pid}") + "*"))
