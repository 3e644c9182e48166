"""A root job's result: its workers' branches merged into
``orchestrator/<root>/result`` when it ends, ``merge_into``, the conflicts and merge routes, the
CLI, FINAL_RESULT.md's Changes section and a server killed in the middle of the merge. Real git,
real repositories made here, real worker processes and a real waitress server; every test checks
that the user's repository is as it was (only ``merge_into``'s branch may move)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from orchestrator.cli import scripts
from orchestrator.cli.progress import ProgressView, closing_lines
from orchestrator.cli.server import start_in_thread
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine
from orchestrator.errors import ConfigError, Conflict, Forbidden
from orchestrator.models import JobStatus
from orchestrator.reports.status_document import job_status, status_table

from .conftest import API_KEY, ROOT, run_job, wait_until
from .helpers.landing import result_of
from .helpers.served_home import served_home
from .helpers.worktree import git, make_host, snapshot, user_env, workers

pytestmark = pytest.mark.slow

SAME_LINE = "sed -i s/v2/{}/ app.py"  # every worker that runs it rewrites line 1 of app.py


def show(host: Path, rev: str, path: str) -> str:
    return git(host, "show", f"{rev}:{path}")


def without(snap: dict, *refs: str) -> dict:
    """The snapshot less the named refs (the one branch merge_into may move)."""
    return {**snap, "refs": [r for r in snap["refs"] if r.split(" ")[0] not in refs]}


# -- the merge when the root ends -----------------------------------------------------------------


def test_disjoint_workers_land_in_a_clean_result_branch_with_a_note_and_a_changes_section(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=["echo a > a.txt", "mkdir -p 'dir b' && echo b > 'dir b/b.txt'", "echo c >> app.py"])
    assert job.status is JobStatus.COMPLETED
    merge = job.merge
    assert merge is not None and merge.strategy == "auto"
    assert list(merge.merged) == ["worker_1", "worker_2", "worker_3"] and merge.skipped == () and merge.conflicts == ()
    result = result_of(host, job.id)
    assert result == merge.result_commit and merge.result_ref == f"refs/heads/orchestrator/{job.id}/result"
    assert show(host, result, "a.txt") == "a\n" and show(host, result, "dir b/b.txt") == "b\n"
    assert show(host, result, "app.py") == "print('v2')\nline2\nc\n"
    assert merge.outcome.command == f"git merge orchestrator/{job.id}/result" and merge.into is None
    assert [c.worker for c in merge.outcome.changes] == ["worker_1", "worker_2", "worker_3"]
    assert isinstance(merge.at, float)
    note = f"merged 3 worker(s) into orchestrator/{job.id}/result (auto); take it with: git merge orchestrator/{job.id}/result"
    assert note in job.notes
    # on disk with the job's final record (what GET status and a restarted server read)
    assert engine.workspace.load_job(job.id).merge == merge
    final = engine.workspace.final_report(job.id).read_text()
    changes = final.split("## Changes", 1)[1].split("## Files created", 1)[0]
    w1 = workers(engine, job)["worker_1"]
    assert (
        f"| `depth_0_worker_1` | `{w1.branch}` | `{w1.commit[:12]}` | 1 file changed, 1 insertion(+) | `a.txt` added |" in changes
    )
    assert "- Strategy: **auto**" in changes and f"at `{result[:12]}`" in changes and "No conflicts." in changes
    assert f"Take the result with: `git merge orchestrator/{job.id}/result`" in changes
    # The terminal says it too: check-status.sh / status, and run's closing lines
    doc = job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
    shown = [
        f"result:    orchestrator/{job.id}/result (auto: 3 merged)",
        f"           take it: git merge orchestrator/{job.id}/result",
    ]
    assert status_table(doc).splitlines()[-2:] == shown
    assert closing_lines(doc)[1:3] == shown
    out = io.StringIO()
    ProgressView(out, tty=False).finish(doc, table=True)  # what run and quick-start print at the end: said once
    assert out.getvalue().count(shown[0]) == 1 and out.getvalue().count(shown[1]) == 1
    assert snapshot(host, folder) == before


def test_the_same_lines_under_auto_stop_and_report_the_file_and_workers_and_skip_the_rest(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=["echo a > a.txt", SAME_LINE.format("w2"), SAME_LINE.format("w3"), "echo d > d.txt"])
    merge = job.merge
    assert job.status is JobStatus.COMPLETED  # the workers' status: a conflict is the merge's, not theirs
    assert list(merge.merged) == ["worker_1", "worker_2"] and list(merge.skipped) == ["worker_3", "worker_4"]
    actual = [c for c in merge.conflicts if not c.predicted]
    assert [(c.path, list(c.workers), c.kind) for c in actual] == [("app.py", ["worker_2", "worker_3"], "content")]
    assert f"result:    orchestrator/{job.id}/result (auto: 2 merged, 2 skipped, 1 conflicting file(s))" in status_table(
        job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
    )
    result = result_of(host, job.id)
    assert show(host, result, "app.py").startswith("print('w2')") and show(host, result, "a.txt") == "a\n"
    assert "d.txt" not in git(host, "ls-tree", "--name-only", result)  # merged nothing more after the conflict
    assert any(n.startswith("merge auto stopped at a conflict in: app.py (worker_2, worker_3)") for n in job.notes)
    final = engine.workspace.final_report(job.id).read_text()
    assert "| `app.py` | worker_2, worker_3 | 1 | content | not merged (merging stopped here) |" in final
    assert "- Skipped: `worker_3`, `worker_4`" in final
    assert snapshot(host, folder) == before


def test_the_same_lines_under_theirs_take_the_later_workers_side_and_name_the_file(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2")], config={"merge_strategy": "theirs"})
    merge = job.merge
    assert merge.strategy == "theirs" and list(merge.merged) == ["worker_1", "worker_2"] and merge.skipped == ()
    assert [(c.path, c.resolved_by) for c in merge.conflicts] == [("app.py", "worker_2")]
    assert show(host, result_of(host, job.id), "app.py") == "print('w2')\nline2\n"
    assert any("the later worker's side won in: app.py (worker_1, worker_2)" in n for n in job.notes)
    final = engine.workspace.final_report(job.id).read_text()
    assert "| `app.py` | worker_1, worker_2 | 1 | content | resolved by taking worker_2's side |" in final
    assert snapshot(host, folder) == before


def test_manual_makes_no_result_branch_and_reports_what_would_conflict(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2")], config={"merge_strategy": "manual"})
    merge = job.merge
    assert merge.result_commit is None and merge.merged == () and list(merge.skipped) == ["worker_1", "worker_2"]
    assert [(c.path, list(c.workers), c.predicted) for c in merge.conflicts] == [("app.py", ["worker_1", "worker_2"], True)]
    assert result_of(host, job.id) is None
    w1, w2 = (workers(engine, job)[n].branch for n in ("worker_1", "worker_2"))
    assert merge.outcome.command == f"git merge {w1} && git merge {w2}"
    final = engine.workspace.final_report(job.id).read_text()
    assert "not made (manual: nothing merged)" in final and "would conflict (not merged)" in final
    assert f"Merge the branches yourself with: `git merge {w1} && git merge {w2}`" in final
    assert snapshot(host, folder) == before


def test_workers_that_change_nothing_are_marked_never_merged_and_the_job_says_so_in_every_view(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    # Given git.setup leaving a file in each new worktree: committed before the first attempt, it is
    # not the worker's work, so a worker that then changes nothing has no changes
    engine = make(git={"setup": ["sh", "-c", "echo built > built.txt"]})
    job = run_job(engine, "x", tasks=["true", "cat app.py > /dev/null"])
    assert job.status is JobStatus.COMPLETED
    found = workers(engine, job)
    assert [w.no_changes for w in found.values()] == [True, True]
    assert all("built.txt" in {f["path"] for f in w.files_changed} for w in found.values())  # on its branch, all the same
    # Nothing is merged, no result branch is made, and the note says why
    assert job.merge is None and result_of(host, job.id) is None
    assert "nothing merged: no worker changed anything (no changes: worker_1, worker_2)" in job.notes
    # The status document, check-status's table, the closing summary and quick-start's exit code
    doc = job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
    assert doc["no_changes"] is True and doc["progress"]["no_changes"] == 2
    assert [t["no_changes"] for t in doc["results"]["tasks"]] == [True, True]
    assert "no changes: true" in status_table(doc) and "no changes: cat app.py" in status_table(doc)
    assert closing_lines(doc)[0].startswith(f"Job {job.id} completed: 2/2 workers succeeded; no worker changed anything")
    assert scripts.exit_code(doc) == scripts.RET_NO_CHANGES == 6
    # The reports and the event log
    final = engine.workspace.final_report(job.id).read_text()
    assert "| success, no changes |" in final
    assert "Not merged: no worker changed anything (no changes: worker_1, worker_2)." in final
    level = engine.workspace.level_report(job.id, 0).read_text()
    assert "| success, no changes |" in level
    events = engine.workspace.orchestrator_log(job.id).read_text()
    assert "depth_0_worker_1 success: exit code 0; no changes" in events
    assert snapshot(host, folder) == before


def test_one_worker_that_changed_nothing_beside_one_that_did_is_listed_apart_and_never_as_merged(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    long_task = "echo a > a.txt; : " + "supercalifragilistic expialidocious " * 4
    job = run_job(engine, "x", tasks=[long_task, "true"])
    w1, w2 = (workers(engine, job)[n] for n in ("worker_1", "worker_2"))
    assert w1.no_changes is False and w2.no_changes is True
    merge = job.merge
    assert list(merge.merged) == ["worker_1"] and list(merge.unchanged) == ["worker_2"] and merge.left_out == ()
    short = f"orchestrator/{job.id}/result"
    assert f"merged 1 worker(s) into {short} (auto); take it with: git merge {short}; no changes from worker_2 (not merged)" in (
        job.notes
    )
    assert len(git(host, "rev-list", f"{merge.base}..{short}").split()) == 1  # one commit: worker_1's
    doc = job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
    assert doc["no_changes"] is False and scripts.exit_code(doc) == 0
    assert f"result:    {short} (auto: 1 merged, 1 with no changes)" in status_table(doc)
    final = engine.workspace.final_report(job.id).read_text()
    assert "- Merged (one commit each): `worker_1`\n" in final and "- No changes (nothing to merge): `worker_2`" in final
    # Subjects are cut at a word's end, and the worker is named by one trailer on both commits
    full = " ".join(long_task.split())
    for commit in (w1.commit, merge.result_commit):
        subject = git(host, "log", "-1", "--format=%s", commit).strip()
        assert len(subject) < 72 and subject.endswith("…") and full.startswith(subject[:-1])
        assert full[len(subject) - 1] == " "  # the next character of the task starts a new word
        assert git(host, "log", "-1", "--format=%(trailers:key=Orchestrator-Worker,valueonly)", commit).strip() == "worker_1"
    # A webhook's worker summary carries it too
    from orchestrator.events import Event
    from orchestrator.webhooks.event_types import worker_summary

    assert worker_summary(w2, Event(1, 0.0, "worker", job.id, job.id, "success", "worker_2"))["no_changes"] is True
    assert snapshot(host, folder) == before


def test_in_a_folder_a_worker_that_leaves_no_file_has_no_changes(hosted):
    host, folder, make = hosted
    engine = make()
    job = run_job(engine, "x", tasks=["echo a > a.txt", "true"], config={"isolation": "folder"})
    assert [w.no_changes for w in workers(engine, job).values()] == [False, True]
    doc = job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
    assert doc["no_changes"] is False  # the job-wide word is a worktree job's


def test_manual_after_theirs_removes_the_result_branch_the_record_no_longer_lists(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2")], config={"merge_strategy": "theirs"})
    theirs = job.merge.result_commit
    assert result_of(host, job.id) == theirs
    final = engine.workspace.job_dir(job.id) / "FINAL_RESULT.md"
    assert f"`orchestrator/{job.id}/result` at `{theirs[:12]}`" in final.read_text()
    merge = engine.merge(job.id, strategy="manual")
    assert merge["result_commit"] is None and merge["merged"] == [] and merge["skipped"] == ["worker_1", "worker_2"]
    # FINAL_RESULT.md follows the merge made again (it was left naming the removed result without git.push)
    assert f"`orchestrator/{job.id}/result`, removed (manual: nothing merged" in final.read_text()
    assert merge["removed"] is True and merge["previous"] == theirs
    assert result_of(host, job.id) is None  # the record says nothing merged, and no branch says otherwise
    assert any(
        f"orchestrator/{job.id}/result (at {theirs[:12]}, an earlier merge's result) was removed" in n
        for n in engine.queries.get_job(job.id).notes
    )
    doc = job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
    assert f"orchestrator/{job.id}/result (an earlier merge's result) was removed" in status_table(doc)
    assert engine.merge(job.id, strategy="theirs")["result_commit"] == theirs  # made again: the same commit
    assert snapshot(host, folder) == before


def test_the_simulated_worker_in_worktree_mode_lands_its_file_in_the_result_branch(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(orchestrator={"worker": "simulated"}, simulated={"recurse": False})
    job = run_job(engine, "x", tasks=["Write the parser", "Write the lexer"])
    assert list(job.merge.merged) == ["worker_1", "worker_2"]
    listed = git(host, "ls-tree", "--name-only", result_of(host, job.id)).split()
    assert "write_the_parser.md" in listed and "write_the_lexer.md" in listed and "app.py" in listed
    assert snapshot(host, folder) == before


def test_a_folder_job_merges_nothing_and_its_report_has_no_changes_section(hosted):
    host, folder, make = hosted
    engine = make()
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"isolation": "folder"})
    assert job.merge is None and not any("merge" in n for n in job.notes)
    assert "## Changes" not in engine.workspace.final_report(job.id).read_text()
    with pytest.raises(Conflict, match="folder isolation: its workers have no branches"):
        engine.merge(job.id)
    assert engine.conflicts(job.id) == {"job_id": job.id, "conflicts": [], "merge": None, "resolutions": []}


def test_a_git_failure_in_the_merge_keeps_the_job_records_the_error_and_merge_runs_again(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    job = engine.submission.submit("x", None, ["sleep 0.5; echo a > a.txt"])
    # A stale lock on the result ref (a git killed mid-update): update-ref fails for real.
    lock = host / ".git" / "refs" / "heads" / "orchestrator" / job.id / "result.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    done = engine.queries.wait(job.id, 30)
    assert done.status is JobStatus.COMPLETED  # what its worker earned
    assert "stale lock file" in done.merge.error and done.merge.strategy == "auto"
    assert any(n.startswith("merging the workers' branches failed:") for n in done.notes)
    assert f"python -m orchestrator merge {job.id}" in engine.workspace.final_report(job.id).read_text()
    assert result_of(host, job.id) is None
    with pytest.raises(Conflict, match="stale lock file"):  # POST /merge says so (409), and records it
        engine.merge(job.id, "theirs")
    assert engine.workspace.load_job(job.id).merge.strategy == "theirs" and "stale lock" in done.merge.error
    lock.unlink()
    merge = engine.merge(job.id)
    assert merge is not None and merge["merged"] == ["worker_1"] and result_of(host, job.id) == merge["result_commit"]
    assert engine.workspace.load_job(job.id).merge.to_dict() == merge
    assert snapshot(host, folder) == before


def test_a_cancelled_job_is_merged_only_when_asked(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    job = engine.submission.submit("x", {"max_workers": 1}, ["echo a > a.txt", "echo b > b.txt; sleep 30"])
    wrote = engine.workspace.worker_dir(job.id, 0, "worker_2") / "b.txt"
    wait_until(wrote.exists, what="the worker wrote b.txt")  # its attempt started is not enough on a loaded machine
    engine.cancel(job.id)
    done = engine.queries.wait(job.id, 30)
    assert done.status is JobStatus.CANCELLED and done.merge is None and result_of(host, job.id) is None
    assert (
        f"not merged: the job was cancelled; merge what its workers committed with: python -m orchestrator merge {job.id}"
        in done.notes
    )
    assert "Not merged: the job was cancelled." in engine.workspace.final_report(job.id).read_text()
    # What its finished worker committed lands when asked; the cancelled worker's partial work
    # (committed on its branch) is left out, named: only a worker that succeeded is merged.
    merge = engine.merge(job.id)
    assert merge is not None and merge["merged"] == ["worker_1"] and show(host, result_of(host, job.id), "a.txt") == "a\n"
    assert workers(engine, job)["worker_2"].commit is not None
    assert merge["left_out"] == [{"worker": "worker_2", "reason": "it ended cancelled"}]
    note = f"merged 1 worker(s) into orchestrator/{job.id}/result (auto); take it with: git merge orchestrator/{job.id}/result"
    assert note + "; left out: worker_2 (it ended cancelled)" in engine.queries.get_job(job.id).notes
    assert "b.txt" not in git(host, "ls-tree", "--name-only", result_of(host, job.id))
    assert snapshot(host, folder) == before


# -- merge_into -------------------------------------------------------------------------------------


def test_merge_into_a_branch_not_checked_out_fast_forwards_only_that_branch(hosted):
    host, folder, make = hosted
    git(host, "branch", "feature")
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"merge_into": "feature"})
    into = job.merge.into
    assert into.branch == "feature" and into.moved is True and into.refused is None
    assert git(host, "rev-parse", "feature").strip() == job.merge.result_commit
    assert without(snapshot(host, folder), "refs/heads/feature") == without(before, "refs/heads/feature")
    final = engine.workspace.final_report(job.id).read_text()
    assert "Your branch `feature`: moved feature from" in final


def test_merge_into_the_checked_out_branch_of_a_clean_host_fast_forwards_it_and_its_files(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(git={"merge_into": "main"})  # the server's setting, this time
    job = run_job(engine, "x", tasks=["echo a > a.txt", "echo b >> app.py"])
    into = job.merge.into
    assert into.moved is True and "fast-forwarded main in" in into.message
    after = snapshot(host, folder)
    # main is the result, still checked out, and the working tree was fast-forwarded with it (clean)
    assert git(host, "rev-parse", "main").strip() == job.merge.result_commit
    assert git(host, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert (host / "a.txt").read_text() == "a\n" and (host / "app.py").read_text() == "print('v2')\nline2\nb\n"
    assert git(host, "status", "--porcelain") == ""
    assert (
        after["stash"] == before["stash"]
        and without(after, "refs/heads/main")["refs"] == without(before, "refs/heads/main")["refs"]
    )


def test_merge_into_a_dirty_checkout_or_a_non_fast_forward_is_refused_with_the_command_and_nothing_moves(hosted):
    host, folder, make = hosted
    (host / "app.py").write_text("mine, uncommitted\n")
    # `diverged` has a commit of its own that the result (made from HEAD) lacks; made without a checkout
    own = git(host, "commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "own work", env=user_env()).strip()
    git(host, "branch", "diverged", own)
    before = snapshot(host, folder)
    engine = make()
    dirty = run_job(engine, "x", tasks=["echo a > a.txt"], config={"merge_into": "main"})
    into = dirty.merge.into
    assert into.moved is False and "has uncommitted changes" in into.refused
    assert into.command == f"git -C '{host}' merge --ff-only {dirty.merge.result_commit}"
    assert any(f"run: {into.command}" in n for n in dirty.notes)
    assert snapshot(host, folder) == before
    refused = run_job(engine, "x", tasks=["echo b > b.txt"], config={"merge_into": "diverged"})
    into = refused.merge.into
    assert into.moved is False and "not a fast-forward" in into.refused
    assert into.command == f"git switch diverged && git merge {refused.merge.result_commit}"
    final = engine.workspace.final_report(refused.id).read_text()
    assert "Your branch `diverged` was not moved:" in final and f"Run: `{into.command}`" in final
    assert snapshot(host, folder) == before


def test_merge_into_and_merge_strategy_are_checked_at_submission(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    for bad, said in (
        ("bad..name", "is not a valid branch name"),
        ("-x", "is not a valid branch name"),
        ("@{-1}", "is not a valid branch name"),
        ("a\x00b", "is not a valid branch name"),
        ("x" * 300, "is not a valid branch name"),
        ("orchestrator/abc/result", "inside the orchestrator's branch prefix"),
        (7, "wrong type: expected a string"),
    ):
        with pytest.raises(ConfigError, match=said) as caught:
            engine.submission.submit("x", {"merge_into": bad}, ["true"])
        assert "merge_into" in caught.value.message
    with pytest.raises(ConfigError, match="merge_strategy='ours' is not allowed. Choose one of: auto, theirs, manual"):
        engine.submission.submit("x", {"merge_strategy": "ours"}, ["true"])
    root = engine.submission.submit("x", None, ["sleep 30"])
    wait_until(lambda: workers(engine, root)["worker_1"].attempts, what="worker_1 started")
    with pytest.raises(Forbidden, match="config.merge_into is for a root job only"):
        engine.submission.submit("y", {"merge_into": "main"}, ["true"], parent_job_id=root.id, parent_worker="worker_1")
    with pytest.raises(Conflict, match="still running"):
        engine.merge(root.id)
    engine.cancel(root.id)
    engine.queries.wait(root.id, 30)
    assert snapshot(host, folder) == before


# -- routes and commands, on a real server ---------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    """A real waitress server whose folder sits inside a host repository."""
    host, folder = make_host(tmp_path)
    settings = load_settings(
        base_dir=folder,
        environ={},
        overrides={
            "workers": {"retry_backoff": 0.05, "kill_grace": 0.5, "default_timeout": 30},
            "orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]},
            "api": {"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
        },
    )
    engine = Engine(settings)
    server = start_in_thread(settings, engine, port=0)
    yield host, folder, server.url, engine
    engine.shutdown(timeout=10)
    server.close()


def call(url: str, method: str, path: str, key: str = API_KEY, **kwargs):
    return requests.request(method, url + path, headers={"X-API-Key": key}, **{"timeout": 30, **kwargs})


def submit_and_wait(url: str, tasks: list[str], config: dict | None = None) -> str:
    job_id = call(url, "POST", "/api/v1/orchestrate", json={"request": "x", "tasks": tasks, "config": config or {}}).json()[
        "job_id"
    ]
    assert call(url, "GET", f"/api/v1/jobs/{job_id}/wait?timeout=60", timeout=90).json()["status"] in ("completed", "partial")
    return job_id


def test_merge_route_refuses_a_running_job_reruns_idempotently_and_a_new_strategy_remerges(served):
    host, folder, url, engine = served
    before = snapshot(host, folder)
    running = call(url, "POST", "/api/v1/orchestrate", json={"request": "x", "tasks": ["sleep 30"]}).json()["job_id"]
    answer = call(url, "POST", f"/api/v1/jobs/{running}/merge", json={})
    assert answer.status_code == 409 and "still running" in answer.json()["message"]
    seen = call(url, "GET", f"/api/v1/jobs/{running}/conflicts")  # answers while it runs
    assert seen.status_code == 200 and seen.json() == {"job_id": running, "conflicts": [], "merge": None, "resolutions": []}
    call(url, "POST", f"/api/v1/jobs/{running}/cancel")

    job_id = submit_and_wait(url, [SAME_LINE.format("w1"), SAME_LINE.format("w2"), "echo c > c.txt"])
    status = call(url, "GET", f"/api/v1/jobs/{job_id}").json()
    first = engine.queries.get_job(job_id).merge.to_dict()  # as the API answers it
    assert first["skipped"] == ["worker_2", "worker_3"] and status["status"] == "completed" and status["merge"] == first
    reflog = git(host, "reflog", "show", f"orchestrator/{job_id}/result")
    again = call(url, "POST", f"/api/v1/jobs/{job_id}/merge")  # no body: the job's own strategy
    assert again.status_code == 200, again.text
    assert again.json()["merge"]["result_commit"] == first["result_commit"]
    assert git(host, "reflog", "show", f"orchestrator/{job_id}/result") == reflog  # the ref did not move again
    theirs = call(url, "POST", f"/api/v1/jobs/{job_id}/merge", json={"strategy": "theirs"}).json()["merge"]
    assert theirs["merged"] == ["worker_1", "worker_2", "worker_3"] and theirs["result_commit"] != first["result_commit"]
    assert result_of(host, job_id) == theirs["result_commit"]
    assert show(host, theirs["result_commit"], "app.py").startswith("print('w2')")
    assert (
        call(url, "POST", f"/api/v1/jobs/{job_id}/merge", json={"strategy": "theirs"}).json()["merge"]["result_commit"]
        == theirs["result_commit"]
    )
    # the record on disk and the status document carry the last merge
    assert engine.workspace.load_job(job_id).merge.strategy == "theirs"
    assert call(url, "GET", f"/api/v1/jobs/{job_id}").json()["merge"]["result_commit"] == theirs["result_commit"]
    for body, code, said in (
        ({"strategy": "ours"}, 422, "not a merge strategy"),
        ({"into": "bad..name"}, 422, "not a valid branch name"),
        ({"into": "orchestrator/x"}, 422, "inside the orchestrator's branch prefix"),
        ({"strategy": 3}, 422, "must be a string"),
        ({"bogus": 1}, 400, "unknown field"),
        (["auto"], 400, "JSON object"),
    ):
        answer = call(url, "POST", f"/api/v1/jobs/{job_id}/merge", json=body)
        assert answer.status_code == code and said in answer.json()["message"], (body, answer.text)
    assert snapshot(host, folder) == before


def test_conflicts_route_before_and_after_merging_and_who_may_merge(served):
    host, folder, url, engine = served
    before = snapshot(host, folder)
    job_id = submit_and_wait(
        url, [SAME_LINE.format("w1"), "echo b > b.txt", SAME_LINE.format("w3")], {"merge_strategy": "manual"}
    )
    got = call(url, "GET", f"/api/v1/jobs/{job_id}/conflicts").json()
    assert got["job_id"] == job_id and got["merge"]["result_commit"] is None
    assert got["conflicts"] == [
        {
            "path": "app.py",
            "workers": ["worker_1", "worker_3"],
            "hunks": 1,
            "kind": "content",
            "resolved_by": "",
            "predicted": True,
            "resolution": None,  # no resolver was asked (merge_strategy resolve's)
        }
    ]
    assert got["resolutions"] == []
    merged = call(url, "POST", f"/api/v1/jobs/{job_id}/merge", json={"strategy": "theirs", "into": ""}).json()["merge"]
    after = call(url, "GET", f"/api/v1/jobs/{job_id}/conflicts").json()
    assert after["conflicts"] == got["conflicts"] and after["merge"] == merged and merged["into"] is None
    # a worker credential may read its tree, never merge it; a child job's id is refused
    worker_key = engine.credentials.issue(job_id, job_id, "worker_1")
    assert call(url, "POST", f"/api/v1/jobs/{job_id}/merge", key=worker_key).status_code in (401, 403)
    assert call(url, "POST", f"/api/v1/jobs/{job_id}-c1/merge").status_code == 404  # no such child job
    assert call(url, "POST", f"/api/v1/jobs/{job_id}/merge", key="wrong-key-0123456789").status_code == 401
    assert snapshot(host, folder) == before


def test_a_child_job_id_is_refused_with_the_root_named(served):
    host, folder, url, engine = served
    root = engine.submission.submit("x", None, ["sleep 30"])
    wait_until(lambda: workers(engine, root)["worker_1"].attempts, what="worker_1 started")
    child = engine.submission.submit("y", None, ["true"], parent_job_id=root.id, parent_worker="worker_1")
    engine.queries.wait(child.id, 30)
    answer = call(url, "POST", f"/api/v1/jobs/{child.id}/merge")
    assert answer.status_code == 422 and f"Use the root job {root.id}" in answer.json()["message"]
    got = call(url, "GET", f"/api/v1/jobs/{child.id}/conflicts")  # a child job's own workers' branches
    assert got.status_code == 200 and got.json()["job_id"] == child.id and got.json()["conflicts"] == []
    # a worker's own credential (alive while it runs) cannot merge even its own tree
    key = engine.credentials.issue(root.id, root.id, "worker_1")
    answer = call(url, "POST", f"/api/v1/jobs/{root.id}/merge", key=key)
    assert answer.status_code == 403 and "cannot merge" in answer.json()["message"]
    # nor ask for a child job that would move a branch of the user's
    body = {"request": "y", "tasks": ["true"], "config": {"merge_into": "main"}}
    answer = call(url, "POST", "/api/v1/orchestrate", key=key, json=body)
    assert answer.status_code == 403 and "config.merge_into is for a root job only" in answer.json()["message"]
    engine.cancel(root.id)
    engine.queries.wait(root.id, 30)


def test_cli_merge_and_conflicts_against_a_real_server(served, tmp_path):
    host, folder, url, engine = served
    job_id = submit_and_wait(url, [SAME_LINE.format("w1"), SAME_LINE.format("w2")])
    config = tmp_path / "cli.yaml"
    config.write_text(f'api:\n  api_key: "{API_KEY}"\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "orchestrator", "--config", str(config), *args, "--api-url", url]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)

    shown = cli("conflicts", job_id)
    assert shown.returncode == 0, shown.stderr
    assert (
        "1 predicted conflict(s)" in shown.stdout
        and "conflict in app.py (worker_1, worker_2, 1 hunk(s)): would conflict (not merged)" in shown.stdout
    )
    assert "merge (auto)" in shown.stdout and "skipped: worker_2" in shown.stdout
    done = cli("merge", job_id, "--strategy", "theirs")
    assert done.returncode == 0, done.stderr
    assert "merged: worker_1, worker_2; skipped: none" in done.stdout and "resolved by taking worker_2's side" in done.stdout
    assert f"take it with: git merge orchestrator/{job_id}/result" in done.stdout
    as_json = json.loads(cli("merge", job_id, "--strategy", "theirs", "--json").stdout)
    assert as_json["merge"]["result_commit"] == result_of(host, job_id)
    assert json.loads(cli("conflicts", job_id, "--json").stdout)["merge"]["strategy"] == "theirs"
    bad = cli("merge", job_id, "--into", "bad..name")
    assert bad.returncode != 0 and "not a valid branch name" in bad.stderr


# -- a server killed in the middle of the merge ------------------------------------------------------


def test_kill_9_during_the_result_merge_leaves_no_ref_and_a_restart_and_post_merge_land_it(tmp_path):
    host, folder = make_host(tmp_path)
    served = served_home(tmp_path, host, ["sh", "-c", "{task}"], "  merge_strategy: theirs\n")  # (outside the host)
    home, url, start = served.home, served.url, served.start
    before = snapshot(host, folder)

    server = start("merge_before_update_ref=1")
    try:
        tasks = [SAME_LINE.format("w1"), SAME_LINE.format("w2"), "echo c > c.txt"]
        job_id = call(url, "POST", "/api/v1/orchestrate", json={"request": "x", "tasks": tasks}).json()["job_id"]
        assert server.wait(60) == -signal.SIGKILL  # killed itself at the failpoint, between merge-tree and update-ref
        assert result_of(host, job_id) is None  # no half-made ref
        assert not list((host / ".git").rglob("*.lock"))
        assert snapshot(host, folder) == before
        server = start()
        done = call(url, "GET", f"/api/v1/jobs/{job_id}/wait?timeout=60", timeout=90).json()
        assert done["status"] == "completed"
        landed = json.loads((home / "workspace" / f"job_{job_id}" / "state" / "jobs" / f"{job_id}.json").read_text())["merge"]
        assert landed["merged"] == ["worker_1", "worker_2", "worker_3"]  # the restart ended the job and merged it
        again = call(url, "POST", f"/api/v1/jobs/{job_id}/merge").json()["merge"]
        assert again["result_commit"] == landed["result_commit"] == result_of(host, job_id)
        assert show(host, again["result_commit"], "app.py").startswith("print('w2')")
        assert show(host, again["result_commit"], "c.txt") == "c\n"
        assert snapshot(host, folder) == before
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(60)
