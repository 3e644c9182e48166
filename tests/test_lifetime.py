"""Worktrees' and branches' lifetime (lifetime.py) and ``orchestrator prune`` as the clean-up
(cli/prune.py), with real git: a real server whose folder sits in a host repository
(helpers.approval.Served, ``command`` workers: real subprocesses), twenty-odd quick jobs, and the
command run as a user runs it (``python -m orchestrator prune``, a real subprocess). A running
job is in every test and keeps its worktree; the host's checkout and refs outside
``orchestrator/`` never change (helpers.worktree.snapshot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import API_KEY, ROOT, wait_until
from .helpers.approval import Served
from .helpers.worktree import git, snapshot

pytestmark = pytest.mark.slow
JOBS = 20


@pytest.fixture
def served(tmp_path):
    served = Served(tmp_path)
    yield served
    served.close()


def cli(served: Served, *args: str, keep_days: float = 7.0) -> subprocess.CompletedProcess[str]:
    """``python -m orchestrator ARGS`` on the served folder's workspace and host repository (named
    by absolute paths: the command's own folder is this checkout), talking to its server."""
    config = {
        "orchestrator": {"workspace_root": str(served.folder / "workspace")},
        "git": {"repo": str(served.host), "keep_worktrees_days": keep_days},
        "api": {"api_key": API_KEY, "port": int(served.url.rsplit(":", 1)[1])},
    }
    path = served.folder / "workspace" / "cli-config.yaml"  # the workspace is ignored by the host
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "--config", str(path), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def ours(host: Path) -> list[str]:
    return git(host, "for-each-ref", "--format=%(refname:short)", "refs/heads/orchestrator/").split()


