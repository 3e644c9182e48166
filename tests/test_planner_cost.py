"""The AI planner's CLI call is paid for like a worker's: its cost and tokens count in the
tree's cost_usd, tokens and max_cost_usd budget, and show as a planner line in
FINAL_RESULT.md and in the status JSON.

Two groups: a fake CLI that prints claude's result object (the budget logic, exact figures),
and the real claude CLI against the loopback mock of the Messages API (the end-to-end figure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.reports.status_document import job_status

from .conftest import API_KEY as ADMIN_KEY
from .conftest import ROOT, explain, find_cli, make_settings, run_job, wait_until
from .mock_model_server import MockModelServer, Text, subtask

pytestmark = pytest.mark.slow
REQUEST = "Build a shop: an auth service, an orders service"
PLAN = ["Build the auth service", "Build the orders service"]

# A stand-in for claude: one result object on stdout, as `claude -p --output-format json` prints it.
# The planner's prompt asks for "ONLY a JSON object"; a worker's does not (read from argv or stdin).
FAKE_CLAUDE = """#!{python}
import json, os, sys, time
prompt = " ".join(sys.argv[1:]) + ("" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read())
planning = "ONLY a JSON object" in prompt
if not planning and os.environ.get("FAKE_MARKER"):  # a worker: say so, then take FAKE_SLEEP seconds
    open(os.environ["FAKE_MARKER"], "a").close()
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
answer = {planner_answer!r} if planning else "done"
cost, tokens_in, tokens_out = (({planner_cost}, 3000, 200) if planning else (0.01, 1000, 50))
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "result": answer,
                  "total_cost_usd": cost, "usage": {{"input_tokens": tokens_in, "output_tokens": tokens_out}}}}))
