"""A person in the loop: ``approval: before_merge`` stops a root job in the
``waiting`` state before its result lands; approve lands it, reject and cancel end it with
nothing merged; a restart leaves it waiting; signed links act without the key. Real git, real
repositories made here (helpers.worktree.make_host), real worker processes and a real waitress
server; each test checks the user's repository is as it was (after approve: only our refs and
merge_into's branch move)."""

from __future__ import annotations

import io
import re
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from orchestrator.api.client import OrchestratorClient
from orchestrator.cli.progress import ProgressView, closing_lines
from orchestrator.cli.scripts import RET_WAITING, exit_code, follow_api
from orchestrator.errors import Forbidden
from orchestrator.models import JobStatus
from orchestrator.reports.status_document import status_table
from orchestrator.webhooks import approval_links

from .conftest import API_KEY
from .helpers import approval as approval_helpers
from .helpers.approval import Served, waiting_job
from .helpers.landing import result_of
from .helpers.worktree import git, snapshot

# The fixture this file shares with other test files (tests/helpers/approval.py).
served = approval_helpers.served

pytestmark = pytest.mark.slow


def final_report(served: Served, job_id: str) -> str:
    return served.engine.workspace.final_report(job_id).read_text()


# -- waiting, then approve ---------------------------------------------------------------------------


def test_a_job_with_approval_waits_with_nothing_merged_and_approve_lands_it_completed(served):
    host = served.host
    git(host, "branch", "feature")  # a branch of the user's that merge_into fast-forwards on approval
    before = snapshot(host, served.folder)
    job_id, doc = waiting_job(served, {"merge_into": "feature"})
    # Waiting: nothing merged, no ref moved, the record, the status document and the report say so
    assert doc["merge"] is None and doc["approval"]["state"] == "waiting" and doc["approval"]["earned"] == "completed"
    assert result_of(host, job_id) is None
    assert snapshot(host, served.folder) == before
    assert any(n.startswith("waiting for approval") for n in doc["notes"])
    assert "**waiting for approval**" in final_report(served, job_id)
    assert "Not merged yet: the job waits for approval" in final_report(served, job_id)
    assert doc["results"]["final_report"]
    closing = "\n".join(closing_lines(doc))
    assert f"approve: ./orchestrator.sh approve {job_id}" in closing and f"reject {job_id} --reason" in closing
    assert served.engine.workspace.load_job(job_id).status is JobStatus.WAITING  # on disk
    events = served.engine.events.since(job_id, 0)
    assert [e.status for e in events if e.type == "job"][-1] == "waiting"  # the event the webhooks turn into job.waiting
    # A second look after a while: still waiting (nothing times it out); the client's wait returns on it
    time.sleep(0.3)
    assert served.call("GET", f"/api/v1/jobs/{job_id}").json()["status"] == "waiting"
    assert OrchestratorClient(served.url, API_KEY).wait(job_id, timeout=30)["status"] == "waiting"
    # POST /merge does not land it behind the person's back
    merge = served.call("POST", f"/api/v1/jobs/{job_id}/merge", json={})
    assert merge.status_code == 409 and "waiting for approval" in merge.json()["message"]
    assert result_of(host, job_id) is None and snapshot(host, served.folder) == before

    answer = served.call("POST", f"/api/v1/jobs/{job_id}/approve", json={"note": "looks right"})
    assert answer.status_code == 200, answer.text
    done = answer.json()
    assert done["status"] == "completed" and done["approval"]["state"] == "approved" and done["approval"]["note"] == "looks right"
    assert done["merge"]["merged"] == ["worker_1", "worker_2"] and done["merge"]["into"]["moved"] is True
    result = result_of(host, job_id)
    assert result == done["merge"]["result_commit"]
    assert git(host, "rev-parse", "feature").strip() == result  # merge_into moved, as it would have
    after = snapshot(host, served.folder)
    assert {**after, "refs": [r for r in after["refs"] if not r.startswith("refs/heads/feature ")]} == {
        **before,
        "refs": [r for r in before["refs"] if not r.startswith("refs/heads/feature ")],
    }
    report = final_report(served, job_id)
    assert "**completed** (approved: looks right)" in report and "waiting for approval**" not in report
    assert served.engine.workspace.load_job(job_id).status is JobStatus.COMPLETED
    # Approved once: a second decision is a 409
    again = served.call("POST", f"/api/v1/jobs/{job_id}/approve")
    assert again.status_code == 409 and "not waiting" in again.json()["message"]


