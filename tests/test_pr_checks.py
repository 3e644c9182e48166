"""After the pull request (engine/pr_checks.py): its checks are read from the loopback forge for the
pushed commit, a failed check's log tail goes back to the worker whose file it names as a continue
round, the fix is pushed again and watched; rounds run out, checks never finish, the forge answers
garbage; a server stopped while watching and started again goes on watching. Real git (a bare
remote), real command workers, the loopback forge server of tests/mock_forge_server.py."""

from __future__ import annotations

import json
import subprocess

import pytest

from orchestrator.audit import signing_key
from orchestrator.audit.verify import verify
from orchestrator.cli.scripts import status_exit_code
from orchestrator.delivery import forge as forge_api
from orchestrator.delivery import pr_checks
from orchestrator.models import JobStatus

from . import mock_forge_server
from .conftest import run_job, wait_until
from .helpers.worktree import git, host_engine, snapshot
from .test_publishing import TOKEN, no_token_anywhere, surfaces
from .test_publishing import forge as forge_fixture
from .test_publishing import hosted_remote as hosted_remote_fixture

pytestmark = pytest.mark.slow
forge, hosted_remote = forge_fixture, hosted_remote_fixture  # the fixtures of test_publishing: a loopback forge, a bare remote

# worker_1 (TASK-CALC) writes calc.txt broken, and fixes it when its feedback holds the check's failure;
# worker_2 (TASK-OTHER) writes other.txt.
SCRIPT = (
    'case "$2" in *"calc.txt says broken"*) echo fixed > calc.txt; exit 0;; esac; '
    'case "$1" in TASK-CALC) echo broken > calc.txt;; TASK-OTHER) echo fine > other.txt;; esac'
)
COMMAND = {"worker": "command", "command": ["sh", "-c", SCRIPT, "sh", "{task}", "{prompt}"]}


def engine_with_command(folder, forge, **git_settings):
    settings = {
        "isolation": "worktree",
        "push": "origin",
        "pull_request": "github",
        "forge_api_url": forge.url,
        "forge_repo": "me/app",
        "forge_token_env": "TEST_FORGE_TOKEN",
        "check_rounds": 2,
        "checks_poll_interval": 0.1,
        "checks_timeout": 30,
        **git_settings,
    }
    return host_engine(folder, git=settings, orchestrator=COMMAND)


def ci_check(remote):
    """The project's CI as the forge runs it: calc.txt must not say broken."""

    def checker(sha):
        shown = subprocess.run(["git", "-C", str(remote), "show", f"{sha}:calc.txt"], capture_output=True, text=True)
        if shown.returncode == 0 and "broken" in shown.stdout:
            log = "collected 3 items\ntest_calc.py F\nFAILED test_calc.py::test_value - calc.txt says broken\n1 failed"
            return [mock_forge_server.Check("tests", "failure", log)]
        return [mock_forge_server.Check("tests", "success", "3 passed")]

    return checker


class JobEvents:
    """A sink of the announcer's job events (what the webhooks sink is given)."""

    def __init__(self):
        self.events = []

    def job_event(self, job, event):
        self.events.append(event)

    def worker_event(self, job, record, event):
        pass


def final_checks(engine, job, timeout=60):
    def done():  # the record final, its reports rendered and the marker gone (the watch's last steps)
        checks = engine.workspace.load_job(job.id).checks
        watched = (engine.workspace.root / "checks_watched" / job.root_id).exists()
        return checks if checks is not None and checks.final and not watched else None

    return wait_until(done, timeout=timeout)


