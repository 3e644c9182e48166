"""Result gate benchmark: 16 workers' branches landed with the merged result gated, against today's merge.

    .venv/bin/python bench/bench_result_gate.py [--files 1000] [--branches 16] [--gate-seconds 1] [--repeat 5]

Generates a repository of ``--files`` files and ``--branches`` branches (bench_merge.generate:
disjoint changes), and a gate that sleeps ``--gate-seconds`` (a real process, in the workers'
sandbox where the machine has one, as every result gate runs). Then, in the same run:

* today's merge: ``merging.merge_branches`` of every branch into a result ref (no gate);
* one gate run: the gate alone, on a checkout of the base (delivery/result_gate.ResultGate);
* all passing: ``landing.gated_merge`` of the branches (the batch written as a candidate, its
  tree checked out in the sandbox and gated once, the ref moved);
* one breaker: the same with a gate that fails when one branch's change is in the tree
  (``grep`` for it), which the search (delivery/bisection.py) must find; its candidates share
  one checkout, moved from one to the next (only the first is checked out whole).

All passing is one candidate, so one whole checkout, as the one gate run it is measured against:
the ratio is what gating adds beyond that (the candidate's merge, the worktree's removal). The three
are measured ``--repeat`` times, taking turns, and each figure is their median: one run of each on
a shared machine moved the ratio between 0.77x and 1.43x. The load average is printed with them.

RESULT lines: all passing / (today's merge + one gate run) (target <= 1.2x), and the gate runs
the one breaker took (target <= 9 for 16: 2⌈log2 N⌉ + 1). A measurement, not a test: exit 0
whatever the figures. No network; the temp folder is removed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_merge import generate  # noqa: E402
from orchestrator.config import load_settings  # noqa: E402
from orchestrator.delivery import landing  # noqa: E402
from orchestrator.delivery.result_gate import ResultGate  # noqa: E402
from orchestrator.git import merging  # noqa: E402
from orchestrator.git.invocation import run_git  # noqa: E402
from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus  # noqa: E402
from orchestrator.workspace.layout import Workspace  # noqa: E402


def job_of(
    branches: list[tuple[str, str]], run: str, repo: Path, breaker: str | None = None
) -> tuple[JobRecord, list[WorkerRecord]]:
    """The job and its workers' records, each gated on its own tip (so a candidate of it alone is not
    run again), but ``breaker``: the gate fails on its change, so its own gate could not have passed."""
    root = secrets.token_hex(6)
    job = JobRecord(id=root, root_id=root, request="bench", status=JobStatus.COMPLETED, worker_names=[w for w, _ in branches])
    job.config = dataclasses.replace(
        job.config, gates=[{"name": "gate", "run": ["sh", "-c", run], "required": True, "timeout": 600}]
    )
    workers = []
    for index, (name, branch) in enumerate(branches, 1):
        tip = run_git(repo, "rev-parse", branch).stdout.strip()
        record = WorkerRecord(root, root, name, index, 0, f"task {name}", "command", status=WorkerStatus.SUCCESS)
        record.branch, record.commit, record.gated_commit = branch, tip, (None if name == breaker else tip)
        workers.append(record)
    return job, workers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--branches", type=int, default=16)
    parser.add_argument("--gate-seconds", type=float, default=1.0)
    parser.add_argument("--breaker", type=int, default=11, help="the branch whose change breaks the gate")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each of the three timed paths (medians)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-result-gate-") as folder:
        repo, home = Path(folder) / "repo", Path(folder) / "home"
        repo.mkdir()
        home.mkdir()
        branches = generate(repo, args.files, args.branches)
        settings = load_settings(base_dir=home, environ={}, overrides={})
        workspace = Workspace(home / "workspace")
        passing = f"sleep {args.gate_seconds}"
        failing = f"sleep {args.gate_seconds}; ! grep -rqs 'changed by branch {args.breaker}$' ."

        def request(job: JobRecord) -> merging.MergeRequest:
            return merging.MergeRequest("main", branches, "auto", prefix="orchestrator/", root_id=job.root_id)

        todays, gate_runs, gateds = [], [], []
        runs_passing = 0
        for _ in range(max(1, args.repeat)):  # taking turns: a burst of load weighs on all three alike
            job, workers = job_of(branches, passing, repo)
            started = time.perf_counter()
            merging.merge_branches(repo, request(job))
            todays.append(time.perf_counter() - started)

            gate = ResultGate(settings=settings, workspace=workspace, repo=repo, job=job, workers=workers)
            started = time.perf_counter()
            alone = gate.judge(["w0", "w1"], run_git(repo, "rev-parse", "main").stdout.strip())  # the base's tree
            gate_runs.append(time.perf_counter() - started)
            gate.close()
            assert alone.passed, alone

            job, workers = job_of(branches, passing, repo)
            gate = ResultGate(settings=settings, workspace=workspace, repo=repo, job=job, workers=workers)
            started = time.perf_counter()
            outcome, left = landing.gated_merge(repo, request(job), None, gate)
            gateds.append(time.perf_counter() - started)
            assert outcome is not None and len(outcome.merged) == args.branches and not left, (outcome, left)
            runs_passing = gate.runs
        today, one_gate, gated = (statistics.median(x) for x in (todays, gate_runs, gateds))

        job, workers = job_of(branches, failing, repo, breaker=f"w{args.breaker}")
        gate = ResultGate(settings=settings, workspace=workspace, repo=repo, job=job, workers=workers)
        started = time.perf_counter()
        outcome, left = landing.gated_merge(repo, request(job), None, gate)
        bisected = time.perf_counter() - started
        assert outcome is not None and [w["worker"] for w in left] == [f"w{args.breaker}"], left

        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"{args.files} files, {args.branches} branches, a {args.gate_seconds:g} s gate; medians of {max(1, args.repeat)} runs; load {load}"
        )
        print(f"today's merge (no gate)        {today:8.3f} s")
        print(f"one gate run                   {one_gate:8.3f} s")
        print(f"all passing, gated             {gated:8.3f} s  ({runs_passing} gate run)")
        print(f"one breaker, found             {bisected:8.3f} s  ({gate.runs} gate runs; left out: {left[0]['reason'][:80]})")
        ratio = gated / (today + one_gate)
        most = 2 * math.ceil(math.log2(args.branches)) + 1
        print(
            f"RESULT all passing/(today's merge + one gate run) = {ratio:.2f}x (target <= 1.20x) {'met' if ratio <= 1.2 else 'not met'}"
        )
        print(
            f"RESULT gate runs for one breaker among {args.branches} = {gate.runs} (target <= {most}) {'met' if gate.runs <= most else 'not met'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
