"""bench/bench_engine.py runs end to end at a small size (its figures are bench/README.md's): the
orchestrator with and without the sandbox, the bare Popen floor, bubblewrap alone, the sandbox floor
(bubblewrap with its shim), GNU parallel running bubblewrap and Anthropic's sandbox-runtime each get
a row, and the RESULT lines of the targets, with the server's CPU per worker, are printed."""

from __future__ import annotations

import re

import pytest

from orchestrator.process import backends, shim

from .helpers.bench import run_bench

pytestmark = pytest.mark.slow


@pytest.mark.skipif(backends.probe().bwrap is None or shim.PERL is None, reason="this machine cannot sandbox workers")
def test_the_engine_benchmark_prints_each_floor_and_the_ratios_against_them(tmp_path):
    methods = ("orchestrator", "popen", "unsandboxed", "sandbox-floor", "bwrap-alone", "parallel-bwrap", "sandbox-runtime")
    args = ["--jobs", "12", "--concurrency", "4", "--repeat", "1"] + [arg for m in methods for arg in ("--only", m)]
    out = run_bench("bench_engine.py", args, tmp_path, timeout=300)
    for label in ("orchestrator", "bare Popen", "orch. no sandbox", "sandbox floor", "bubblewrap alone", "parallel-bwrap"):
        assert f"\n{label:<17}" in out, out
    for line in (
        "DIAGNOSTIC orchestrator (sandboxed, the default)/bubblewrap alone = ",
        "DIAGNOSTIC orchestrator without the sandbox/Popen = ",
        "DIAGNOSTIC sandbox floor/bubblewrap alone = ",
        "DIAGNOSTIC orchestrator/sandbox floor = ",
    ):
        assert re.search(re.escape(line) + r"\d+\.\d\dx", out), out
    # GNU parallel is not in every CI image: with it, its row is a ratio; without it, the row says why
    parallel = re.search(r"DIAGNOSTIC orchestrator \(sandboxed\)/parallel-bwrap = \d+\.\d\dx", out)
    assert (parallel is None) == ("SKIPPED: GNU parallel not installed" in out), out
    # sandbox-runtime needs node, its package (bench/setup.sh), socat and ripgrep: with them a ratio, else why not
    srt = re.search(r"RESULT orchestrator \(sandboxed, the default\)/sandbox-runtime = (\d+\.\d\dx|n/a)", out)
    assert srt, out
    assert (srt.group(1) == "n/a") == bool(re.search(r"\nsandbox-runtime +SKIPPED: \S", out)), out
    for row in ("orchestrator", "orch. no sandbox"):
        assert re.search(rf"RESULT server CPU per worker \({re.escape(row)}\) = \d+\.\d\d ms .*(met|not met)", out), out
    assert list(tmp_path.iterdir()) == []  # its workspaces and the floor's exit files are removed
