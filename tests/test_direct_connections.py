"""A sandboxed worker's direct TCP connection to a loopback port nobody allowed (not through its
proxy), with ``workers.sandbox_network`` ``allow``, ``allow`` with a listed loopback port, and ``none``
(issue 48, "refusals recorded out of band"): the worker cannot connect, the listener there sees
nothing, and the refusal was decided outside the worker (network/direct.py: its seccomp filter hands
every connect() over) and is in its network record, which status and check-status read; under both
backends (Landlock: the host's loopback, which its rules would refuse unrecorded; bubblewrap: its own
network namespace, where nothing listens there). A listed loopback port is reached directly.

A real server, real sandboxes, a TCP listener on 127.0.0.1; tests/test_network_allow.py's fixtures.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from orchestrator.models import WorkerStatus
from orchestrator.network.direct import REASON
from orchestrator.outcomes import RefusalKind
from orchestrator.reports.status_document import status_table

from .conftest import API_KEY, ROOT, wait_until
from .helpers.worktree import make_host
from .test_network_allow import backend, run, serve, served  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONNECTS = """
import json, socket, sys
seen = {}
for port in sys.argv[1:]:
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()
        seen[port] = "connected"
    except OSError as exc:
        seen[port] = type(exc).__name__
print(json.dumps(seen))
"""


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener():
    found = Listener()
    yield found
    found.close()


@pytest.mark.parametrize("network", ["allow", "allow-list", "none"])
def test_a_direct_connection_to_a_port_not_allowed_reaches_nothing_and_is_recorded(
    served,  # noqa: F811
    backend,  # noqa: F811
    listener,
    tmp_path,
    network,
):
    listed = serve("127.0.0.1") if network == "allow-list" else None  # a loopback service listed with its port
    try:
        workers: dict[str, object] = {"sandbox_network": "none" if network == "none" else "allow"}
        if listed is not None:
            workers["sandbox_allow"] = [f"127.0.0.1:{listed.server_address[1]}"]
        engine = served(**workers)
        script = tmp_path / "connects.py"
        script.write_text(CONNECTS)
        ports = [str(listener.port)] + ([str(listed.server_address[1])] if listed is not None else [])
        worker = run(engine, f"'{sys.executable}' '{script}' {' '.join(ports)}")
    finally:
        if listed is not None:
            listed.shutdown()
            listed.server_close()
    log = engine.workspace.worker_log(worker.root_id, worker.depth, worker.name).read_text()
    seen = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])
    denied = f"127.0.0.1:{listener.port}"

    assert worker.status is WorkerStatus.SUCCESS, log
    assert seen[str(listener.port)] != "connected", seen  # the worker could not connect...
    assert listener.accepted == 0  # ...and the listener saw nothing
    if listed is not None:
        assert seen[str(listed.server_address[1])] == "connected", seen  # the listed port is reached directly
    recorded = [r for r in worker.refusals if r.recorded and r.kind is RefusalKind.NETWORK and r.path == denied]
    doc = engine.queries.status_document(worker.job_id)
    (task,) = doc["results"]["tasks"]
    table = status_table(doc)  # check-status's table
    assert seen[str(listener.port)] == "PermissionError", seen  # refused before a packet left (EACCES)
    assert len(recorded) == 1 and REASON in recorded[0].line, worker.refusals  # from its network record
    assert f"network {denied}" in task["refused"] and f"network {denied}" in table, (task, table)
    assert any(r["path"] == denied and r["recorded"] for r in task["refusals"]), task["refusals"]


# Refused five times, and says so at once after each refusal (a line written in pieces, unbuffered).
REFUSED_THEN_SAYS_SO = """
import socket, sys
for i in range(5):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
    except OSError:
        pass
    sys.stdout.write("after"); sys.stdout.flush(); sys.stdout.write(f" refusal {i + 1}\\n"); sys.stdout.flush()
