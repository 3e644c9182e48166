"""Task graphs that schedule themselves, with real processes and real git:
the diamond runs in order with its middle in parallel and its last task seeing all merged work,
a failed prerequisite skips or stops what waits on it, and bad graphs are 422s naming the id."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError, InvalidGraph
from orchestrator.models import JobStatus, WorkerStatus

from .conftest import observed, run_job
from .helpers.worktree import git, snapshot, workers

# Each task appends its name and start/end times to a file of its own, so the order is read back
# from the files: <id>.txt holds "<id> <start> <end>" and lists what the worktree held at its start.
STEP = "date +%s.%N > {id}.start && ls *.txt 2>/dev/null | sort > {id}.saw; sleep {pause}; echo {id} > {id}.txt; date +%s.%N > {id}.end"


def task(task_id: str, *deps: str, pause: float = 0.3, **extra: object) -> dict:
    return {"id": task_id, "task": STEP.format(id=task_id, pause=pause), "depends_on": list(deps), **extra}


# b and c meet: each marks its start in a shared folder (writable to them) and waits (up to 30 s) for the other's mark,
# so both succeed only if they ran at the same time, whatever the machine's load.
MEET = (
    "touch {dir}/{me}; n=0; while [ ! -e {dir}/{other} ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done; test -e {dir}/{other}"
)


def diamond(meet: Path | None = None) -> list[dict]:
    b, c = task("b", "a"), task("c", "a")
    if meet is not None:
        b["task"] = MEET.format(dir=meet, me="b", other="c") + " && " + b["task"]
        c["task"] = MEET.format(dir=meet, me="c", other="b") + " && " + c["task"]
    return [task("a"), b, c, task("d", "b", "c")]


def read(engine, job, worker, name):
    rec = workers(engine, job)[worker]
    return git(engine.checkout.worktrees().repo, "show", f"{rec.commit}:{name}")


@pytest.mark.slow
def test_a_diamond_runs_in_order_with_its_middle_in_parallel_and_the_last_sees_all_three(hosted, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    meet = observed(tmp_path)  # outside the host, where b and c leave their marks: in workers.sandbox_writable
    engine = make(workers={"sandbox_writable": [str(meet)]})
    job = run_job(engine, "diamond", tasks=diamond(meet), config={"isolation": "worktree"})
    found = workers(engine, job)
    assert job.status is JobStatus.COMPLETED, [(w.name, w.exit_reason) for w in found.values()]
    by_task = {w.task_id: w for w in found.values()}
    times = {
        t: (float(read(engine, job, w.name, f"{t}.start")), float(read(engine, job, w.name, f"{t}.end")))
        for t, w in by_task.items()
    }
    # a before b and c; b and c ran at the same time (each met the other's mark); d after both
    assert times["a"][1] <= times["b"][0] and times["a"][1] <= times["c"][0]
    assert sorted(p.name for p in meet.iterdir()) == ["b", "c"]
    assert times["d"][0] >= max(times["b"][1], times["c"][1])
    # d's worktree started from the integration branch holding a, b and c
    assert read(engine, job, by_task["d"].name, "d.saw").split() == ["a.txt", "b.txt", "c.txt"]
    assert read(engine, job, by_task["b"].name, "b.saw").split() == ["a.txt"]
    # each was merged into the result branch as it passed; the result holds all four
    result = f"orchestrator/{job.id}/result"
    assert job.integration == f"refs/heads/{result}" or job.integration == result
    tree = git(host, "ls-tree", "--name-only", result).split()
    assert {"a.txt", "b.txt", "c.txt", "d.txt"} <= set(tree)
    for w in by_task.values():
        assert w.integrated and w.integrated.merged, w.integrated
        # squashed in: one commit each, naming the worker's commit (its own history is not the result's)
        assert w.commit in git(host, "log", "--format=%(trailers:key=Orchestrator-Commit,valueonly)", result).split()
    assert git(host, "log", "--merges", "--format=%H", result) == ""
    assert by_task["a"].unblocked == ["b", "c"] and sorted(by_task["b"].unblocked + by_task["c"].unblocked) == ["d"]
    assert job.merge and job.merge.merged and not job.merge.skipped
    assert snapshot(host, folder) == before


@pytest.mark.slow
def test_a_failed_prerequisite_skips_its_dependents_naming_it(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(workers={"max_retries": 0})
    tasks = [task("a"), {"id": "api", "task": "echo broken > api.txt; exit 3"}, task("b", "api"), task("c", "b"), task("d", "a")]
    job = run_job(engine, "graph", tasks=tasks, config={"isolation": "worktree"})
    by_task = {w.task_id: w for w in workers(engine, job).values()}
    assert by_task["api"].status is WorkerStatus.FAILED
    for t in ("b", "c"):  # directly and through b
        assert by_task[t].status is WorkerStatus.SKIPPED
        assert by_task[t].exit_reason.startswith("skipped: dependency api failed: exit code 3"), by_task[t].exit_reason
        assert not by_task[t].attempts
    assert by_task["a"].status is WorkerStatus.SUCCESS and by_task["d"].status is WorkerStatus.SUCCESS
    assert job.status is JobStatus.PARTIAL
    result = f"orchestrator/{job.id}/result"
    names = git(host, "ls-tree", "--name-only", result).split()
    assert "a.txt" in names and "d.txt" in names and "api.txt" not in names  # a failed worker is never merged
    assert snapshot(host, folder) == before


@pytest.mark.slow
def test_on_failure_stop_cancels_the_rest_and_the_job_fails_not_cancelled(hosted):
    host, folder, make = hosted
    engine = make(workers={"max_retries": 0})
    tasks = [{"id": "bad", "task": "exit 1"}, task("slow", pause=20), task("after", "bad")]
    job = run_job(engine, "graph", tasks=tasks, config={"isolation": "worktree", "on_failure": "stop"})
    by_task = {w.task_id: w for w in workers(engine, job).values()}
    assert by_task["bad"].status is WorkerStatus.FAILED
    assert by_task["slow"].status is WorkerStatus.CANCELLED
    assert by_task["after"].status is WorkerStatus.SKIPPED and "stopped: task bad failed" in by_task["after"].exit_reason
    assert job.status is JobStatus.FAILED and job.error.startswith("stopped: task bad failed")


@pytest.mark.slow
def test_on_failure_continue_runs_dependents_anyway(hosted):
    host, folder, make = hosted
    engine = make(workers={"max_retries": 0})
    tasks = [{"id": "bad", "task": "exit 1"}, task("after", "bad")]
    job = run_job(engine, "graph", tasks=tasks, config={"isolation": "worktree", "on_failure": "continue"})
    by_task = {w.task_id: w for w in workers(engine, job).values()}
    assert by_task["after"].status is WorkerStatus.SUCCESS and by_task["bad"].unblocked == ["after"]
    assert job.status is JobStatus.PARTIAL


@pytest.mark.slow
def test_a_graph_runs_in_folder_isolation_in_order_without_git(tmp_path):
    from orchestrator.config import load_settings
    from orchestrator.engine.core import Engine

    engine = Engine(
        load_settings(
            base_dir=tmp_path,
            environ={},
            overrides={"orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]}, "git": {"isolation": "folder"}},
        )
    )
    try:
        tasks = [task("a", pause=0.5), task("b", "a", pause=0.1)]
        job = run_job(engine, "graph", tasks=tasks)
        assert job.status is JobStatus.COMPLETED and job.integration is None
        found = {w.task_id: w for w in workers(engine, job).values()}
        a_end = float((engine.workspace.worker_dir(job.id, 0, found["a"].name) / "a.end").read_text())
        b_start = float((engine.workspace.worker_dir(job.id, 0, found["b"].name) / "b.start").read_text())
        assert b_start >= a_end
    finally:
        engine.shutdown(timeout=10)


@pytest.mark.slow
def test_two_tasks_that_own_overlapping_paths_run_one_after_the_other(hosted):
    host, folder, make = hosted
    engine = make()
    tasks = [
        task("one", pause=0.5, owns=["src/**"]),
        task("two", pause=0.5, owns=["src/api/x.py"]),
        task("three", pause=0.5, owns=["docs/**"]),
    ]
    job = run_job(engine, "graph", tasks=tasks, config={"isolation": "worktree"})
    assert job.status is JobStatus.COMPLETED
    by_task = {w.task_id: w for w in workers(engine, job).values()}
    assert by_task["two"].depends_on == ["one"] and by_task["three"].depends_on == []
    assert any("task two now waits on task one: both own src/**" in n for n in job.notes), job.notes
    assert by_task["two"].started_at >= by_task["one"].ended_at


@pytest.mark.parametrize(
    ("tasks", "words"),
    [
        ([{"id": "a", "task": "x", "depends_on": ["a"]}], "depends on itself"),
        ([{"id": "a", "task": "x", "depends_on": ["zz"]}], "depends on 'zz', which is no task's id"),
        ([{"id": "a", "task": "x"}, {"id": "a", "task": "y"}], "'a' is used twice"),
        ([{"id": "a", "task": "x", "depends_on": ["b"]}, {"id": "b", "task": "y", "depends_on": ["a"]}], "cycle: a -> b -> a"),
        ([{"id": "a", "task": "x", "role": "wizard"}], "role='wizard' is not a role"),
        ([{"id": "a", "task": "x", "owns": ["../x"]}], "escapes the repository"),
        ([{"id": "a", "task": "x", "owns": ["/etc/**"]}], "escapes the repository"),
        ([{"id": "a b", "task": "x"}], "is not a task id"),
        ([{"task": "x", "when": 1}], "unknown key"),
    ],
)
def test_a_bad_graph_is_refused_naming_the_cycle_or_the_id(hosted, tasks, words):
    host, folder, make = hosted
    engine = make()
    with pytest.raises(InvalidGraph, match=words.replace("(", r"\(").replace(")", r"\)")) as refused:
        engine.submission.submit("graph", None, tasks)
    assert refused.value.http_status == 422
    assert engine.queries.list_jobs() == []


def test_manual_with_dependencies_is_a_422_that_says_why(hosted):
    host, folder, make = hosted
    engine = make()
    with pytest.raises(ConfigError, match="merge_strategy manual cannot run a task graph") as refused:
        engine.submission.submit("graph", {"isolation": "worktree", "merge_strategy": "manual"}, diamond())
    assert refused.value.http_status == 422


@pytest.mark.slow
def test_a_worker_spawns_a_child_graph_through_the_helper_and_it_runs_in_order(make_live):
    # The root worker writes a plan and hands it to orchestrator-spawn --plan; its child job's
    # tasks run as a chain (second waits on first), each in a real process.
    plan = '[{"id": "first", "task": "one"}, {"id": "second", "task": "two", "depends_on": ["first"]}]'
    script = (
        'if [ "$ORCHESTRATOR_DEPTH" = 0 ]; then printf %s "$PLAN" | orchestrator-spawn --wait --plan -; '
        'else date +%s.%N > start; sleep 0.3; echo "$1" > out.txt; date +%s.%N > end; fi'
    )
    live = make_live(
        orchestrator={"worker": "command", "command": ["sh", "-c", script, "worker", "{task}"]},
        workers={"max_retries": 0, "env": {"PLAN": plan}},
    )
    job_id = live.submit(request="big", tasks=["big"], config={"max_recursion_depth": 1}).json()["job_id"]
    doc = live.wait(job_id)
    assert doc["status"] == "completed", doc
    child = live.engine.queries.get_job(f"{job_id}-c1")
    assert [(n.id, n.depends_on) for n in child.nodes] == [("first", []), ("second", ["first"])]
    ws = live.engine.workspace
    first, second = (ws.worker_dir(job_id, 1, name) for name in child.worker_names)
    assert float((second / "start").read_text()) >= float((first / "end").read_text())


@pytest.mark.slow
def test_the_engines_own_steps_gate_a_graph_and_a_failing_gate_skips_the_dependents(hosted):
    # No steps passed: the engine's defaults run the gates, then merge into the integration branch.
    host, folder, make = hosted
    before = snapshot(host, folder)
    gate = {"name": "tests", "run": ["sh", "-c", "test ! -e broken.txt"], "required": True, "timeout": 30}
    engine = make(workers={"max_retries": 0}, tasks={"gates": [gate]})
    tasks = [task("a"), {"id": "api", "task": "echo x > broken.txt"}, task("b", "api"), task("c", "a")]
    job = run_job(engine, "graph", tasks=tasks, config={"isolation": "worktree"})
    by_task = {w.task_id: w for w in workers(engine, job).values()}
    api = by_task["api"]
    assert api.status is WorkerStatus.FAILED and "gate tests failed" in api.exit_reason
    assert [(g.name, g.status) for g in api.gates] == [("tests", "failed")] and api.gated_commit == api.commit
    assert api.integrated is None  # never merged
    assert by_task["b"].status is WorkerStatus.SKIPPED and "dependency api failed" in by_task["b"].exit_reason
    assert "gate tests failed" in by_task["b"].exit_reason
    assert by_task["c"].status is WorkerStatus.SUCCESS and by_task["c"].gates[0].status == "passed"
    result = f"orchestrator/{job.id}/result"
    assert "broken.txt" not in git(host, "ls-tree", "-r", "--name-only", result).split()
    ancestors = git(host, "rev-list", result).split()
    squashed = git(host, "log", "--format=%(trailers:key=Orchestrator-Commit,valueonly)", result).split()
    assert api.commit not in ancestors + squashed and by_task["c"].commit in squashed
    assert snapshot(host, folder) == before


@pytest.mark.slow
def test_each_workers_log_says_whether_its_work_was_merged_or_was_already_in(hosted):
    # Given a graph whose first task writes a file and whose second changes nothing
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    tasks = [task("a"), {"id": "b", "task": "true", "depends_on": ["a"]}]
    job = run_job(engine, "graph", tasks=tasks, config={"isolation": "worktree"})
    assert job.status is JobStatus.COMPLETED
    by_task = {w.task_id: w for w in workers(engine, job).values()}
    result = f"orchestrator/{job.id}/result"

    def said(worker) -> list[str]:
        log = engine.workspace.worker_log(worker.root_id, worker.depth, worker.name)
        return [line for line in log.read_text().splitlines() if result in line]

    # Then a's log says its commit was merged, and b's that there was nothing to merge (never "merged")
    assert said(by_task["a"]) == [
        f"[orchestrator] merged commit {by_task['a'].commit[:12]} into {result} (now {git(host, 'rev-parse', result).strip()[:12]})"
    ]
    assert said(by_task["b"]) == [
        f"[orchestrator] commit {by_task['b'].commit[:12]} is already in {result} (at {git(host, 'rev-parse', result).strip()[:12]}): nothing to merge"
    ]
    assert by_task["b"].integrated and by_task["b"].integrated.merged  # its (empty) work is in the branch
    assert snapshot(host, folder) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("gates", "judged"),
    [
        ([], False),
        ([{"name": "lint", "run": ["true"], "required": False, "timeout": 30}], False),
        ([{"name": "tests", "run": ["true"], "required": True, "timeout": 30}], True),
    ],
    ids=["no-gate", "advisory-gate", "required-gate"],
)
def test_each_merge_into_the_integration_branch_is_judged_only_where_a_required_gate_can_apply(
    hosted, monkeypatch, gates, judged
):
    """The branch moves only to a tree that passed: a job with a required gate has each merge's
    candidate judged (delivery/result_gate.py). With none, nothing can apply: no judge is set up (it
    read every worker record of the tree and the branch's log, under the tree's lock, per merge), and
    every worker's work lands all the same."""
    host, folder, make = hosted
    before = snapshot(host, folder)
    from orchestrator.delivery import integration

    made: list[str] = []

    class Counted(integration.ResultGate):
        def __init__(self, **kwargs):
            made.append(kwargs["job"].id)
            super().__init__(**kwargs)

    monkeypatch.setattr(integration, "ResultGate", Counted)
    engine = make(workers={"max_retries": 0}, tasks={"gates": gates})
    tasks = [task("a"), task("b", "a"), task("c", "a")]
    job = run_job(engine, "graph", tasks=tasks, config={"isolation": "worktree"})
    assert job.status is JobStatus.COMPLETED
    by_task = {w.task_id: w for w in workers(engine, job).values()}
    result = f"orchestrator/{job.id}/result"
    squashed = git(host, "log", "--format=%(trailers:key=Orchestrator-Commit,valueonly)", result).split()
    for w in by_task.values():
        assert w.integrated and w.integrated.merged and w.commit in squashed, w.integrated
    assert {"a.txt", "b.txt", "c.txt"} <= set(git(host, "ls-tree", "--name-only", result).split())
    assert (len(made) == 3) if judged else made == [], made
    assert snapshot(host, folder) == before


