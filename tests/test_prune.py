"""Pruning old job trees: ``orchestrator prune`` (server down, server up) and the server's
retention (orchestrator.retention_days). The trees are made by real runs of the fake CLI
(``command`` kind: real subprocesses); a running tree is in every test and must survive."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from orchestrator.api.client import OrchestratorClient
from orchestrator.errors import Conflict, ValidationError
from orchestrator.models import JobStatus
from orchestrator.retention.pruning import FINISHED, candidates, delete_offline, parse_age, parse_statuses, prune_engine

from .conftest import API_KEY, ROOT, fake_command, run_job, wait_until

pytestmark = pytest.mark.slow
LONG = "sleep 120"  # the subtask of the tree that must survive: it runs while the tests prune
WORKER = {"worker": "command", "command": fake_command()}


def make_trees(engine):
    """Three finished trees (two completed, one failed) and one still running."""
    done = [run_job(engine, "first", tasks=["ok 1"]), run_job(engine, "second", tasks=["ok 1", "ok 2"])]
    failed = run_job(engine, "third", tasks=["fail 3"], config={"max_retries": 0})
    assert [j.status for j in (*done, failed)] == [JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.FAILED]
    running = engine.submission.submit("long", None, [LONG])
    wait_until(lambda: engine.worker_running(running.id, "worker_1"), what="the long worker running")
    return done, failed, running


def settings_for(make_engine):
    return make_engine(orchestrator=WORKER)


def cli(tmp_path, *args, port=None, key=API_KEY):
    """``python -m orchestrator prune ARGS`` on tmp_path's workspace, as a user runs it."""
    config = {
        "orchestrator": {"workspace_root": str(tmp_path / "workspace")},
        "api": {"api_key": key, "port": port or _free_port()},
    }
    path = tmp_path / "prune-config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "--config", str(path), "prune", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- arguments ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30s", 30),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1d12h", 129600),
        ("0s", 0),
        ("1.5h", 5400),
        (" 7D ", 604800),
    ],
)
def test_ages_read_with_their_units(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["7", "7x", "d", "", "-1d", "7 days", "1e3s"])
def test_an_age_without_a_unit_or_with_a_bad_one_is_refused_with_examples(text):
    with pytest.raises(ValidationError, match="is not an age: give a number and a unit .* e.g. 30m, 12h, 7d"):
        parse_age(text)


def test_statuses_are_the_finished_ones_only():
    assert FINISHED == ("completed", "partial", "failed", "cancelled")
    assert parse_statuses(None) == FINISHED
    assert parse_statuses("completed, failed,completed") == ("completed", "failed")
    with pytest.raises(
        ValidationError, match="running is not a finished status; choose from completed, partial, failed, cancelled"
    ):
        parse_statuses("completed,running")


def test_the_command_explains_a_bad_age_and_exits_2(tmp_path):
    out = cli(tmp_path, "--older-than", "7")
    assert out.returncode == 2, out
    assert "error: --older-than '7' is not an age" in out.stderr and "7d" in out.stderr
    out = cli(tmp_path, "--older-than", "7d", "--status", "done")
    assert out.returncode == 2 and "--status: done is not a finished status" in out.stderr


# -- which trees ----------------------------------------------------------------------
def test_candidates_are_finished_trees_old_enough_with_a_listed_status(make_engine):
    engine = settings_for(make_engine)
    (first, second), failed, running = make_trees(engine)
    now = time.time()
    found = candidates(engine.workspace, 0, FINISHED, now=now + 1)
    assert [c.root_id for c in found] == [first.id, second.id, failed.id], "oldest first; the running tree never"
    assert all(c.size > 0 for c in found)
    assert [c.root_id for c in candidates(engine.workspace, 0, ("failed",), now=now + 1)] == [failed.id]
    assert candidates(engine.workspace, 7 * 86400, FINISHED, now=now) == []
    week_later = candidates(engine.workspace, 7 * 86400, FINISHED, now=now + 7 * 86400 + 1)
    assert {c.root_id for c in week_later} == {first.id, second.id, failed.id}
    assert running.id not in {c.root_id for c in candidates(engine.workspace, 0, FINISHED, now=now + 30 * 86400)}