"""


def test_a_refusals_notice_is_in_the_log_before_the_worker_learns_of_it(served, backend, listener, tmp_path):  # noqa: F811
    """The guard writes its notice, then answers the worker's connect(): whatever the worker writes on
    learning of the refusal comes after the notice, and no line of its is cut by it (the notice was
    written after the answer, racing the worker's own line)."""
    engine = served(sandbox_network="allow")
    script = tmp_path / "refused.py"
    script.write_text(REFUSED_THEN_SAYS_SO)
    worker = run(engine, f"'{sys.executable}' '{script}' {listener.port}")
    log = engine.workspace.worker_log(worker.root_id, worker.depth, worker.name).read_text()
    assert worker.status is WorkerStatus.SUCCESS, log
    lines = [line for line in log.splitlines() if not line.startswith("=====")]
    notice = f"[orchestrator] network: refused 127.0.0.1:{listener.port}: {REASON}"
    expected = [line for n in range(1, 6) for line in (f"{notice} ({n} so far)", f"after refusal {n}")]
    assert lines == expected, log
    assert listener.accepted == 0


# Connects to the allowed port, then waits for the flag (the server is killed and restarted
# meanwhile) and connects to the allowed port and the one not allowed again.
CONNECTS_ACROSS_A_RESTART = """
import json, os, socket, sys, time
allowed, denied, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def attempt(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return "connected"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror}"

print(json.dumps({"before": attempt(allowed)}), flush=True)
while not os.path.exists(flag):
    time.sleep(0.1)
print(json.dumps({"allowed": attempt(allowed), "denied": attempt(denied)}), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _json_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _supervisor_listeners(home: Path) -> int:
    """The seccomp listeners held by the supervisors of the workspace in ``home``."""
    found = 0
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if not any(b"orchestrator.process.supervisor" in a for a in argv) or not any(str(home).encode() in a for a in argv):
                continue
            found += sum(os.readlink(fd).startswith("anon_inode:seccomp") for fd in (proc / "fd").iterdir())
        except OSError:
            continue
    return found


def test_a_worker_keeps_its_direct_connection_guard_across_a_server_sigkill_and_restart(tmp_path, backend, listener):  # noqa: F811
    """The guard's listener is the supervisor's (it outlives the server): after the server is SIGKILLed
    and a new one adopts the worker, its connection to an allowed port still goes on (not "Function not
    implemented"), one to a port not allowed is refused and recorded, and the new server's status shows it."""
    allowed = Listener()  # listed in workers.sandbox_allow: reached directly
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    host, _ = make_host(tmp_path)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    script, flag = work / "connects.py", work / "go"
    script.write_text(CONNECTS_ACROSS_A_RESTART)
    (home / "config.yaml").write_text(
        f'api:\n  api_key: "{API_KEY}"\n  host: "127.0.0.1"\n  port: {port}\n  rate_limit_worker: 0\n'
        'orchestrator:\n  worker: "command"\n  command: ["sh", "-c", "{task}"]\n'
        'workers:\n  kill_grace: 0.5\n  default_timeout: 120\n  max_retries: 0\n  sandbox: "on"\n'
        f'  sandbox_network: "allow"\n  sandbox_allow: ["127.0.0.1:{allowed.port}"]\n  sandbox_writable: ["{work}"]\n'
    )
    env = {**os.environ, "ORCHESTRATOR_HOME": str(home)}  # PATH: the backend fixture's (Landlock: a failing bwrap first)
    env.pop("ORCHESTRATOR_CONFIG", None)
    servers: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        servers.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "api_server.py")],
                cwd=host,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        return servers[-1]

    def healthy() -> bool:
        if servers[-1].poll() is not None:
            raise AssertionError(f"the server exited with {servers[-1].returncode}")
        try:
            return requests.get(url + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def call(method: str, path: str, **kwargs):
        return requests.request(method, url + path, headers={"X-API-Key": API_KEY}, timeout=10, **kwargs)

    start()
    try:
        wait_until(healthy, timeout=60, what="the server")
        task = f"'{sys.executable}' '{script}' {allowed.port} {listener.port} '{flag}'"
        root = call("POST", "/api/v1/orchestrate", json={"request": "guard", "tasks": [task]}).json()["job_id"]
        workers = home / "workspace" / f"job_{root}" / "state" / "workers"

        def record() -> dict:
            found = [json.loads(p.read_text()) for p in workers.glob("*.json")] if workers.is_dir() else []
            return found[0] if len(found) == 1 else {}

        log = wait_until(
            lambda: record().get("log_path") and home / "workspace" / f"job_{root}" / record()["log_path"], timeout=60
        )
        assert wait_until(lambda: log.exists() and _json_lines(log), timeout=60, what="its first connection") == [
            {"before": "connected"}
        ], log.read_text()
        assert _supervisor_listeners(home) == 1  # the guard's listener is the supervisor's
        servers[-1].send_signal(signal.SIGKILL)
        servers[-1].wait(10)
        start()
        wait_until(healthy, timeout=60, what="the restarted server")
        orchestrator_log = home / "workspace" / f"job_{root}" / "logs" / "orchestrator.log"
        wait_until(lambda: "re-adopted" in orchestrator_log.read_text(), timeout=30, what="the worker re-adopted")
        flag.write_text("go\n")
        wait_until(lambda: call("GET", f"/api/v1/jobs/{root}").json()["status"] in ("completed", "partial", "failed"), timeout=60)
        wait_until(lambda: _supervisor_listeners(home) == 0, timeout=30, what="the listener closed with its worker")
        lines = _json_lines(log)
        assert lines[0] == {"before": "connected"} and len(lines) == 2, log.read_text()
        seen = lines[-1]
        assert seen["allowed"] == "connected", log.read_text()  # not "Function not implemented": still guarded
        assert seen["denied"] == "PermissionError: Permission denied", log.read_text()  # refused outside it
        # (under bubblewrap the allowed connection is carried out by the sandbox's bridge: its accept may come later)
        wait_until(lambda: allowed.accepted == 2, timeout=15, what="the allowed port's second connection")
        assert allowed.accepted == 2 and listener.accepted == 0
        assert f"[orchestrator] network: refused 127.0.0.1:{listener.port}: {REASON} (1 so far)" in log.read_text()
        denied = f"127.0.0.1:{listener.port}"
        doc = call("GET", f"/api/v1/jobs/{root}/status").json()
        (only,) = doc["results"]["tasks"]
        assert only["status"] == "success", only
        assert f"network {denied}" in only["refused"], only  # from its network record, read by the new server
        assert any(r["path"] == denied and r["recorded"] and REASON in r["line"] for r in only["refusals"]), only["refusals"]
    finally:
        for server in servers:
            if server.poll() is None:
                server.terminate()
                server.wait(60)
        allowed.close()


def test_without_a_supervisor_no_guard_is_installed_and_the_sandbox_alone_refuses(tmp_path, backend, listener):  # noqa: F811
    """Where no supervisor starts the process (a runner built without one), no guard is installed: its
    listener would be this process's, and a server killed just after the spawn left the worker unable
    to hand it over (not started: the chaos tests' gate cut off mid-run never ran). The sandbox's own
    rules still refuse the connection (Landlock's ports, bubblewrap's empty namespace); it is not
    recorded."""
    from dataclasses import replace

    from orchestrator.process.backends import probe
    from orchestrator.process.runner import ProcessRunner
    from orchestrator.process.sandbox import SandboxMode, SandboxNetwork, decide

    base = decide(SandboxMode.ON, probe(), network=SandboxNetwork.NONE).spec
    assert base is not None
    work = tmp_path / "work"
    work.mkdir()
    record = tmp_path / "network.jsonl"
    spec = replace(base, writable=(str(work),), network_record=str(record))
    script = work / "connects.py"
    script.write_text(CONNECTS)
    runner = ProcessRunner()
    assert runner.supervisor is None
    handle = runner.spawn(
        [sys.executable, str(script), str(listener.port)],
        cwd=work,
        env={"PATH": os.environ["PATH"]},
        log_path=tmp_path / "log",
        tag=f"noguard-{os.getpid()}",
        sandbox=spec,
    )
    try:
        assert runner.wait(handle, 60) == 0
        assert handle.watch is None  # no guard of this process's
    finally:
        runner.terminate(handle, grace=1)
        runner.release(handle)
    log = (tmp_path / "log").read_text()
    said = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])
    assert said[str(listener.port)] in ("PermissionError", "ConnectionRefusedError"), log
    assert listener.accepted == 0
    assert not record.exists() or not record.read_text().strip()