@pytest.mark.parametrize("tty", [True, False], ids=["tree", "event-lines"])
def test_watch_and_check_status_stop_at_a_waiting_job_and_name_approve_and_reject(served, tty):
    # Given a job being watched (from its start) through the API, as `watch` follows it
    job_id = served.submit(approval_helpers.TASKS, {})
    stream = io.StringIO()
    view = ProgressView(stream, tty=tty, size=(100, 40))
    found: list[dict] = []
    follower = threading.Thread(target=lambda: found.append(follow_api(OrchestratorClient(served.url, API_KEY), job_id, view)))
    follower.start()
    # When the job stops to wait for a person: following it ends there (it waited on silently)
    follower.join(timeout=60)
    alive = follower.is_alive()
    if alive:  # let the thread end: the decision ends the wait
        served.call("POST", f"/api/v1/jobs/{job_id}/cancel")
        follower.join(timeout=60)
    assert not alive, "watch kept waiting on a job that waits for approval"
    (doc,) = found
    assert doc["status"] == "waiting" and exit_code(doc) == RET_WAITING  # not 1, as if it had failed
    # Then watch's closing lines and check-status's table name the two commands that end the wait
    view.finish(doc, table=True)
    for shown in (stream.getvalue(), status_table(doc)):
        assert f"./orchestrator.sh approve {job_id}" in shown, shown
        assert f"./orchestrator.sh reject {job_id} --reason" in shown, shown
    # And delete refuses with the right words: it waits, it does not run
    refused = served.call("DELETE", f"/api/v1/jobs/{job_id}")
    assert refused.status_code == 409
    message = refused.json()["message"]
    assert "waits for approval" in message and "still running" not in message
    assert f"./orchestrator.sh reject {job_id} --reason" in message and f"./orchestrator.sh cancel {job_id}" in message


def test_reject_merges_nothing_ends_failed_with_the_reason_and_keeps_the_branches(served):
    host = served.host
    job_id, _ = waiting_job(served, {"merge_into": "main"})
    before = snapshot(host, served.folder)
    missing = served.call("POST", f"/api/v1/jobs/{job_id}/reject", json={})
    assert missing.status_code == 400 and "reason" in missing.json()["message"]
    blank = served.call("POST", f"/api/v1/jobs/{job_id}/reject", json={"reason": "  "})
    assert blank.status_code == 400
    long = served.call("POST", f"/api/v1/jobs/{job_id}/reject", json={"reason": "x" * 2001})
    assert long.status_code == 400 and "2000" in long.json()["message"]
    answer = served.call("POST", f"/api/v1/jobs/{job_id}/reject", json={"reason": "the tests do not cover it"})
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["status"] == "failed" and doc["merge"] is None
    assert doc["approval"]["state"] == "rejected" and doc["approval"]["reason"] == "the tests do not cover it"
    assert doc["error"] == "rejected: the tests do not cover it"
    assert any(n.startswith("rejected: the tests do not cover it") for n in doc["notes"])
    assert "Not merged: the job was rejected (the tests do not cover it)" in final_report(served, job_id)
    assert result_of(host, job_id) is None and snapshot(host, served.folder) == before  # nothing merged, main untouched
    branches = git(host, "for-each-ref", "--format=%(refname)", f"refs/heads/orchestrator/{job_id}/").split()
    assert len(branches) == 2  # the workers' branches stay for review
    assert served.call("POST", f"/api/v1/jobs/{job_id}/reject", json={"reason": "again"}).status_code == 409


