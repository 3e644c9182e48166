"""A running server and a changed config.yaml (config/live.py): quick-start.sh and doctor as a
user runs them, against this folder's real server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests
import yaml

from orchestrator.workers.adapters import auto_order

from .conftest import API_KEY, ROOT, find_cli
from .helpers.scripts import free_port

pytestmark = pytest.mark.slow

NO_CLIS = "".join(f'  {kind}_command: "no-such-{kind}-cli"\n' for kind in auto_order())  # the registry's AI CLIs


def config_text(port: int, worker: str = "auto", extra: str = "") -> str:
    return (
        f'api:\n  api_key: "{API_KEY}"\n  port: {port}\n'
        f'orchestrator:\n  worker: "{worker}"\n'
        + NO_CLIS  # auto finds no AI CLI here, even on a machine that has one installed
        + "simulated:\n  duration: 0.05\nworkers:\n  kill_grace: 1\n"
        + extra
    )


@pytest.fixture
def home(tmp_path):
    """An orchestrator home on a free port; its server is stopped after."""
    port = free_port()
    (tmp_path / "config.yaml").write_text(config_text(port))
    env = {**os.environ, "ORCHESTRATOR_HOME": str(tmp_path)}
    env.pop("ORCHESTRATOR_CONFIG", None)
    yield tmp_path, port, env
    subprocess.run([str(ROOT / "quick-start.sh"), "--stop"], env=env, capture_output=True, timeout=60)


def quick_start(env, *argv):
    done = subprocess.run([str(ROOT / "quick-start.sh"), *argv], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def job_doc(port: int, job_id: str) -> dict:
    got = requests.get(f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}", headers={"X-API-Key": API_KEY}, timeout=10)
    assert got.status_code == 200, got.text
    return got.json()


def test_the_running_server_applies_a_changed_config_to_new_jobs_and_names_what_needs_a_restart(home):
    tmp, port, env = home
    config = tmp / "config.yaml"
    first = quick_start(env, "write a", "1", "30")
    assert "no AI CLI found on PATH" in first, first
    pid = json.loads((tmp / ".server.json").read_text())["pid"]

    # What doctor --write does: a worker kind and a gate (read per job), and a thread count (read at start).
    gate = '  gates: [{name: tests, run: ["%s", "-c", "print(\'gate ran\')"], required: true}]\n' % sys.executable
    config.write_text(config_text(port, "simulated", "tasks:\n" + gate).replace("api:\n", "api:\n  threads: 12\n", 1))
    second = quick_start(env, "write b", "1", "30")
    assert json.loads((tmp / ".server.json").read_text())["pid"] == pid, "the same server ran the job"
    assert "no AI CLI found" not in second and "worker kind simulated\n" in second, second
    assert "gates: tests passed" in second
    assert "changed: applied to new jobs: orchestrator.worker, tasks.gates" in second, second
    assert "changed api.threads, which the server reads at start: restart to apply: ./quick-start.sh --restart" in second
    doc = job_doc(port, second.split("job ", 1)[1].split(":")[0])
    assert doc["config"]["worker"] == "simulated" and [g["name"] for g in doc["config"]["gates"]] == ["tests"], doc["config"]
    assert (tmp / "workspace" / f"job_{doc['job_id']}" / "logs").is_dir()
    gate_logs = list((tmp / "workspace" / f"job_{doc['job_id']}" / "logs").glob("*gate*"))
    assert gate_logs and "gate ran" in gate_logs[0].read_text(), "the new gate ran on the new job's worker"

    # A file that no longer loads: quick-start (which reads it too) names what is wrong; the server,
    # asked directly, keeps its settings, runs the job and says what is wrong.
    config.write_text(config_text(port, "simulated", "tasks:\n" + gate) + "workers:\n  max_workers: [oops\n")
    refused = subprocess.run([str(ROOT / "quick-start.sh"), "write c"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and f"{config} is not valid YAML" in refused.stderr, refused.stderr
    url = f"http://127.0.0.1:{port}/api/v1"
    posted = requests.post(f"{url}/orchestrate", json={"request": "write c"}, headers={"X-API-Key": API_KEY}, timeout=30)
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["job_id"]
    done = requests.get(f"{url}/jobs/{job_id}/wait", params={"timeout": 60}, headers={"X-API-Key": API_KEY}, timeout=90).json()
    notes = " | ".join(done["notes"])
    assert "changed but does not load" in notes and "the server keeps its settings until it is fixed" in notes, notes
    assert "applied to new jobs" not in notes
    assert done["status"] == "completed" and done["config"]["worker"] == "simulated" and done["config"]["gates"], done
    assert json.loads((tmp / ".server.json").read_text())["pid"] == pid

    # Fixed, and back to what the server started with: nothing waits for a restart any more.
    config.write_text(config_text(port, "simulated", "tasks:\n" + gate))
    fourth = quick_start(env, "write d", "1", "30")
    assert "does not load" not in fourth and "restart to apply" not in fourth, fourth


def test_a_command_set_in_config_yaml_after_a_refusal_is_the_one_the_next_job_runs(home):
    # Given a running server whose worker kind is command, with no orchestrator.command yet
    tmp, port, env = home
    config = tmp / "config.yaml"
    config.write_text(config_text(port, "command"))
    subprocess.run([str(ROOT / "orchestrator.sh"), "start-server"], env=env, capture_output=True, timeout=60, check=True)
    url, headers = f"http://127.0.0.1:{port}/api/v1", {"X-API-Key": API_KEY}
    body = {"request": "notes", "tasks": ["echo notes > NOTES.md"]}
    refused = requests.post(f"{url}/orchestrate", json=body, headers=headers, timeout=30)
    assert refused.status_code == 422 and "needs orchestrator.command" in refused.json()["message"], refused.text
    # When the user sets it as the refusal says, the server still running
    command = '  command: ["bash", "-c", "{task}"]\n'
    config.write_text(config_text(port, "command").replace("orchestrator:\n", "orchestrator:\n" + command, 1))
    # Then the next submission runs it: no restart, and no refusal naming a setting the file has
    posted = requests.post(f"{url}/orchestrate", json=body, headers=headers, timeout=30)
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["job_id"]
    done = requests.get(f"{url}/jobs/{job_id}/wait", params={"timeout": 60}, headers=headers, timeout=90).json()
    assert done["status"] == "completed", done
    assert "orchestrator.command" in " | ".join(done["notes"])  # what changed, applied to new jobs


CLAUDE = find_cli("claude")


@pytest.mark.skipif(CLAUDE is None, reason="claude CLI not found (run tests/install_cli.sh)")
def test_doctor_write_says_the_running_server_applies_it_to_its_next_job(home):
    tmp, port, env = home
    assert "started this folder's API server" in quick_start(env, "--start")
    local = tmp / ".cli" / "node_modules" / ".bin"
    local.mkdir(parents=True)
    (local / "claude").symlink_to(CLAUDE)
    (tmp / "user-home").mkdir()
    doctor_env = {k: v for k, v in env.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    doctor_env.update(HOME=str(tmp / "user-home"), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", "--write", "--worker", "claude"],
        env=doctor_env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert f"the server running at http://127.0.0.1:{port} applies this configuration to its next job" in done.stdout, (
        done.stdout + done.stderr
    )
    assert yaml.safe_load((tmp / "config.yaml").read_text())["orchestrator"]["worker"] == "claude"
    # No server running: doctor says nothing of one.
    subprocess.run([str(ROOT / "quick-start.sh"), "--stop"], env=env, capture_output=True, timeout=60)
    (tmp / "config.yaml").write_text(config_text(port))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", "--write", "--worker", "claude"],
        env=doctor_env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert "Configuration written to" in done.stdout and "the server running" not in done.stdout, done.stdout
