"""The REST API against a real waitress server on 127.0.0.1, with real worker processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from orchestrator.errors import ConfigError
from orchestrator.process.runner import ProcessRunner

from .conftest import fake_command, wait_until
from .redisserver import free_port

pytestmark = pytest.mark.slow

SPEC_REQUEST = "Build a complete e-commerce site with frontend and backend"


def test_the_original_specs_curl_line_starts_a_job_and_status_has_its_output_format(live):
    # Given the original spec's (README's) curl line, typed as documented (with our key)
    body = json.dumps({"request": SPEC_REQUEST, "config": {"max_workers": 5, "enable_recursion": True, "max_recursion_depth": 2}})
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            f"{live.url}/api/v1/orchestrate",
            "-H",
            "Content-Type: application/json",
            "-H",
            f"X-API-Key: {live.key}",
            "-d",
            body,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    submitted = json.loads(out)
    assert submitted["status"] == "running" and submitted["depth"] == 0
    # When the job ends, its curl status line answers in the original spec's JSON output format
    live.wait(submitted["job_id"])
    out = subprocess.run(
        ["curl", "-s", f"{live.url}/api/v1/jobs/{submitted['job_id']}/status", "-H", f"X-API-Key: {live.key}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc = json.loads(out)
    assert doc["job_id"] == submitted["job_id"] and doc["status"] == "completed"
    task = doc["results"]["tasks"][0]
    assert {"worker_id", "status", "output", "files_created"} <= set(task)
    assert doc["results"]["workspace"].endswith(f"job_{doc['job_id']}")
    assert os.path.isfile(doc["results"]["final_report"])
    assert doc["progress"] == {**doc["progress"], "completed": 2, "total": 2, "success_rate": 1.0}


def test_health_needs_no_key_and_api_routes_do(live):
    assert requests.get(live.url + "/health", timeout=5).json()["status"] == "ok"
    for key, expected in (("", 401), ("wrong-key", 401), ("x" * 5000, 401), (live.key + "x", 401)):
        response = live.call("GET", "/api/v1/jobs", key=key)
        assert response.status_code == expected, key[:20]
        assert "message" in response.json()


def test_non_ascii_api_key_is_401_not_500(live):
    host, port = live.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: cl\xc3\xa9-\xff\r\nConnection: close\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 401")


def test_openapi_document_lists_exactly_the_served_routes(live):
    doc = requests.get(live.url + "/openapi.json", timeout=5).json()
    app = live.engine.credentials  # the app is not exposed; rebuild the rule list from a fresh app
    from orchestrator.api.app import create_app

    flask_app = create_app(live.engine.settings, live.engine, app)
    served = set()
    for rule in flask_app.url_map.iter_rules():
        if rule.endpoint in ("static", "docs.asset") or rule.endpoint.startswith("dashboard."):  # HTML pages and files
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)  # <job_id>, <task_id:task_id> -> {job_id}, {task_id}
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method.lower()))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == served


@pytest.mark.parametrize(
    "body, status, words",
    [
        ("{not json", 400, "not valid JSON"),
        ("[1, 2]", 400, "JSON object"),
        ('{"config": {}}', 400, 'missing "request"'),
        ('{"request": ""}', 400, "empty"),
        ('{"request": 5}', 400, "must be a string"),
        ('{"request": "x", "bogus": 1}', 400, "unknown field"),
        ('{"request": "x", "config": {"max_workerz": 2}}', 422, "unknown config key"),
        ('{"request": "x", "config": {"max_workers": "two"}}', 422, "wrong type"),
        ('{"request": "x", "config": {"max_workers": 0}}', 422, "out of range"),
        ('{"request": "x", "config": {"max_workers": 99}}', 422, "above this server's limit"),
        ('{"request": "x", "config": []}', 400, "JSON object"),
        ('{"request": "x", "tasks": "a"}', 422, "non-empty list"),
    ],
)
def test_bad_bodies_get_json_errors_that_say_what_to_fix(live, body, status, words):
    response = live.call("POST", "/api/v1/orchestrate", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert words in response.json()["message"]
    assert live.engine.workspace.root_ids() == []


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/v1/orchestrate", "[" * 1000 + "]" * 1000),
        ("/api/v1/orchestrate", '{"request": "x", "config": {"model": ' + "[" * 100 + "]" * 100 + "}}"),
        ("/api/v1/tasks", '{"description": "x", "cli_assignments": ' + "[" * 1000 + "]" * 1000 + "}"),
    ],
    ids=["1000 deep", "100 deep in config", "1000 deep in a task"],
)
def test_a_body_nested_past_the_limit_is_a_400_naming_it(live, path, body):
    """1,000 levels was a 500 (RecursionError); 100 parsed and reached the routes."""
    response = live.call("POST", path, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "more than 32 levels deep" in response.json()["message"]
    assert live.engine.workspace.root_ids() == []


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/v1/orchestrate", {"request": "add a\u0000b"}, "request"),
        ("/api/v1/orchestrate", {"request": "x", "tasks": ["fine", "bad\u0000"]}, "tasks[1]"),
        ("/api/v1/orchestrate", {"request": "x", "config": {"model": "m\u0000"}}, "config.model"),
        ("/api/v1/orchestrate", {"request": "x", "config": {"mo\u0000del": "m"}}, "config.mo\\u0000del"),
        ("/api/v1/tasks", {"description": "write\u0000it", "cli_assignments": [{"cli_name": "claude"}]}, "description"),
    ],
)
def test_a_nul_in_any_string_of_a_body_is_a_422_naming_the_field(live, path, body, field):
    """A NUL was accepted and the job failed later (an argv, a file name or a log cannot hold one)."""
    response = live.call("POST", path, json=body)
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert response.json()["details"]["field"] == field and field in message and "\x00" not in message
    assert live.engine.workspace.root_ids() == []


@pytest.mark.parametrize(
    "path, body, field, char",
    [
        ("/api/v1/orchestrate", b'{"request": "\\ud800"}', "request", "\\ud800"),
        ("/api/v1/orchestrate", b'{"request": "x", "tasks": ["fine", "a\\udcffb"]}', "tasks[1]", "\\udcff"),
        ("/api/v1/orchestrate", b'{"request": "x", "config": {"mo\\udc80del": "m"}}', "config.mo\\udc80del", "\\udc80"),
        ("/api/v1/orchestrate", b'{"request": "\xed\xa0\x80"}', "request", "\\ud800"),  # a surrogate's UTF-8 bytes
        ("/api/v1/tasks", b'{"description": "\\udfff", "cli_assignments": [{"cli_name": "claude"}]}', "description", "\\udfff"),
    ],
)
def test_text_utf8_cannot_encode_is_a_400_naming_the_field_and_leaves_no_job(live, path, body, field, char):
    """{"request": "\\ud800"} (valid JSON, a lone surrogate) was a 500 that left a job folder no
    route listed or deleted, and a job the server waited on at shutdown."""
    response = live.call("POST", path, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] == "invalid_request" and error["details"]["field"] == field
    assert f"{field} contains a lone surrogate ({char})" in error["message"] and "UTF-8" in error["message"]
    assert live.engine.workspace.root_ids() == []
    assert not list(live.engine.workspace.root.glob("job_*"))
    assert live.call("GET", "/api/v1/jobs").json()["total"] == 0
    # and a pair of them (one character past U+FFFF, an emoji) is text
    pair = b'{"request": "add \\ud83d\\ude00 to the README"}'
    answer = live.call("POST", "/api/v1/orchestrate", data=pair, headers={"Content-Type": "application/json"})
    assert answer.status_code == 202
    assert live.engine.queries.get_job(answer.json()["job_id"]).request == "add \U0001f600 to the README"


def test_body_over_the_cap_is_413(make_live):
    live = make_live(api={"max_body_bytes": 2048})
    response = live.submit(request="x" * 4000)
    assert response.status_code == 413 and "api.max_body_bytes" in response.json()["message"]


@pytest.mark.parametrize(
    "job_id",
    [
        "..",
        "..%2F..%2Fetc",
        "%2e%2e%2f",
        "abc",
        "3f9a2c7b1d0e%00",
        "3f9a2c7b1d0e%0A",
        "%2Fetc%2Fpasswd",
        "3F9A2C7B1D0E",
        "3f9a2c7b1d0e-c0",
    ],
)
def test_bad_job_ids_are_refused_without_touching_files(live, job_id):
    response = live.call("GET", f"/api/v1/jobs/{job_id}/status")
    assert response.status_code in (400, 404)
    assert response.headers["Content-Type"].startswith("application/json")


def test_unknown_job_is_404(live):
    response = live.call("GET", "/api/v1/jobs/0123456789ab/status")
    assert response.status_code == 404 and "not found" in response.json()["message"]


def test_wait_long_polls_until_the_job_ends(make_live):
    live = make_live(simulated={"duration": 0.6})
    job_id = live.submit(request="x", tasks=["a"]).json()["job_id"]
    started = time.monotonic()
    doc = live.call("GET", f"/api/v1/jobs/{job_id}/wait?timeout=20").json()
    assert doc["status"] == "completed" and time.monotonic() - started < 10
    assert live.call("GET", f"/api/v1/jobs/{job_id}/wait?timeout=abc").status_code == 400


def test_three_level_tree_through_the_simulated_worker(make_live):
    # Given a compound subtask whose own parts are compound
    live = make_live(simulated={"duration": 0.05})
    task = "Build a backend with auth, orders and payments"
    job_id = live.submit(request=task, tasks=[task], config={"max_recursion_depth": 2}).json()["job_id"]
    doc = live.wait(job_id)
    assert doc["status"] == "completed"
    worker = doc["results"]["tasks"][0]
    assert worker["status"] == "recursive_success" and worker["child_job_id"] == f"{job_id}-c1"
    assert [c["worker_id"] for c in worker["child_results"]] == ["worker_1_1", "worker_1_2", "worker_1_3"]
    root = live.engine.workspace.job_dir(job_id)
    assert (root / "depth_0" / "worker_1_recursive").is_symlink()
    assert (root / "depth_1" / "worker_1_1").is_dir() and (root / "depth_1" / "LEVEL_1_REPORT.md").is_file()
    final = (root / "FINAL_RESULT.md").read_text()
    assert "worker_1_2" in final and f"{job_id}-c1" in final


def test_the_admin_key_recursion_loop_stops_at_the_limit(make_live):
    """The original spec's AI-to-AI snippet POSTs with the admin key and current_depth + 1, where
    current_depth is what its worker was told (ORCHESTRATOR_DEPTH). It used to make depth-0
    roots forever; now each job is as deep as the body says and the loop ends with a 422."""
    live = make_live(orchestrator={"worker": "command", "command": ["sh", "-c", 'echo "$ORCHESTRATOR_DEPTH"', "{task}"]})
    depth, depths = 0, []
    for _ in range(10):  # bounded here; the server must end it long before
        answer = live.submit(request="recurse", tasks=["go"], config={"current_depth": depth})
        if answer.status_code != 202:
            break
        doc = live.wait(answer.json()["job_id"])
        assert doc["depth"] == depth and doc["parent_job_id"] is None
        told = int(doc["results"]["tasks"][0]["output"])  # the worker's ORCHESTRATOR_DEPTH
        assert doc["results"]["tasks"][0]["depth"] == told == depth
        depths.append(depth)
        depth = told + 1
    assert depths == [0, 1, 2, 3]  # recursion.max_depth: 3
    assert answer.status_code == 422 and "Max recursion depth reached" in answer.json()["message"]
    # The limit is the job's own max_recursion_depth (a request may lower it).
    lowered = live.submit(request="x", tasks=["go"], config={"current_depth": 2, "max_recursion_depth": 1})
    assert lowered.status_code == 422 and "Max recursion depth reached" in lowered.json()["message"]


def test_a_worker_credentials_depth_stays_derived_whatever_the_body_says(make_live):
    live = make_live(orchestrator={"worker": "command", "command": fake_command()})
    root = live.submit(request="x", tasks=["hang"]).json()["job_id"]
    cred = _credential(live, root, "worker_1")
    child = live.submit(key=cred, request="y", tasks=["ok"], config={"current_depth": 3})
    assert child.status_code == 202 and child.json()["depth"] == 1  # neither raised nor refused by the body
    live.call("POST", f"/api/v1/jobs/{root}/cancel")


def test_depth_fanout_and_tree_caps_refuse_at_once(make_live):
    live = make_live(
        orchestrator={"worker": "command", "command": fake_command()},
        recursion={"max_children_per_worker": 2, "max_workers_per_root": 4},
    )
    root = live.submit(request="x", tasks=["hang"], config={"max_recursion_depth": 1}).json()["job_id"]
    cred = _credential(live, root, "worker_1")
    child = live.submit(key=cred, request="y", tasks=["hang"]).json()
    assert child["depth"] == 1 and child["parent_job_id"] == root
    # the child's worker is at the max depth: its own request is refused at once
    grand = _credential(live, child["job_id"], "worker_1_1")
    started = time.monotonic()
    refused = live.submit(key=grand, request="z", config={"current_depth": 0})
    assert refused.status_code == 422 and "Max recursion depth reached" in refused.json()["message"]
    assert time.monotonic() - started < 1
    # fan-out: worker_1 may start 2 children, not 3; and the tree holds 4 workers at most
    second = live.submit(key=cred, request="y", tasks=["hang", "hang"])
    assert second.status_code == 202
    third = live.submit(key=cred, request="y", tasks=["hang"])
    assert third.status_code == 422 and "children per worker" in third.json()["message"]
    live.call("POST", f"/api/v1/jobs/{root}/cancel")


def test_tree_cap_refuses_when_the_tree_is_full(make_live):
    live = make_live(orchestrator={"worker": "command", "command": fake_command()}, recursion={"max_workers_per_root": 2})
    root = live.submit(request="x", tasks=["hang"]).json()["job_id"]
    cred = _credential(live, root, "worker_1")
    assert live.submit(key=cred, request="y", tasks=["hang"]).status_code == 202
    refused = live.submit(key=cred, request="y", tasks=["hang"])
    assert refused.status_code == 422 and "Max workers per root tree reached" in refused.json()["message"]
    live.call("POST", f"/api/v1/jobs/{root}/cancel")


def test_depth_three_tree_completes_under_a_global_limit_of_two(make_live):
    # Waiting parents lend their slot to their children, so this cannot deadlock.
    live = make_live(
        orchestrator={"worker": "command", "command": fake_command()},
        workers={"global_max_workers": 2},
        recursion={"max_children_per_worker": 3},
    )
    job_id = live.submit(request="tree", tasks=["tree 2"], config={"max_recursion_depth": 3}).json()["job_id"]
    doc = live.wait(job_id, timeout=90)
    assert doc["status"] == "completed"
    assert doc["tree"]["workers"] == 15 and doc["tree"]["max_depth"] == 3
    jobs, workers = live.engine.queries.snapshot(job_id)
    assert {w.depth for w in workers} == {0, 1, 2, 3}
    assert all(w.status.value in ("success", "recursive_success") for w in workers)


def test_cancel_of_a_tree_leaves_no_process_and_finished_jobs_answer_409(make_live):
    live = make_live(orchestrator={"worker": "command", "command": fake_command()}, workers={"kill_grace": 0.5})
    job_id = live.submit(request="x", tasks=["tree-hang"], config={"max_recursion_depth": 2}).json()["job_id"]
    wait_until(lambda: sum(1 for w in live.engine.queries.snapshot(job_id)[1] if w.attempts) == 7, timeout=30)
    tags = live.engine.worker_tags()
    response = live.call("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    doc = live.wait(job_id, timeout=30)
    assert doc["status"] == "cancelled"
    jobs, workers = live.engine.queries.snapshot(job_id)
    assert {j.status.value for j in jobs} == {"cancelled"} and len(jobs) == 4 and len(workers) == 7
    assert all(ProcessRunner().tagged(tag) == [] for tag in tags)
    again = live.call("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["message"]


def test_worker_credentials_are_scoped_to_their_tree_and_die_with_the_worker(make_live):
    live = make_live(orchestrator={"worker": "command", "command": fake_command()})
    first = live.submit(request="x", tasks=["hang"]).json()["job_id"]
    other = live.submit(request="x", tasks=["ok"]).json()["job_id"]
    live.wait(other)
    cred = _credential(live, first, "worker_1")
    assert live.call("GET", f"/api/v1/jobs/{first}/status", key=cred).status_code == 200
    assert live.call("GET", f"/api/v1/jobs/{other}/status", key=cred).status_code == 403
    assert live.call("DELETE", f"/api/v1/jobs/{other}", key=cred).status_code == 403
    assert live.call("POST", f"/api/v1/jobs/{first}/cancel", key=cred).status_code == 403
    listed = live.call("GET", "/api/v1/jobs", key=cred).json()
    assert [j["job_id"] for j in listed["jobs"]] == [first]
    live.call("POST", f"/api/v1/jobs/{first}/cancel")
    live.wait(first)
    expired = live.call("GET", f"/api/v1/jobs/{first}/status", key=cred)
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    forged = cred[:-4] + "0000"
    assert live.call("GET", f"/api/v1/jobs/{first}/status", key=forged).status_code == 401


def test_events_stream_and_resume_with_last_event_id(make_live):
    live = make_live(simulated={"duration": 0.05})
    job_id = live.submit(request="x", tasks=["a", "b"]).json()["job_id"]
    events = _sse(live, job_id)
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"])["status"] == "completed"
    ids = [int(e["id"]) for e in events if "id" in e]
    assert ids == sorted(ids) and len(ids) >= 5
    resumed = _sse(live, job_id, last=ids[2])
    assert [int(e["id"]) for e in resumed if "id" in e] == ids[3:]
    bad = live.call("GET", f"/api/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 400
    # a bad ?last_event_id is refused even when a good header overrides it (schemathesis found it ignored)
    bad = live.call("GET", f"/api/v1/jobs/{job_id}/events?last_event_id=x7", headers={"Last-Event-ID": "3"})
    assert bad.status_code == 400 and "'x7' must be a non-negative whole number" in bad.json()["message"]


def test_worker_log_tail_follow_and_a_planted_symlink(make_live):
    live = make_live(orchestrator={"worker": "command", "command": fake_command()})
    job_id = live.submit(request="x", tasks=["ok 5", "sleep 1"]).json()["job_id"]
    followed = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_2/log?follow=1").text
    assert "slept" in followed and "exited with code 0" in followed
    live.wait(job_id)
    tail = live.call("GET", f"/api/v1/jobs/{job_id}/workers/depth_0_worker_1/log?tail=2").text
    assert tail.splitlines()[-1].startswith("===== attempt 1 exited") and len(tail.splitlines()) == 2
    assert live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_9/log").status_code == 404
    assert live.call("GET", f"/api/v1/jobs/{job_id}/workers/..%2f..%2fetc/log").status_code in (400, 404)
    log = live.engine.workspace.worker_log(job_id, 0, "worker_1")
    log.unlink()
    log.symlink_to("/etc/hostname")
    planted = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_1/log")
    assert planted.status_code >= 400 and Path("/etc/hostname").read_text() not in planted.text


@pytest.mark.parametrize(
    "query, words",
    [
        ("/api/v1/tasks?offset=&limit=5", "offset='' must be a whole number from 0"),  # schemathesis found it taken as 0
        ("/api/v1/jobs?limit=", "limit='' must be a whole number from 1 to 500 (leave limit out for 50)"),
        ("/api/v1/webhooks/deliveries?offset=-1", "offset='-1' must be a whole number"),
        ("/api/v1/jobs/{job}/workers/worker_1/log?follow=true", "follow='true' must be 1"),
        ("/api/v1/jobs/{job}/workers/worker_1/log?tail=", "tail='' must be a whole number"),
        ("/api/v1/jobs/{job}/wait?timeout=", "timeout='' must be a number of seconds"),
    ],
)
def test_a_query_value_outside_its_schema_is_a_400_naming_it(live, query, words):
    job_id = live.submit(request="x", tasks=["a"]).json()["job_id"]
    response = live.call("GET", query.format(job=job_id))
    assert response.status_code == 400 and words in response.json()["message"], response.text


def test_reports_delete_and_list(live):
    job_id = live.submit(request="x", tasks=["a"]).json()["job_id"]
    live.wait(job_id)
    assert live.call("GET", f"/api/v1/jobs/{job_id}/report").text.startswith("# Final result")
    assert "LEVEL" in live.call("GET", f"/api/v1/jobs/{job_id}/report?name=level_0").text.upper()
    assert live.call("GET", f"/api/v1/jobs/{job_id}/report?name=../x").status_code == 400
    listed = live.call("GET", "/api/v1/jobs?status=completed").json()
    assert listed["total"] == 1 and listed["jobs"][0]["job_id"] == job_id
    assert live.call("GET", "/api/v1/jobs?status=bogus").status_code == 400
    assert live.call("DELETE", f"/api/v1/jobs/{job_id}").status_code == 204
    assert not live.engine.workspace.job_dir(job_id).exists()
    assert live.call("GET", f"/api/v1/jobs/{job_id}/status").status_code == 404


def test_python_client_from_the_original_spec_against_the_live_server(live):
    from orchestrator.api.client import OrchestratorClient

    client = OrchestratorClient(api_url=live.url, api_key=live.key)
    result = client.orchestrate(
        request="Create a machine learning pipeline with data preprocessing, training, and evaluation",
        max_workers=4,
        enable_recursion=True,
    )
    assert result["job_id"] and result["status"] == "running"
    doc = client.wait(result["job_id"], timeout=60)
    assert doc["status"] == "completed" and doc["progress"]["total"] == 3
    assert "===== attempt 1/" in client.logs(result["job_id"], "worker_1")
    assert client.report(result["job_id"]).startswith("# Final result")


def test_server_refuses_a_busy_port_naming_it(tmp_path):
    from orchestrator.cli.server import build
    from orchestrator.errors import ConfigError

    from .conftest import API_KEY, make_settings

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(tmp_path, api={"api_key": API_KEY, "port": port})
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            build(settings)


def test_a_folders_port_taken_between_its_probe_and_its_bind_is_chosen_again(tmp_path, monkeypatch):
    """Two folders' servers started at the same moment: each probed api.port free, and the slower
    bind failed ("already in use") where it should have taken another port and kept it."""
    from orchestrator.cli import server
    from orchestrator.process import ports

    from .conftest import API_KEY, make_settings

    probed = []

    def free_when_probed(base, host, configured):  # the other server binds right after this probe
        choice = ports.choose_port(base, host, configured)
        probed.append(choice)
        if len(probed) == 1:
            taken.bind((host, configured))
            taken.listen()
        return choice

    with socket.socket() as taken:
        port = free_port()
        settings = make_settings(tmp_path, api={"api_key": API_KEY, "port": port})
        monkeypatch.setattr(server, "choose_port", free_when_probed)
        choice, (engine, listening, url, _) = server._build_on_folder_port(settings, tmp_path, exact_port=False)
        try:
            assert [c.port for c in probed] == [port, 0] and choice is probed[1]
            assert url == f"http://127.0.0.1:{listening.effective_port}" and listening.effective_port != port
            assert f"port {port} is in use by another program" in choice.note(listening.effective_port)
        finally:
            listening.close()
            engine.shutdown(timeout=10)
    with socket.socket() as taken:  # --port names one port: taken, it is refused, not moved
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = make_settings(tmp_path / "exact", api={"api_key": API_KEY, "port": taken.getsockname()[1]})
        with pytest.raises(ConfigError, match="is already in use"):
            server._build_on_folder_port(settings, tmp_path / "exact", exact_port=True)


@pytest.mark.parametrize("key, words", [("", "no API key"), ("your-api-key", "placeholder"), ("short", "at least")])
def test_server_refuses_to_start_without_a_real_key(tmp_path, key, words):
    from orchestrator.cli.server import build
    from orchestrator.errors import ConfigError

    from .conftest import make_settings

    with pytest.raises(ConfigError, match=words):
        build(make_settings(tmp_path, api={"api_key": key, "port": 0}))


def _credential(live, job_id, worker):
    wait_until(lambda: live.engine.worker_running(job_id, worker))
    return live.engine.credentials.issue(job_id.split("-")[0], job_id, worker)


def _sse(live, job_id, last=None):
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    response = live.call("GET", f"/api/v1/jobs/{job_id}/events", headers=headers, stream=True)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events, current = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if not line:
            if current:
                events.append(current)
            current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        current[field] = value
        if field == "data" and current.get("event") == "end":
            events.append(current)
            break
    return [e for e in events if "event" in e]


def test_unexpected_host_headers_are_refused(live):
    for host in ("evil.example", "127.0.0.1.nip.io", "attacker:8000"):
        response = live.call("GET", "/api/v1/jobs", headers={"Host": host})
        assert response.status_code == 400 and "unexpected Host header" in response.json()["message"]
    assert live.call("GET", "/health", headers={"Host": "evil.example"}).status_code == 400
    assert live.call("GET", "/api/v1/jobs", headers={"Host": "localhost:1234"}).status_code == 200


def test_a_worker_credential_past_its_rate_gets_429_with_retry_after(make_live):
    # 0.5 requests/s: on a loaded machine the 16 calls may take seconds, and a faster refill
    # would hand the last call a fresh token.
    live = make_live(
        orchestrator={"worker": "command", "command": fake_command()}, api={"rate_limit_worker": 0.5, "rate_burst": 10}
    )
    job_id = live.submit(request="x", tasks=["hang"]).json()["job_id"]
    cred = _credential(live, job_id, "worker_1")
    codes = [live.call("GET", f"/api/v1/jobs/{job_id}/status", key=cred).status_code for _ in range(15)]
    assert codes[:10] == [200] * 10 and 429 in codes[10:]
    limited = live.call("GET", f"/api/v1/jobs/{job_id}/status", key=cred)
    assert limited.status_code == 429 and 0 < int(limited.headers["Retry-After"]) <= 2  # a token every 2 s
    assert live.call("GET", f"/api/v1/jobs/{job_id}/status").status_code == 200  # the admin key has its own bucket
    live.call("POST", f"/api/v1/jobs/{job_id}/cancel")


def test_wrong_keys_are_rate_limited_per_address(make_live):
    live = make_live(api={"rate_limit_failed_auth": 2, "rate_burst": 5})
    codes = [live.call("GET", "/api/v1/jobs", key="wrong-key-wrong-key").status_code for _ in range(8)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429


def test_status_documents_are_reused_until_the_tree_changes_or_they_age():
    """Polling the same job reuses its status document; a change of the tree (a new event
    number) or the ttl builds a new one, so a poller never misses a transition."""
    import time as _time

    from orchestrator.reports.status_document import StatusCache

    built = []

    def build():
        built.append(1)
        return {"n": len(built)}

    cache = StatusCache(ttl=60)
    assert cache.get("j", 1, build) == {"n": 1}
    assert cache.get("j", 1, build) == {"n": 1}  # reused
    assert cache.get("j", 2, build) == {"n": 2}  # the tree changed
    assert cache.get("k", 2, build) == {"n": 3}  # another job
    short = StatusCache(ttl=0.05)
    assert short.get("j", 1, lambda: {"v": 1}) == {"v": 1}
    _time.sleep(0.06)
    assert short.get("j", 1, lambda: {"v": 2}) == {"v": 2}  # older than the ttl: rebuilt
    small = StatusCache(ttl=60, size=4)
    for n in range(10):
        small.get(f"j{n}", 1, lambda n=n: {"v": n})
    assert len(small._docs) <= 4
