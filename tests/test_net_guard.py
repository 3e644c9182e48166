"""The real-CLI tests' network proof (tests/net_guard.py) can fail: strace started outside the
sandbox, as ``trace_launches`` starts it, still sees every connect(2) a sandboxed worker makes, under
bubblewrap and under Landlock, as root and as an ordinary user (tests/run_as_user.sh runs this file),
though the worker's seccomp filter refuses ptrace inside the sandbox (issue 48, item 6); and a connect
outside 127.0.0.1 is caught. The worker here is the ``command`` kind running a few lines of Python
that connect where its task says. The outside addresses are documentation ranges (192.0.2.0/24,
2001:db8::/32) tried from inside the sandbox, whose network rules refuse them: nothing leaves.
"""

from __future__ import annotations

import socket
import sys

import pytest

from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process import landlock
from orchestrator.process.backends import forget_probes, probe

from .conftest import explain, only_worker, run_job
from .net_guard import STRACE, assert_only_loopback, inet_connects, trace_launches

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's sandboxes"),
    pytest.mark.skipif(STRACE is None, reason="strace not installed (Debian package strace)"),
]

# Connects to each "host/port" of its task, says what each did, and exits 0.
CONNECTS = """
import socket, sys
for target in sys.argv[1].split():
    host, port = target.rsplit("/", 1)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        print("connected", target)
    except OSError as exc:
        print("not connected", target, exc)
    s.close()
"""


@pytest.fixture(params=["bubblewrap", "landlock"])
def backend(request):
    forget_probes()
    found = probe(backend=request.param)
    if not found.available:
        pytest.skip(f"no {request.param} here: {found.reason}")
    if request.param == "landlock" and landlock.abi() < 4:
        pytest.skip(f"this kernel's Landlock (ABI {landlock.abi()}) cannot restrict the network")
    yield request.param
    forget_probes()


@pytest.fixture
def listener():
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def connecting_worker(make_engine, backend: str, targets: str):
    """One sandboxed ``command`` worker connecting to ``targets``: (its log, why for a failure)."""
    engine = make_engine(
        orchestrator={"worker": "command", "command": [sys.executable, "-c", CONNECTS, "{task}"], "planner": "heuristic"},
        workers={"sandbox": "on", "sandbox_backend": backend, "default_timeout": 60, "max_retries": 0},
    )
    job = run_job(engine, "connect", tasks=[targets], timeout=90)
    worker = only_worker(engine, job)
    why = explain(engine, job)
    assert job.status is JobStatus.COMPLETED and worker.status is WorkerStatus.SUCCESS, why
    return (engine.workspace.job_dir(job.root_id) / worker.log_path).read_text(errors="replace"), why


def test_a_sandboxed_worker_s_loopback_connect_is_seen_from_outside(make_engine, backend, listener, tmp_path, monkeypatch):
    traces = trace_launches(monkeypatch, tmp_path / "traces")
    log, why = connecting_worker(make_engine, backend, f"127.0.0.1/{listener}")
    assert f"127.0.0.1/{listener}" in log, why  # the worker ran its connect
    logs = sorted(traces.glob("connect.*"))
    assert_only_loopback(*logs)
    seen = "".join(p.read_text() for p in logs)
    assert f'sin_port=htons({listener}), sin_addr=inet_addr("127.0.0.1")' in seen, seen[-3000:]


def test_a_sandboxed_worker_s_connect_outside_loopback_is_caught(make_engine, backend, listener, tmp_path, monkeypatch):
    traces = trace_launches(monkeypatch, tmp_path / "traces")
    log, why = connecting_worker(make_engine, backend, f"127.0.0.1/{listener} 192.0.2.1/9 2001:db8::1/9")
    assert "not connected 192.0.2.1/9" in log and "not connected 2001:db8::1/9" in log, why  # the rules refused both
    logs = sorted(traces.glob("connect.*"))
    assert {"192.0.2.1", "2001:db8::1", "127.0.0.1"} <= set(inet_connects(*logs))
    with pytest.raises(AssertionError, match=r"outside 127\.0\.0\.1: \['192\.0\.2\.1', '2001:db8::1'\]"):
        assert_only_loopback(*logs)


def test_no_log_or_no_connect_fails_the_proof(tmp_path):
    """A trace that did not happen never passes for one that saw only loopback."""
    with pytest.raises(AssertionError, match="did not run under strace"):
        assert_only_loopback()
    empty = tmp_path / "connect.0"
    empty.write_text("")
    with pytest.raises(AssertionError, match="the trace did not work"):
        assert_only_loopback(empty)
