"""``workers.sandbox_network: allow`` end to end: a real server, a real sandbox, the orchestrator's
proxy, and ``command`` workers (tests/net_worker.py) trying every way out, under each backend:

* bubblewrap: a network namespace of the worker's own, the shim's bridge carrying the proxy's
  sockets in;
* Landlock, as a server gets it where bubblewrap cannot start: its PATH's ``bwrap`` fails the way
  Ubuntu 24.04's AppArmor makes it fail, ``workers.sandbox: auto`` falls back, and the worker may
  connect to its proxy's port and the forwarded endpoints' only.

Every address here is on 127.0.0.0/8, except one a worker tries without the proxy, refused before
anything is sent (its connect() handed to the orchestrator, network/direct.py, which refuses a port not allowed).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.cli.server import start_in_thread
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine
from orchestrator.models import WorkerStatus
from orchestrator.network.direct import REASON as DIRECT_REASON
from orchestrator.outcomes import RefusalKind
from orchestrator.process import landlock
from orchestrator.process.backends import forget_probes, probe
from orchestrator.process.procscan import tagged_processes

from .conftest import API_KEY, only_worker, wait_until
from .helpers.worktree import make_host

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not probe().available, reason=f"no sandbox here: {probe().reason}"),
]
WORKER = Path(__file__).resolve().parent / "net_worker.py"
DENIED_ADDRESS = "127.0.0.3"


class Counting(ThreadingHTTPServer):
    daemon_threads = True
    hits = 0


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.hits += 1  # type: ignore[attr-defined]
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(address: str) -> Counting:
    server = Counting((address, 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers():
    allowed, denied = serve("127.0.0.1"), serve(DENIED_ADDRESS)
    yield allowed, denied
    for server in (allowed, denied):
        server.shutdown()
        server.server_close()


FAILING_BWRAP = "#!/bin/sh\necho 'bwrap: loopback: Failed RTM_NEWADDR: Operation not permitted' >&2\nexit 1\n"


@pytest.fixture(params=["bubblewrap", "landlock"])
def backend(request, tmp_path, monkeypatch):
    """The backend the server falls to: bubblewrap as it is here, or Landlock where the server's
    bubblewrap cannot start (a ``bwrap`` first on its PATH that fails as AppArmor makes it fail)."""
    if request.param == "landlock":
        if landlock.abi() < 4:
            pytest.skip(f"this kernel's Landlock (ABI {landlock.abi()}) cannot restrict the network")
        fake = tmp_path / "no-userns-bin"
        fake.mkdir()
        (fake / "bwrap").write_text(FAILING_BWRAP)
        (fake / "bwrap").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    forget_probes()
    support = probe()
    assert support.backend.value == request.param, support  # the fallback is real, not pinned
    yield request.param
    monkeypatch.undo()
    forget_probes()


@pytest.fixture
def served(tmp_path, backend):
    """A server (so workers get ORCHESTRATOR_API_URL) whose engine runs sandboxed command workers."""
    host, folder = make_host(tmp_path)
    running = []

    def start(**workers: object):
        settings = load_settings(
            base_dir=folder,
            environ={},
            overrides={
                "workers": {"kill_grace": 0.5, "default_timeout": 60, "max_retries": 0, "sandbox": "on", **workers},
                "orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]},
                "api": {"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
            },
        )
        engine = Engine(settings)
        server = start_in_thread(settings, engine, port=0)
        running.append((engine, server))
        return engine

    yield start
    for engine, server in running:
        engine.shutdown(timeout=10)
        server.close()


def run(engine: Engine, task: str):
    job = engine.submission.submit("net", {"max_workers": 1}, [task])
    return only_worker(engine, engine.queries.wait(job.id, timeout=90))


def test_an_allowed_host_the_api_and_nothing_else_and_each_refusal_is_recorded(served, servers, backend):
    allowed, denied = servers
    allowed_port, denied_port = allowed.server_address[1], denied.server_address[1]
    engine = served(sandbox_allow=[f"127.0.0.1:{allowed_port}"])
    worker = run(engine, f"'{sys.executable}' '{WORKER}' {allowed_port} {DENIED_ADDRESS} {denied_port}")
    log = engine.workspace.worker_log(worker.root_id, worker.depth, worker.name).read_text()
    seen = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])

    assert seen["proxy"].startswith("http://127.0.0.1:"), seen
    assert seen["allowed"].startswith("HTTP/1.0 200") and seen["allowed"].endswith("hello"), seen
    assert seen["denied"].startswith("HTTP/1.1 403") and "x-orchestrator-refused" in seen["denied"].lower(), seen
    assert seen["socks denied"] == "socks reply 2", seen  # "connection not allowed by ruleset"
    assert seen["direct"] == "connected", seen  # a listed loopback service, reached at its own address and port
    # a port nobody allowed: refused outside it before a packet left (network/direct.py)
    assert seen["direct denied"] == "PermissionError: Permission denied", seen
    assert " 200" in seen["api"], seen  # this server's API, at the address and port its URL names
    assert allowed.hits == 1 and denied.hits == 0  # the denied server never saw a connection

    refused = f"[orchestrator] network: refused {DENIED_ADDRESS}:{denied_port}: "
    # Three by its proxy, and the direct one, refused and recorded outside it (network/direct.py).
    assert [line.startswith(refused) for line in log.splitlines()].count(True) == 4, log
    assert worker.status is WorkerStatus.SUCCESS
    network = [r for r in worker.refusals if r.kind is RefusalKind.NETWORK]
    assert [r.path for r in network] == [f"{DENIED_ADDRESS}:{denied_port}"], worker.refusals
    # the latest line: how many times (the one direct connection, after its proxy's three)
    assert network[0].line.endswith(f"{DIRECT_REASON} (1 so far)"), network
    assert f"{DENIED_ADDRESS}:{denied_port}" in json.dumps(engine.queries.status_document(worker.job_id))


IGNORES_PROXY = """
import urllib.request
try:  # no proxy handler: straight to the address, as a program that ignores HTTPS_PROXY does
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open("http://192.0.2.1/", timeout=5)
except OSError as exc:
    print(exc)
