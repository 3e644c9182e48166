"""Where each worker ran, as every view shows it: the status document (``node``,
``attempt_nodes``), the progress tree, ``check-status.sh``, and the dashboard (its Nodes card and
each worker's node), in headless Chromium against a real server (skipped without it, as
tests/test_dashboard.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator import protocol
from orchestrator.cli.progress import render_tree, tree_from_records, tree_from_status
from orchestrator.cluster.connect import connect
from orchestrator.cluster.names import Names
from orchestrator.cluster.registry import publish
from orchestrator.engine.core import Engine
from orchestrator.models import Attempt, WorkerStatus
from orchestrator.process.executor import LocalExecutor
from orchestrator.reports.status_document import job_status, status_table

from .conftest import API_KEY, ROOT, fake_command, make_settings, run_job
from .helpers.dashboard import browser, sign_in, wait_for  # noqa: F401 (browser: the fixture)
from .helpers.nodes_api import RegistryExecutor, node, serve  # noqa: F401 (serve: the fixture)
from .helpers.progress import NOW, ROOT_ID, small_tree
from .redisserver import free_port

pytestmark = pytest.mark.timeout(120)
PLACES = {"1": "node-east", "2": "node-west"}  # the node each attempt number "runs on"


class PlacingExecutor(LocalExecutor):
    """Runs attempts here but names a node for each, as the rq executor's handle does once a
    node starts it (engine/attempts.py then records ``attempt.node`` and ``rec.node``)."""

    def start(self, argv, *, env, **kwargs):
        handle = super().start(argv, env=env, **kwargs)
        if "here" not in argv[-1]:  # a task saying "here" runs on this server, as under the local executor
            handle.node = PLACES.get(env.get(protocol.ATTEMPT, ""), "node-far")
        return handle


def placed_tree():
    """small_tree with worker_1 run twice (east, then west) and worker_2_1 running on node-east."""
    jobs, workers = small_tree()
    first, child = workers[0], workers[3]
    first.attempts = [Attempt(1, 989.0, 989.5, node="node-east"), Attempt(2, 990.0, 990.4, node="node-west")]
    first.node = "node-west"
    child.attempts = [Attempt(1, 997.5, node="node-east")]
    child.node = "node-east"
    return jobs, workers


def test_the_status_document_names_each_workers_node_and_each_attempts():
    jobs, workers = placed_tree()
    doc = job_status(ROOT_ID, jobs, workers, Path("/nonexistent") / f"job_{ROOT_ID}")
    first, second, third = doc["results"]["tasks"]
    assert (first["node"], first["attempt_nodes"]) == ("node-west", ["node-east", "node-west"])
    assert (second["node"], second["attempt_nodes"]) == (None, [])  # never placed: this server (or not started)
    child = second["child_results"][0]
    assert (child["worker_id"], child["node"], child["attempt_nodes"]) == ("worker_2_1", "node-east", ["node-east"])


def test_the_progress_tree_and_the_status_table_show_a_workers_node_when_it_has_one():
    jobs, workers = placed_tree()
    lines = render_tree(tree_from_records(jobs, workers), now=NOW)
    assert lines[1] == "├─ ✔ worker_1              success              0.4s  on node-west: Frontend"
    assert lines[4] == "│     ├─ ▶ worker_2_1      running              2.5s  on node-east: Auth"
    assert lines[2] == "├─ ▶ worker_2              running             10.0s  Backend with auth and orders"  # no node: as before
    # The status document draws the same nodes (it has no start time to show a running worker's time from)
    doc = job_status(ROOT_ID, jobs, workers, Path("/nonexistent") / f"job_{ROOT_ID}")
    drawn = render_tree(tree_from_status(doc), now=NOW)
    assert (
        drawn[1] == lines[1] and drawn[4].endswith("  on node-east: Auth") and drawn[2].endswith("  Backend with auth and orders")
    )
    table = status_table(doc).splitlines()
    assert any(row.startswith("worker_1 ") and row.endswith("on node-west: Frontend") for row in table), table
    assert any(row.startswith("  worker_2_1 ") and row.endswith("on node-east: Auth") for row in table), table
    assert any(row.startswith("worker_3 ") and row.endswith("  Database") and "on " not in row for row in table), table


def test_check_status_names_the_node_each_worker_ran_on(tmp_path):
    # Given a finished job whose worker failed on node-east and succeeded on node-west
    settings = make_settings(tmp_path, orchestrator={"worker": "command", "command": fake_command()}, workers={"max_retries": 1})
    engine = Engine(settings, executor=PlacingExecutor())
    job = run_job(engine, tasks=["flaky 1"])
    assert job.status.value == "completed", job.error
    rec = engine.queries.find_worker(job.id, 0, "worker_1")
    assert rec.node == "node-west" and [a.node for a in rec.attempts] == ["node-east", "node-west"]
    engine.shutdown(timeout=10)
    # When check-status.sh reads it from the workspace (no server runs)
    (tmp_path / "config.yaml").write_text(f'api:\n  api_key: "{API_KEY}"\n  port: {free_port()}\n')
    env = {**os.environ, "ORCHESTRATOR_HOME": str(tmp_path)}
    env.pop("ORCHESTRATOR_CONFIG", None)
    out = subprocess.run([str(ROOT / "check-status.sh"), job.id], env=env, capture_output=True, text=True, timeout=60)
    # Then the worker's row names the node its last attempt ran on (and that "flaky" changed nothing)
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = [line for line in out.stdout.splitlines() if line.startswith("worker_1 ")]
    assert row.split()[:4] == ["worker_1", "success", row.split()[2], "2"], row
    assert row.endswith("on node-west: no changes: flaky 1"), row


# -- the dashboard -------------------------------------------------------------------------------
def test_the_nodes_card_lists_each_node_alive_or_dead(redis_server, unique_prefix, serve, browser):  # noqa: F811
    # Given a server whose registry holds a heartbeating node and one whose heartbeat expired
    client, names = connect(redis_server.url), Names(unique_prefix)
    now = time.time()
    publish(client, names, node("gpu-box", ["claude", "codex"], 4, 3, now), lease=60)
    publish(client, names, node("old-box", ["command"], 2, 0, now - 40), lease=0.05)
    time.sleep(0.2)
    url, _ = serve(RegistryExecutor(redis_server.url, unique_prefix))
    # When the jobs page opens
    sign_in(browser, url + "/")
    wait_for(browser, lambda: len(browser.find_elements("css selector", "#nodes-body tr")) == 2, "two node rows")
    # Then each node shows its name, state, kinds, running / slots and heartbeat age
    rows = {r.get_attribute("data-node"): r.text for r in browser.find_elements("css selector", "#nodes-body tr")}
    assert "alive" in rows["gpu-box"] and "claude, codex" in rows["gpu-box"] and "3 / 4" in rows["gpu-box"]
    assert "dead" in rows["old-box"] and "command" in rows["old-box"] and "0 / 2" in rows["old-box"]
    # 40 s old when published, and older by the page's load (3.5 s on a busy 2-CPU machine)
    assert "ago" in rows["old-box"] and any(f"{s}.{t}s ago" in rows["old-box"] for s in range(40, 70) for t in range(10))
    assert browser.find_element("id", "nodes-count").text == "1 of 2 alive"
    assert not browser.find_element("id", "nodes-local").is_displayed()


def test_under_the_local_executor_the_nodes_card_says_this_server_runs_every_worker(serve, browser):  # noqa: F811
    url, _ = serve()
    sign_in(browser, url + "/")
    wait_for(browser, lambda: browser.find_element("id", "nodes-local").is_displayed(), "the local executor's line")
    assert "This server runs every worker" in browser.find_element("id", "nodes-local").text
    assert not browser.find_element("id", "nodes-table").is_displayed()


def test_a_worker_row_shows_its_node_and_its_panel_each_attempts(serve, browser):  # noqa: F811
    # Given a finished job whose worker failed on node-east and succeeded on node-west, and one run here
    url, engine = serve(
        PlacingExecutor(), orchestrator={"worker": "command", "command": fake_command()}, workers={"max_retries": 1}
    )
    job = run_job(engine, tasks=["flaky 1", "args here"])
    assert job.status.value == "completed", job.error
    here = engine.queries.find_worker(job.id, 0, "worker_2")
    assert here.status == WorkerStatus.SUCCESS and here.node is None
    # When its page opens
    sign_in(browser, f"{url}/jobs/{job.id}")
    first = "depth_0_worker_1"
    wait_for(
        browser, lambda: browser.find_element("css selector", f".wrow[data-key='{first}'] .c-node").is_displayed(), "a node tag"
    )
    # Then the row names the node its last attempt ran on, and its panel every attempt's
    assert browser.find_element("css selector", f".wrow[data-key='{first}'] .c-node").text == "node-west"
    browser.find_element("css selector", f".wrow[data-key='{first}']").click()
    wait_for(browser, lambda: browser.find_element("id", "w-node").text.startswith("node-west"), "the panel's node")
    assert browser.find_element("id", "w-node").text == "node-west (attempts: node-east, node-west)"
    # And the worker run here has no node tag, its panel saying so
    assert not browser.find_element("css selector", ".wrow[data-key='depth_0_worker_2'] .c-node").is_displayed()
    browser.find_element("css selector", ".wrow[data-key='depth_0_worker_2']").click()
    wait_for(browser, lambda: browser.find_element("id", "w-node").text == "this server", "the panel's 'this server'")
