"""Clean-up of a worktree job with real git and real repositories made here:
deleting a job (server and offline) removes its worktrees and branches and nothing outside its
prefix, a server start prunes only its own workspace's dead worktree entries, and a worker a
restart settles has its work committed (or, lost with none, its worktree removed)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from orchestrator.api.client import OrchestratorClient
from orchestrator.cli.server import start_in_thread
from orchestrator.errors import InvalidParameter
from orchestrator.models import JobStatus
from orchestrator.retention.pruning import Removes, delete_offline, prune_engine

from .conftest import API_KEY, ROOT, run_job
from .helpers.worktree import PREFIX, git, host_engine, make_host, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture
def host(tmp_path):
    """The host of test_worktree, plus what the user owns that looks like ours: branches
    ``orchestrator-other/x`` and ``orchestratorx/y``, tags, a worktree of their own elsewhere
    and one whose folder is away for now (an unmounted disk: git lists it "prunable")."""
    repo, folder = make_host(tmp_path)
    git(repo, "branch", "orchestrator-other/x")
    git(repo, "branch", "orchestratorx/y")
    git(repo, "tag", "v1")
    git(repo, "tag", "orchestrator/not-a-branch")
    git(repo, "worktree", "add", "-q", "-b", "feature", str(tmp_path / "user tree"))
    (tmp_path / "user tree" / "wip.txt").write_text("the user's own work\n")
    away = tmp_path / "usb" / "away tree"
    git(repo, "worktree", "add", "-q", "-b", "away", str(away))
    shutil.move(str(away), str(tmp_path / "unplugged"))
    return repo, folder, tmp_path


def user_state(repo: Path, tmp_path: Path) -> dict[str, object]:
    """The snapshot of test_worktree plus the user's worktrees (their entries and files)."""
    listed = git(repo, "worktree", "list", "--porcelain").split("\n\n")
    ours = [block for block in listed if "/workspace/" not in block and PREFIX not in block]
    return {
        **snapshot(repo, repo / "tools" / "orch"),
        "worktrees": ours,
        "user tree": sorted(p.name for p in (tmp_path / "user tree").iterdir()),
        "user tree status": git(tmp_path / "user tree", "status", "--porcelain"),
    }


def tree_refs(repo: Path, root_id: str) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)", f"{PREFIX}{root_id}/").split()


def job_worktrees(repo: Path) -> list[str]:
    return [line for line in git(repo, "worktree", "list", "--porcelain").splitlines() if "/workspace/" in line]


def finished_job(engine, repo: Path):
    """A finished worktree job of two workers that wrote files, with a result branch (made here
    when its landing merge did not make one)."""
    job = run_job(engine, "two files", ["echo a > a.txt", "echo b > b.txt"], {"isolation": "worktree"})
    assert job.status is JobStatus.COMPLETED
    result = f"orchestrator/{job.id}/result"
    if not git(repo, "branch", "--list", result).strip():
        git(repo, "branch", result, f"orchestrator/{job.id}/worker_1")
    assert len(job_worktrees(repo)) == 2 and len(tree_refs(repo, job.id)) == 3
    return job


def test_delete_removes_the_worktrees_and_branches_keeps_the_result_and_nothing_outside_the_prefix(host):
    repo, folder, tmp = host
    before = user_state(repo, tmp)
    engine = host_engine(folder, api={"api_key": API_KEY, "host": "127.0.0.1", "port": 0})
    server = start_in_thread(engine.settings, engine, port=0)
    try:
        client = OrchestratorClient(api_url=server.url, api_key=API_KEY)
        first = finished_job(engine, repo)
        answer = requests.delete(
            f"{server.url}/api/v1/jobs/{first.id}", params={"branches": "everything"}, headers={"X-API-Key": API_KEY}, timeout=10
        )
        assert answer.status_code == 422 and answer.json()["error"] == "invalid_parameter"
        assert "branches=" in answer.json()["message"] and "'all'" in answer.json()["message"]
        with pytest.raises(InvalidParameter, match="branches="):
            client.delete(first.id, branches="ALL")
        assert len(tree_refs(repo, first.id)) == 3  # a refused request removed nothing
        client.delete(first.id)
        assert tree_refs(repo, first.id) == [f"{PREFIX}{first.id}/result"]
        assert job_worktrees(repo) == [] and not engine.workspace.job_dir(first.id).exists()
        assert user_state(repo, tmp) == before
        second = finished_job(engine, repo)
        client.delete(second.id, branches="all")
        assert tree_refs(repo, second.id) == [] and job_worktrees(repo) == []
        assert user_state(repo, tmp) == before
        assert tree_refs(repo, first.id) == [f"{PREFIX}{first.id}/result"]  # another job's result: untouched
    finally:
        server.close()
        engine.shutdown(timeout=10)


