"""Structured logs (logging.enable_structured): every line of the server log and of a tree's
orchestrator.log is one JSON object; plain text stays the default."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys

import pytest
import requests
import yaml

from orchestrator.workspace.logs import JsonFormatter, context, job_line

from .conftest import API_KEY, ROOT, run_job, wait_until

COMPOUND = "Build a backend with auth, orders and payments"


def json_lines(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines, f"{path} is empty"
    return [json.loads(line) for line in lines]  # raises on any line that is not JSON


@pytest.mark.slow
def test_a_structured_tree_log_is_one_json_object_per_line_with_ids(make_live):
    # Given structured logs and a job whose worker starts a child job
    live = make_live(logging={"enable_structured": True}, simulated={"duration": 0.05})
    job_id = live.submit(request=COMPOUND, tasks=[COMPOUND], config={"max_recursion_depth": 1}).json()["job_id"]
    assert live.wait(job_id)["status"] == "completed"
    # When every line of its orchestrator.log is parsed
    entries = json_lines(live.engine.workspace.orchestrator_log(job_id))
    # Then each has the fields, the ids are right at both depths, and workers are named
    for entry in entries:
        assert {"ts", "level", "event", "message", "job_id", "root_id"} <= set(entry), entry
        assert entry["root_id"] == job_id and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
    jobs = {e["job_id"] for e in entries}
    assert jobs == {job_id, f"{job_id}-c1"}
    child_workers = {e["worker"] for e in entries if e["event"] == "worker" and e["job_id"] == f"{job_id}-c1"}
    assert child_workers == {"worker_1_1", "worker_1_2", "worker_1_3"}
    assert any(e["event"] == "job" and e["message"] == f"job {job_id} completed" for e in entries)
    assert all("worker" not in e for e in entries if e["event"] == "job")


@pytest.mark.slow
def test_plain_text_stays_the_default(make_engine):
    engine = make_engine()
    job = run_job(engine, tasks=["a"])
    lines = engine.workspace.orchestrator_log(job.id).read_text().splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z (job|depth_0_worker_1) ", line) for line in lines), lines
    assert not any(line.startswith("{") for line in lines)


@pytest.mark.slow
def test_the_served_server_log_is_json_lines(tmp_path):
    # Given a real server started with structured logs
    port = _free_port()
    config = {
        "api": {"api_key": API_KEY, "port": port},
        "logging": {"enable_structured": True},
        "orchestrator": {"worker": "simulated"},
        "simulated": {"duration": 0.05},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "api_server.py")],
        env={**env, "ORCHESTRATOR_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": API_KEY}
    try:
        wait_until(lambda: _up(url), timeout=30, what="server up")
        # When a job runs and the server stops
        job_id = requests.post(
            f"{url}/api/v1/orchestrate", json={"request": "x", "tasks": ["a"]}, headers=headers, timeout=10
        ).json()["job_id"]
        requests.get(f"{url}/api/v1/jobs/{job_id}/wait?timeout=20", headers=headers, timeout=30)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    # Then every line of logs/server.log is JSON, and the job's own lines carry its ids
    entries = json_lines(tmp_path / "logs" / "server.log")
    for entry in entries:
        assert {"ts", "level", "event", "message", "job_id", "root_id"} <= set(entry), entry
    assert any("listening on" in e["message"] and e["job_id"] is None for e in entries)
    mine = [e for e in entries if e["job_id"] == job_id]
    assert any(e["message"] == f"job {job_id} completed" and e["root_id"] == job_id for e in mine), entries


@pytest.mark.slow
def test_refused_keys_and_deletes_are_in_the_server_log_without_the_key(tmp_path):
    # Given a real server with plain-text logs
    port = _free_port()
    config = {"api": {"api_key": API_KEY, "port": port}, "orchestrator": {"worker": "simulated"}, "simulated": {"duration": 0.05}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "api_server.py")],
        env={**env, "ORCHESTRATOR_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": API_KEY}
    wrong = "wrong-key-4f1c9e0d2b7a"
    try:
        wait_until(lambda: _up(url), timeout=30, what="server up")
        # When a request comes with a wrong key, one with none, and a finished job is deleted
        assert requests.get(f"{url}/api/v1/jobs", headers={"X-API-Key": wrong}, timeout=10).status_code == 401
        assert requests.get(f"{url}/api/v1/jobs", timeout=10).status_code == 401
        job_id = requests.post(
            f"{url}/api/v1/orchestrate", json={"request": "x", "tasks": ["a"]}, headers=headers, timeout=10
        ).json()["job_id"]
        requests.get(f"{url}/api/v1/jobs/{job_id}/wait?timeout=20", headers=headers, timeout=30)
        assert requests.delete(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=10).status_code == 204
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    # Then each is a line of logs/server.log, and the wrong key is nowhere in it
    text = (tmp_path / "logs" / "server.log").read_text()
    assert re.search(
        r"WARNING orchestrator\.api: refused GET /api/v1/jobs from 127\.0\.0\.1: 401 unauthorized: invalid API key", text
    ), text
    assert "401 unauthorized: missing X-API-Key header" in text
    assert f"job tree {job_id} (completed) deleted with its folder" in text
    assert wrong not in text and API_KEY not in text


def test_the_formatter_carries_context_and_exceptions():
    record = logging.LogRecord("orchestrator.engine", logging.ERROR, __file__, 1, "worker %s crashed", ("worker_2",), None)
    for key, val in context("0123456789ab-c1", "worker_2").items():
        setattr(record, key, val)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["job_id"] == "0123456789ab-c1" and entry["root_id"] == "0123456789ab" and entry["worker"] == "worker_2"
    assert (
        entry["level"] == "ERROR" and entry["message"] == "worker worker_2 crashed" and "RuntimeError: boom" in entry["exception"]
    )


def test_a_job_line_names_a_worker_only_when_there_is_one():
    job = json.loads(job_line("job x completed", job_id="0123456789ab", root_id="0123456789ab", depth=0, ts=0.5))
    worker = json.loads(
        job_line(
            "depth_0_worker_1 success: exit code 0", job_id="0123456789ab", root_id="0123456789ab", depth=0, worker="worker_1"
        )
    )
    assert job == {
        "ts": "1970-01-01T00:00:00.500Z",
        "level": "INFO",
        "event": "job",
        "message": "job x completed",
        "job_id": "0123456789ab",
        "root_id": "0123456789ab",
        "depth": 0,
    }
    assert worker["event"] == "worker" and worker["worker"] == "worker_1"


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _up(url):
    try:
        return requests.get(f"{url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False