"""


def test_a_program_that_ignores_the_proxy_is_refused_before_it_sends(served, tmp_path, backend):
    engine = served()
    # 192.0.2.1 (TEST-NET-1), port 80: not a port it may connect to (its proxy's and the forwarded endpoints' only).
    script = tmp_path / "ignores_proxy.py"
    script.write_text(IGNORES_PROXY)
    worker = run(engine, f"'{sys.executable}' '{script}'")
    assert worker.status is WorkerStatus.SUCCESS
    # refused outside it, and recorded (network/direct.py)
    assert [(r.kind, r.path, r.recorded) for r in worker.refusals] == [(RefusalKind.NETWORK, "192.0.2.1:80", True)]
    assert DIRECT_REASON in worker.refusals[0].line, worker.refusals
    # what the program printed is its own words, apart
    assert [r.kind for r in worker.said_refused] == [RefusalKind.NETWORK], worker.said_refused
    assert "[Errno 13] Permission denied" in worker.said_refused[0].line, worker.said_refused


def test_a_child_job_is_started_through_the_proxied_api(served):
    engine = served()
    task = "orchestrator-spawn --wait 'echo a > a.txt' 'echo b > b.txt'"
    worker = run(engine, task)
    assert worker.status in (WorkerStatus.RECURSIVE_SUCCESS, WorkerStatus.SUCCESS), worker
    assert worker.child_job_ids, worker


def test_the_sandbox_ends_with_its_worker_though_its_bridge_held_a_connection(tmp_path, servers, backend):
    """bubblewrap's init waits for every process of its namespace: the shim ends its bridge (and the
    bridge's connections) once the worker has ended, so the sandbox ends then too, not at a sweep."""
    if backend != "bubblewrap":
        pytest.skip("Landlock has no bridge (the worker connects to its proxy port on the host's loopback)")
    from dataclasses import replace

    from orchestrator.network.egress import EgressPlan
    from orchestrator.network.policy import Endpoint
    from orchestrator.process.runner import ProcessRunner
    from orchestrator.process.sandbox import SandboxMode, SandboxNetwork, decide

    allowed, _ = servers
    port = allowed.server_address[1]
    base = decide(SandboxMode.ON, probe(), network=SandboxNetwork.ALLOW).spec
    assert base is not None
    work = tmp_path / "work"
    work.mkdir()
    spec = replace(base, writable=(str(work),), egress=EgressPlan(always=(Endpoint("127.0.0.1", port),)))
    held = f"import socket, time; s = socket.create_connection(('127.0.0.1', {port})); print('connected', flush=True)"
    runner = ProcessRunner()
    handle = runner.spawn(
        [sys.executable, "-c", held],
        cwd=work,
        env={"PATH": os.environ["PATH"]},
        log_path=tmp_path / "log",
        tag=f"bridge-{os.getpid()}",
        sandbox=spec,
    )
    try:
        assert runner.wait(handle, 30) == 0
        assert handle.popen is not None
        handle.popen.wait(timeout=5)  # the launcher ends by itself once the shim has
        assert "connected" in (tmp_path / "log").read_text()
        # The namespace's init (pid 1) ends by itself just after: bubblewrap's launcher returns as soon
        # as its eventfd says pid 2 (the shim) ended, while pid 1 still reaps. A bridge left running
        # would hold that init, and the sandbox, until a sweep.
        try:
            wait_until(lambda: runner.tagged(handle.tag) == [], timeout=10, what="the sandbox's end")
        except AssertionError as exc:
            left = [" ".join(found.argv or [])[:60] for found in tagged_processes({handle.tag}.__contains__, details=True)]
            raise AssertionError(f"{exc}: still running: {left}") from None
    finally:
        runner.terminate(handle, grace=1)
        runner.release(handle)