def test_a_failed_check_goes_back_to_the_worker_whose_file_it_names_and_the_fix_is_pushed_and_passes(hosted_remote, forge):
    host, folder, remote = hosted_remote
    before = snapshot(host, folder)
    forge.checker = ci_check(remote)
    forge.statuses = lambda sha: [{"context": "lint", "state": "success", "description": "clean"}]
    engine = engine_with_command(folder, forge)
    sink = JobEvents()
    engine.announce.sinks.append(sink)
    try:
        job = run_job(engine, "two files", tasks=["TASK-CALC", "TASK-OTHER"])
        assert job.status is JobStatus.COMPLETED
        first = job.publish.commit
        assert git(remote, "show", f"{first}:calc.txt") == "broken\n"
        checks = final_checks(engine, job)
        done = engine.workspace.load_job(job.id)
        shown = surfaces(engine, job.id)
        doc = engine.queries.status_document(job.id)
    finally:
        engine.shutdown(timeout=10)
    # Each step is a job event, as the webhooks' sink receives them
    said = [e.to_dict().get("message") or "" for e in sink.events]
    assert any(m.startswith("pr checks: tests failed on") for m in said) and any(m.startswith("pr checks passed") for m in said)
    # The check failed on the first push; one round went to worker_1, whose file the log names
    assert checks.state == "passed", checks
    (round_,) = checks.rounds
    assert round_.worker == "worker_1" and round_.failed == ["tests"] and round_.commit == first
    assert round_.why == "the failing check names its files" and round_.state == "success"
    # The fix was pushed again: the remote branch, the job's result and the watched commit agree
    tip = git(remote, "rev-parse", f"refs/heads/{done.publish.branch}").strip()
    assert tip == round_.pushed == checks.commit == done.merge.result_commit != first
    assert git(remote, "show", f"{tip}:calc.txt") == "fixed\n" and git(remote, "show", f"{tip}:other.txt") == "fine\n"
    # The worker's continue round got the check's log tail as its feedback
    (w1_round,) = [w for w in engine.workspace.load_tree(job.root_id)[1] if w.name == "worker_1"][0].rounds
    assert "FAILED test_calc.py::test_value - calc.txt says broken" in w1_round.feedback
    assert "check round 1 of 2" in w1_round.feedback
    # Read as the forge documents it: check runs and the combined status of the commit, the job log by its redirect
    paths = [c.path for c in forge.calls if c.method == "GET"]
    assert f"/repos/me/app/commits/{first}/check-runs" in paths and f"/repos/me/app/commits/{tip}/status" in paths
    assert any(p.startswith("/repos/me/app/actions/jobs/") and p.endswith("/logs") for p in paths)
    # The signed record holds the watch and its round
    record = json.loads((engine.workspace.job_dir(job.root_id) / "RECORD.json").read_text())
    (root_row,) = [j for j in record["jobs"] if j["id"] == job.id]
    assert root_row["checks"]["state"] == "passed" and root_row["checks"]["rounds"][0]["worker"] == "worker_1"
    assert done.record_digest is not None
    public = signing_key.load_or_create(engine.workspace.root).public_key()
    _, problems = verify(engine.workspace.job_dir(job.root_id), public, lambda ref: git(host, "rev-parse", ref).strip())
    assert problems == []  # signed again as the watch ended: it verifies
    # Every surface says it: status JSON, the table and closing lines, notes, FINAL_RESULT.md
    assert doc["checks"]["state"] == "passed" and doc["checks"]["rounds_used"] == 1
    assert status_exit_code(doc) == 0  # check-status: completed, its result final
    assert status_exit_code({**doc, "checks": {**doc["checks"], "state": "watching"}}) == 8  # not final while watched
    notes = shown.pop("notes")
    for surface, text in shown.items():
        assert f"pr checks: passed on {tip[:12]}; 1 of 2 rounds; round 1: tests -> worker_1 success" in text.replace(
            "| Pull request checks | ", "pr checks: "
        ), surface
    assert f"pr checks: tests failed on {first[:12]}; round 1 of 2 goes to worker_1" in notes
    assert f"pr checks passed: all 2 checks of {tip[:12]} passed after 1 round(s)" in notes
    assert not (engine.workspace.root / "checks_watched" / job.root_id).exists()  # no longer watched
    no_token_anywhere(folder)
    assert snapshot(host, folder) == before


