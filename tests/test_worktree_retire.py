"""``git.remove_worker_worktrees``: a finished worker's worktree goes once its work is committed
(its branch stays), so the repository's live worktrees are bounded by the workers running; and
what reads a finished worker's work (its record, its diff, a merge again, a restarted server,
a job's deletion) reads its branch, with real git and real processes."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from orchestrator.checkouts.retiring import flush_retired, retirer_of
from orchestrator.checkouts.worktree import WorktreeCheckout
from orchestrator.git import diffs
from orchestrator.models import JobStatus, WorkerStatus

from .conftest import run_job, wait_until
from .helpers.worktree import git, snapshot, user_env, workers

pytestmark = pytest.mark.slow

REMOVE = {"remove_worker_worktrees": True}


def live_worktrees(repo) -> list[str]:
    """The repository's worktrees inside the orchestrator's workspace."""
    return [
        line
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ") and "/workspace/" in line
    ]


@pytest.mark.parametrize("handover", [0.0, 2.0], ids=["prompt", "slow-handover"])
def test_live_worktrees_stay_bounded_by_the_workers_running_and_none_is_left(hosted, monkeypatch, handover):
    """``slow-handover``: each finished worker takes 2 s between freeing its slot and handing its
    worktree to the retirer, as a thread the load does not schedule does (seen: 9 live, with the
    stretch uncounted); its worktree counts against the backlog all that time."""
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(git=REMOVE)
    retirer_of(host).backlog = 3
    retire = WorktreeCheckout.retire

    def slow_retire(self, record, job):
        time.sleep(handover)
        return retire(self, record, job)

    monkeypatch.setattr(WorktreeCheckout, "retire", slow_retire)
    peak, stop = [0], threading.Event()

    failed: list[str] = []

    def sample() -> None:
        while not stop.wait(0.05):
            listed = subprocess.run(["git", "-C", str(host), "worktree", "list", "--porcelain"], capture_output=True, text=True)
            # An entry comes (repository.add_worktree) and goes (the Retirer) in one rename: git never meets a
            # half-made one, which fails its listing ("failed to read .git/worktrees/<id>/commondir")
            if listed.returncode:
                failed.append(listed.stderr)
                continue
            peak[0] = max(
                peak[0], sum("/workspace/" in line for line in listed.stdout.splitlines() if line.startswith("worktree "))
            )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        tasks = [f"echo {i} > f{i}.txt" for i in range(14)]
        job = run_job(engine, "many", tasks, {"isolation": "worktree", "max_workers": 2}, timeout=120)
    finally:
        stop.set()
        sampler.join()
    assert job.status is JobStatus.COMPLETED
    # When a worktree is made: 2 running (itself included), and fewer than 3 finished ones not yet removed
    # (the backlog: handed over or not). Only a new worktree adds one, so that is the peak.
    assert 0 < peak[0] <= 2 + 3 - 1, peak[0]
    assert failed == []
    wait_until(lambda: (flush_retired(host), live_worktrees(host))[1] == [], what="worktrees removed")
    found = workers(engine, job)
    for i in range(14):
        record = found[f"worker_{i + 1}"]
        assert record.status is WorkerStatus.SUCCESS and record.files_created == [f"f{i}.txt"]
        assert git(host, "rev-parse", record.branch).strip() == record.commit  # the branch stays
        assert git(host, "show", f"{record.commit}:f{i}.txt") == f"{i}\n"
        assert not engine.workspace.worker_dir(job.id, 0, record.name).exists()
    assert not list(engine.workspace.job_dir(job.id).glob("depth_0/.retired_*"))
    assert snapshot(host, folder) == before


def test_results_diff_merge_restart_and_delete_read_the_branches_of_removed_worktrees(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(git=REMOVE)
    job = run_job(engine, "two", ["echo a > a.txt && echo more >> app.py", "echo b > b.txt"], {"isolation": "worktree"})
    assert job.status is JobStatus.COMPLETED
    # The last worker queues its worktree just after its final record, which may end the job first
    wait_until(lambda: (flush_retired(host), live_worktrees(host))[1] == [], what="worktrees removed")
    w1 = workers(engine, job)["worker_1"]
    assert w1.files_created == ["a.txt"] and {f["path"] for f in w1.files_changed} == {"a.txt", "app.py"}
    assert "2 files changed" in (w1.diffstat or "")
    # its diff, from its branch
    found = diffs.worker_diff(engine.queries, engine.settings, engine.workspace, job.id, (0, "worker_1"), 1 << 20)
    assert "+++ b/a.txt" in found["diff"] and "+more" in found["diff"] and found["to"] == w1.commit
    # a merge again, manual then auto, from the branches
    manual = engine.merge(job.id, "manual")
    assert manual is not None and manual.get("strategy") == "manual"
    merged = engine.merge(job.id, "auto")
    assert merged is not None and merged.get("result_commit")
    assert git(host, "show", f"{merged['result_commit']}:b.txt") == "b\n"
    engine.shutdown(timeout=10)
    # a restarted server: the finished workers are kept as they were, not lost
    again = make(git=REMOVE)
    records = workers(again, job)
    assert {r.status for r in records.values()} == {WorkerStatus.SUCCESS}
    assert records["worker_1"].commit == w1.commit and records["worker_1"].files_created == ["a.txt"]
    assert not any("lost" in (r.exit_reason or "") for r in records.values())
    # deleting the job: its branches go (the result's too with all), nothing of the user's
    again.delete(job.id, all_branches=True)
    assert not git(host, "for-each-ref", f"refs/heads/orchestrator/{job.id}/worker_1").strip()
    assert live_worktrees(host) == []
    assert snapshot(host, folder) == before


def test_a_graph_workers_changes_are_asked_once_and_a_gates_files_are_still_committed(hosted, monkeypatch):
    """The steps' changes (the integration step asked for them) are the final ones: the commit
    step runs once per worker (it ran twice before); after a gate ran in the worktree they are
    asked again, as before."""
    from orchestrator.checkouts.worktree import WorktreeCheckout

    asked: list[str] = []
    real = WorktreeCheckout.changes

    def counting(self, record):
        asked.append(record.name)
        return real(self, record)

    monkeypatch.setattr(WorktreeCheckout, "changes", counting)
    host, folder, make = hosted
    engine = make()
    tasks = [{"id": "one", "task": "echo 1 > one.txt"}, {"id": "two", "task": "echo 2 > two.txt", "depends_on": ["one"]}]
    job = run_job(engine, "graph", tasks, {"isolation": "worktree"})
    assert job.status is JobStatus.COMPLETED
    found = workers(engine, job)
    assert sorted(asked) == sorted(found) and len(asked) == 2  # once a worker, not twice
    assert {r.files_created[0] for r in found.values()} == {"one.txt", "two.txt"}
    asked.clear()
    gate = {"name": "build", "run": ["sh", "-c", "echo built > built.txt"]}
    job = run_job(engine, "gated", ["echo a > a.txt"], {"isolation": "worktree", "gates": [gate], "max_retries": 0})
    record = workers(engine, job)["worker_1"]
    assert record.status is WorkerStatus.SUCCESS and len(asked) == 2  # the gate ran in it: asked again
    assert record.files_created == ["a.txt"]  # as before this change: a gate's files are not the worker's work


def test_an_entry_a_stopped_server_renamed_out_or_hid_but_never_deleted_goes_at_the_next_start(hosted):
    from orchestrator.checkouts.retiring import prune_stale
    from orchestrator.git.worker_refs import RETIRED_MARK

    host, folder, _ = hosted
    dead = host / ".git" / "orchestrator-retired-worker_9-999999999-1"  # no such pid
    mine = host / ".git" / f"orchestrator-retired-worker_8-{os.getppid()}-1"  # a live server's (the test's parent)
    for leftover in (dead, mine):
        leftover.mkdir()
        (leftover / "gitdir").write_text("/nowhere/.git\n")
    entries = host / ".git" / "worktrees"
    hidden = {"dead": f"{RETIRED_MARK}-999999999", "live": f"{RETIRED_MARK}-{os.getppid()}", "users": "other-file"}
    for name, mark in hidden.items():
        (entries / name).mkdir(parents=True)
        (entries / name / "commondir").write_text("../..\n")
        (entries / name / mark).write_text("/nowhere/.git\n")
    planted = entries / "planted"  # a worker's own entry, a mark put beside its gitdir: not hidden
    planted.mkdir()
    (planted / "gitdir").write_text("/nowhere/.git\n")
    (planted / f"{RETIRED_MARK}-999999999").write_text("")
    before = snapshot(host, folder)
    prune_stale(host, folder / "workspace")
    assert not dead.exists() and mine.exists()
    assert sorted(p.name for p in entries.iterdir()) == ["live", "planted", "users"]  # an entry without our mark is not ours
    assert snapshot(host, folder) == before


def test_a_git_that_lists_the_worktrees_while_finished_ones_are_removed_never_fails(tmp_path, monkeypatch):
    """A git that has read ``.git/worktrees`` reads each entry's files next: an entry deleted in
    between failed it ("Invalid path .../worktrees/worker_12", "failed to read .../commondir"; seen
    about once in 600 listings). Entries are hidden first, and deleted a grace later."""
    from orchestrator.checkouts import retiring

    monkeypatch.setattr(retiring, "HIDDEN_GRACE", 0.5)
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "commit", "-q", "--allow-empty", "-m", "start", env=user_env())  # (an ordinary user may have no identity)
    folders = [tmp_path / "workspace" / f"worker_{i}" for i in range(100)]
    for i, directory in enumerate(folders):
        git(repo, "worktree", "add", "-q", "-b", f"w{i}", str(directory))
    failed: list[str] = []
    listings, stop = [0], threading.Event()

    def listing() -> None:
        while not stop.is_set():
            done = subprocess.run(["git", "-C", str(repo), "worktree", "list", "--porcelain"], capture_output=True, text=True)
            listings[0] += 1
            if done.returncode:
                failed.append(done.stderr)

    threads = [threading.Thread(target=listing, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    retirer = retiring.Retirer(repo)
    try:
        for directory in folders:
            retirer.put(directory)
            time.sleep(0.005)
        retirer.flush()
        assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1  # hidden at once
        assert not any(directory.exists() for directory in folders)
        # Listed on while the hidden entries are deleted too, once their grace has passed (renamed out, then deleted)
        git_dir = repo / ".git"
        wait_until(
            lambda: not any((git_dir / "worktrees").iterdir()) and not list(git_dir.glob("orchestrator-retired-*")),
            timeout=20,
            what="the hidden entries deleted",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert listings[0] > 20 and failed == []
    assert set(git(repo, "branch", "--format=%(refname:short)").split()) == {"main", *(f"w{i}" for i in range(100))}