# -- server down ----------------------------------------------------------------------
def test_a_dry_run_lists_and_deletes_nothing(make_engine, tmp_path):
    engine = settings_for(make_engine)
    (first, second), failed, running = make_trees(engine)
    out = cli(tmp_path, "--older-than", "0s", "--status", "completed")
    assert out.returncode == 0, out
    assert "2 job tree(s)" in out.stdout and first.id in out.stdout and second.id in out.stdout
    assert failed.id not in out.stdout and running.id not in out.stdout
    assert "dry run: nothing deleted. Run again with --yes" in out.stdout
    assert all(engine.workspace.job_dir(j.id).is_dir() for j in (first, second, failed, running))


def test_with_the_server_down_yes_deletes_old_finished_trees_and_never_a_running_one(make_engine, tmp_path):
    # Given finished trees and a tree whose worker still runs (its engine is no server: nothing answers)
    engine = settings_for(make_engine)
    (first, second), failed, running = make_trees(engine)
    # When prune --yes runs on the workspace
    out = cli(tmp_path, "--older-than", "0s", "--status", "completed,failed", "--yes")
    # Then the finished trees are gone, from the workspace, and the running one is untouched
    assert out.returncode == 0, out
    assert "deleted 3 job tree(s) from the workspace (no server answered); kept 0." in out.stdout
    assert not any(engine.workspace.job_dir(j.id).exists() for j in (first, second, failed))
    assert engine.workspace.job_dir(running.id).is_dir()
    assert engine.worker_running(running.id, "worker_1")
    # And a direct offline delete of the running tree is refused by the same rule as DELETE
    why = delete_offline(engine.workspace, running.id)
    assert why and "is still running" in why and "cancel it first" in why
    assert engine.workspace.job_dir(running.id).is_dir()


def test_an_old_enough_age_keeps_recent_trees(make_engine, tmp_path):
    engine = settings_for(make_engine)
    (first, _), _, _ = make_trees(engine)
    out = cli(tmp_path, "--older-than", "1h", "--yes")
    assert out.returncode == 0 and "0 job tree(s)" in out.stdout and "nothing to delete" in out.stdout, out
    assert engine.workspace.job_dir(first.id).is_dir()


# -- server up ------------------------------------------------------------------------
def test_with_the_server_up_the_trees_are_deleted_through_it_and_a_running_one_is_refused(make_live, tmp_path):
    live = make_live(orchestrator=WORKER)
    (first, second), failed, running = make_trees(live.engine)
    port = int(live.url.rsplit(":", 1)[1])
    out = cli(tmp_path, "--older-than", "0s", "--yes", port=port)
    assert out.returncode == 0, out
    assert f"deleted 3 job tree(s) through the server at {live.url}; kept 0." in out.stdout
    assert not any(live.engine.workspace.job_dir(j.id).exists() for j in (first, second, failed))
    # The server forgot them too (not only their folders)
    assert live.call("GET", f"/api/v1/jobs/{first.id}/status").status_code == 404
    # The running tree survives, and the server refuses it when asked directly, by the DELETE rule
    assert live.engine.workspace.job_dir(running.id).is_dir() and live.engine.worker_running(running.id, "worker_1")
    client = OrchestratorClient(api_url=live.url, api_key=API_KEY)
    with pytest.raises(Conflict, match="is still running .* cancel it first"):
        client.delete(running.id)


