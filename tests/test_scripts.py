"""quick-start.sh, check-status.sh and api_server.py as a user runs them: real processes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest
import requests

from .conftest import wait_until, API_KEY, FAKE_CLI, ROOT

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def home(tmp_path):
    """An orchestrator home (config + workspace) in tmp, on a free port; the server is stopped after."""
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        f'api:\n  api_key: "{API_KEY}"\n  port: {port}\n'
        f'orchestrator:\n  worker: "auto"\n'
        # auto must find no AI CLI here, even on a machine that has one installed
        + "".join(f'  {kind}_command: "no-such-{kind}-cli"\n' for kind in ("claude", "codex", "gemini", "aider", "ollama", "opencode"))
        + 'simulated:\n  duration: 0.05\nworkers:\n  kill_grace: 1\n')
    env = {**os.environ, "ORCHESTRATOR_HOME": str(tmp_path)}
    env.pop("ORCHESTRATOR_CONFIG", None)
    yield tmp_path, port, env
    subprocess.run([str(ROOT / "quick-start.sh"), "--stop"], env=env, capture_output=True, timeout=60)


def test_quick_start_starts_the_server_runs_the_job_and_check_status_reads_it(home):
    tmp, port, env = home
    out = subprocess.run([str(ROOT / "quick-start.sh"), "Build a REST API with authentication, user management, and data CRUD operations", "2", "30"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"started the API server at http://127.0.0.1:{port}" in out.stdout
    assert "no AI CLI found on PATH" in out.stdout and "using the simulated worker" in out.stdout
    job_id = out.stdout.split("job ")[1].split(":")[0]
    assert (tmp / "workspace" / f"job_{job_id}" / "FINAL_RESULT.md").is_file()
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    # check-status from the API, then from the files once the server is stopped
    up = subprocess.run([str(ROOT / "check-status.sh"), job_id], env=env, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0 and "COMPLETED" in up.stdout and f"from http://127.0.0.1:{port}" in up.stdout
    subprocess.run([str(ROOT / "quick-start.sh"), "--stop"], env=env, check=True, capture_output=True, timeout=60)
    down = subprocess.run([str(ROOT / "check-status.sh"), job_id], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "COMPLETED" in down.stdout and "from the workspace files" in down.stdout
    # max_workers 2 merged the three parts into two workers; nothing was dropped
    assert "worker_1" in down.stdout and "worker_2" in down.stdout and "worker_3" not in down.stdout
    tasks = json.loads(subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "orchestrator", "status", job_id, "--json"], env=env,
                                      capture_output=True, text=True, timeout=60).stdout)["results"]["tasks"]
    joined = " ".join(t["task"] for t in tasks).lower()
    assert all(part in joined for part in ("authentication", "user management", "data crud operations"))


def test_quick_start_usage_errors(home):
    _, _, env = home
    for argv in ([], ["   "]):
        out = subprocess.run([str(ROOT / "quick-start.sh"), *argv], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "usage" in out.stderr
    bad = subprocess.run([str(ROOT / "check-status.sh"), "../../etc"], env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "invalid job id" in bad.stderr


def test_api_server_sigterm_cancels_running_workers_and_exits_cleanly(home):
    tmp, port, env = home
    import sys

    (tmp / "config.yaml").write_text((tmp / "config.yaml").read_text().replace(
        'worker: "auto"', f'worker: "command"\n  command: ["{sys.executable}", "{FAKE_CLI}", "{{task}}"]'))
    server = subprocess.Popen([sys.executable, str(ROOT / "api_server.py")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(url))
        headers = {"X-API-Key": API_KEY}
        job = requests.post(f"{url}/api/v1/orchestrate", headers=headers, json={"request": "x", "tasks": ["hang", "ignore-term"]}, timeout=10).json()
        wait_until(lambda: requests.get(f"{url}/api/v1/jobs/{job['job_id']}/status", headers=headers, timeout=5).json()["progress"]["running"] == 2)
        import psutil

        listening = [c.laddr for c in psutil.Process(server.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert time.monotonic() - started < 10
    finally:
        if server.poll() is None:
            server.kill()
        server.stdout.close()
    record = json.loads((tmp / "workspace" / f"job_{job['job_id']}" / "state" / "jobs" / f"{job['job_id']}.json").read_text())
    assert record["status"] == "cancelled"
    assert _tagged_with_prefix(f"{job['job_id']}.") == []


def _tagged_with_prefix(prefix):
    needle = f"ORCHESTRATOR_TAG={prefix}".encode()
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if needle in handle.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _healthy(url):
    try:
        return requests.get(url + "/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False



def test_a_sigkilled_server_re_adopts_its_running_workers_at_the_next_start(home):
    import sys

    tmp, port, env = home
    (tmp / "config.yaml").write_text((tmp / "config.yaml").read_text().replace(
        'worker: "auto"', f'worker: "command"\n  command: ["{sys.executable}", "{FAKE_CLI}", "{{task}}"]'))
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": API_KEY}

    def start():
        proc = subprocess.Popen([sys.executable, str(ROOT / "api_server.py")], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_until(lambda: _healthy(url))
        return proc

    def status():
        return requests.get(f"{url}/api/v1/jobs/{job_id}/status", headers=headers, timeout=5).json()

    # Given a server running a job with one hanging worker and one that finished
    server = start()
    job_id = requests.post(f"{url}/api/v1/orchestrate", headers=headers, json={"request": "x", "tasks": ["hang", "ok"]},
                           timeout=10).json()["job_id"]
    wait_until(lambda: status()["progress"]["completed"] == 1)
    # When the server is SIGKILLed, its worker runs on unsupervised
    server.kill()
    server.wait(10)
    running = _tagged_with_prefix(f"{job_id}.")
    assert running != []
    # Then the next server re-adopts the running worker (same processes, nothing started again)
    server = start()
    try:
        doc = status()
        assert doc["status"] == "running"
        tasks = {t["worker_id"]: t for t in doc["results"]["tasks"]}
        assert tasks["worker_1"]["status"] == "running" and tasks["worker_2"]["status"] == "success"
        assert any("recovered at server start" in note and "1 adopt" in note for note in doc["notes"])
        assert sorted(_tagged_with_prefix(f"{job_id}.")) == sorted(running)
        # and it is controlled like any other: a cancel ends it, with no process left
        requests.post(f"{url}/api/v1/jobs/{job_id}/cancel", headers=headers, timeout=10)
        wait_until(lambda: status()["status"] == "cancelled", timeout=15)
        doc = status()
        tasks = {t["worker_id"]: t for t in doc["results"]["tasks"]}
        assert tasks["worker_1"]["status"] == "cancelled"
        assert doc["results"]["final_report"], json.dumps(doc)
        assert _tagged_with_prefix(f"{job_id}.") == []
    finally:
        server.terminate()
        server.wait(30)
