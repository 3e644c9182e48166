"""File ownership: the matching as pure functions, and the step on real jobs in
real git worktrees (a trespassing diff blocked, warn recording without blocking, strict, renames)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.checkouts.checkout import Changes
from orchestrator.config import load_settings
from orchestrator.delivery.integration import IntegrateStep
from orchestrator.engine.core import Engine
from orchestrator.models import JobStatus, TaskNode, WorkerStatus
from orchestrator.quality.ownership import OwnershipStep, changed_paths, describe, trespasses
from orchestrator.workspace.layout import Workspace

from .helpers.worktree import git, snapshot, user_env, workers

NODES = [
    TaskNode("ui", owns=["src/ui/**"]),
    TaskNode("api", owns=["src/api/**", "docs/api.md"]),
    TaskNode("misc"),
]


# -- the matching ------------------------------------------------------------------------------
def test_enforce_counts_only_paths_another_task_owns_and_this_one_does_not():
    paths = ["src/ui/a.js", "src/api/x.py", "docs/api.md", "README.md", "src/ui/deep/b.css"]
    assert trespasses(paths, "ui", ["src/ui/**"], NODES, "enforce") == {"src/api/x.py": ["api"], "docs/api.md": ["api"]}
    assert trespasses(paths, "api", ["src/api/**", "docs/api.md"], NODES, "enforce") == {
        "src/ui/a.js": ["ui"],
        "src/ui/deep/b.css": ["ui"],
    }
    # a task without owns may touch what nobody owns, not what others own
    assert sorted(trespasses(paths, "misc", [], NODES, "enforce")) == [
        "docs/api.md",
        "src/api/x.py",
        "src/ui/a.js",
        "src/ui/deep/b.css",
    ]


def test_a_path_two_tasks_own_is_no_trespass_for_either_and_names_every_other_owner():
    nodes = [TaskNode("a", owns=["shared/**"]), TaskNode("b", owns=["shared/x"]), TaskNode("c", owns=["shared"])]
    assert trespasses(["shared/x"], "a", ["shared/**"], nodes, "enforce") == {}
    assert trespasses(["shared/y"], "b", ["shared/x"], nodes, "enforce") == {"shared/y": ["a", "c"]}


def test_strict_counts_every_path_outside_its_own_globs_and_a_task_without_owns_is_held_like_enforce():
    paths = ["src/ui/a.js", "README.md", "src/api/x.py"]
    assert trespasses(paths, "ui", ["src/ui/**"], NODES, "strict") == {"README.md": [], "src/api/x.py": ["api"]}
    assert trespasses(paths, "misc", [], NODES, "strict") == {"src/ui/a.js": ["ui"], "src/api/x.py": ["api"]}
    # warn finds what enforce finds (it only does not block)
    assert trespasses(paths, "ui", ["src/ui/**"], NODES, "warn") == {"src/api/x.py": ["api"]}


def test_a_rename_counts_both_its_source_and_its_target_and_folder_isolation_its_created_files():
    changes = Changes(
        branch="orchestrator/x/worker_1",
        files_changed=[
            {"path": "src/ui/moved.py", "change": "renamed", "from": "src/api/old.py"},
            {"path": "b.txt", "change": "deleted"},
        ],
    )
    assert changed_paths(changes) == ["b.txt", "src/api/old.py", "src/ui/moved.py"]
    assert changed_paths(Changes(files_created=["z", "a"])) == ["a", "z"]
    assert changed_paths(Changes(branch="b")) == []


def test_the_reason_names_paths_and_owners_and_caps_the_list():
    found = {f"src/api/f{i:02}.py": ["api"] for i in range(13)}
    found["shared/x"] = ["api", "ui"]
    text = describe(found, ["src/ui/**"], "enforce")
    assert text.startswith("touched paths owned by other tasks: shared/x (tasks api, ui), src/api/f00.py (task api), ")
    assert text.endswith(", src/api/f08.py (task api), and 4 more")
    assert text.count("(task api)") == 9
    assert describe({"README.md": []}, ["src/ui/**"], "strict") == (
        "touched paths outside its owns (src/ui/**): README.md (no task's)"
    )


# -- real jobs in real worktrees ----------------------------------------------------------------
def owned_engine(folder: Path, ownership: str) -> Engine:
    """An engine whose steps are the ownership step, then the integration merge (a graph job's)."""
    settings = load_settings(
        base_dir=folder,
        environ={},
        overrides={
            "workers": {"retry_backoff": 0.05, "kill_grace": 0.5, "default_timeout": 30, "max_retries": 2},
            "orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]},
            "tasks": {"ownership": ownership},
        },
    )
    workspace = Workspace(settings.workspace_root)
    return Engine(settings, workspace=workspace, steps=[OwnershipStep(settings), IntegrateStep(settings, workspace)])


def run_graph(engine: Engine, tasks: list[dict]):
    job = engine.submission.submit("owned work", None, tasks)
    done = engine.queries.wait(job.id, 60)
    assert done.status.terminal
    return done, {w.task_id: w for w in engine.queries.snapshot(done.root_id)[1]}


def result_files(host: Path, job) -> list[str]:
    return git(host, "ls-tree", "-r", "--name-only", f"orchestrator/{job.root_id}/result").split()


UI_AND_API = [
    {"id": "api", "task": "mkdir -p src/api && echo api > src/api/y.py", "owns": ["src/api/**"]},
    {
        "id": "ui",
        "task": "mkdir -p src/ui src/api && echo ui > src/ui/a.js && echo bad > src/api/x.py",
        "owns": ["src/ui/**"],
        "depends_on": ["api"],
    },
]


@pytest.mark.slow
def test_a_diff_that_touches_another_tasks_path_is_blocked_and_never_merged(hosted):
    host, folder, _ = hosted
    before = snapshot(host, folder)
    engine = owned_engine(folder, "enforce")
    try:
        job, by_task = run_graph(engine, UI_AND_API)
    finally:
        engine.shutdown(timeout=10)
    ui, api = by_task["ui"], by_task["api"]
    assert ui.status is WorkerStatus.FAILED
    assert ui.exit_reason == "step ownership failed: touched paths owned by other tasks: src/api/x.py (task api)"
    assert ui.trespass == ["src/api/x.py"]
    assert len(ui.attempts) == 1  # no retry: the same task would touch the same files
    assert api.status is WorkerStatus.SUCCESS and api.trespass == []
    assert job.status is JobStatus.PARTIAL
    log = engine.workspace.worker_log(job.root_id, 0, ui.name).read_text()
    assert "step ownership failed: touched paths owned by other tasks: src/api/x.py (task api)" in log
    files = result_files(host, job)
    assert "src/api/y.py" in files and "src/ui/a.js" not in files and "src/api/x.py" not in files
    assert snapshot(host, folder) == before


@pytest.mark.slow
def test_warn_records_the_trespass_in_the_record_and_the_log_without_blocking(hosted):
    host, folder, _ = hosted
    engine = owned_engine(folder, "warn")
    try:
        job, by_task = run_graph(engine, UI_AND_API)
    finally:
        engine.shutdown(timeout=10)
    ui = by_task["ui"]
    assert ui.status is WorkerStatus.SUCCESS and job.status is JobStatus.COMPLETED
    assert ui.trespass == ["src/api/x.py"]
    log = engine.workspace.worker_log(job.root_id, 0, ui.name).read_text()
    assert "ownership (warn, not blocking): touched paths owned by other tasks: src/api/x.py (task api)" in log
    assert {"src/api/x.py", "src/ui/a.js", "src/api/y.py"} <= set(result_files(host, job))


@pytest.mark.slow
def test_strict_blocks_a_path_outside_its_own_globs_that_no_task_owns(hosted):
    host, folder, _ = hosted
    engine = owned_engine(folder, "strict")
    try:
        job, by_task = run_graph(
            engine,
            [
                {"id": "ui", "task": "mkdir -p src/ui && echo ui > src/ui/a.js && echo n > NOTES.md", "owns": ["src/ui/**"]},
                {"id": "free", "task": "echo free > FREE.md"},  # no owns: only others' paths count
            ],
        )
    finally:
        engine.shutdown(timeout=10)
    ui, free = by_task["ui"], by_task["free"]
    assert ui.status is WorkerStatus.FAILED and ui.trespass == ["NOTES.md"]
    assert ui.error == "touched paths outside its owns (src/ui/**): NOTES.md (no task's)"
    assert free.status is WorkerStatus.SUCCESS and free.trespass == []
    # no dependencies, so no integration branch: the job's landing leaves the failed worker out too
    files = result_files(host, job)
    assert "FREE.md" in files and "NOTES.md" not in files and "src/ui/a.js" not in files


@pytest.mark.slow
def test_renaming_another_tasks_file_into_its_own_folder_is_a_trespass(hosted):
    host, folder, _ = hosted
    (host / "lib").mkdir()
    (host / "lib" / "core.py").write_text("".join(f"line {i}\n" for i in range(40)))
    git(host, "add", "lib")
    git(host, "commit", "-qm", "lib", "--no-verify", env=user_env())
    engine = owned_engine(folder, "enforce")
    try:
        _, by_task = run_graph(
            engine,
            [
                {"id": "app", "task": "mkdir -p app && git mv lib/core.py app/core.py", "owns": ["app/**"]},
                {"id": "lib", "task": "true", "owns": ["lib/**"]},
            ],
        )
    finally:
        engine.shutdown(timeout=10)
    app = by_task["app"]
    assert app.files_changed == [{"path": "app/core.py", "change": "renamed", "from": "lib/core.py"}]
    assert app.status is WorkerStatus.FAILED and app.trespass == ["lib/core.py"]
    assert app.error == "touched paths owned by other tasks: lib/core.py (task lib)"


@pytest.mark.slow
def test_a_job_whose_tasks_own_nothing_is_not_looked_at(hosted):
    _, folder, _ = hosted
    engine = owned_engine(folder, "strict")
    try:
        job = engine.submission.submit("plain", None, ["echo x > anything.txt"])
        done = engine.queries.wait(job.id, 60)
    finally:
        engine.shutdown(timeout=10)
    assert done.status is JobStatus.COMPLETED
    (worker,) = workers(engine, done).values()
    assert worker.trespass == [] and worker.files_changed


def test_the_step_applies_only_to_jobs_whose_tasks_own_something(tmp_path):
    from orchestrator.models import JobRecord

    step = OwnershipStep(load_settings(base_dir=tmp_path, environ={}))
    assert not step.applies(JobRecord("0123456789ab", "0123456789ab", "r", nodes=[TaskNode("a"), TaskNode("b")]))
    assert step.applies(JobRecord("0123456789ab", "0123456789ab", "r", nodes=[TaskNode("a"), TaskNode("b", owns=["src/**"])]))


class CountingNodes(list):
    """A job's nodes that count how often they are walked."""

    walks = 0

    def __iter__(self):
        CountingNodes.walks += 1
        return super().__iter__()


def test_whether_the_step_applies_is_worked_out_once_per_job_and_is_the_walk_s_answer(tmp_path):
    # Given a job of 2,000 tasks (the last owns a path) and one of 3 that own nothing, asked in turns
    from orchestrator.models import JobRecord
    from orchestrator.quality import ownership

    step = OwnershipStep(load_settings(base_dir=tmp_path, environ={}))
    big_nodes = CountingNodes([TaskNode(f"t{i}") for i in range(1999)] + [TaskNode("t1999", owns=["src/**"])])
    big = JobRecord("0123456789ab", "0123456789ab", "r", nodes=big_nodes)
    small = JobRecord("ba9876543210", "ba9876543210", "r", nodes=CountingNodes([TaskNode("a"), TaskNode("b"), TaskNode("c")]))
    CountingNodes.walks = 0
    # When each of their workers asks (as each worker's thread does before its first attempt)
    answers = [(step.applies(big), step.applies(small)) for _ in range(2000)]
    # Then the answers are the walk's, and each job's nodes were walked once, not once per worker
    assert set(answers) == {(any(n.owns for n in big_nodes), any(n.owns for n in small.nodes))} == {(True, False)}
    assert CountingNodes.walks == 2 + 2, CountingNodes.walks  # (the line above walked each once more)
    # And a copy of the job (a new list of nodes) is walked again: never an answer for other nodes
    copy = big.copy()
    copy.nodes = [TaskNode("x")]
    assert step.applies(copy) is False and step.applies(big) is True
    # And what is remembered stays bounded however many jobs are asked about
    for i in range(ownership.OWNS_REMEMBERED * 3):
        step.applies(JobRecord(f"{i:012x}", f"{i:012x}", "r", nodes=[TaskNode("a")]))
    assert len(step._owns) == ownership.OWNS_REMEMBERED