def worktrees(host: Path) -> list[str]:
    return [
        line.split(" ", 1)[1]
        for line in git(host, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]


def listed_yet(host: Path, folder: Path) -> bool:
    """Whether ``folder`` is a worktree git lists; False also while git cannot list them yet (a
    worktree being added can make ``git worktree list`` fail for a moment)."""
    try:
        return str(folder) in worktrees(host)
    except subprocess.CalledProcessError:
        return False


def quick_jobs(served: Served, count: int, config: dict | None = None) -> list[str]:
    ids = [served.submit([f"echo {i} > file{i}.txt"], {"approval": "none", **(config or {})}) for i in range(count)]
    for job_id in ids:
        assert served.wait(job_id)["status"] == "completed", job_id
    return ids


def running(served: Served) -> tuple[str, Path]:
    job_id = served.submit(["sleep 120"], {"approval": "none"})
    folder = served.engine.workspace.worker_dir(job_id, 0, "worker_1")
    # running, in its worktree on its branch (the worker is "running" from its preparation on; its
    # worktree is listed before the checkout that makes its branch)
    wait_until(
        lambda: (
            served.engine.worker_running(job_id, "worker_1")
            and listed_yet(served.host, folder)
            and f"orchestrator/{job_id}/worker_1" in ours(served.host)
        ),
        what="the long worker running in its worktree",
    )
    return job_id, folder


def test_prune_dry_run_lists_twenty_jobs_and_changes_nothing_then_yes_removes_what_it_listed(served):
    host = served.host
    done = quick_jobs(served, JOBS)
    live, live_dir = running(served)
    assert len(ours(host)) == 2 * JOBS + 1 and len(worktrees(host)) == JOBS + 2  # + the host, + the running one
    before, refs, trees = snapshot(host, served.folder), ours(host), worktrees(host)

    dry = cli(served, "prune", "--older-than", "0s")
    assert dry.returncode == 0, dry.stderr
    assert all(job_id in dry.stdout for job_id in done) and live not in dry.stdout, dry.stdout
    assert f"in all: {JOBS} job tree(s), {JOBS} worktree(s), {JOBS} branch(es)" in dry.stdout, dry.stdout
    assert "dry run: nothing deleted" in dry.stdout
    assert (ours(host), worktrees(host), snapshot(host, served.folder)) == (refs, trees, before)
    assert all(served.engine.workspace.job_dir(j).is_dir() for j in done)

    done_ = cli(served, "prune", "--older-than", "0s", "--yes")
    assert done_.returncode == 0, done_.stdout + done_.stderr
    assert f"deleted {JOBS} job tree(s) through the server at {served.url}; kept 0." in done_.stdout, done_.stdout
    # what it listed went: every finished tree, its worktree and its worker branch; results stay
    assert sorted(ours(host)) == sorted([f"orchestrator/{j}/result" for j in done] + [f"orchestrator/{live}/worker_1"])
    assert worktrees(host) == [str(host), str(live_dir)]
    assert git(host, "worktree", "prune", "--dry-run", "--verbose") == ""  # no stale registration left
    assert live_dir.is_dir() and served.engine.worker_running(live, "worker_1")
    assert not any(served.engine.workspace.job_dir(j).exists() for j in done)
    assert snapshot(host, served.folder) == before
    again = cli(served, "prune", "--older-than", "0s")
    assert again.returncode == 0 and "nothing to delete: 0 job tree(s), 0 worktree(s), 0 branch(es)" in again.stdout


def test_worktrees_go_after_keep_days_with_their_branches_kept_and_the_job_listed(served):
    host = served.host
    done = quick_jobs(served, 3)
    live, live_dir = running(served)
    before, refs = snapshot(host, served.folder), ours(host)
    kept = cli(served, "prune", keep_days=7)  # not old enough: nothing due
    assert kept.returncode == 0 and "nothing to delete" in kept.stdout, kept.stdout
    assert "4 other job tree(s) keep their worktrees" in kept.stdout and "git.keep_worktrees_days is 7" in kept.stdout

    tiny = 1e-7  # days: about 9 ms, so the three finished jobs are past it
    dry = cli(served, "prune", keep_days=tiny)
    assert dry.returncode == 0, dry.stderr
    assert "worktrees to remove (their jobs and branches stay):" in dry.stdout
    assert all(j in dry.stdout for j in done) and live not in dry.stdout
    assert "in all: 0 job tree(s), 3 worktree(s), 0 branch(es)" in dry.stdout and "git.keep_worktrees_days" in dry.stdout
    assert len(worktrees(host)) == 5 and snapshot(host, served.folder) == before

    applied = cli(served, "prune", "--yes", keep_days=tiny)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert applied.stdout.count("removed 1 worktree(s) of ") == 3
    assert worktrees(host) == [str(host), str(live_dir)] and served.engine.worker_running(live, "worker_1")
    assert ours(host) == refs  # every branch stays: worker branches and results, until the jobs are deleted
    for job_id in done:
        assert served.call("GET", f"/api/v1/jobs/{job_id}").json()["status"] == "completed"
        assert not served.engine.workspace.worker_dir(job_id, 0, "worker_1").exists()
    assert git(host, "worktree", "prune", "--dry-run", "--verbose") == ""
    assert snapshot(host, served.folder) == before
    # the job's diff and a merge again still work from its branches
    merged = served.call("POST", f"/api/v1/jobs/{done[0]}/merge", json={"strategy": "theirs"})
    assert merged.status_code == 200 and merged.json()["merge"]["merged"] == ["worker_1"], merged.text


def test_a_result_landed_in_the_users_branch_ends_its_worktrees_at_once_and_status_shows_it(served):
    host = served.host
    git(host, "branch", "feature")
    before = snapshot(host, served.folder)
    (job_id,) = quick_jobs(served, 1, {"merge_into": "feature"})
    doc = served.call("GET", f"/api/v1/jobs/{job_id}").json()
    assert doc["merge"]["into"]["moved"] is True
    assert any(n.startswith("worktrees removed (1): its result is in feature") for n in doc["notes"]), doc["notes"]
    assert worktrees(host) == [str(host)]
    assert sorted(ours(host)) == [f"orchestrator/{job_id}/result", f"orchestrator/{job_id}/worker_1"]
    assert git(host, "rev-parse", "feature") == doc["merge"]["result_commit"] + "\n"
    after = snapshot(host, served.folder)  # only the branch the user named moved
    assert {**after, "refs": []} == {**before, "refs": []}

    other = quick_jobs(served, 1)[0]  # no merge_into: its worktree stays, with its lifetime shown
    shown = cli(served, "status", other)
    assert shown.returncode == 0, shown.stderr
    assert "worktrees: 1, " in shown.stdout and "kept until 20" in shown.stdout, shown.stdout
    assert "branches: 2 (kept until the job is deleted; its result branch: delete --branches all)" in shown.stdout
    held = json.loads(cli(served, "status", other, "--json").stdout)["held"]
    assert held["worktrees"] == [str(served.engine.workspace.worker_dir(other, 0, "worker_1"))]
    assert sorted(held["branches"]) == [f"orchestrator/{other}/result", f"orchestrator/{other}/worker_1"]
    released = json.loads(cli(served, "status", job_id, "--json").stdout)["held"]
    assert released["worktrees"] == [] and released["worktrees_go"].startswith("its result is in feature")


def test_prune_results_deletes_finished_jobs_result_branches_and_the_last_delete_drops_the_workers_store(served):
    from .helpers.worktree import user_env

    host = served.host
    store = host / ".git" / "orchestrator-host-objects"  # where sandboxes show the store (each tree has its own)
    # Given three finished jobs (one's result kept on a branch of the user's), a running one, and
    # a user's repository with a stash, a branch and a change in the working tree
    done = quick_jobs(served, 3)
    live, live_dir = running(served)
    assert store.is_dir(), "no sandboxed worker ran: nothing to prove"
    git(host, "branch", "mine", f"orchestrator/{done[0]}/result")
    (host / "app.py").write_text("print('stashed')\n")
    git(host, "stash", "-q", env=user_env())
    (host / "app.py").write_text("print('being edited')\n")
    before = snapshot(host, served.folder)

    # When prune --results runs dry, then with --yes
    dry = cli(served, "prune", "--older-than", "0s", "--results")
    assert dry.returncode == 0, dry.stderr
    lines = {line.split()[0]: line for line in dry.stdout.splitlines() if line.startswith("  orchestrator/")}
    assert sorted(lines) == sorted(f"orchestrator/{j}/result" for j in done), dry.stdout
    assert "in mine" in lines[f"orchestrator/{done[0]}/result"] and "WARNING" not in lines[f"orchestrator/{done[0]}/result"]
    assert all("WARNING: merged into no branch" in lines[f"orchestrator/{j}/result"] for j in done[1:]), dry.stdout
    assert "dry run: nothing deleted" in dry.stdout and len(ours(host)) == 2 * 3 + 1
    yes = cli(served, "prune", "--older-than", "0s", "--results", "--yes")
    assert yes.returncode == 0, yes.stdout + yes.stderr

    # Then only the running job's branch is left, the store stays while that job runs, and nothing
    # of the user's changed (their branch keeps the work it had)
    assert ours(host) == [f"orchestrator/{live}/worker_1"], yes.stdout
    assert all(f"deleted branch orchestrator/{j}/result" in yes.stdout for j in done), yes.stdout
    assert store.is_dir() and "object store" not in yes.stdout
    assert snapshot(host, served.folder) == before
    # And deleting the last job (through the API, as the dashboard does) removes the store
    assert served.call("POST", f"/api/v1/jobs/{live}/cancel").status_code < 300
    wait_until(lambda: served.call("GET", f"/api/v1/jobs/{live}/status").json()["status"] == "cancelled")
    deleted = served.call("DELETE", f"/api/v1/jobs/{live}")
    assert deleted.status_code < 300, deleted.text
    assert not store.exists() and not (host / ".git" / "orchestrator-host-objects").exists()
    assert git(host, "fsck", "--connectivity-only", "--no-dangling") == ""  # no ref lost an object with it
    assert snapshot(host, served.folder) == before
    assert not live_dir.exists()