"""


def fake_claude(tmp_path: Path, *, planner_answer: str = json.dumps(PLAN), planner_cost: float = 0.05) -> str:
    script = tmp_path / "fake-claude"
    script.write_text(FAKE_CLAUDE.format(python=sys.executable, planner_answer=planner_answer, planner_cost=planner_cost))
    script.chmod(0o755)
    return str(script)


def ai_planned(make_engine, tmp_path, **fake):
    return make_engine(orchestrator={"worker": "claude", "claude_command": fake_claude(tmp_path, **fake), "planner": "ai"})


def status_of(engine, job):
    jobs, workers = engine.queries.snapshot(job.root_id)
    return job_status(job.id, jobs, workers, engine.workspace.job_dir(job.root_id))


def test_the_planner_call_counts_in_the_tree_cost_tokens_reports_and_metrics(make_engine, tmp_path):
    # Given an AI planner whose call costs $0.05 (3000 tokens in, 200 out), and two workers at $0.01
    engine = ai_planned(make_engine, tmp_path)
    # When the job runs
    job = run_job(engine, REQUEST)
    assert job.status is JobStatus.COMPLETED and job.planner == "ai" and job.tasks == PLAN
    # Then the job's record keeps the planner's figures (on disk too)
    assert (job.planner_cost_usd, job.planner_tokens_in, job.planner_tokens_out) == (0.05, 3000, 200)
    assert engine.workspace.load_job(job.id).planner_cost_usd == 0.05
    # And the status JSON counts it in the tree and shows the planner's share
    doc = status_of(engine, job)
    assert doc["planner_usage"] == {"cost_usd": 0.05, "tokens_in": 3000, "tokens_out": 200}
    assert doc["tree"]["cost_usd"] == pytest.approx(0.07)
    assert (doc["tree"]["tokens_in"], doc["tree"]["tokens_out"]) == (5000, 300)
    assert doc["tree"]["planner"] == {"calls": 1, "cost_usd": 0.05, "tokens_in": 3000, "tokens_out": 200}
    assert doc["performance"]["jobs"][0]["cost_usd"] == pytest.approx(0.07)
    # And FINAL_RESULT.md has the total and a planner line
    final = (engine.workspace.job_dir(job.id) / "FINAL_RESULT.md").read_text()
    assert "- Cost: $0.0700 (reported by 2 of 2 workers, and the AI planner)" in final
    assert "- AI planner: $0.0500, tokens 3,000 / 200 (1 planning call; included above)" in final
    # And the server's cost counter
    (total,) = [
        s.value
        for f in text_string_to_metric_families(engine.metrics.render().decode())
        for s in f.samples
        if s.name == "orchestrator_cost_usd_total"
    ]
    assert total == pytest.approx(0.07)


def test_a_planner_call_that_spends_the_budget_starts_no_worker(make_engine, tmp_path):
    # Given a budget of $0.04 and a planner call that costs $0.05
    engine = ai_planned(make_engine, tmp_path)
    job = run_job(engine, REQUEST, config={"max_cost_usd": 0.04})
    # Then no worker starts: each is skipped, saying the tree's cost reached the budget
    _, workers = engine.queries.snapshot(job.root_id)
    assert [w.status for w in workers] == [WorkerStatus.SKIPPED, WorkerStatus.SKIPPED]
    assert all("AI cost $0.0500 reached its budget max_cost_usd=$0.0400" in w.exit_reason for w in workers), workers[
        0
    ].exit_reason
    assert job.status is JobStatus.FAILED
    assert status_of(engine, job)["tree"]["cost_usd"] == 0.05


def test_a_planner_call_under_the_budget_leaves_room_for_the_workers(make_engine, tmp_path):
    engine = ai_planned(make_engine, tmp_path, planner_cost=0.01)
    job = run_job(engine, REQUEST, config={"max_cost_usd": 0.04})
    assert job.status is JobStatus.COMPLETED
    assert status_of(engine, job)["tree"]["cost_usd"] == pytest.approx(0.03)


def test_an_unusable_plan_is_still_paid_for(make_engine, tmp_path):
    # Given a planner that answers prose (the heuristic planner is used instead), at $0.05
    engine = ai_planned(make_engine, tmp_path, planner_answer="I would build auth, then orders.")
    job = run_job(engine, REQUEST)
    assert job.planner == "heuristic" and any("AI planner failed" in n for n in job.notes)
    # Then its cost still counts
    assert job.planner_cost_usd == 0.05
    doc = status_of(engine, job)
    assert doc["tree"]["planner"]["cost_usd"] == 0.05
    assert doc["tree"]["cost_usd"] == pytest.approx(0.05 + 0.01 * doc["tree"]["workers"])


def test_the_budget_remembers_the_planner_after_a_restart(tmp_path):
    # Given a server whose AI planner spent $0.05 of a $0.055 budget, running the first of two
    # workers (one at a time: global_max_workers=1; each costs $0.01), killed with SIGKILL while it runs
    port = free_port()
    marker = tmp_path / "observed" / "worker-started"  # outside the worker's folder: writable to its sandbox
    marker.parent.mkdir()
    config = {
        "api": {"api_key": ADMIN_KEY, "port": port},
        "orchestrator": {"worker": "claude", "claude_command": fake_claude(tmp_path), "planner": "ai"},
        "workers": {"global_max_workers": 1, "sandbox_writable": [str(marker.parent)]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    server = serve(tmp_path, FAKE_SLEEP="3", FAKE_MARKER=str(marker))
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": ADMIN_KEY}
    try:
        wait_until(lambda: up(url), timeout=30, what="server up")
        answer = requests.post(
            f"{url}/api/v1/orchestrate", json={"request": REQUEST, "config": {"max_cost_usd": 0.055}}, headers=headers, timeout=30
        )
        job_id = answer.json()["job_id"]
        wait_until(marker.exists, timeout=30, what="the first worker running")
    finally:
        server.kill()
        server.wait(30)
    # When a new server recovers the tree
    from orchestrator.engine.core import Engine

    engine = Engine(make_settings(tmp_path, **config))
    try:
        assert engine.takeover.recover() == [job_id]
        done = engine.queries.wait(job_id, 60)
        # Then the planner's $0.05 was remembered: the first worker's $0.01 spent the budget,
        # so the second never started
        _, workers = engine.queries.snapshot(job_id)
        assert [w.status for w in workers] == [WorkerStatus.SUCCESS, WorkerStatus.SKIPPED], [w.exit_reason for w in workers]
        assert "AI cost $0.0600 reached its budget max_cost_usd=$0.0550" in workers[1].exit_reason
        assert done.status is JobStatus.PARTIAL
    finally:
        engine.shutdown(timeout=10)


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(home, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env.update({"ORCHESTRATOR_HOME": str(home), **env_extra})
    return subprocess.Popen(
        [sys.executable, str(ROOT / "api_server.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def up(url):
    try:
        return requests.get(f"{url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


# -- the real claude CLI against the loopback mock ----------------------------------------
CLAUDE = find_cli("claude")
API_KEY = "sk-ant-mock-key-0000"


@pytest.mark.real_cli
@pytest.mark.skipif(
    CLAUDE is None, reason="claude CLI not found at .cli/node_modules/.bin/claude nor on PATH (run tests/install_cli.sh)"
)
def test_real_claude_planner_cost_is_in_the_tree_and_the_reports(make_engine, monkeypatch, tmp_path):
    # Given the real claude CLI, pointed at the mock: the planning call answers a plan, each worker "done"
    def script(body):
        return Text("done") if subtask(body) else Text(json.dumps(PLAN))

    with MockModelServer(script, lifetime=120) as mock:
        for name in [n for n in os.environ if n.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))]:
            monkeypatch.delenv(name)
        home = tmp_path / "home"
        home.mkdir()
        for name, value in {**mock.client_env(API_KEY), "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude")}.items():
            monkeypatch.setenv(name, value)
        engine = make_engine(orchestrator={"worker": "claude", "claude_command": CLAUDE, "planner": "ai"})
        # When a job is planned by the AI and run
        job = run_job(engine, REQUEST, timeout=120)
        why = explain(engine, job, mock)
    # Then the plan came from the CLI, and its cost (priced by the CLI itself) is the planner's line
    assert job.planner == "ai" and job.tasks == PLAN, why
    assert job.status is JobStatus.COMPLETED, why
    assert job.planner_cost_usd and job.planner_cost_usd > 0, why
    assert (job.planner_tokens_in, job.planner_tokens_out) == (1200, 80), why
    doc = status_of(engine, job)
    worker_cost = sum(t["cost_usd"] for t in doc["results"]["tasks"])
    assert doc["tree"]["cost_usd"] == pytest.approx(job.planner_cost_usd + worker_cost)
    assert doc["tree"]["planner"]["cost_usd"] == pytest.approx(job.planner_cost_usd)
    final = (engine.workspace.job_dir(job.id) / "FINAL_RESULT.md").read_text()
    assert f"- AI planner: ${job.planner_cost_usd:.4f}, tokens 1,200 / 80 (1 planning call; included above)" in final
    print(f"\nreal claude: planner ${job.planner_cost_usd:.6f}, workers ${worker_cost:.6f}, tree ${doc['tree']['cost_usd']:.6f}")