def test_a_branch_the_user_checked_out_in_their_own_worktree_is_kept_by_delete_with_that_worktree(host):
    repo, folder, tmp = host
    engine = host_engine(folder)
    try:
        job = finished_job(engine, repo)
        taken = f"orchestrator/{job.id}/worker_1"
        git(tmp / "user tree", "switch", "-q", "--ignore-other-worktrees", taken)  # the user took a worker's work
        before = user_state(repo, tmp)
        engine.delete(job.id, all_branches=True)
        assert tree_refs(repo, job.id) == [f"refs/heads/{taken}"]
        assert user_state(repo, tmp) == before and (tmp / "user tree" / "wip.txt").exists()
        assert job_worktrees(repo) == []
    finally:
        engine.shutdown(timeout=10)


def test_prune_with_no_server_removes_worktrees_and_branches_like_the_server(host):
    repo, folder, tmp = host
    before = user_state(repo, tmp)
    engine = host_engine(folder)
    job = finished_job(engine, repo)
    engine.shutdown(timeout=10)
    # One worktree folder deleted by hand: git keeps its admin entry until it is removed too.
    shutil.rmtree(engine.workspace.worker_dir(job.id, 0, "worker_2"))
    assert delete_offline(engine.workspace, job.id, engine.settings) is None
    assert tree_refs(repo, job.id) == [f"{PREFIX}{job.id}/result"]
    assert job_worktrees(repo) == [] and not engine.workspace.job_dir(job.id).exists()
    assert user_state(repo, tmp) == before


def test_a_server_start_prunes_only_its_workspaces_dead_worktree_entries(host):
    repo, folder, tmp = host
    engine = host_engine(folder)
    job = finished_job(engine, repo)
    engine.shutdown(timeout=10)
    before = user_state(repo, tmp)  # the user's away tree is listed "prunable": it must stay
    assert any("prunable" in block for block in before["worktrees"])
    shutil.rmtree(engine.workspace.worker_dir(job.id, 0, "worker_1"))
    assert sum(line.startswith("prunable") for line in git(repo, "worktree", "list", "--porcelain").splitlines()) == 2
    restarted = host_engine(folder)
    try:
        restarted.takeover.recover()
        kept = job_worktrees(repo)
        assert kept == [f"worktree {restarted.workspace.worker_dir(job.id, 0, 'worker_2')}"]
        assert len(tree_refs(repo, job.id)) == 3  # pruning an entry never deletes a branch
        assert user_state(repo, tmp) == before
    finally:
        restarted.shutdown(timeout=10)


@pytest.mark.parametrize("removes", [Removes.WORKERS, Removes.ALL])
def test_a_delete_a_crash_cut_short_after_its_rename_is_finished_by_the_next_start(host, removes):
    """What a server killed just after setting a tree aside leaves (tests/chaos/test_delete_crash.py
    kills a real one): nothing lists the tree any more; the next start removes its worktrees'
    entries, its branches by the deletion's rule and its folder, and nothing of the user's."""
    repo, folder, tmp = host
    before = user_state(repo, tmp)
    engine = host_engine(folder)
    job = finished_job(engine, repo)
    engine.shutdown(timeout=10)
    aside = engine.workspace.set_aside(job.id, removes.value)
    assert aside is not None and aside.is_dir() and job.id not in engine.workspace.root_ids()
    restarted = host_engine(folder)
    try:
        restarted.takeover.recover()
        kept = [f"{PREFIX}{job.id}/result"] if removes is Removes.WORKERS else []
        assert tree_refs(repo, job.id) == kept and job_worktrees(repo) == []
        assert not aside.exists() and restarted.workspace.set_aside_trees() == []
        assert user_state(repo, tmp) == before
    finally:
        restarted.shutdown(timeout=10)


def test_a_worker_a_restart_settles_has_its_work_committed_and_a_lost_one_without_work_loses_its_worktree(host):
    repo, folder, tmp = host
    before = user_state(repo, tmp)
    engine = host_engine(folder)
    try:
        job = run_job(engine, "two", ["true", "true"], {"isolation": "worktree"})
        records = {w.name: w for w in engine.queries.snapshot(job.root_id)[1]}
        base = git(repo, "rev-parse", f"orchestrator/{job.id}/worker_1").strip()
        # What a worker wrote after its last commit (its process ended while no server ran).
        directory = engine.workspace.worker_dir(job.id, 0, "worker_1")
        (directory / "late.txt").write_text("written while no server ran\n")
        changes = engine.checkout.recovered(records["worker_1"], job, lost=True)
        assert changes.commit != base and [f["path"] for f in changes.files_changed] == ["late.txt"]
        assert git(repo, "show", f"orchestrator/{job.id}/worker_1:late.txt") == "written while no server ran\n"
        assert directory.is_dir()  # it has work: its worktree stays
        empty = engine.checkout.recovered(records["worker_2"], job, lost=True)
        assert empty.diffstat == "no changes" and empty.branch == f"orchestrator/{job.id}/worker_2"
        assert not engine.workspace.worker_dir(job.id, 0, "worker_2").exists()
        assert git(repo, "rev-parse", empty.branch).strip() == empty.commit  # the branch stays, at its base
        assert job_worktrees(repo) == [f"worktree {directory}"]
        assert user_state(repo, tmp) == before
    finally:
        engine.shutdown(timeout=10)


