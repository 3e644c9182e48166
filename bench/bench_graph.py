"""Task-graph benchmark: a 200-task graph of no-op workers against its critical path.

    .venv/bin/python bench/bench_graph.py [--tasks 200] [--depth 10] [--seed 13] [--concurrency 16] [--repeat 3] [--worktree]

The graph: ``--tasks`` tasks on ``--depth`` levels (every level holds at least one task, the
rest are spread at random), each task after the first level depending on one random task of
the level just above and on up to two more of any level above: the longest chain is exactly
``--depth`` tasks. The same ``--seed`` gives the same graph every run.

Each round runs it as one job through the real Engine: explicit tasks ``{"id", "task",
"depends_on"}``, worker kind ``command`` running ``true``, at most ``--concurrency`` at once,
``isolation: folder`` (no git; ``--worktree`` runs it in a fresh git repository with a worktree
per worker, each task branching from the integration branch that holds its prerequisites'
work). Wall time runs from ``Submission.submit`` until ``Queries.wait`` returns the job terminal, as
in bench_engine.py: records, logs, scheduling and reports included.

The baseline is measured in the same run, from the same workers: each worker's duration is read
from its record (its attempts' ``ended_at - started_at``: the process's life as the orchestrator
saw it), and the critical path is the longest path through the graph by those durations (what
an ideal scheduler with unlimited slots and no overhead of its own would take). The target:
wall <= 1.1 x critical path + 5 ms per task (15 ms with ``--worktree``). The hand-off (a task's start minus its last
prerequisite's end: what the scheduler adds on each edge of the path) is shown as p50 and max.

A bare reference runs the same graph with a minimal Python scheduler (a thread per ready task,
up to ``--concurrency``, ``Popen(["true"]).wait()``), also measured against its own critical path.

Checks (exit 1 when one fails): every worker succeeded, the job completed, and no worker started
before each of its prerequisites had ended. A measurement, not a test: exit 0 whatever the
figures. The RESULT line is the median round's (by ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.config import Settings, load_settings  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402
from orchestrator.models import WorkerRecord  # noqa: E402

TARGET_RATIO = 1.1  # wall / critical path ...
TARGET_PER_TASK = 0.005  # ... plus 5 ms per task
TARGET_PER_TASK_WORKTREE = 0.015  # ... or 15 ms with a worktree per task (a checkout and a commit each)
GIT_IDENT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}


class CheckFailed(Exception):
    """The run did not do what it was asked (a worker failed, a dependency was not waited on)."""


# -- the graph ----------------------------------------------------------------------------
def make_graph(tasks: int, depth: int, seed: int) -> dict[str, list[str]]:
    """Task id -> its prerequisites (ids ``t1``..``tN``, prerequisites always on a level above)."""
    if not 1 <= depth <= tasks:
        raise ValueError("--depth must be between 1 and --tasks")
    rng = random.Random(seed)
    levels = sorted(list(range(depth)) + [rng.randrange(depth) for _ in range(tasks - depth)])
    by_level: list[list[str]] = [[] for _ in range(depth)]
    deps: dict[str, list[str]] = {}
    for i, level in enumerate(levels, 1):
        task_id = f"t{i}"
        chosen: list[str] = []
        if level:
            chosen.append(rng.choice(by_level[level - 1]))  # the longest chain is exactly `depth`
            above = [t for lv in by_level[:level] for t in lv]
            chosen += rng.sample(above, min(len(above), rng.randint(0, 2)))
        deps[task_id] = list(dict.fromkeys(chosen))
        by_level[level].append(task_id)
    return deps


def longest_path(deps: Mapping[str, Sequence[str]], duration: Mapping[str, float]) -> tuple[float, list[str]]:
    """The graph's critical path: the largest sum of durations along a dependency chain, and the chain."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for task_id in deps:  # ids are in an order where prerequisites come first (make_graph)
        before = max(deps[task_id], key=lambda d: finish[d], default=None)
        finish[task_id] = (finish[before] if before else 0.0) + duration[task_id]
        via[task_id] = before
    end = max(finish, key=lambda t: finish[t])
    chain: list[str] = []
    node: str | None = end
    while node is not None:
        chain.append(node)
        node = via[node]
    return finish[end], chain[::-1]


