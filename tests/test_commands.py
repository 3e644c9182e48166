"""The job commands of commands.py (jobs, cancel, delete, approve, reject), each run as a user runs
it (``python -m orchestrator ...``, a real subprocess) against a real server whose folder sits in a
host repository (helpers.approval.Served), on real jobs: exit codes, ``--json`` carrying the API's
document, clear errors for an unknown or malformed id, and the host left as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import API_KEY, ROOT, wait_until
from .helpers.approval import Served, waiting_job
from .helpers.worktree import git, snapshot

pytestmark = pytest.mark.slow
UNKNOWN = "0123456789ab"  # a well-formed id no job has


@pytest.fixture
def served(tmp_path):
    served = Served(tmp_path)
    yield served
    served.close()


def cli(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m orchestrator ARGS --api-url <the server>`` with a config holding its key."""
    path = served.folder / "workspace" / "commands-config.yaml"  # the workspace is ignored by the host
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"api": {"api_key": API_KEY}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "--config", str(path), *args, "--api-url", served.url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def finished(served: Served, tasks: list[str]) -> str:
    job_id = served.submit(tasks, {"approval": "none"})
    assert served.wait(job_id)["status"] in ("completed", "partial", "failed"), job_id
    return job_id


def running(served: Served) -> str:
    job_id = served.submit(["sleep 120"], {"approval": "none"})
    wait_until(lambda: served.engine.worker_running(job_id, "worker_1"), what="the long worker running")
    return job_id


def test_jobs_lists_root_jobs_with_the_api_s_document_and_its_filters(served):
    done = finished(served, ["echo a > a.txt"])
    failed = finished(served, ["exit 3"])
    listed = cli(served, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == served.call("GET", "/api/v1/jobs").json()
    assert {j["job_id"] for j in json.loads(listed.stdout)["jobs"]} == {done, failed}
    only = json.loads(cli(served, "jobs", "--status", "failed", "--json").stdout)
    assert [j["job_id"] for j in only["jobs"]] == [failed] and only["total"] == 1
    table = cli(served, "jobs", "--limit", "1")
    assert table.returncode == 0 and "jobs 1-1 of 2; next page: --offset 1" in table.stdout, table.stdout
    assert (done in table.stdout) != (failed in table.stdout)
    empty = cli(served, "jobs", "--status", "cancelled")
    assert empty.returncode == 0 and "no jobs with status cancelled (total 0)" in empty.stdout
    bad = cli(served, "jobs", "--status", "finished")
    assert bad.returncode == 2 and "'finished' is not a job status; use one of:" in bad.stderr, bad.stderr
    big = cli(served, "jobs", "--limit", "501")
    assert big.returncode == 2 and "limit='501' must be a whole number from 1 to 500" in big.stderr, big.stderr


def test_cancel_ends_a_running_job_refuses_a_finished_one_and_leaves_the_host_as_it_was(served):
    before = snapshot(served.host, served.folder)
    job_id = running(served)
    answer = cli(served, "cancel", job_id, "--json")
    assert answer.returncode == 0, answer.stderr
    doc = json.loads(answer.stdout)
    assert doc["job_id"] == job_id and "SIGTERM" in doc["message"]
    assert served.wait(job_id)["status"] == "cancelled"
    again = cli(served, "cancel", job_id)
    assert again.returncode == 1 and again.stderr.startswith("error: ") and job_id in again.stderr, again.stderr
    assert snapshot(served.host, served.folder) == before
    plain = cli(served, "cancel", running(served))
    assert plain.returncode == 0 and "cancelling: workers get SIGTERM" in plain.stdout, plain.stdout


@pytest.mark.parametrize("command", [["cancel"], ["delete"], ["approve"], ["reject", "--reason", "no"]])
def test_an_unknown_or_malformed_id_is_exit_2_naming_it(served, command):
    unknown = cli(served, command[0], UNKNOWN, *command[1:])
    assert unknown.returncode == 2 and f"job {UNKNOWN} not found" in unknown.stderr, unknown.stderr
    malformed = cli(served, command[0], "../etc", *command[1:])
    assert malformed.returncode == 2, malformed.stderr
    assert "invalid job id '../etc': expected 12 hex digits" in malformed.stderr


def test_delete_removes_a_finished_tree_and_its_worker_branches_keeps_its_result_and_the_host(served):
    job_id = finished(served, ["echo a > a.txt", "echo b > b.txt"])
    ours = f"refs/heads/orchestrator/{job_id}/"
    assert len(git(served.host, "for-each-ref", "--format=%(refname)", ours).split()) == 3  # two workers, result
    before = snapshot(served.host, served.folder)
    refused = cli(served, "delete", running(served))
    assert refused.returncode == 1 and "is still running" in refused.stderr and "cancel it first" in refused.stderr
    answer = cli(served, "delete", job_id, "--json")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"job_id": job_id, "deleted": True, "branches": "workers"}
    assert served.call("GET", f"/api/v1/jobs/{job_id}").status_code == 404
    assert git(served.host, "for-each-ref", "--format=%(refname)", ours).split() == [f"{ours}result"]
    assert snapshot(served.host, served.folder) == before
    other = finished(served, ["echo c > c.txt"])
    gone = cli(served, "delete", other, "--branches", "all")
    assert gone.returncode == 0 and "its result branch too" in gone.stdout
    assert git(served.host, "for-each-ref", f"refs/heads/orchestrator/{other}/") == ""


