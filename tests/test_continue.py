"""Continuing a finished worker (engine/continuing.py): a round of the same worker in its own checkout
and branch with the user's feedback, re-gated, squashed onto the result as a new commit; bad requests
refused with clear errors. Real command workers (subprocesses), real git hosts made here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from orchestrator import states
from orchestrator.api.client import OrchestratorClient
from orchestrator.cli.server import start_in_thread
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine
from orchestrator.errors import ConfigError, Conflict, JobNotFound, OrchestratorError, ValidationError, WorkerNotFound
from orchestrator.models import JobStatus, Round, WorkerStatus

from .conftest import API_KEY, ROOT, run_job, wait_until
from .helpers.worktree import git, host_engine, make_host, snapshot, workers
from .test_publishing import forge, hosted_remote  # noqa: F401  (their fixtures: a bare remote, a loopback forge)

pytestmark = pytest.mark.slow

# Round 1 (its prompt is its task) writes "one"; a round whose prompt holds FEEDBACK appends its word.
SCRIPT = (
    'case "$1" in *FEEDBACK-SLOW*) echo slow >> notes.txt; sleep 60;; *FEEDBACK-BAD*) echo bad >> notes.txt;; *FEEDBACK-TWO*) echo two >> notes.txt;; '
    "*) echo one > notes.txt;; esac; pwd > where.txt"
)
GATE = {"name": "check", "run": ["sh", "-c", "! grep -q bad notes.txt"]}


@pytest.fixture
def hosted(tmp_path):
    host, folder = make_host(tmp_path)
    engine = host_engine(folder, orchestrator={"worker": "command", "command": ["sh", "-c", SCRIPT, "sh", "{prompt}"]})
    yield host, folder, engine
    engine.shutdown(timeout=10)


def finished_round(engine, job, name, number, timeout=60):
    def ended():
        rec = workers(engine, job)[name]
        return rec if len(rec.rounds) >= number - 1 and rec.rounds[number - 2].state != "running" else None

    wait_until(ended, timeout=timeout)
    engine.continuing.futures[job.root_id].result(timeout)  # its reports and record written too
    return workers(engine, job)[name]


def show(host, rev, path):
    return git(host, "show", f"{rev}:{path}")


def test_a_round_goes_on_in_the_same_checkout_is_gated_and_lands_as_a_new_result_commit(hosted):
    host, folder, engine = hosted
    before = snapshot(host, folder)
    job = run_job(engine, "notes", tasks=["write the notes"], config={"gates": [GATE], "max_retries": 0})
    assert job.status is JobStatus.COMPLETED
    first = workers(engine, job)["worker_1"]
    result_ref = f"orchestrator/{job.id}/result"
    result_1 = git(host, "rev-parse", result_ref).strip()
    assert show(host, result_1, "notes.txt") == "one\n"

    started = engine.continue_worker(job.id, "worker_1", "good, now FEEDBACK-TWO please")
    assert started["round"]["number"] == 2 and started["round"]["state"] == "running"
    rec = finished_round(engine, job, "worker_1", 2)
    round_2 = rec.rounds[0]
    assert round_2.state == "success", round_2
    assert rec.status is WorkerStatus.SUCCESS
    # The same checkout: round 2 appended to round 1's file, in the same directory, on the same branch
    assert show(host, rec.commit, "notes.txt") == "one\ntwo\n"
    assert show(host, rec.commit, "where.txt") == show(host, first.commit, "where.txt")
    assert rec.branch == first.branch and git(host, "merge-base", "--is-ancestor", first.commit, rec.commit) == ""
    assert round_2.commit == rec.commit and round_2.first_attempt == len(first.attempts) + 1
    assert [a.number for a in rec.attempts] == [1, 2]
    # Re-gated: the gate judged the round's commit
    assert rec.gates[0].status == "passed" and rec.gated_commit == rec.commit
    # The result: one new commit on top of the previous result (never a rebuild)
    result_2 = git(host, "rev-parse", result_ref).strip()
    assert result_2 != result_1 and round_2.result_commit == result_2, round_2.merge_note
    assert git(host, "rev-parse", f"{result_2}^").strip() == result_1
    assert show(host, result_2, "notes.txt") == "one\ntwo\n"
    done = engine.queries.get_job(job.id)
    assert done.status is JobStatus.COMPLETED and done.merge is not None and done.merge.result_commit == result_2
    assert any("round 2: success" in note for note in done.notes)
    # Not a resumable CLI: the round's prompt held the previous outcome and the feedback
    assert round_2.resumed_session is None
    # The record on disk says both rounds
    on_disk = engine.workspace.load_worker(job.root_id, 0, "worker_1")
    assert [r.number for r in on_disk.rounds] == [2] and on_disk.rounds[0].feedback == "good, now FEEDBACK-TWO please"
    # The report shows the round, its feedback and what it did to the result
    final = engine.workspace.final_report(job.root_id).read_text()
    assert "## Continue rounds" in final and "good, now FEEDBACK-TWO please" in final, final
    assert f"merged into orchestrator/{job.id}/result as commit {result_2[:12]}" in final
    # The host: only the job's own branches moved
    assert snapshot(host, folder) == before


def test_a_round_that_fails_its_gate_fails_and_leaves_the_result_unchanged(hosted):
    host, folder, engine = hosted
    before = snapshot(host, folder)
    job = run_job(engine, "notes", tasks=["write the notes"], config={"gates": [GATE], "max_retries": 0})
    first = workers(engine, job)["worker_1"]
    result_ref = f"orchestrator/{job.id}/result"
    result_1 = git(host, "rev-parse", result_ref).strip()

    engine.continue_worker(job.id, "worker_1", "now FEEDBACK-BAD")
    rec = finished_round(engine, job, "worker_1", 2)
    assert rec.rounds[0].state == "failed" and "gate check failed" in (rec.rounds[0].exit_reason or "")
    assert rec.rounds[0].result_commit is None and "result is unchanged" in (rec.rounds[0].merge_note or "")
    assert git(host, "rev-parse", result_ref).strip() == result_1
    # What may be merged stays what passed its gates
    assert rec.gated_commit == first.gated_commit
    assert snapshot(host, folder) == before


def test_a_round_a_stopped_server_left_running_ends_lost_and_the_worker_can_be_continued_again(tmp_path):
    host, folder = make_host(tmp_path)
    command = {"worker": "command", "command": ["sh", "-c", SCRIPT, "sh", "{prompt}"]}
    engine = host_engine(folder, orchestrator=command)
    try:
        job = run_job(engine, "notes", tasks=["write the notes"], config={"max_retries": 0})
    finally:
        engine.shutdown(timeout=10)
    # What a server stopped mid-round leaves on disk: the round running, the worker running
    rec = engine.workspace.load_worker(job.root_id, 0, "worker_1")
    rec.rounds.append(Round(number=2, feedback="FEEDBACK-TWO", started_at=rec.ended_at or 0.0, first_attempt=2))
    assert states.set_worker_status(rec, WorkerStatus.RUNNING)
    engine.workspace.save_worker(rec)
    again = host_engine(folder, orchestrator=command)
    try:
        started = again.continue_worker(job.id, "worker_1", "FEEDBACK-TWO")
        assert started["round"]["number"] == 3
        rec = finished_round(again, job, "worker_1", 3)
    finally:
        again.shutdown(timeout=10)
    assert rec.rounds[0].state == "failed" and "lost: the server stopped during the round" in (rec.rounds[0].exit_reason or "")
    assert rec.rounds[1].state == "success" and rec.rounds[1].result_commit


def test_a_round_fast_forwards_the_jobs_merge_into_branch_to_the_new_result(hosted):
    host, folder, engine = hosted
    git(host, "branch", "landing")  # a branch of the user's, not checked out

    def without_landing(snap):
        return {**snap, "refs": [r for r in snap["refs"] if not r.startswith("refs/heads/landing ")]}

    before = snapshot(host, folder)
    job = run_job(engine, "notes", tasks=["write the notes"], config={"max_retries": 0, "merge_into": "landing"})
    result_1 = git(host, "rev-parse", f"orchestrator/{job.id}/result").strip()
    assert git(host, "rev-parse", "landing").strip() == result_1
    engine.continue_worker(job.id, "worker_1", "FEEDBACK-TWO")
    rec = finished_round(engine, job, "worker_1", 2)
    assert rec.rounds[0].state == "success" and "landing moved to it" in (rec.rounds[0].merge_note or "")
    assert git(host, "rev-parse", "landing").strip() == rec.rounds[0].result_commit != result_1
    assert engine.queries.get_job(job.id).merge.into.moved
    assert without_landing(snapshot(host, folder)) == without_landing(before)


def test_a_retired_worktree_is_made_again_from_its_branch_and_a_deleted_branch_is_refused(tmp_path):
    host, folder = make_host(tmp_path)
    command = {"worker": "command", "command": ["sh", "-c", SCRIPT, "sh", "{prompt}"]}
    engine = host_engine(folder, orchestrator=command, git={"remove_worker_worktrees": True})
    try:
        before = snapshot(host, folder)
        job = run_job(engine, "notes", tasks=["write the notes"], config={"max_retries": 0})
        first = workers(engine, job)["worker_1"]
        directory = engine.checkout.worktrees().directory(first)
        wait_until(lambda: first.branch not in git(host, "worktree", "list", "--porcelain"), timeout=30, what="retired")
        assert not (directory / ".git").exists()
        engine.continue_worker(job.id, "worker_1", "FEEDBACK-TWO")
        rec = finished_round(engine, job, "worker_1", 2)
        assert rec.rounds[0].state == "success", rec.rounds[0]
        assert show(host, rec.commit, "notes.txt") == "one\ntwo\n"  # round 1's file, from its branch
        assert git(host, "merge-base", "--is-ancestor", first.commit, rec.commit) == ""
        wait_until(lambda: first.branch not in git(host, "worktree", "list", "--porcelain"), timeout=30, what="retired again")
        git(host, "branch", "-D", first.branch)
        with pytest.raises(Conflict, match="is no longer in the repository"):
            engine.continue_worker(job.id, "worker_1", "FEEDBACK-TWO")
        assert snapshot(host, folder) == before
    finally:
        engine.shutdown(timeout=10)


def test_cancel_stops_a_running_round_and_the_result_stays(hosted):
    host, folder, engine = hosted
    job = run_job(engine, "notes", tasks=["write the notes"], config={"max_retries": 0})
    result_1 = git(host, "rev-parse", f"orchestrator/{job.id}/result").strip()
    engine.continue_worker(job.id, "worker_1", "FEEDBACK-SLOW")
    wait_until(lambda: workers(engine, job)["worker_1"].status is WorkerStatus.RUNNING, timeout=30, what="the round running")
    assert engine.cancel(job.id).status is JobStatus.COMPLETED  # the job keeps the status it ended with
    rec = finished_round(engine, job, "worker_1", 2)
    assert rec.rounds[0].state == "cancelled" and rec.status is WorkerStatus.CANCELLED
    assert git(host, "rev-parse", f"orchestrator/{job.id}/result").strip() == result_1
    with pytest.raises(Conflict, match="already completed"):
        engine.cancel(job.id)  # no round runs: nothing to cancel


def test_bad_continue_requests_get_clear_errors(hosted):
    host, folder, engine = hosted
    job = run_job(engine, "notes", tasks=["write the notes"], config={"max_retries": 0})
    with pytest.raises(ValidationError, match="feedback is empty"):
        engine.continue_worker(job.id, "worker_1", "   ")
    with pytest.raises(ValidationError, match="feedback must be a string"):
        engine.continue_worker(job.id, "worker_1", None)
    with pytest.raises(ValidationError, match="lone surrogate"):
        engine.continue_worker(job.id, "worker_1", "bad \udc80 text")
    with pytest.raises(ValidationError, match="more than 20000"):
        engine.continue_worker(job.id, "worker_1", "x" * 20_001)
    with pytest.raises(WorkerNotFound, match="has no worker 'worker_9'.*worker_1"):
        engine.continue_worker(job.id, "worker_9", "more")
    with pytest.raises(JobNotFound):
        engine.continue_worker("0123456789ab", "worker_1", "more")
    with pytest.raises(OrchestratorError):
        engine.continue_worker(job.id, "../etc", "more")
    # One round at a time per tree
    engine.continue_worker(job.id, "worker_1", "FEEDBACK-TWO")
    with pytest.raises(Conflict, match="continue round running"):
        engine.continue_worker(job.id, "worker_1", "FEEDBACK-TWO again")
    with pytest.raises(Conflict, match="continue round running"):
        engine.merge(job.id)
    finished_round(engine, job, "worker_1", 2)


@pytest.fixture
def hosted_api(tmp_path):
    host, folder = make_host(tmp_path)
    settings = load_settings(
        base_dir=folder,
        environ={},
        overrides={
            "workers": {"kill_grace": 0.5, "default_timeout": 30},
            "orchestrator": {"worker": "command", "command": ["sh", "-c", SCRIPT, "sh", "{prompt}"]},
            "api": {"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
        },
    )
    engine = Engine(settings)
    server = start_in_thread(settings, engine, port=0)
    yield host, folder, server.url, engine
    engine.shutdown(timeout=10)
    server.close()


def test_the_api_and_the_client_continue_a_worker_and_refuse_bad_requests_clearly(hosted_api):
    host, folder, url, engine = hosted_api
    before = snapshot(host, folder)
    admin = {"X-API-Key": API_KEY}
    job = run_job(engine, "notes", tasks=["write the notes"], config={"max_retries": 0})
    path = f"{url}/api/v1/jobs/{job.id}/workers/worker_1/continue"
    # Bad requests: a clear 4xx naming what is wrong
    assert requests.post(path, json={"feedback": "x"}, timeout=10).status_code == 401
    empty = requests.post(path, json={"feedback": ""}, headers=admin, timeout=10)
    assert empty.status_code == 400 and "feedback is empty" in empty.text
    missing = requests.post(path, json={}, headers=admin, timeout=10)
    assert missing.status_code == 400 and "must be a JSON object with the feedback" in missing.json()["message"]
    extra = requests.post(path, json={"feedback": "x", "model": "y"}, headers=admin, timeout=10)
    assert extra.status_code == 400 and "unknown field(s) model" in extra.text
    surrogate = requests.post(
        path, data='{"feedback": "a \\udc80 b"}', headers={**admin, "Content-Type": "application/json"}, timeout=10
    )
    assert surrogate.status_code == 400 and "lone surrogate" in surrogate.text
    unknown = requests.post(path.replace("worker_1", "worker_7"), json={"feedback": "x"}, headers=admin, timeout=10)
    assert unknown.status_code == 404 and "has no worker 'worker_7'" in unknown.text
    # A worker's own credential may not continue a worker (admin only)
    assert engine.credentials is not None
    worker_key = engine.credentials.issue(job.root_id, job.id, "worker_1")
    denied = requests.post(path, json={"feedback": "x"}, headers={"X-API-Key": worker_key}, timeout=10)
    assert denied.status_code in (401, 403), denied.text
    # The client's round, through the server
    client = OrchestratorClient(url, api_key=API_KEY)
    started = client.continue_worker(job.id, "worker_1", "FEEDBACK-TWO")
    assert started["round"]["number"] == 2
    busy = requests.post(path, json={"feedback": "again"}, headers=admin, timeout=10)
    assert busy.status_code == 409 and "continue round running" in busy.text

    def ended():
        entry = next(w for w in client.status(job.id)["results"]["tasks"] if w["worker_id"] == "worker_1")
        return entry if entry["rounds"] and entry["rounds"][0]["state"] != "running" else None

    entry = wait_until(ended, timeout=60)
    assert entry["rounds"][0]["state"] == "success" and entry["rounds"][0]["result_commit"]
    assert show(host, f"orchestrator/{job.id}/result", "notes.txt") == "one\ntwo\n"
    # The command line: it waits for the round and says what it did (exit 0: added to the result)
    config = folder / "workspace" / "continue-config.yaml"  # the workspace is ignored by the host
    config.write_text(f"api:\n  api_key: {API_KEY}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "orchestrator", "--config", str(config), "continue", *args, "--api-url", url]
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    done = cli(job.id, "worker_1", "and FEEDBACK-TWO once more")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"job {job.id}: worker_1 round 3 started (a new session" in done.stdout
    assert "round 3: success" in done.stdout and f"merged into orchestrator/{job.id}/result as commit" in done.stdout
    assert show(host, f"orchestrator/{job.id}/result", "notes.txt") == "one\ntwo\ntwo\n"
    empty = cli(job.id, "worker_1", "  ")
    assert empty.returncode == 2 and "feedback is empty" in empty.stdout + empty.stderr, empty.stdout + empty.stderr
    assert snapshot(host, folder) == before


def test_a_round_with_git_push_pushes_the_new_result_and_updates_the_same_pull_request(hosted_remote, forge):  # noqa: F811
    host, folder, remote = hosted_remote
    before = snapshot(host, folder)
    settings = {
        "push": "origin",
        "pull_request": "github",
        "forge_api_url": forge.url,
        "forge_repo": "me/app",
        "forge_token_env": "TEST_FORGE_TOKEN",
    }
    engine = host_engine(folder, git=settings, orchestrator={"command": ["sh", "-c", SCRIPT, "sh", "{prompt}"]})
    try:
        job = run_job(engine, "notes", tasks=["write the notes"], config={"isolation": "worktree", "max_retries": 0})
        assert job.publish.to_dict()["pull_request"]["action"] == "opened"
        engine.continue_worker(job.id, "worker_1", "FEEDBACK-TWO")
        rec = finished_round(engine, job, "worker_1", 2)
        assert rec.rounds[0].state == "success"
        done = engine.queries.get_job(job.id).publish.to_dict()
        assert done["pushed"] and done["commit"] == rec.rounds[0].result_commit
        assert git(remote, "rev-parse", f"refs/heads/{done['branch']}").strip() == rec.rounds[0].result_commit
        assert done["pull_request"]["action"] == "updated" and done["pull_request"]["number"] == 1 and len(forge.pulls) == 1
        assert engine.workspace.load_job(job.id).publish.to_dict()["pull_request"]["action"] == "updated"  # on disk
    finally:
        engine.shutdown(timeout=10)
    assert snapshot(host, folder) == before


# -- a command worker: its feedback, its time, its commits' subject ------------------------------

SHELL_LINE = ["bash", "-c", "{task}\n{feedback}"]  # the guide's shell line, with the feedback as its next line


def test_a_command_workers_round_runs_its_feedback_counts_its_own_time_and_says_continue_in_its_commits(tmp_path):
    """The feedback reaches the command through {feedback}; the worker's time is its first run plus
    its round, not the wall time since its first start; both new commits say "continue: <feedback>"."""
    host, folder = make_host(tmp_path)
    engine = host_engine(folder, orchestrator={"worker": "command", "command": SHELL_LINE})
    try:
        before = snapshot(host, folder)
        job = run_job(engine, "notes", tasks=["echo one > notes.txt"], config={"max_retries": 0})
        assert job.status is JobStatus.COMPLETED
        first = workers(engine, job)["worker_1"]
        first_run = first.duration
        assert first_run is not None
        result_ref = f"orchestrator/{job.id}/result"
        assert git(host, "log", "-1", "--format=%s", first.commit).strip() == "echo one > notes.txt"
        idle = 3.0
        wait_until(lambda: engine.clock.time() - (first.ended_at or 0) >= idle, timeout=30, what="the idle time")
        engine.continue_worker(job.id, "worker_1", "echo two >> notes.txt\n# and keep the first line")
        rec = finished_round(engine, job, "worker_1", 2)
        round_2 = rec.rounds[0]
        assert round_2.state == "success", round_2
        # The feedback ran, in the same checkout, after the task's line
        assert show(host, rec.commit, "notes.txt") == "one\ntwo\n"
        assert show(host, result_ref, "notes.txt") == "one\ntwo\n"
        # Its time: the first run's and the round's, without the idle seconds between them
        assert round_2.duration is not None and round_2.previous_ended_at == first.ended_at
        assert rec.duration == pytest.approx(first_run + round_2.duration, abs=1e-6)
        assert rec.ended_at - rec.started_at - rec.duration >= idle
        entry = next(t for t in engine.queries.status_document(job.id)["results"]["tasks"] if t["worker_id"] == "worker_1")
        assert entry["duration"] == pytest.approx(rec.duration)
        assert entry["rounds"][0]["duration"] == pytest.approx(round_2.duration)
        # Its commits: on its branch and on the result, "continue: <the feedback's first line>"
        subject = "continue: echo two >> notes.txt"
        assert git(host, "log", "-1", "--format=%s", rec.commit).strip() == subject
        body = git(host, "log", "-1", "--format=%b", rec.commit)
        assert "Continue round 2, on the feedback:\necho two >> notes.txt\n# and keep the first line" in body
        assert git(host, "log", "-1", "--format=%s", round_2.result_commit).strip() == subject
        assert snapshot(host, folder) == before
    finally:
        engine.shutdown(timeout=10)


def test_a_command_without_a_placeholder_for_the_feedback_is_refused_before_a_round_starts(tmp_path):
    """The guide's ["bash", "-c", "{task}"] would run the same line again: the continue is refused,
    naming {feedback} and the template to set; no round is recorded, nothing runs."""
    host, folder = make_host(tmp_path)
    engine = host_engine(folder, orchestrator={"worker": "command", "command": ["bash", "-c", "{task}"]})
    try:
        before = snapshot(host, folder)
        job = run_job(engine, "notes", tasks=["echo one >> notes.txt"], config={"max_retries": 0})
        first = workers(engine, job)["worker_1"]
        with pytest.raises(ConfigError, match=r"no placeholder that carries the feedback \(\{feedback\}") as refused:
            engine.continue_worker(job.id, "worker_1", "echo two >> notes.txt")
        assert '["bash", "-c", "{task}\\n{feedback}"]' in str(refused.value)
        rec = workers(engine, job)["worker_1"]
        assert rec.rounds == [] and rec.commit == first.commit and len(rec.attempts) == len(first.attempts)
        assert engine.workspace.load_worker(job.root_id, 0, "worker_1").rounds == []
        assert snapshot(host, folder) == before
    finally:
        engine.shutdown(timeout=10)


def test_a_left_out_worker_continued_to_success_and_merged_makes_the_job_completed_everywhere(tmp_path):
    """Issue 49 item 5: the job reads what is now true once the worker its gate left out is continued
    and merged: completed, nothing left out, in its record, its status document, check-status's exit
    code and FINAL_RESULT.md."""
    host, folder = make_host(tmp_path)
    engine = host_engine(folder, orchestrator={"worker": "command", "command": SHELL_LINE})
    gate = {"name": "check", "run": ["sh", "-c", "! grep -rq bad --include=*.txt ."]}
    try:
        before = snapshot(host, folder)
        tasks = ["echo one > one.txt", "echo bad > two.txt"]
        job = run_job(engine, "notes", tasks=tasks, config={"gates": [gate], "max_retries": 0})
        assert job.status is JobStatus.PARTIAL and [w["worker"] for w in job.merge.left_out] == ["worker_2"]
        engine.continue_worker(job.id, "worker_2", "echo good > two.txt")
        rec = finished_round(engine, job, "worker_2", 2)
        assert rec.rounds[0].state == "success" and rec.rounds[0].result_commit, rec.rounds[0]
        done = engine.queries.get_job(job.id)
        assert done.status is JobStatus.COMPLETED
        assert done.merge is not None and done.merge.left_out == () and list(done.merge.merged) == ["worker_1", "worker_2"]
        assert show(host, done.merge.result_commit, "two.txt") == "good\n"
        on_disk = engine.workspace.load_job(job.id)
        assert on_disk.status is JobStatus.COMPLETED and on_disk.merge.left_out == ()
        doc = engine.queries.status_document(job.id)
        assert doc["status"] == "completed" and not doc["merge"].get("left_out")
        check = subprocess.run(
            [str(folder / "check-status.sh") if (folder / "check-status.sh").exists() else str(ROOT / "check-status.sh"), job.id],
            cwd=folder,
            capture_output=True,
            text=True,
            env={**os.environ, "ORCHESTRATOR_HOME": str(folder)},
        )
        assert check.returncode == 0 and f"job {job.id}  COMPLETED" in check.stdout and "worker_2" in check.stdout, (
            check.stdout + check.stderr
        )
        final = engine.workspace.final_report(job.root_id).read_text()
        assert "| Status | **completed** |" in final and "- left out: none" in final.lower(), final
        assert snapshot(host, folder) == before
    finally:
        engine.shutdown(timeout=10)