def test_a_server_that_refuses_this_folder_s_key_deletes_nothing(make_live, tmp_path):
    # Given a server on the configured port that is not this folder's (another key)
    live = make_live(orchestrator=WORKER)
    (first, _), _, _ = make_trees(live.engine)
    out = cli(tmp_path, "--older-than", "0s", "--yes", port=int(live.url.rsplit(":", 1)[1]), key="another-folder-key-0123456789")
    # Then every tree is kept, saying why, and the command fails
    assert out.returncode == 1, out
    assert f"kept {first.id}: the server at {live.url} refuses this folder's api.api_key" in out.stdout
    assert live.engine.workspace.job_dir(first.id).is_dir()


# -- retention --------------------------------------------------------------------------
def test_retention_deletes_old_finished_trees_through_the_delete_rule(make_engine):
    engine = settings_for(make_engine)
    (first, second), failed, running = make_trees(engine)
    gone = prune_engine(engine, 0)
    assert sorted(gone) == sorted([first.id, second.id, failed.id])
    assert not any(engine.workspace.job_dir(j).exists() for j in gone)
    assert engine.workspace.job_dir(running.id).is_dir() and engine.worker_running(running.id, "worker_1")
    assert engine.queries.get_job(running.id).status is JobStatus.RUNNING


def test_the_server_applies_retention_at_start_and_keeps_a_tree_it_recovers(tmp_path):
    # Given a workspace with a finished tree, and a tree whose server was killed while its worker ran
    port = _free_port()
    config = {"api": {"api_key": API_KEY, "port": port}, "orchestrator": dict(WORKER)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    first = _server(tmp_path)
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": API_KEY}
    try:
        wait_until(lambda: _up(url), timeout=30, what="server up")
        finished = _post(url, headers, ["ok 1"])
        _wait(url, headers, finished)
        running = _post(url, headers, [LONG], config={"default_timeout": 120})
        # (its attempt listed: its process was started; a kill while it is being started leaves it lost)
        wait_until(lambda: _status(url, headers, running)["results"]["tasks"][0]["attempts"] == 1, what="long worker")
    finally:
        first.kill()
        first.wait(30)
    # When a server with retention_days (about 1 s) starts on that workspace
    config["orchestrator"]["retention_days"] = 1 / 86400
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    time.sleep(1.2)
    second = _server(tmp_path)
    try:
        wait_until(lambda: _up(url), timeout=30, what="second server up")
        workspace = tmp_path / "workspace"
        # Then the finished tree goes at start, and the recovered running tree stays, still running
        wait_until(lambda: not (workspace / f"job_{finished}").exists(), timeout=15, what="retention at start")
        assert (workspace / f"job_{running}").is_dir()
        assert _status(url, headers, running)["status"] == "running"
        # (The folder is set aside first; the log line follows once its removal is done.)
        log = lambda: (tmp_path / "logs" / "server.log").read_text()  # noqa: E731
        wait_until(lambda: "retention: deleted 1 job tree(s)" in log(), timeout=15, what="the retention's log line")
        assert f"job tree {finished} (completed) deleted" in log()
    finally:
        import requests

        requests.post(f"{url}/api/v1/jobs/{running}/cancel", headers=headers, timeout=10)
        second.terminate()
        second.wait(60)


def _server(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env["ORCHESTRATOR_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "api_server.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _up(url):
    import requests

    try:
        return requests.get(f"{url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _post(url, headers, tasks, config=None):
    import requests

    body = {"request": "x", "tasks": tasks, **({"config": config} if config else {})}
    answer = requests.post(f"{url}/api/v1/orchestrate", json=body, headers=headers, timeout=10)
    assert answer.status_code in (200, 201, 202), answer.text
    return answer.json()["job_id"]


def _status(url, headers, job_id):
    import requests

    return requests.get(f"{url}/api/v1/jobs/{job_id}/status", headers=headers, timeout=10).json()


def _wait(url, headers, job_id):
    import requests

    return requests.get(f"{url}/api/v1/jobs/{job_id}/wait?timeout=30", headers=headers, timeout=40).json()