def test_approve_lands_a_waiting_job_and_a_second_decision_is_refused(served):
    job_id, _ = waiting_job(served)
    answer = cli(served, "approve", job_id, "--note", "looks right", "--json")
    assert answer.returncode == 0, answer.stderr
    doc = json.loads(answer.stdout)
    assert doc["job_id"] == job_id  # the status document, as POST /approve answers it
    assert doc["status"] == "completed" and doc["approval"]["note"] == "looks right"
    assert doc["merge"]["merged"] == ["worker_1", "worker_2"]
    again = cli(served, "approve", job_id)
    assert again.returncode == 1 and "not waiting for approval" in again.stderr, again.stderr
    other, _ = waiting_job(served)
    plain = cli(served, "approve", other)
    assert plain.returncode == 0 and f"job {other} approved: now completed" in plain.stdout
    assert f"result: orchestrator/{other}/result" in plain.stdout


def test_reject_ends_a_waiting_job_failed_with_nothing_merged_and_the_host_as_it_was(served):
    job_id, _ = waiting_job(served, {"merge_into": "main"})
    before = snapshot(served.host, served.folder)
    missing = cli(served, "reject", job_id)
    assert missing.returncode == 2 and "--reason" in missing.stderr  # argparse: required
    blank = cli(served, "reject", job_id, "--reason", "  ")
    assert blank.returncode == 2 and "reason" in blank.stderr, blank.stderr
    answer = cli(served, "reject", job_id, "--reason", "wrong approach", "--json")
    assert answer.returncode == 0, answer.stderr
    doc = json.loads(answer.stdout)
    assert doc["status"] == "failed" and doc["merge"] is None and doc["approval"]["reason"] == "wrong approach"
    assert snapshot(served.host, served.folder) == before