FDS = """
import json, os
fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        fds[name] = os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        pass  # the listing's own, closed by now
print(json.dumps(fds))
"""


def test_a_worker_holds_no_descriptor_of_another_workers_guard_or_start(served, backend, tmp_path):  # noqa: F811
    """The supervisor holds each guarded worker's seccomp listener and gets every worker's log and
    cgroup files over its socket: a worker it starts after them holds none of those, only its
    standard three (a listener held by another worker would let it answer that worker's connect() calls)."""
    engine = served(sandbox_network="none", max_memory_mb=512)
    first = engine.submission.submit("held", {"max_workers": 1}, ["sleep 30"])
    wait_until(lambda: any(w.status is WorkerStatus.RUNNING for w in engine.queries.snapshot(first.id)[1]), timeout=60)
    wait_until(lambda: _guards_held(engine), timeout=30)  # its listener is the supervisor's now
    script = tmp_path / "fds.py"
    script.write_text(FDS)
    worker = run(engine, f"'{sys.executable}' '{script}'")
    engine.cancel(first.id)
    log = engine.workspace.worker_log(worker.root_id, worker.depth, worker.name).read_text()
    held = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])
    assert worker.status is WorkerStatus.SUCCESS, log
    assert sorted(held) == ["0", "1", "2"], held


def _guards_held(engine) -> bool:
    """Whether a supervisor of this engine's holds a seccomp listener (an anon inode of seccomp)."""
    for pid in engine.runner.supervisor.running() if engine.runner.supervisor else ():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if "seccomp" in os.readlink(fd):
                    return True
            except OSError:
                continue
    return False
