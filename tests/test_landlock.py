"""The Landlock sandbox (process/landlock.py) with real processes: what its launcher lets a command
write, read, reach and signal, that it fails closed, and that the probe falls back to it where
bubblewrap is not there."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.process import backends, landlock
from orchestrator.process.backends import probe
from orchestrator.process.sandbox import Backend, SandboxMode, SandboxNetwork, SandboxSpec, Support, decide

ABI = landlock.abi()
pytestmark = pytest.mark.skipif(
    ABI < 1 or not probe(backend="landlock").available, reason=f"no Landlock here: {probe(backend='landlock').reason}"
)
PY = sys.executable


def spec(tmp_path, **more) -> SandboxSpec:
    return SandboxSpec(bwrap="", backend=Backend.LANDLOCK, landlock_abi=ABI, chdir=str(tmp_path), **more)


def run(sandbox: SandboxSpec, script: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(backends.argv(sandbox, [PY, "-c", script]), capture_output=True, text=True, timeout=60, **kwargs)


def test_a_confined_process_writes_only_the_granted_folders(tmp_path):
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir()
    other.mkdir()
    script = f"""
import os
open({str(mine / "a")!r}, "w").write("ok")
try:
    open({str(other / "b")!r}, "w")
except PermissionError:
    print("refused")
open("/dev/null", "w").write("x")
"""
    done = run(spec(tmp_path, writable=(str(mine),)), script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused"]
    assert (mine / "a").read_text() == "ok" and not (other / "b").exists()


def test_a_hidden_file_reads_permission_denied_and_a_partitioned_folders_sibling_stays_readable(tmp_path):
    # Given a folder holding a secret and a file beside it, and an emptied folder with one path kept
    (tmp_path / "secret").write_text("key")
    (tmp_path / "beside").write_text("open")
    emptied = tmp_path / "run"
    (emptied / "kept").mkdir(parents=True)
    (emptied / "kept" / "resolv").write_text("nameserver")
    (emptied / "bus").write_text("socket")
    sandbox = spec(tmp_path, hidden=(str(tmp_path / "secret"),), emptied=(str(emptied),), kept=(str(emptied / "kept"),))
    script = f"""
import os
for path in ({str(tmp_path / "secret")!r}, {str(tmp_path / "beside")!r}, {str(emptied / "bus")!r}, {str(emptied / "kept" / "resolv")!r}):
    try:
        print(open(path).read())
    except PermissionError as exc:
        print("EACCES" if exc.errno == 13 else exc)
"""
    done = run(sandbox, script)
    # Then the secret and the emptied folder's own file are refused, the sibling and the kept path read
    assert done.stdout.split() == ["EACCES", "open", "EACCES", "nameserver"], done.stderr


def test_a_malformed_rule_path_fails_closed(tmp_path):
    done = run(spec(tmp_path, writable=("/etc/passwd/inside",)), "print('ran')")
    assert done.returncode == 126
    assert done.stdout == ""
    assert "orchestrator-landlock: /etc/passwd/inside: Not a directory: the command is not started" in done.stderr


def test_a_missing_rule_path_is_skipped(tmp_path):
    done = run(spec(tmp_path, writable=(str(tmp_path / "not-yet"),)), "print('ran')")
    assert (done.returncode, done.stdout.strip()) == (0, "ran"), done.stderr


@pytest.fixture
def listeners():
    tcp = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    yield [s.getsockname()[1] for s in tcp]
    for s in tcp:
        s.close()


CONNECT = """
import socket, sys
for port in sys.argv[1:]:
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()
        print("reached")
    except OSError as exc:
        print("refused", exc.errno)
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    print("udp")
except OSError as exc:
    print("no-udp", exc.errno)
"""


@pytest.mark.skipif(ABI < 4, reason="Landlock restricts TCP from ABI 4")
def test_no_network_refuses_tcp_to_a_loopback_listener_and_udp(tmp_path, listeners):
    sandbox = spec(tmp_path, network=SandboxNetwork.NONE)
    done = subprocess.run(
        backends.argv(sandbox, [PY, "-c", CONNECT, str(listeners[0])]), capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["refused", "13", "no-udp", "1"], done.stderr  # EACCES (Landlock), EPERM (seccomp)
    host = subprocess.run(backends.argv(spec(tmp_path), [PY, "-c", CONNECT, str(listeners[0])]), capture_output=True, text=True)
    assert host.stdout.split() == ["reached", "udp"], host.stderr


@pytest.mark.skipif(ABI < 4, reason="Landlock restricts TCP from ABI 4")
def test_connect_ports_allow_exactly_the_listed_loopback_port(tmp_path, listeners, monkeypatch):
    allowed, other = listeners
    monkeypatch.setattr(landlock, "connect_ports", lambda _spec: (allowed,))  # the network proxy's hook
    done = subprocess.run(
        backends.argv(spec(tmp_path), [PY, "-c", CONNECT, str(allowed), str(other)]), capture_output=True, text=True
    )
    assert done.stdout.split() == ["reached", "refused", "13", "no-udp", "1"], done.stderr


@pytest.mark.skipif(ABI < 6, reason="Landlock scopes signals from ABI 6")
def test_a_confined_process_cannot_signal_a_process_outside_its_domain(tmp_path):
    outside = subprocess.Popen(["sleep", "30"])
    try:
        script = f"""