def test_no_server_is_exit_5_with_how_to_start_one():
    answer = subprocess.run(
        [sys.executable, "-m", "orchestrator", "jobs", "--api-url", "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 5 and "Cannot reach the orchestrator API" in answer.stderr, answer.stderr


@pytest.mark.parametrize("command", [["jobs"], ["cancel", UNKNOWN], ["merge", UNKNOWN], ["conflicts", UNKNOWN]])
def test_json_errors_of_an_unreachable_server_are_one_object_on_stdout_exit_5(command):
    answer = subprocess.run(
        [sys.executable, "-m", "orchestrator", *command, "--json", "--api-url", "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 5 and "Cannot reach the orchestrator API" in answer.stderr, answer.stderr
    doc = json.loads(answer.stdout)
    assert doc["error"] == "server_unreachable" and doc["message"].startswith("Cannot reach the orchestrator API at")
    assert "start the server with `./quick-start.sh --start`" in doc["message"]


def test_json_errors_carry_the_servers_code_and_status_and_the_text_exit_code(served):
    # A job the server does not know (404), a refusal (409), a value the server refuses (400)
    unknown = cli(served, "cancel", UNKNOWN, "--json")
    assert unknown.returncode == 2 and f"job {UNKNOWN} not found" in unknown.stderr
    doc = json.loads(unknown.stdout)
    assert (doc["error"], doc["status"], sorted(doc)) == ("job_not_found", 404, ["error", "message", "status"])
    assert doc["message"].startswith(f"job {UNKNOWN} not found")
    refused = cli(served, "cancel", finished(served, ["exit 3"]), "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"] == "conflict"
    assert json.loads(refused.stdout)["status"] == 409
    big = cli(served, "jobs", "--limit", "501", "--json")
    assert big.returncode == 2 and json.loads(big.stdout)["error"] == "invalid_request", big.stdout
    assert json.loads(big.stdout)["status"] == 400
    # The command line's own refusals: a malformed id (the server's code for it), a bad argument
    malformed = cli(served, "delete", "../etc", "--json")
    assert malformed.returncode == 2 and json.loads(malformed.stdout)["error"] == "invalid_id"
    bad = cli(served, "jobs", "--limit", "many", "--json")
    assert bad.returncode == 2 and "argument --limit: invalid int value: 'many'" in bad.stderr  # argparse's lines stay
    assert json.loads(bad.stdout) == {"error": "invalid_argument", "message": "argument --limit: invalid int value: 'many'"}
    missing = cli(served, "reject", UNKNOWN, "--json")  # --reason is required
    assert missing.returncode == 2 and json.loads(missing.stdout)["error"] == "invalid_argument"
    # Without --json nothing is on stdout, as before
    plain = cli(served, "cancel", UNKNOWN)
    assert plain.returncode == 2 and plain.stdout == ""


def check_status(served: Served, job_id: str, url: str) -> subprocess.CompletedProcess[str]:
    """``./check-status.sh JOB URL`` with a config naming the served folder's workspace: from the
    server at URL when it answers, else from the workspace files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env["ORCHESTRATOR_CONFIG"] = str(check_config(served))
    return subprocess.run([str(ROOT / "check-status.sh"), job_id, url], env=env, capture_output=True, text=True, timeout=120)


def check_config(served: Served) -> Path:
    """A config naming the served folder's workspace, with its API key."""
    path = served.folder / "workspace" / "check-config.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        yaml.safe_dump({"api": {"api_key": API_KEY}, "orchestrator": {"workspace_root": str(served.folder / "workspace")}})
    )
    return path


def test_check_status_exits_as_quick_start_does_and_8_while_running_with_the_server_up_or_down(served):
    # Given jobs that ended each way, one waiting for approval and one still running
    jobs = {
        0: finished(served, ["echo a > a.txt"]),
        3: finished(served, ["echo b > b.txt", "exit 3"]),
        1: finished(served, ["exit 3"]),
        6: finished(served, ["true"]),  # completed, but no worker changed a file
        7: waiting_job(served)[0],
    }
    cancelled = running(served)
    served.call("POST", f"/api/v1/jobs/{cancelled}/cancel")
    assert served.wait(cancelled)["status"] == "cancelled"
    jobs[4] = cancelled
    jobs = {8: running(served), **jobs}  # first: its worker runs for at most workers.default_timeout
    # When check-status reads each from the server, then from the files (no server at the URL)
    for code, job_id in jobs.items():
        for url, source in ((served.url, f"(from {served.url})"), ("http://127.0.0.1:9", "from the workspace files")):
            out = check_status(served, job_id, url)
            # Then it exits with quick-start's code for the job's status, or 8 while it runs
            assert out.returncode == code, (code, url, out.stdout, out.stderr)
            assert f"job {job_id}" in out.stdout and source in out.stdout, out.stdout
        # and status (from the workspace files) exits the same way
        assert cli_status(served, job_id).returncode == code, code


def cli_status(served: Served, job_id: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    config = check_config(served)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "--config", str(config), "status", job_id],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