@pytest.mark.slow
def test_a_workers_sandbox_reads_its_branch_without_asking_git_about_its_worktrees_layout(hosted, monkeypatch):
    """Each sandbox's start reads the worker's branch from the ref files (git/refstore.py), which
    first asks git once whether the repository's refs are plain files (repository.plain_layout, kept per
    repository): asked by the repository, not by each worker's worktree (a git process per worker,
    in the time its attempt is counted from)."""
    from orchestrator.git import repository

    host, folder, make = hosted
    before = snapshot(host, folder)
    asked: list[str] = []
    real_run_git = repository.run_git

    def run_git(repo, *args, **kwargs):
        if args[:2] == ("config", "--get-regexp") and repository._LAYOUT_KEYS in args:
            asked.append(str(repo))
        return real_run_git(repo, *args, **kwargs)

    monkeypatch.setattr(repository, "run_git", run_git)
    repository.plain_layout.cache_clear()
    engine = make()
    job = run_job(engine, "graph", tasks=[task("a"), task("b", "a"), task("c", "a")], config={"isolation": "worktree"})
    assert job.status is JobStatus.COMPLETED
    worktrees = {str(engine.workspace.worker_dir(job.id, 0, name)) for name in workers(engine, job)}
    assert len(worktrees) == 3 and not worktrees & set(asked), asked
    assert len(asked) == len(set(asked)), asked  # each repository asked once
    assert snapshot(host, folder) == before
