"""bench/bench_engine.py runs end to end at a small size (its figures are bench/README.md's): the
orchestrator with and without the sandbox, the bare Popen floor, bubblewrap alone, the sandbox floor
(bubblewrap with its shim), GNU parallel running bubblewrap and Anthropic's sandbox-runtime each get
a row, and the RESULT lines of the targets, with the server's CPU per worker, are printed."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from bench import bench_engine
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
    # the file creation probe, before and after the runs, with the file system's words where they apply
    assert re.search(r"\nfile creation under \S+: \d+\.\d{3} ms of CPU a new file", out), out
    assert re.search(r"\nfile creation under \S+ after the runs: \d+\.\d{3} ms of CPU a new file", out), out
    # every row's CPU for the whole machine, and the orchestrator's against its peer's
    assert re.search(r"\norchestrator +[\d.]+ +[\d.]+ +\S+ +\S+ +\d+\.\d{3}\n", out), out
    assert re.search(r"\nbare Popen +[\d.]+ +[\d.]+ +\S+ +\S+ +\d+\.\d{3}\n", out), out
    if srt.group(1) != "n/a":
        machine = re.search(
            r"DIAGNOSTIC the machine's CPU per job, every process, orchestrator \(sandboxed, the default\)/sandbox-runtime"
            r" = (\d+\.\d\d) ms / (\d+\.\d\d) ms = \d+\.\d\dx",
            out,
        )
        assert machine and float(machine.group(1)) > 0 and float(machine.group(2)) > 0, out
    # and the memory cgroups the kernel keeps after their removal, before and after
    assert re.search(r"\nmemory cgroups kept after their removal: (\d+ \(|n/a)", out), out
    assert re.search(r"\nafter the runs, memory cgroups kept after their removal: (\d+ \(|n/a)", out), out
    assert list(tmp_path.iterdir()) == []  # its workspaces, the probe's files and the floor's exit files are removed


def test_a_journal_is_asked_of_ext4_alone():
    assert bench_engine.journal_of("/proc") is None  # proc, not ext4
    mounted = bench_engine._mount_of("/")
    if mounted is not None and mounted[2] == "ext4" and mounted[0].startswith("/"):
        assert isinstance(bench_engine.journal_of("/"), bool)
    else:
        assert bench_engine.journal_of("/") is None


def _memory_hierarchy() -> Path | None:
    """The v1 memory hierarchy where this process may make a cgroup (root, cgroup v1)."""
    try:
        found = bench_engine.memory_hierarchy_v1()
    except OSError:
        return None
    return Path(found) if found and os.access(found, os.W_OK) else None


@pytest.mark.skipif(_memory_hierarchy() is None, reason="needs a v1 memory hierarchy this user can make cgroups in")
def test_a_memory_cgroup_removed_while_charged_page_cache_is_counted(tmp_path):
    hierarchy = _memory_hierarchy()
    assert hierarchy is not None
    seen = []
    for attempt in range(3):  # (another test's cgroups may go in between the two counts: a few tries)
        cgroup = hierarchy / f"orchestrator-test-{uuid.uuid4().hex[:8]}"
        cgroup.mkdir()
        data = tmp_path / f"cached-{attempt}"
        try:
            # a process in it writes 8 MB: their page cache is charged to it, and stays after the process exits
            script = f"echo $$ > {cgroup}/cgroup.procs && head -c 8388608 /dev/zero > {data}"
            subprocess.run(["sh", "-c", script], check=True, timeout=30)
            before = bench_engine.removed_memory_cgroups()
            cgroup.rmdir()
            after = bench_engine.removed_memory_cgroups()
            seen.append((before, after))
        finally:
            data.unlink(missing_ok=True)  # its cache freed: the kernel frees the cgroup with it
            if cgroup.exists():
                cgroup.rmdir()
        assert before is not None and after is not None
        if after == before + 1:
            return
    raise AssertionError(f"the removed cgroup was not counted: (before, after) {seen}")