def test_rounds_exhausted_the_job_says_which_check_failed_and_that_no_round_is_left(hosted_remote, forge):
    host, folder, remote = hosted_remote
    before = snapshot(host, folder)
    forge.checker = lambda sha: [mock_forge_server.Check("build", "failure", "error: the build is red")]
    engine = engine_with_command(folder, forge, check_rounds=1)
    try:
        job = run_job(engine, "one file", tasks=["TASK-CALC"])
        checks = final_checks(engine, job)
        shown = surfaces(engine, job.id)
    finally:
        engine.shutdown(timeout=10)
    assert checks.state == "failed" and len(checks.rounds) == 1 and checks.rounds[0].worker == "worker_1"
    assert checks.rounds[0].why == "no failing check names a worker's files: each worker in turn"
    assert "check build failed on" in checks.reason and "no round left (1 of 1, git.check_rounds)" in checks.reason
    for surface, text in shown.items():
        assert "no round left (1 of 1, git.check_rounds)" in text, surface
    assert "pr checks: failed on " in shown["status table"] and "pr checks: failed on " in shown["closing lines"]
    assert snapshot(host, folder) == before


def test_a_check_that_never_finishes_ends_the_watch_timed_out(hosted_remote, forge):
    host, folder, remote = hosted_remote
    forge.checker = lambda sha: [mock_forge_server.Check("slow-ci", None)]
    engine = engine_with_command(folder, forge, checks_timeout=0.5)
    try:
        job = run_job(engine, "one file", tasks=["TASK-CALC"])
        checks = final_checks(engine, job)
    finally:
        engine.shutdown(timeout=10)
    assert checks.state == "timed_out" and checks.rounds == []
    assert "not finished 0.5s after the push (git.checks_timeout): slow-ci" in checks.reason


def test_a_repository_whose_forge_runs_no_check_ends_the_watch_none_not_after_the_timeout(hosted_remote, forge):
    host, folder, remote = hosted_remote
    before = snapshot(host, folder)
    forge.checker = lambda sha: []
    engine = engine_with_command(folder, forge, checks_appear_within=0.5, checks_timeout=3600)
    try:
        job = run_job(engine, "one file", tasks=["TASK-OTHER"])
        checks = final_checks(engine, job)
    finally:
        engine.shutdown(timeout=10)
    assert checks.state == "none" and checks.rounds == []
    assert "no check was reported 0.5s after the push (git.checks_appear_within)" in checks.reason
    assert snapshot(host, folder) == before


def test_garbage_from_the_forge_stops_the_watch_after_a_bounded_number_of_readings(hosted_remote, forge):
    host, folder, remote = hosted_remote
    forge.garbage = 1000
    engine = engine_with_command(folder, forge)
    try:
        job = run_job(engine, "one file", tasks=["TASK-CALC"])
        checks = final_checks(engine, job)
    finally:
        engine.shutdown(timeout=10)
    assert checks.state == "error" and checks.rounds == []
    assert checks.reason.startswith("the forge's answers could not be read 5 times in a row: GET ")
    assert "without JSON" in checks.reason
    no_token_anywhere(folder)


def test_a_server_stopped_while_watching_goes_on_watching_when_started_again(hosted_remote, forge):
    host, folder, remote = hosted_remote
    before = snapshot(host, folder)
    finished = {"yet": False}
    forge.checker = lambda sha: [mock_forge_server.Check("tests", "success" if finished["yet"] else None)]
    engine = engine_with_command(folder, forge)
    try:
        job = run_job(engine, "one file", tasks=["TASK-CALC"])
        wait_until(lambda: any("/check-runs" in c.path for c in forge.calls), timeout=30)
        assert engine.workspace.load_job(job.id).checks.state == "watching"
        assert status_exit_code(engine.queries.status_document(job.id)) == 8  # check-status: not final yet
    finally:
        engine.shutdown(timeout=10)
    assert (engine.workspace.root / "checks_watched" / job.root_id).exists()  # durable: what is watched
    finished["yet"] = True
    again = engine_with_command(folder, forge)
    try:
        checks = final_checks(again, job)
    finally:
        again.shutdown(timeout=10)
    assert checks.state == "passed" and checks.rounds == []
    assert snapshot(host, folder) == before


