"""quick-start.sh, check-status.sh and api_server.py as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from orchestrator.errors import EXIT_BY_STATUS
from orchestrator.workers.adapters import auto_order

from .conftest import API_KEY, FAKE_CLI, ROOT, wait_until
from .helpers.scripts import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path):
    """An orchestrator home (config + workspace) in tmp, on a free port; the server is stopped after."""
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        f'api:\n  api_key: "{API_KEY}"\n  port: {port}\n'
        f'orchestrator:\n  worker: "auto"\n'
        # auto must find no AI CLI here, even on a machine that has one installed
        + "".join(f'  {kind}_command: "no-such-{kind}-cli"\n' for kind in auto_order())  # the registry's AI CLIs
        + "simulated:\n  duration: 0.05\nworkers:\n  kill_grace: 1\n"
    )
    env = {**os.environ, "ORCHESTRATOR_HOME": str(tmp_path)}
    env.pop("ORCHESTRATOR_CONFIG", None)
    yield tmp_path, port, env
    subprocess.run([str(ROOT / "quick-start.sh"), "--stop"], env=env, capture_output=True, timeout=60)


def test_quick_start_starts_the_server_runs_the_job_and_check_status_reads_it(home):
    tmp, port, env = home
    out = subprocess.run(
        [
            str(ROOT / "quick-start.sh"),
            "Build a REST API with authentication, user management, and data CRUD operations",
            "2",
            "30",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"started this folder's API server at http://127.0.0.1:{port}" in out.stdout
    assert "no AI CLI found on PATH" in out.stdout and "using the simulated worker" in out.stdout
    # the planner's goal on a line of its own (not a " for: <goal>" suffix on each subtask)
    assert (
        "subtask(s), worker kind simulated\n  goal: Build a REST API\n  1. Authentication; user management\n  2. Data CRUD operations\n"
        in out.stdout
    )
    job_id = out.stdout.split("job ")[1].split(":")[0]
    assert (tmp / "workspace" / f"job_{job_id}" / "FINAL_RESULT.md").is_file()
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    # check-status from the API, then from the files once the server is stopped
    up = subprocess.run([str(ROOT / "check-status.sh"), job_id], env=env, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0 and "COMPLETED" in up.stdout and f"from http://127.0.0.1:{port}" in up.stdout
    subprocess.run([str(ROOT / "quick-start.sh"), "--stop"], env=env, check=True, capture_output=True, timeout=60)
    # with no JOB_ID: the newest job, saying so
    newest = subprocess.run([str(ROOT / "check-status.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert newest.returncode == 0 and f"job {job_id}  COMPLETED" in newest.stdout, newest.stderr
    assert "(the newest job in " in newest.stdout and "give a JOB_ID for another" in newest.stdout
    down = subprocess.run([str(ROOT / "check-status.sh"), job_id], env=env, capture_output=True, text=True, timeout=60)
    assert (
        down.returncode == 0
        and "COMPLETED" in down.stdout
        and "from the workspace files (this folder's API server is not running)" in down.stdout
    )
    # max_workers 2 merged the three parts into two workers; nothing was dropped
    assert "worker_1" in down.stdout and "worker_2" in down.stdout and "worker_3" not in down.stdout
    tasks = json.loads(
        subprocess.run(
            [str(ROOT / ".venv/bin/python"), "-m", "orchestrator", "status", job_id, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )["results"]["tasks"]
    joined = " ".join(t["task"] for t in tasks).lower()
    assert all(part in joined for part in ("authentication", "user management", "data crud operations"))


def test_quick_start_usage_errors(home):
    _, _, env = home
    empty = subprocess.run([str(ROOT / "check-status.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert empty.returncode != 0 and "yet: run ./quick-start.sh" in empty.stderr, empty.stderr
    for argv in ([], ["   "]):
        out = subprocess.run([str(ROOT / "quick-start.sh"), *argv], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "usage" in out.stderr
    bad = subprocess.run([str(ROOT / "check-status.sh"), "../../etc"], env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "invalid job id" in bad.stderr


def test_api_server_sigterm_cancels_running_workers_and_exits_cleanly(home):
    tmp, port, env = home
    import sys

    (tmp / "config.yaml").write_text(
        (tmp / "config.yaml")
        .read_text()
        .replace('worker: "auto"', f'worker: "command"\n  command: ["{sys.executable}", "{FAKE_CLI}", "{{task}}"]')
    )
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "api_server.py")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(url))
        headers = {"X-API-Key": API_KEY}
        job = requests.post(
            f"{url}/api/v1/orchestrate", headers=headers, json={"request": "x", "tasks": ["hang", "ignore-term"]}, timeout=10
        ).json()
        wait_until(
            lambda: (
                requests.get(f"{url}/api/v1/jobs/{job['job_id']}/status", headers=headers, timeout=5).json()["progress"][
                    "running"
                ]
                == 2
            )
        )
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
    (tmp / "config.yaml").write_text(
        (tmp / "config.yaml")
        .read_text()
        .replace('worker: "auto"', f'worker: "command"\n  command: ["{sys.executable}", "{FAKE_CLI}", "{{task}}"]')
    )
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": API_KEY}

    def start():
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "api_server.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # (on a loaded machine, beside other xdist workers, a server may take more than 15 s to answer)
        wait_until(lambda: _healthy(url), timeout=60, what="the server answered /health")
        return proc

    def status():
        return requests.get(f"{url}/api/v1/jobs/{job_id}/status", headers=headers, timeout=5).json()

    # Given a server running a job with one hanging worker and one that finished
    server = start()
    job_id = requests.post(
        f"{url}/api/v1/orchestrate", headers=headers, json={"request": "x", "tasks": ["hang", "ok"]}, timeout=10
    ).json()["job_id"]
    wait_until(lambda: status()["progress"]["completed"] == 1)
    wait_until(lambda: status()["results"]["tasks"][0]["attempts"] == 1, what="the hanging worker's process started")
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


# -- one server per folder, found through its own record ---------------------------------------
def run_script(name, *argv, env, cwd=None, timeout=120):
    return subprocess.run([str(ROOT / name), *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def folder_record(tmp):
    path = tmp / ".server.json"
    return json.loads(path.read_text()) if path.exists() else None


def servers_of(tmp):
    """api_server.py processes running for this orchestrator home."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline, environ = proc.info["cmdline"] or [], proc.info["environ"] or {}
        except psutil.Error:
            continue
        if any(part.endswith("api_server.py") for part in cmdline) and environ.get("ORCHESTRATOR_HOME") == str(tmp):
            found.append(proc.pid)
    return found