import os, signal, subprocess
try:
    os.kill({outside.pid}, signal.SIGTERM)
    print("signalled")
except PermissionError as exc:
    print("EPERM", exc.errno)
child = subprocess.Popen(["sleep", "30"])
os.kill(child.pid, signal.SIGTERM)  # its own: allowed
print("own", child.wait())
"""
        done = run(spec(tmp_path), script)
        assert done.stdout.split() == ["EPERM", "1", "own", "-15"], done.stderr
        assert outside.poll() is None
    finally:
        outside.kill()
        outside.wait()


def test_the_probe_with_a_path_lacking_bwrap_picks_landlock(tmp_path):
    # Given a PATH where bubblewrap is not (a machine where it is not installed, for real)
    found = probe(path=str(tmp_path))
    assert found.backend is Backend.LANDLOCK and found.bwrap is None
    assert found.landlock_abi == ABI
    assert "bwrap is not installed" in found.bwrap_reason
    # Then auto confines with Landlock, and the note says which backend and what it gives up
    decision = decide(SandboxMode.AUTO, found, network=SandboxNetwork.HOST)
    assert decision.spec is not None and decision.spec.backend is Backend.LANDLOCK
    assert f"workers run sandboxed (Landlock ABI {ABI}, bubblewrap cannot start here: bwrap is not installed" in decision.note
    assert "cannot hide a readable file" in decision.note


def test_sandbox_on_where_neither_backend_works_names_the_fixes():
    neither = Support(None, "bwrap is not installed; and this kernel has no Landlock (to let bubblewrap start: ...)")
    with pytest.raises(ValueError, match="workers.sandbox is on, but bwrap is not installed"):
        decide(SandboxMode.ON, neither, network=SandboxNetwork.HOST)
    from orchestrator.process.backends import HOW_TO_FIX

    for fix in ("apparmor_restrict_unprivileged_userns=0", "unprivileged_userns_clone=1", "seccomp=unconfined", "5.13+"):
        assert fix in HOW_TO_FIX


def test_no_network_below_abi_4_is_refused_at_decision_time():
    old = Support(None, backend=Backend.LANDLOCK, landlock_abi=3, bwrap_reason="bwrap is not installed")
    with pytest.raises(ValueError, match=r"Landlock \(ABI 3\) cannot restrict the network"):
        decide(SandboxMode.AUTO, old, network=SandboxNetwork.NONE)


def test_a_spec_sent_to_a_node_keeps_its_backend(tmp_path):
    sent = spec(tmp_path, writable=(str(tmp_path),)).to_dict()
    here = Support(None, backend=Backend.LANDLOCK, landlock_abi=ABI)
    back = SandboxSpec.from_dict(sent, here)
    assert back.backend is Backend.LANDLOCK and back.landlock_abi == ABI and back.writable == (str(tmp_path),)


def test_a_worker_spawned_under_landlock_is_the_shim_itself_and_its_tree_is_swept(tmp_path):
    from orchestrator.process.runner import ProcessRunner

    runner = ProcessRunner(sweep_gather=0)
    marker = f"landlock-sweep-{os.getpid()}-{time.time_ns()}"
    # A grandchild that leaves the session keeps the tag: the sweep finds it (no PID namespace here)
    script = f"setsid sh -c 'exec -a {marker} sleep 60' & echo started; sleep 60"
    handle = runner.spawn(
        ["sh", "-c", script], cwd=tmp_path, env={"PATH": os.environ["PATH"]}, log_path=tmp_path / "log",
        tag=marker, exit_file=tmp_path / "exit", sandbox=spec(tmp_path, writable=(str(tmp_path),)),
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while "started" not in (tmp_path / "log").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert Path(f"/proc/{handle.pid}/cmdline").read_bytes().split(b"\0")[3] == b"orchestrator-shim"
    assert runner.terminate(handle, grace=1.0) == "SIGTERM"
    assert handle.poll() == -signal.SIGTERM
    assert runner.tagged(marker) == []