# -- reading the checks: each forge's endpoints, and its bad answers ----------------------------


def project(forge, kind="github"):
    return forge_api.ForgeProject(forge_api.schema.PullRequestForge(kind), forge.url, "me/app", TOKEN)


def test_gitlab_pipelines_of_the_merge_request_and_the_failed_jobs_trace(forge):
    forge.head = lambda: "a" * 40
    forge.checker = lambda sha: [
        mock_forge_server.Check("unit", "failure", "line\n" * 2000 + "AssertionError: 2 != 3"),
        mock_forge_server.Check("lint", "success"),
    ]
    reading = pr_checks.read(project(forge, "gitlab"), "a" * 40, 7)
    assert reading.state == "failed" and reading.total == 2
    (failed,) = reading.failed
    assert failed.name == "unit" and failed.log_tail.endswith("AssertionError: 2 != 3")
    assert len(failed.log_tail) <= pr_checks.LOG_TAIL_CHARS + 1  # the end of the log, not all of it
    paths = [c.path for c in forge.calls]
    assert (
        paths[0] == "/projects/me%2Fapp/merge_requests/7/pipelines" or paths[0] == "/projects/me/app/merge_requests/7/pipelines"
    )
    assert any(p.endswith("/trace") for p in paths) and all(c.headers["private-token"] == TOKEN for c in forge.calls)
    # A commit with no pipeline yet is pending, not passed
    assert pr_checks.read(project(forge, "gitlab"), "b" * 40, 7).state == "pending"


@pytest.mark.parametrize(
    ("answers", "said"),
    [
        ([(404, {"message": "Not Found"})], "check-runs answered 404: Not Found"),
        ([(500, {"message": "boom"})] * 2, "check-runs answered 500: boom"),
        ([(200, {"check_runs": "no"})], "the answer has no 'check_runs' list"),
    ],
)
def test_bad_forge_answers_are_errors_naming_the_call(forge, answers, said):
    forge.fail = list(answers)
    with pytest.raises(forge_api.ForgeError) as caught:
        pr_checks.read(project(forge), "c" * 40, 1)
    assert said in str(caught.value) and TOKEN not in str(caught.value)


def test_on_gitlab_a_failed_pipeline_job_goes_back_and_the_fixed_commits_pipeline_passes(hosted_remote, forge):
    host, folder, remote = hosted_remote
    before = snapshot(host, folder)
    forge.checker = ci_check(remote)

    def head():
        found = subprocess.run(
            ["git", "-C", str(remote), "for-each-ref", "--format=%(objectname)", "refs/heads/orchestrator/"],
            capture_output=True,
            text=True,
        )
        return found.stdout.split()[0] if found.stdout.split() else None

    forge.head = head
    engine = engine_with_command(folder, forge, pull_request="gitlab")
    try:
        job = run_job(engine, "two files", tasks=["TASK-CALC", "TASK-OTHER"])
        first = job.publish.commit
        checks = final_checks(engine, job)
    finally:
        engine.shutdown(timeout=10)
    assert checks.state == "passed" and [(r.worker, r.failed, r.commit) for r in checks.rounds] == [
        ("worker_1", ["tests"], first)
    ]
    assert git(remote, "show", f"{checks.commit}:calc.txt") == "fixed\n"
    paths = [c.path for c in forge.calls if c.method == "GET"]
    assert any(p.endswith("/merge_requests/1/pipelines") for p in paths) and any(p.endswith("/trace") for p in paths)
    assert forge.pipelines == [first, checks.commit]  # one pipeline per pushed commit, the newest one judged
    assert snapshot(host, folder) == before
