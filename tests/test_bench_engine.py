"""bench/bench_engine.py runs end to end at a small size (its figures are bench/README.md's): the
orchestrator with and without the sandbox, the bare Popen floor and the sandbox's own floor (with
and without its shim) each get a row, and the RESULT lines that compare them are printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.process import backends, shim

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_engine.py"


@pytest.mark.skipif(backends.probe().bwrap is None or shim.PERL is None, reason="this machine cannot sandbox workers")
def test_the_engine_benchmark_prints_each_floor_and_the_ratios_against_them(tmp_path):
    methods = ("orchestrator", "popen", "unsandboxed", "sandbox-floor", "bwrap-alone")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "12", "--concurrency", "4", "--repeat", "1"]
        + [arg for m in methods for arg in ("--only", m)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    for label in ("orchestrator", "bare Popen", "orch. no sandbox", "sandbox floor", "bubblewrap alone"):
        assert f"\n{label:<17}" in out, out
    for line in (
        "RESULT orchestrator/Popen = ",
        "RESULT orchestrator without the sandbox/Popen = ",
        "RESULT sandbox floor/Popen = ",
        "RESULT orchestrator/sandbox floor = ",
        "RESULT bubblewrap alone/Popen = ",
    ):
        assert line in out, out
    assert list(tmp_path.iterdir()) == []  # its workspaces and the floor's exit files are removed
