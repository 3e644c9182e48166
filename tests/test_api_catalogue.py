"""The API as /docs files it (api/catalogue.py): every operation under exactly one declared tag,
with a summary, and every example body one the route really accepts: each is sent to a real
server whose folder sits in a real host repository, in the state where the route acts, and the
host repository is checked to be as it was."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest

from orchestrator.api.catalogue import OPERATIONS, TAGS
from orchestrator.api.openapi import openapi_document
from orchestrator.webhooks import approval_links

from .conftest import API_KEY, wait_until
from .helpers.approval import Served, waiting_job
from .helpers.tasks_api import stand_in
from .helpers.worktree import snapshot

DECLARED = [tag.name for tag in TAGS]


def operations(doc):
    return [(method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_every_operation_has_one_declared_tag_and_a_summary():
    doc = openapi_document()
    assert [tag["name"] for tag in doc["tags"]] == DECLARED
    assert all(tag["description"] for tag in doc["tags"])
    for method, path, op in operations(doc):
        assert len(op["tags"]) == 1 and op["tags"][0] in DECLARED, (method, path, op.get("tags"))
        assert op["summary"] and len(op["summary"]) <= 60 and "\n" not in op["summary"], (method, path)
    used = {op["tags"][0] for _, _, op in operations(doc)}
    assert used == set(DECLARED), "a declared tag that files no operation is an empty group on /docs"


def test_an_operation_without_an_entry_is_refused(monkeypatch):
    monkeypatch.delitem(OPERATIONS, ("get", "/health"))
    with pytest.raises(LookupError, match="GET /health has no entry"):
        openapi_document()


def bodies(doc):
    """(method, path, media type, schema, example) for every operation that takes a body."""
    for method, path, op in operations(doc):
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            yield method, path, media, content["schema"], content.get("example")


def test_every_body_has_an_example_that_its_documented_schema_accepts():
    doc = openapi_document()
    found = list(bodies(doc))
    assert len(found) == 9  # orchestrate, merge, a continue, approve, reject, the link's form, a lock, a task, a task's merge
    for method, path, media, schema, example in found:
        assert example, (method, path, media)
        jsonschema.validate(example, {**schema, "components": doc["components"]})


def task_status(served, task):
    return served.call("GET", f"/api/v1/tasks/{task}").json()["status"]


@pytest.mark.slow
def test_every_example_body_is_accepted_by_its_route_on_a_live_server(tmp_path):
    # the tasks API accepts a kind only if it is installed: stand-ins printing what the real CLIs print
    clis = {"claude_command": stand_in(tmp_path, "claude", "claude_success.json")}
    clis["codex_command"] = stand_in(tmp_path, "codex", "codex_success.jsonl")
    # ($1: a continue round's feedback, as a command worker that can be continued takes it)
    served = Served(tmp_path, orchestrator={**clis, "command": ["sh", "-c", "{task}", "sh", "{feedback}"]})
    try:
        before = snapshot(served.host, served.folder)
        examples = {(method, path): example for method, path, _, _, example in bodies(openapi_document())}
        sent = {}

        def send(method, path, job_id, **kwargs):
            url = path.replace("{job_id}", job_id).replace("{task_id}", job_id).replace("{action}", "reject")
            answer = served.call(method.upper(), url, **kwargs)
            sent[(method, path)] = answer
            return answer

        # a job, and a path lock in its tree
        answer = send("post", "/api/v1/orchestrate", "", json=examples[("post", "/api/v1/orchestrate")])
        assert answer.status_code == 202, answer.text
        job = answer.json()["job_id"]
        answer = send("post", "/api/v1/jobs/{job_id}/locks", job, json=examples[("post", "/api/v1/jobs/{job_id}/locks")])
        assert answer.status_code == 201, answer.text
        # a waiting job approved, then merged again; another rejected; a third rejected through its signed link
        approved, _ = waiting_job(served)
        answer = send("post", "/api/v1/jobs/{job_id}/approve", approved, json=examples[("post", "/api/v1/jobs/{job_id}/approve")])
        assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text
        answer = send("post", "/api/v1/jobs/{job_id}/merge", approved, json=examples[("post", "/api/v1/jobs/{job_id}/merge")])
        assert answer.status_code == 200 and answer.json()["merge"]["strategy"] == "theirs", answer.text
        # its worker continued with the example's feedback (the round ends before the host is compared)
        path = "/api/v1/jobs/{job_id}/workers/{worker}/continue"
        answer = send("post", path.replace("{worker}", "worker_1"), approved, json=examples[("post", path)])
        sent[("post", path)] = sent.pop(("post", path.replace("{worker}", "worker_1")))
        assert answer.status_code == 202 and answer.json()["round"]["number"] == 2, answer.text
        wait_until(
            lambda: (
                served.call("GET", f"/api/v1/jobs/{approved}/status").json()["results"]["tasks"][0]["rounds"][0]["state"]
                != "running"
            ),
            60,
        )
        rejected, _ = waiting_job(served)
        answer = send("post", "/api/v1/jobs/{job_id}/reject", rejected, json=examples[("post", "/api/v1/jobs/{job_id}/reject")])
        assert answer.status_code == 200 and answer.json()["status"] == "failed", answer.text
        linked, _ = waiting_job(served)
        proof = parse_qs(urlsplit(approval_links.links(API_KEY, linked, time.time(), 600)["reject"]).query)
        form = {**examples[("post", "/approval/{job_id}/{action}")], "expires": proof["expires"][0], "token": proof["token"][0]}
        answer = send("post", "/approval/{job_id}/{action}", linked, data=form)
        assert answer.status_code == 200 and "Rejected" in answer.text, answer.text
        assert served.wait(linked)["status"] == "failed"
        # a task on two CLIs, and once it has ended (its selected candidate merged), its merge again
        answer = send("post", "/api/v1/tasks", "", json=examples[("post", "/api/v1/tasks")])
        assert answer.status_code == 201, answer.text
        task = answer.json()["id"]
        wait_until(lambda: task_status(served, task) not in ("pending", "running"), 60)
        assert task_status(served, task) == "completed"
        answer = send("post", "/api/v1/tasks/{task_id}/merge", task, json=examples[("post", "/api/v1/tasks/{task_id}/merge")])
        assert answer.status_code == 200 and answer.json()["success"], answer.text
        assert set(sent) == set(examples)  # every example was sent
        assert snapshot(served.host, served.folder) == before
    finally:
        served.close()