def test_cancel_while_waiting_ends_it_cancelled_with_nothing_merged(served):
    host = served.host
    job_id, _ = waiting_job(served, {"merge_into": "main"})
    before = snapshot(host, served.folder)
    answer = served.call("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert answer.status_code == 200, answer.text
    doc = served.call("GET", f"/api/v1/jobs/{job_id}").json()
    assert doc["status"] == "cancelled" and doc["merge"] is None and doc["approval"]["state"] == "cancelled"
    assert result_of(host, job_id) is None and snapshot(host, served.folder) == before
    assert served.call("POST", f"/api/v1/jobs/{job_id}/approve").status_code == 409


def test_a_restart_leaves_the_job_waiting_and_approve_works_then(served):
    host = served.host
    job_id, _ = waiting_job(served)
    before = snapshot(host, served.folder)
    served.restart()
    doc = served.call("GET", f"/api/v1/jobs/{job_id}").json()
    assert doc["status"] == "waiting" and doc["approval"]["state"] == "waiting", doc
    assert result_of(host, job_id) is None and snapshot(host, served.folder) == before
    answer = served.call("POST", f"/api/v1/jobs/{job_id}/approve")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "completed" and answer.json()["merge"]["merged"] == ["worker_1", "worker_2"]
    assert result_of(host, job_id) == answer.json()["merge"]["result_commit"]
    assert snapshot(host, served.folder) == before  # no merge_into: only our refs moved


def test_a_failed_job_or_one_without_approval_does_not_wait(served):
    failed = served.submit(["exit 3"])
    assert served.wait(failed)["status"] == "failed"  # nothing its workers earned to approve
    plain = served.call("POST", "/api/v1/orchestrate", json={"request": "x", "tasks": ["echo a > a.txt"]}).json()["job_id"]
    doc = served.wait(plain)
    assert doc["status"] == "completed" and doc["approval"] is None and doc["merge"]["merged"] == ["worker_1"]
    for job_id in (failed, plain):  # their reports rendered as before (a template reading approval of None)
        assert "| Status | **" in final_report(served, job_id)
        assert not [n for n in served.engine.queries.get_job(job_id).notes if "report rendering failed" in n]


def test_approve_and_reject_are_admin_only_404_for_an_unknown_job_and_409_for_a_running_one(served):
    assert served.call("POST", "/api/v1/jobs/0123456789ab/approve").status_code == 404
    assert served.call("POST", "/api/v1/jobs/0123456789ab/reject", json={"reason": "no"}).status_code == 404
    assert served.call("POST", "/api/v1/jobs/0123456789ab/approve", key=None).status_code == 401
    running = served.submit(["sleep 30"])
    answer = served.call("POST", f"/api/v1/jobs/{running}/approve")
    assert answer.status_code == 409 and "not waiting for approval" in answer.json()["message"]
    assert served.call("POST", f"/api/v1/jobs/{running}/approve", json={"other": 1}).status_code == 400
    # a worker's credential may not approve (its tree's root, even)
    key = served.engine.credentials.issue(running, running, "worker_1")
    assert served.call("POST", f"/api/v1/jobs/{running}/approve", key=key).status_code == 403
    # nor ask for approval (or its absence) in a child job's config: 403 naming why
    child = served.call(
        "POST", "/api/v1/orchestrate", key=key, json={"request": "y", "tasks": ["true"], "config": {"approval": "none"}}
    )
    assert child.status_code == 403 and "config.approval is for a root job only" in child.json()["message"], child.text
    served.call("POST", f"/api/v1/jobs/{running}/cancel")
    doc = served.call("GET", "/openapi.json").json()
    assert {"/api/v1/jobs/{job_id}/approve", "/api/v1/jobs/{job_id}/reject"} <= set(doc["paths"])
    assert "409" in doc["paths"]["/api/v1/jobs/{job_id}/approve"]["post"]["responses"]


# -- signed links ------------------------------------------------------------------------------------


def test_a_signed_link_shows_a_confirmation_page_and_its_post_approves(served):
    job_id, _ = waiting_job(served)
    now = time.time()
    paths = approval_links.links(API_KEY, job_id, now, 600)
    assert API_KEY not in paths["approve"] and API_KEY not in paths["reject"]
    page = served.call("GET", paths["approve"], key=None)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"], page.text
    assert "form-action 'self'" in page.headers["Content-Security-Policy"] and "<script" not in page.text
    assert f"Approve job {job_id}" in page.text and "It is waiting" in page.text
    assert served.call("GET", f"/api/v1/jobs/{job_id}").json()["status"] == "waiting"  # a GET never acts
    query = parse_qs(urlsplit(paths["approve"]).query)
    form = {"expires": query["expires"][0], "token": query["token"][0]}
    hidden = dict(re.findall(r'name="(expires|token)" value="([^"]+)"', page.text))
    assert hidden == form  # the page's form carries the link's proof
    done = served.call("POST", urlsplit(paths["approve"]).path, key=None, data={**form, "note": "from my phone"})
    assert done.status_code == 200 and "Approved: the job is now completed" in done.text, done.text
    doc = served.call("GET", f"/api/v1/jobs/{job_id}").json()
    assert doc["status"] == "completed" and doc["approval"]["note"] == "from my phone"


def test_a_signed_reject_link_needs_a_reason_and_rejects(served):
    job_id, _ = waiting_job(served)
    path = approval_links.links(API_KEY, job_id, time.time(), 600)["reject"]
    query = parse_qs(urlsplit(path).query)
    form = {"expires": query["expires"][0], "token": query["token"][0]}
    page = served.call("GET", path, key=None)
    assert page.status_code == 200 and 'name="reason" required' in page.text
    assert served.call("POST", urlsplit(path).path, key=None, data=form).status_code == 400  # no reason
    done = served.call("POST", urlsplit(path).path, key=None, data={**form, "reason": "wrong approach"})
    assert done.status_code == 200 and "Rejected: the job is now failed" in done.text
    assert served.call("GET", f"/api/v1/jobs/{job_id}").json()["approval"]["reason"] == "wrong approach"


def test_a_link_for_another_job_expired_or_tampered_is_refused(served):
    job_id, _ = waiting_job(served)
    other, _ = waiting_job(served)
    now = time.time()
    secret = approval_links.link_secret(API_KEY)
    good = approval_links.links(API_KEY, job_id, now, 600)["approve"]
    query = parse_qs(urlsplit(good).query)
    expires, token = query["expires"][0], query["token"][0]
    cases = {
        "another job's link": f"/approval/{other}/approve?expires={expires}&token={token}",
        "the reject action with the approve token": f"/approval/{job_id}/reject?expires={expires}&token={token}",
        "a longer expiry": f"/approval/{job_id}/approve?expires={int(expires) + 3600}&token={token}",
        "a changed token": f"/approval/{job_id}/approve?expires={expires}&token={token[:-1]}{'0' if token[-1] != '0' else '1'}",
        "expired": approval_links.link_path(secret, job_id, "approve", int(now) - 1),
        "no token": f"/approval/{job_id}/approve?expires={expires}",
        "signed with another key": approval_links.link_path(
            approval_links.link_secret("another-key-" * 3), job_id, "approve", int(now) + 600
        ),
        "an unknown action": f"/approval/{job_id}/merge?expires={expires}&token={token}",
        "a token that is not hex": f"/approval/{job_id}/approve?expires={expires}&token={'é' * 64}",
        "an expiry of 5,000 digits": f"/approval/{job_id}/approve?expires={'9' * 5000}&token={token}",
    }
    for why, path in cases.items():
        for method in ("GET", "POST"):
            if method == "POST":
                split = urlsplit(path)
                data = {k: v[0] for k, v in parse_qs(split.query).items()}
                answer = served.call("POST", split.path, key=None, data=data)
            else:
                answer = served.call("GET", path, key=None)
            assert answer.status_code == 403, f"{why} ({method}): {answer.status_code} {answer.text[:200]}"
    for job in (job_id, other):
        assert served.call("GET", f"/api/v1/jobs/{job}").json()["status"] == "waiting"  # neither acted on
    assert served.call("GET", good, key=None).status_code == 200  # the real one still works


def test_the_link_signing_function_checks_what_it_signed():
    secret = approval_links.link_secret("k" * 32)
    token = approval_links.sign_link(secret, "0123456789ab", "approve", 2_000_000_000)
    assert re.fullmatch(r"[0-9a-f]{64}", token) and "k" * 32 not in token
    approval_links.check_link(secret, "0123456789ab", "approve", "2000000000", token, now=1_999_999_999)
    with pytest.raises(Forbidden, match="expired"):
        approval_links.check_link(secret, "0123456789ab", "approve", "2000000000", token, now=2_000_000_001)
    with pytest.raises(Forbidden, match="another job"):
        approval_links.check_link(secret, "0123456789ac", "approve", "2000000000", token, now=0)
    with pytest.raises(ValueError):
        approval_links.sign_link(secret, "0123456789ab", "merge", 1)