def test_prepare_keeps_a_readopted_worktree_and_makes_again_one_whose_add_was_cut_off(host):
    repo, folder, tmp = host
    before = user_state(repo, tmp)
    engine = host_engine(folder)
    try:
        job = run_job(engine, "one", ["echo a > a.txt"], {"isolation": "worktree"})
        record = engine.queries.snapshot(job.root_id)[1][0]
        directory = engine.workspace.worker_dir(job.id, 0, "worker_1")
        tip = git(directory, "rev-parse", "HEAD")
        (directory / "left.txt").write_text("not committed yet\n")
        # Re-adopted after a restart (it has attempts): its worktree is kept exactly as it is.
        assert engine.checkout.prepare(record, job) == directory
        assert (directory / "left.txt").exists() and git(directory, "rev-parse", "HEAD") == tip
        assert engine.checkout.checkpoint(record) == record.attempts[0].checkpoint is not None
        # A worktree whose `git worktree add` was cut off (git's "initializing" lock, files
        # missing) of a worker that never started: made again, or its commit would delete them.
        (directory / "left.txt").unlink()
        admin = Path(git(directory, "rev-parse", "--absolute-git-dir").strip())
        (admin / "locked").write_text("initializing\n")
        (directory / "app.py").unlink()
        record.attempts = []
        assert engine.checkout.prepare(record, job) == directory
        assert (directory / "app.py").read_text() == "print('v2')\nline2\n" and (directory / "a.txt").exists()
        assert git(directory, "status", "--porcelain") == "" and git(directory, "rev-parse", "HEAD") == tip
        assert "locked" not in git(repo, "worktree", "list", "--porcelain")
        # Cut off between repository.add_worktree's two steps: `worktree add --no-checkout` done (no
        # lock left, no index, no files), its checkout never ran. Made again too.
        admin = Path(git(directory, "rev-parse", "--absolute-git-dir").strip())  # (made again: its entry may be renamed)
        (admin / "index").unlink()
        for name in ("app.py", "a.txt"):
            (directory / name).unlink()
        assert engine.checkout.prepare(record, job) == directory
        assert (directory / "app.py").read_text() == "print('v2')\nline2\n" and (directory / "a.txt").exists()
        assert git(directory, "status", "--porcelain") == "" and git(directory, "rev-parse", "HEAD") == tip
        assert user_state(repo, tmp) == before
    finally:
        engine.shutdown(timeout=10)


def test_retention_deletes_a_worktree_job_by_the_same_rule(host):
    repo, folder, tmp = host
    before = user_state(repo, tmp)
    engine = host_engine(folder)
    try:
        job = finished_job(engine, repo)
        assert prune_engine(engine, 0) == [job.id]  # what orchestrator.retention_days runs
        assert tree_refs(repo, job.id) == [f"{PREFIX}{job.id}/result"] and job_worktrees(repo) == []
        assert user_state(repo, tmp) == before
    finally:
        engine.shutdown(timeout=10)


def test_the_prune_command_with_no_server_removes_worktrees_and_branches(host):
    repo, folder, tmp = host
    before = user_state(repo, tmp)
    engine = host_engine(folder)
    job = finished_job(engine, repo)
    engine.shutdown(timeout=10)
    config = tmp / "prune.yaml"  # outside the host; a port nothing listens on: the offline path
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        config.write_text(f'api:\n  api_key: "{API_KEY}"\n  port: {probe.getsockname()[1]}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--config", str(config), "prune", "--older-than", "0s", "--yes"],
        cwd=ROOT,
        env={**env, "ORCHESTRATOR_HOME": str(folder)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and f"deleted {job.id}" in done.stdout, done.stdout + done.stderr
    assert "no server answered" in done.stdout
    assert tree_refs(repo, job.id) == [f"{PREFIX}{job.id}/result"] and job_worktrees(repo) == []
    assert user_state(repo, tmp) == before


def test_the_worktree_list_reads_the_same_with_and_without_git_236s_nul_separator(host, monkeypatch):
    from orchestrator.git import job_refs, repository

    repo, _, _ = host
    with_nul = repository.worktree_list(repo)
    checked_out = job_refs.checkouts(repo)
    monkeypatch.setattr(repository, "git_version", lambda: (2, 30))  # before -z (and "prunable")
    assert repository.worktree_list(repo) == with_nul
    assert job_refs.checkouts(repo) == checked_out  # what branch deletion and merge_into read, on git < 2.36 too
    assert len(with_nul) == 3 and any("prunable" in entry for entry in with_nul)
    assert {Path(entry["worktree"]).name for entry in with_nul} == {"my host repo", "user tree", "away tree"}