# -- the orchestrator ----------------------------------------------------------------------
def orchestrator_settings(base_dir: Path, tasks: int, concurrency: int, worktree: bool, remove: bool = False) -> Settings:
    return load_settings(
        base_dir=base_dir,
        environ={},
        overrides={
            "orchestrator": {"worker": "command", "command": ["true"], "max_tasks": max(tasks, 100)},
            "workers": {
                "max_workers": concurrency,
                "max_workers_limit": max(concurrency, 16),
                "global_max_workers": concurrency,
                "max_retries": 0,
            },
            "recursion": {"max_workers_per_root": max(tasks, 100)},
            "git": {"isolation": "worktree", "repo": ".", "remove_worker_worktrees": remove}
            if worktree
            else {"isolation": "folder"},  # the repository is the folder
        },
    )


def make_repo(base: Path) -> None:
    """A git repository with one commit, holding the workspace folder (for ``--worktree``)."""
    env = {**os.environ, **GIT_IDENT}
    subprocess.run(["git", "init", "-q", "-b", "main", str(base)], check=True, env=env)
    (base / "README.md").write_text("bench\n")
    (base / ".gitignore").write_text("workspace/\n")
    subprocess.run(["git", "-C", str(base), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(base), "commit", "-q", "-m", "base"], check=True, env=env)


@dataclass
class Round:
    wall: float
    critical: float  # from the attempts' durations
    handoffs: list[float]  # per task with prerequisites: its start minus their last end
    chain: list[str]
    busy: float  # the sum of the attempts' durations
    span: float  # first attempt start to last attempt end
    lead_in: float = 0.0  # submit to the first attempt's start (planning, records, the first dispatch)
    tail: float = 0.0  # the last attempt's end to the job seen terminal (last records, reports)


def run_orchestrator(
    deps: dict[str, list[str]], concurrency: int, worktree: bool, folders: list[Path], remove: bool = False
) -> Round:
    base = Path(tempfile.mkdtemp(prefix="bench-graph-"))
    folders.append(base)
    if worktree:
        make_repo(base)
    engine = Engine(orchestrator_settings(base, len(deps), concurrency, worktree, remove))
    try:
        tasks = [{"id": t, "task": f"noop {t}", "depends_on": d} for t, d in deps.items()]
        start, submitted = time.perf_counter(), time.time()
        job = engine.submission.submit("benchmark: a graph of no-op workers", {"max_workers": concurrency}, tasks)
        done = engine.queries.wait(job.id, timeout=max(600.0, len(deps) * 2.0))
        wall, ended = time.perf_counter() - start, time.time()
        if not done.status.terminal:
            raise CheckFailed(f"job {job.id} still {done.status.value} after the wait timeout")
        _, workers = engine.queries.snapshot(job.root_id)
    finally:
        engine.shutdown(timeout=30)
    by_task = check(done.status.value, workers, deps)
    duration = {t: sum(a.ended_at - a.started_at for a in w.attempts if a.ended_at) for t, w in by_task.items()}
    times = {t: (w.attempts[0].started_at, w.attempts[-1].ended_at or 0.0) for t, w in by_task.items()}
    critical, chain = longest_path(deps, duration)
    lead_in = min(b for b, _ in times.values()) - submitted
    tail = ended - max(e for _, e in times.values())
    return Round(wall, critical, handoffs(deps, times), chain, sum(duration.values()), span(times), lead_in, tail)