def test_two_quick_starts_at_once_start_one_server_and_stop_stops_it(home):
    tmp, port, env = home
    procs = [
        subprocess.Popen(
            [str(ROOT / "quick-start.sh"), task, "1", "30"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for task in ("write a", "write b")
    ]
    outs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    assert sum(out.count("started this folder's API server") for out in outs) == 1, outs
    record = folder_record(tmp)
    assert record and record["port"] == port and servers_of(tmp) == [record["pid"]]
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["instance"] == record["instance"]
    stop = run_script("quick-start.sh", "--stop", env=env)
    assert stop.returncode == 0 and f"pid {record['pid']}" in stop.stdout, stop.stdout + stop.stderr
    assert servers_of(tmp) == [] and folder_record(tmp) is None
    assert not _healthy(f"http://127.0.0.1:{port}")


def test_stop_never_signals_a_process_that_is_not_this_folders_server(home):
    tmp, _, env = home
    import psutil

    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        # a pid file from an older version (or anyone) is not trusted
        (tmp / ".server.pid").write_text(str(sleeper.pid))
        assert run_script("quick-start.sh", "--stop", env=env).returncode == 0
        assert sleeper.poll() is None
        # nor a forged record naming a live process with its true start time: /health must answer as it
        forged = {
            "pid": sleeper.pid,
            "port": free_port(),
            "url": f"http://127.0.0.1:{free_port()}",
            "started_at": psutil.Process(sleeper.pid).create_time(),
            "instance": "0123456789abcdef",
            "base_dir": str(tmp),
        }
        (tmp / ".server.json").write_text(json.dumps(forged))
        out = run_script("quick-start.sh", "--stop", env=env)
        assert out.returncode == 0 and "not running" in out.stdout, out.stdout + out.stderr
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stop_stops_a_server_started_with_api_server_py_and_a_second_one_is_refused(home):
    import sys

    tmp, port, env = home
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "api_server.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: folder_record(tmp) is not None and _healthy(f"http://127.0.0.1:{port}"))
        assert folder_record(tmp)["pid"] == server.pid
        second = subprocess.run(
            [sys.executable, str(ROOT / "api_server.py"), "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2 and "already has a running API server" in second.stderr, second.stderr
        stop = run_script("quick-start.sh", "--stop", env=env)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert server.wait(timeout=30) == 0
        assert folder_record(tmp) is None
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_quick_start_takes_a_free_port_when_another_program_holds_the_configured_one(home):
    tmp, port, env = home
    with socket.socket() as squatter:  # any other program listening on the configured port
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        out = run_script("quick-start.sh", "write a", "1", "30", env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"started this folder's API server at http://127.0.0.1:{port}" not in out.stdout
        assert f"port {port} is in use by another program" in out.stdout
        record = folder_record(tmp)
        assert record["port"] != port
        url = record["url"]
        assert f"started this folder's API server at {url}" in out.stdout and f"keeps running at {url}" in out.stdout
        assert f"{url}/jobs/" in out.stdout
        job_id = out.stdout.split("job ")[1].split(":")[0]
        status = run_script("check-status.sh", job_id, env=env)
        assert status.returncode == 0 and f"(from {url})" in status.stdout, status.stdout + status.stderr


# -- the port a folder keeps -------------------------------------------------------------------
def squat(port):
    """Another program listening on ``port`` (a real socket; close it to free the port)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: past a closed one's TIME_WAIT
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def started_port(out):
    assert out.returncode == 0, out.stdout + out.stderr
    return int(out.stdout.split("started this folder's API server at http://127.0.0.1:")[1].split()[0])


def test_every_restart_with_the_configured_port_taken_keeps_the_port_it_moved_to(home):
    import sys

    tmp, port, env = home
    with squat(port):
        first = run_script("quick-start.sh", "--start", env=env)
        kept = started_port(first)
        assert kept != port and folder_record(tmp)["port"] == kept
        assert (
            f"port {port} is in use by another program (api.port; not this folder's server): this folder's server "
            f"takes port {kept} and keeps it for its next starts while it is free"
        ) in first.stdout
        # four restarts, each command the docs show: one port
        assert started_port(run_script("quick-start.sh", "--restart", env=env)) == kept
        assert run_script("orchestrator.sh", "stop-server", env=env).returncode == 0
        again = run_script("orchestrator.sh", "start-server", env=env)
        assert started_port(again) == kept
        assert f"listening on this folder's port {kept}, kept since port {port} (api.port) was in use" in again.stdout
        assert run_script("quick-start.sh", "--stop", env=env).returncode == 0
        # python api_server.py (in the foreground, as README_FOR_AI starts it) starts too, on the same port
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "api_server.py")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            wait_until(lambda: folder_record(tmp) is not None and _healthy(f"http://127.0.0.1:{kept}"))
            assert folder_record(tmp)["port"] == kept and folder_record(tmp)["pid"] == server.pid
        finally:
            server.terminate()
            out, err = server.communicate(timeout=60)
        assert server.returncode == 0 and f"orchestrator API listening on http://127.0.0.1:{kept}" in out, out + err
        assert f"listening on this folder's port {kept}" in err
        assert started_port(run_script("quick-start.sh", "--start", env=env)) == kept


def test_a_kept_port_another_program_took_gives_a_new_one_and_says_so_then_api_port_when_it_is_free(home):
    tmp, port, env = home
    with squat(port):
        kept = started_port(run_script("quick-start.sh", "--start", env=env))
        assert run_script("quick-start.sh", "--stop", env=env).returncode == 0
        with squat(kept):
            moved = run_script("quick-start.sh", "--start", env=env)
            new = started_port(moved)
            assert new not in (port, kept)
            assert (
                f"this folder's port {kept} is in use by another program now, and port {port} (api.port) too: "
                f"this folder's server takes port {new} and keeps it for its next starts while it is free"
            ) in moved.stdout
            assert started_port(run_script("quick-start.sh", "--restart", env=env)) == new
    # api.port is free again but the folder keeps its port while that stays free; once it is taken,
    # the server goes back to api.port and keeps nothing
    assert started_port(run_script("quick-start.sh", "--restart", env=env)) == new
    assert run_script("quick-start.sh", "--stop", env=env).returncode == 0
    with squat(new):
        back = run_script("quick-start.sh", "--start", env=env)
        assert started_port(back) == port
        assert f"this folder's port {new} is in use by another program now: back on port {port} (api.port)" in back.stdout
    assert not (tmp / ".server.port").exists()


def test_api_server_py_with_port_names_a_busy_port_and_says_what_to_do(home):
    import sys

    _, port, env = home
    with squat(port):
        out = subprocess.run(
            [sys.executable, str(ROOT / "api_server.py"), "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "without --port, python api_server.py takes a free port for this folder and keeps it" in out.stderr


def test_quick_start_names_the_job_when_its_server_dies_and_its_advice_starts_no_new_job(home):
    tmp, port, env = home
    (tmp / "config.yaml").write_text((tmp / "config.yaml").read_text().replace("duration: 0.05", "duration: 20"))
    proc = subprocess.Popen(
        [str(ROOT / "quick-start.sh"), "write a", "1", "60"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        seen = []
        for line in proc.stdout:  # the job is submitted and followed once this hint is printed
            seen.append(line)
            if line.startswith("follow a worker:"):
                break
        job_id = "".join(seen).split("job ")[1].split(":")[0]
        os.kill(folder_record(tmp)["pid"], signal.SIGKILL)
        started = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):  # a failure above must not leave them to a later test's GC
            if pipe is not None:
                pipe.close()
    assert proc.returncode == 5, out + err
    assert time.monotonic() - started < 30
    assert f"while job {job_id} ran" in err and "quick-start.sh --start" in err and f"watch {job_id}" in err
    assert 'quick-start.sh "' not in err  # no advice that would submit a new job
    # the advice works: the server comes back, takes the job back, and check-status reads it from there.
    # Its worker began (its exit file was made at its spawn) and died with the server, telling no
    # status: it is lost, never started a second time (engine/recovery.py); a live one is adopted.
    again = run_script("quick-start.sh", "--start", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    url = folder_record(tmp)["url"]
    status = run_script("check-status.sh", job_id, env=env)
    assert f"(from {url})" in status.stdout, status.stdout
    assert status.returncode == (8 if "RUNNING" in status.stdout else 1), status.stdout  # running, or lost: failed
    if "RUNNING" not in status.stdout:
        (record,) = (tmp / "workspace" / f"job_{job_id}" / "state" / "workers").glob("*.json")
        worker = json.loads(record.read_text())
        assert "FAILED" in status.stdout and worker["exit_reason"].startswith("lost:"), (status.stdout, worker)


def test_ctrl_c_on_quick_start_says_the_job_keeps_running_and_how_to_watch_or_cancel_it(home):
    tmp, port, env = home
    # A worker long enough that it still runs however slow the machine; the cancel below ends it.
    (tmp / "config.yaml").write_text((tmp / "config.yaml").read_text().replace("duration: 0.05", "duration: 300"))
    # Given quick-start following its job, in its own process group as a terminal's foreground job
    proc = subprocess.Popen(
        [str(ROOT / "quick-start.sh"), "write a", "1", "600"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # A terminal's foreground job takes SIGINT; a pytest started in the background by a shell
        # without job control (`pytest &`) ignores it, and its children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        seen = []
        for line in proc.stdout:  # the job is submitted and followed once this hint is printed
            seen.append(line)
            if line.startswith("follow a worker:"):
                break
        job_id = "".join(seen).split("job ")[1].split(":")[0]
        # When the user presses Ctrl-C (the terminal sends SIGINT to the whole group)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):  # a failure above must not leave them to a later test's GC
            if pipe is not None:
                pipe.close()
    # Then it says the job keeps running, with the commands that follow or stop that job
    assert proc.returncode == 130, out + err
    assert f"stopped following job {job_id}; the job keeps running" in err, err
    assert f"orchestrator.sh watch {job_id}" in err and f"orchestrator.sh cancel {job_id}" in err, err
    # And it does: the server still runs it, and the cancel named stops it
    status = run_script("check-status.sh", job_id, env=env)
    assert "RUNNING" in status.stdout.splitlines()[0], status.stdout
    cancel = run_script("orchestrator.sh", "cancel", job_id, env=env)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr


def test_hints_quote_paths_with_spaces_and_work_from_another_folder(home):
    tmp, _, env = home
    spaced = tmp / "my host"
    spaced.mkdir()
    (spaced / "config.yaml").write_text((tmp / "config.yaml").read_text())
    env = {**env, "ORCHESTRATOR_HOME": str(spaced)}
    try:
        out = run_script("quick-start.sh", "write a", "1", "30", env=env, cwd=tmp)
        assert out.returncode == 0, out.stdout + out.stderr
        job_id = out.stdout.split("job ")[1].split(":")[0]
        assert f"tail -f './my host/workspace/job_{job_id}/logs/depth_0_worker_1.log'" in out.stdout
        hint = next(line for line in out.stdout.splitlines() if line.startswith("status again:")).split(":", 1)[1].strip()
        again = subprocess.run(["bash", "-c", hint], env=env, cwd=tmp, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "COMPLETED" in again.stdout, hint + again.stderr
    finally:
        run_script("quick-start.sh", "--stop", env=env)


def test_a_100_kb_request_is_not_held_up_by_the_shell_script(home):
    _, _, env = home
    request = "Write the parser and its tests. " * 3200  # 100 KB, mostly words and spaces
    # CPU seconds of the script and what it ran, not wall time: the hold-up was bash's own work, and
    # wall time under the parallel slow tier's load passed 1.5 s with no hold-up at all
    started = children_cpu()
    out = run_script("quick-start.sh", request, "not-a-number", env=env)  # argparse refuses it: no job
    assert out.returncode == 2 and "invalid int value" in out.stderr
    assert children_cpu() - started < 1.5  # was 4.9 s in the bash blank check alone
    started = children_cpu()
    blank = run_script("quick-start.sh", " " * 100_000, env=env)
    assert blank.returncode == 2 and "usage" in blank.stderr
    assert children_cpu() - started < 1.5  # was 10 s


def children_cpu() -> float:
    """User and system CPU seconds of this process's reaped children (and theirs)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


@pytest.mark.parametrize("argv", [["status", "{job}"], ["status", "{job}", "--json"], ["config"], ["--help"]])
def test_a_reader_that_leaves_early_gets_no_traceback(home, argv):
    tmp, _, env = home
    job_id = _finished_job(tmp, env)
    proc = subprocess.Popen(
        [str(ROOT / "orchestrator.sh"), *[a.replace("{job}", job_id) for a in argv]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # like `| head -0`: the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    # as a shell reports a tool whose reader left (128 + SIGPIPE); argparse ignores a failed --help write itself
    assert code == (0 if argv == ["--help"] else 141), (code, err)
    # and `| head -4` keeps the first lines
    head = subprocess.run(
        f"{ROOT / 'orchestrator.sh'} status {job_id} | head -4",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        executable="/bin/bash",
    )
    assert len(head.stdout.splitlines()) == 4 and "Traceback" not in head.stderr, head.stderr


def _finished_job(tmp, env):
    out = subprocess.run(
        [str(ROOT / "orchestrator.sh"), "run", "write a", "--tasks", *[f"task {i}" for i in range(6)], "--no-recursion"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.split("job ")[1].split(":")[0]


def test_quick_start_from_another_folder_passes_a_relative_config_to_its_server(home):
    tmp, _, env = home
    port = free_port()
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "other.yaml").write_text((tmp / "config.yaml").read_text().replace("port:", f"port: {port}\n  #"))
    out = run_script("quick-start.sh", "write a", "1", "30", env={**env, "ORCHESTRATOR_CONFIG": "other.yaml"}, cwd=elsewhere)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"started this folder's API server at http://127.0.0.1:{port}" in out.stdout


def test_watch_follows_the_workspace_files_when_its_server_dies_and_the_server_again_once_it_is_back(home):
    import sys

    tmp, port, env = home
    (tmp / "config.yaml").write_text(
        (tmp / "config.yaml")
        .read_text()
        .replace('worker: "auto"', f'worker: "command"\n  command: ["{sys.executable}", "{FAKE_CLI}", "{{task}}"]')
    )
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": API_KEY}

    def start():
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "api_server.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # (on a loaded machine, beside other xdist workers, a server may take more than 15 s to answer)
        wait_until(lambda: _healthy(url), timeout=60, what="the server answered /health")
        return proc

    # Given a server running a job whose one worker hangs, followed by `watch` (no terminal)
    server = start()
    job_id = requests.post(
        f"{url}/api/v1/orchestrate", headers=headers, json={"request": "x", "tasks": ["hang"]}, timeout=10
    ).json()["job_id"]
    watch = subprocess.Popen(
        [str(ROOT / "orchestrator.sh"), "watch", job_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        # (the job's own events come through the API only: watch follows the server)
        wait_until(lambda: any("planned 1 subtask(s)" in line for line in lines), what="watch following the API")
        # (its worker started first: a server killed before the spawn leaves an attempt that never ran, lost)
        wait_until(lambda: any("attempt 1 started" in line for line in lines), timeout=60, what="the worker started")
        # When the server is SIGKILLed in the middle of the job, and started again 4 s later
        server.kill()
        server.wait(10)
        wait_until(lambda: watch.poll() is not None or any("stopped answering" in line for line in lines), what="watch's note")
        time.sleep(4.0)
        assert watch.poll() is None, "watch quit when its server died: " + "".join(lines) + watch.stderr.read()
        server = start()
        # and, once watch follows it again, the job is cancelled (its end, whenever the server came back)
        wait_until(lambda: any("answers again" in line for line in lines), timeout=30, what="watch back on the API")
        requests.post(f"{url}/api/v1/jobs/{job_id}/cancel", headers=headers, timeout=10)
        watch.wait(timeout=90)
        reader.join(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        server.terminate()
        server.wait(30)
        reader.join(timeout=10)
        err = watch.stderr.read()
        watch.stdout.close()
        watch.stderr.close()
    out = "".join(lines)
    # Then watch said once that it follows the files, picked the server up again and ended with the job
    assert watch.returncode == EXIT_BY_STATUS["cancelled"], out + err
    assert out.count(f"the server at {url} stopped answering; following the workspace files") == 1, out
    assert out.count(f"the server at {url} answers again; following it") == 1, out
    assert f"Job {job_id} cancelled" in out, out
    assert out.rstrip().endswith(f"(from {url})"), out


@pytest.mark.parametrize("down", [2.5, 9.0])
def test_a_re_adopted_workers_timeout_counts_from_its_own_start_across_a_server_kill(home, down):
    """A 6 s worker timeout across a SIGKILLed server, down ``down`` seconds: back before the
    deadline (it takes a second or two to start), the worker is stopped at about 6 s of its life,
    not 6 s after the restart; back after
    it, the worker is stopped at once, recorded as a timeout that says no server watched it at its deadline."""
    import sys

    tmp, port, env = home
    (tmp / "config.yaml").write_text(
        (tmp / "config.yaml")
        .read_text()
        .replace('worker: "auto"', f'worker: "command"\n  command: ["{sys.executable}", "{FAKE_CLI}", "{{task}}"]')
        .replace("workers:\n", "workers:\n  default_timeout: 6\n")
        # Its keeper's backstop (6 + kill_grace + 2 s) after the restart, even where a loaded machine takes
        # many seconds to start the server again: the server is the one that stops it.
        .replace("kill_grace: 1\n", "kill_grace: 30\n")
    )
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": API_KEY}

    def start():
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "api_server.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # (on a loaded machine, beside other xdist workers, a server may take more than 15 s to answer)
        wait_until(lambda: _healthy(url), timeout=60, what="the server answered /health")
        return proc

    def task():
        return requests.get(f"{url}/api/v1/jobs/{job_id}/status", headers=headers, timeout=5).json()["results"]["tasks"][0]

    # Given a server running a worker that hangs, with a 6 s timeout
    server = start()
    job_id = requests.post(
        f"{url}/api/v1/orchestrate", headers=headers, json={"request": "x", "tasks": ["hang"]}, timeout=10
    ).json()["job_id"]
    wait_until(lambda: task()["attempts"] == 1 and _tagged_with_prefix(f"{job_id}.") != [], what="the worker started")
    began = time.time()
    # When the server is SIGKILLed a second later and started again ``down`` seconds after that
    time.sleep(1.0)
    server.kill()
    server.wait(10)
    time.sleep(down)
    assert _tagged_with_prefix(f"{job_id}.") != [], "the worker did not outlive its server"
    server = start()
    ready = time.time()  # (a loaded machine may take seconds to start it)
    try:
        wait_until(lambda: _tagged_with_prefix(f"{job_id}.") == [], timeout=30, what="the worker stopped")
        ended = time.time()
        wait_until(lambda: task()["status"] == "timeout", timeout=30)
        worker = task()
    finally:
        server.terminate()
        server.wait(30)
    # Then it ended by its timeout, measured from its own start
    assert worker["exit_reason"].startswith("timed out after 6s"), worker
    if down < 6:
        # (6 s after the restart would be ready + 6)
        assert ended < max(began + 6.0, ready) + 3.0, f"stopped at {ended - began:.1f}s, server back at {ready - began:.1f}s"
    else:
        assert ended - ready < 3.0, f"stopped {ended - ready:.1f}s after the restart, past its deadline"
        assert (
            "its deadline passed while no server watched it; the server stopped it as it took the job over"
            in worker["exit_reason"]
        )
        assert worker["duration"] > 1 + down, worker


@pytest.mark.parametrize("sandbox", ["off", "on"])
def test_a_workers_timeout_holds_while_its_server_is_down_and_the_restart_records_who_stopped_it(home, sandbox):
    """A 10 s worker timeout (kill_grace 1) with the server SIGKILLed a second after the worker is seen
    and not started again: its keeper (the workspace's supervisor; a sandboxed worker's shim inside) ends
    the worker's whole tree at its backstop deadline (10 + 1 + attempts.BACKSTOP_MARGIN s), with no server.
    The restarted server records a timeout that says who stopped it and why. Its deadline counts from the
    attempt's start as recorded (before its spawn), not from when this test saw it run: under CI's load the
    worker was seen up to 4 s after that start. (10 s, not 4: once, under that load, none of the worker's
    processes was left when its server had just been killed.)"""
    import sys

    from orchestrator.process.backends import probe
    from orchestrator.process.procscan import process_alive

    if sandbox == "on" and not probe().available:
        pytest.skip(f"no sandbox here: {probe().reason}")
    tmp, port, env = home
    timeout = 10
    (tmp / "config.yaml").write_text(
        (tmp / "config.yaml")
        .read_text()
        .replace('worker: "auto"', f'worker: "command"\n  command: ["{sys.executable}", "{FAKE_CLI}", "{{task}}"]')
        .replace("workers:\n", f'workers:\n  default_timeout: {timeout}\n  sandbox: "{sandbox}"\n  max_retries: 0\n')
    )
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": API_KEY}

    def start():
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "api_server.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # (on a loaded machine, beside other xdist workers, a server may take more than 15 s to answer)
        wait_until(lambda: _healthy(url), timeout=60, what="the server answered /health")
        return proc

    def task():
        return requests.get(f"{url}/api/v1/jobs/{job_id}/status", headers=headers, timeout=5).json()["results"]["tasks"][0]

    # Given a server running a worker that hangs, with a 10 s timeout
    server = start()
    job_id = requests.post(
        f"{url}/api/v1/orchestrate", headers=headers, json={"request": "x", "tasks": ["hang"]}, timeout=10
    ).json()["job_id"]
    wait_until(lambda: task()["attempts"] == 1 and _tagged_with_prefix(f"{job_id}.") != [], what="the worker started")
    # When the server is SIGKILLed a second later, and no server runs for a while
    time.sleep(1.0)
    server.kill()
    server.wait(10)
    running = _tagged_with_prefix(f"{job_id}.")
    assert running, "the worker did not outlive its server"
    # Then the worker's tree ends with no server, by its deadline, never before it: past the server's
    # own timeout and kill grace (1 s), counted from the attempt's start as its record says
    wait_until(lambda: _tagged_with_prefix(f"{job_id}.") == [], timeout=30, what="the worker stopped with no server")
    stopped = time.time()
    (record,) = (tmp / "workspace" / f"job_{job_id}" / "state" / "workers").glob("*.json")
    started = json.loads(record.read_text())["attempts"][-1]["started_at"]
    assert server.poll() is not None and stopped - started >= timeout + 1, (stopped - started, started)
    # (a zombie waiting for init is not alive; a killed process's environment reads empty from when its
    # memory is released until it is a zombie, so its tag can vanish a moment before the process does)
    wait_until(lambda: not any(process_alive(pid, None) for pid in running), timeout=10, what="each process ended")
    # And the restarted server records it as a timeout that says who stopped it
    server = start()
    try:
        wait_until(lambda: task()["status"] == "timeout", timeout=30)
        worker = task()
    finally:
        server.terminate()
        server.wait(30)
    keeper = "its workspace's supervisor" if sandbox == "off" else "its shim"
    assert worker["exit_reason"].startswith(f"timed out after {timeout}s (ended by SIGTERM at"), worker
    assert f"its deadline passed while no server watched it, and {keeper} stopped it" in worker["exit_reason"], worker