ASKS_REFUSED_HOST = """
import sys, time, urllib.request
try:  # through HTTP_PROXY, as a CLI reaches its model
    urllib.request.urlopen("http://{address}:{port}/v1/chat", timeout=5)
except OSError as exc:
    print("Cannot connect to API:", exc)
time.sleep({sleep})
sys.exit(1)
"""


def test_a_worker_its_proxy_refused_fails_at_once_naming_the_host_and_the_setting(served, servers, tmp_path, backend):
    # What its CLI printed ("Cannot connect to API") says nothing trustworthy; the proxy's record,
    # which the worker cannot write, says its connection was refused: not retried, and the error
    # names the host, its port and the setting. A timeout after a refusal names them too, instead
    # of advising a longer timeout.
    _, denied = servers
    port = denied.server_address[1]
    engine = served(max_retries=2, default_timeout=4)
    script = tmp_path / "asks.py"
    script.write_text(ASKS_REFUSED_HOST.format(address=DENIED_ADDRESS, port=port, sleep=0))
    worker = run(engine, f"'{sys.executable}' '{script}'")
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1, worker.attempts
    assert worker.failure_class == "network", worker
    assert f"{DENIED_ADDRESS}:{port}" in worker.error and "workers.sandbox_allow" in worker.error, worker.error
    assert denied.hits == 0
    document = json.dumps(engine.queries.status_document(worker.job_id))
    assert f'"path": "{DENIED_ADDRESS}:{port}"' in document, document

    script.write_text(ASKS_REFUSED_HOST.format(address=DENIED_ADDRESS, port=port, sleep=60))
    worker = run(engine, f"'{sys.executable}' '{script}'")
    assert worker.status is WorkerStatus.TIMEOUT, worker
    assert f"{DENIED_ADDRESS}:{port}" in worker.error and "workers.sandbox_allow" in worker.error, worker.error
    assert "Raise default_timeout" not in worker.error, worker.error


def test_an_allowed_host_that_cannot_be_reached_is_in_the_record_with_the_proxys_words(served, tmp_path, backend):
    import socket

    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    engine = served(sandbox_allow=["127.0.0.5"])  # listed without a port: reached through the proxy only
    script = tmp_path / "asks.py"
    script.write_text(ASKS_REFUSED_HOST.format(address="127.0.0.5", port=port, sleep=0))
    worker = run(engine, f"'{sys.executable}' '{script}'")
    lines = [r.line for r in worker.refusals if r.path == f"127.0.0.5:{port}"]
    assert lines == [
        f"[orchestrator] network: allowed host 127.0.0.5:{port} could not be reached: connection refused at 127.0.0.5:{port} (1 so far)"
    ], worker.refusals
    assert f"allowed host 127.0.0.5:{port} could not be reached" in worker.error, worker.error