def check(status: str, workers: list[WorkerRecord], deps: Mapping[str, Sequence[str]]) -> dict[str, WorkerRecord]:
    """The workers by task id; CheckFailed unless all succeeded and each waited on its prerequisites."""
    problems = []
    if status != "completed":
        problems.append(f"job status is {status}, expected completed")
    by_task = {w.task_id or "": w for w in workers}
    if sorted(by_task) != sorted(deps):
        problems.append(f"{len(workers)} workers with task ids {sorted(by_task)[:5]}..., expected {len(deps)} tasks")
        raise CheckFailed("; ".join(problems))
    failed = [f"{t}={w.status.value}" for t, w in by_task.items() if w.status.value != "success" or not w.attempts]
    if failed:
        problems.append(f"{len(failed)} worker(s) not success: {', '.join(failed[:5])}")
    early = [
        f"{t} started before {d} ended"
        for t, w in by_task.items()
        for d in deps[t]
        if w.attempts and (by_task[d].ended_at or float("inf")) > w.attempts[0].started_at
    ]
    if early:
        problems.append(f"{len(early)} dependencies not waited on: {', '.join(early[:5])}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return by_task


# -- the bare reference ----------------------------------------------------------------------
def run_bare(deps: dict[str, list[str]], concurrency: int) -> Round:
    """The same graph on a minimal scheduler: a ready task runs ``true`` on a thread, at most
    ``concurrency`` at once; a task is ready when its prerequisites have exited 0."""
    waiting = {t: set(d) for t, d in deps.items()}
    dependents: dict[str, list[str]] = {t: [] for t in deps}
    for t, d in deps.items():
        for p in d:
            dependents[p].append(t)
    times: dict[str, tuple[float, float]] = {}
    lock = threading.Condition()
    ready = [t for t, d in waiting.items() if not d]
    running = 0
    failed: list[str] = []

    def one(task_id: str) -> None:
        nonlocal running
        began = time.perf_counter()
        code = subprocess.Popen(["true"]).wait()
        ended = time.perf_counter()
        with lock:
            times[task_id] = (began, ended)
            running -= 1
            if code:
                failed.append(task_id)
            for t in dependents[task_id]:
                waiting[t].discard(task_id)
                if not waiting[t]:
                    ready.append(t)
            lock.notify()

    start = time.perf_counter()
    with lock:
        while len(times) < len(deps) and not failed:
            while ready and running < concurrency:
                running += 1
                threading.Thread(target=one, args=(ready.pop(0),), daemon=True).start()
            lock.wait()
    wall = time.perf_counter() - start
    if failed:
        raise CheckFailed(f"bare scheduler: {len(failed)} `true` failed")
    duration = {t: e - b for t, (b, e) in times.items()}
    critical, chain = longest_path(deps, duration)
    return Round(wall, critical, handoffs(deps, times), chain, sum(duration.values()), span(times))


def handoffs(deps: Mapping[str, Sequence[str]], times: Mapping[str, tuple[float, float]]) -> list[float]:
    """Per task with prerequisites: its start minus the end of the last of them."""
    return [times[t][0] - max(times[d][1] for d in deps[t]) for t in deps if deps[t]]


def span(times: Mapping[str, tuple[float, float]]) -> float:
    return max(e for _, e in times.values()) - min(b for b, _ in times.values())


# -- reporting ---------------------------------------------------------------------------------
def target_of(r: Round, tasks: int, worktree: bool) -> float:
    return TARGET_RATIO * r.critical + (TARGET_PER_TASK_WORKTREE if worktree else TARGET_PER_TASK) * tasks


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks in the graph (default 200)")
    parser.add_argument("--depth", type=int, default=10, help="levels: the longest chain, in tasks (default 10)")
    parser.add_argument("--seed", type=int, default=13, help="the random graph's seed (default 13)")
    parser.add_argument("--concurrency", type=int, default=16, help="workers alive at once (default 16)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median round is the result (default 3)")
    parser.add_argument("--worktree", action="store_true", help="run in a git repository, a worktree per worker")
    parser.add_argument(
        "--remove-worktrees",
        action="store_true",
        help="with --worktree: git.remove_worker_worktrees (a finished worker's worktree goes once committed)",
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare Python scheduler reference")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp workspaces")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.concurrency < 1 or args.repeat < 1 or not 1 <= args.depth <= args.tasks:
        parser.error("--tasks, --concurrency and --repeat must be at least 1, and --depth between 1 and --tasks")
    if args.tasks > 10_000 or args.concurrency > 1024:
        parser.error("the orchestrator accepts at most 10000 tasks per job and 1024 workers at once")

    deps = make_graph(args.tasks, args.depth, args.seed)
    edges = sum(len(d) for d in deps.values())
    isolation = "worktree (a fresh git repository)" if args.worktree else "folder"
    print(
        f"bench_graph: {args.tasks} no-op tasks (`true`), depth {args.depth}, {edges} dependencies (seed {args.seed}), "
        f"{args.concurrency} at a time, isolation {isolation}, {args.repeat} round(s)"
    )
    print(f"machine: nproc={os.cpu_count()}, load average {load_average()}")
    rounds: list[Round] = []
    bares: list[Round] = []
    folders: list[Path] = []
    try:
        for r in range(1, args.repeat + 1):
            one = run_orchestrator(deps, args.concurrency, args.worktree, folders, args.remove_worktrees)
            rounds.append(one)
            print(
                f"  round {r}/{args.repeat} orchestrator  wall {one.wall:7.3f} s  critical path {one.critical:7.3f} s "
                f"({len(one.chain)} tasks)  ratio {one.wall / one.critical:6.2f}x  target {target_of(one, args.tasks, args.worktree):6.3f} s",
                flush=True,
            )
            if not args.no_bare:
                bare = run_bare(deps, args.concurrency)
                bares.append(bare)
                print(
                    f"  round {r}/{args.repeat} bare          wall {bare.wall:7.3f} s  critical path {bare.critical:7.3f} s "
                    f"({len(bare.chain)} tasks)  ratio {bare.wall / bare.critical:6.2f}x",
                    flush=True,
                )
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}")
        args.keep = True
        return 1
    finally:
        for folder in folders:
            if args.keep:
                print(f"kept workspace {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)

    mid = sorted(rounds, key=lambda r: r.wall / r.critical)[len(rounds) // 2]
    print()
    print(f"{'figure (median round)':<48}{'orchestrator':>14}{'bare':>10}")
    bare_mid = sorted(bares, key=lambda r: r.wall / r.critical)[len(bares) // 2] if bares else None

    figures = {
        "wall time": lambda r: r.wall,
        "critical path (attempt durations)": lambda r: r.critical,
        "wall / critical path": lambda r: r.wall / r.critical,
        "hand-off p50 (start - last prerequisite's end)": lambda r: statistics.median(r.handoffs),
        "hand-off max": lambda r: max(r.handoffs),
        "sum of durations / concurrency": lambda r: r.busy / args.concurrency,
        "first start to last end": lambda r: r.span,
        "submit to first start": lambda r: r.lead_in,
        "last end to the job terminal": lambda r: r.tail,
    }
    for label, figure in figures.items():
        fmt = "{:.2f}x" if label.endswith("path") else "{:.3f} s"
        theirs = fmt.format(figure(bare_mid)) if bare_mid and not label.startswith(("submit", "last end")) else "-"
        print(f"{label:<48}{fmt.format(figure(mid)):>14}{theirs:>10}")
    overhead = (mid.wall - mid.critical) / args.tasks * 1000
    print()
    print(f"overhead beyond the critical path: {overhead:.2f} ms per task; load average now {load_average()}")
    print(
        "rounds: "
        + ", ".join(f"{r.wall:.3f}/{r.critical:.3f} s = {r.wall / r.critical:.2f}x" for r in rounds)
        + (" (bare: " + ", ".join(f"{b.wall / b.critical:.2f}x" for b in bares) + ")" if bares else "")
    )
    limit = target_of(mid, args.tasks, args.worktree)
    per_task = TARGET_PER_TASK_WORKTREE if args.worktree else TARGET_PER_TASK
    verdict = "met" if mid.wall <= limit else "not met"
    met = sum(1 for r in rounds if r.wall <= target_of(r, args.tasks, args.worktree))
    print(f"target met in {met} of {len(rounds)} round(s)")
    print(
        f"RESULT wall/critical path = {mid.wall / mid.critical:.2f}x ({mid.wall:.3f} s / {mid.critical:.3f} s); "
        f"target <= {TARGET_RATIO}x + {per_task * 1000:.0f} ms/task = {limit:.3f} s: {verdict}"
    )
    if args.json:
        doc = {
            "tasks": args.tasks,
            "depth": args.depth,
            "seed": args.seed,
            "edges": edges,
            "concurrency": args.concurrency,
            "worktree": args.worktree,
            "rounds": [r.__dict__ for r in rounds],
            "bare": [b.__dict__ for b in bares],
            "result": {"wall": mid.wall, "critical": mid.critical, "ratio": mid.wall / mid.critical, "limit": limit},
            "met": mid.wall <= limit,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
