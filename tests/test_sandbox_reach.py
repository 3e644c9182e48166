"""What a sandboxed worker must not reach through the processes beside it or the sockets its backend's
rules do not cover (issue 48, items 6 and 7), under each backend, with real sandboxes, a real shim and
bridge, and listeners on the host that must receive nothing:

* its shim and its network bridge run without the worker's Unix-socket refusal: attached to (gdb,
  ptrace), read or written (``process_vm_*``, ``/proc/PID/mem``), their descriptors taken
  (``pidfd_getfd``), they would make the host's Unix sockets reachable again;
* under Landlock there is no network namespace, and Landlock's TCP rules cover TCP only: an MPTCP,
  SCTP, raw, packet or VSOCK socket would reach what the rules refuse.

The proof is the host's listener, which must see no connection; what the worker says it got is only
the detail of each refusal.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.network.egress import EgressPlan
from orchestrator.process import landlock
from orchestrator.process.backends import forget_probes, probe
from orchestrator.process.runner import ProcessRunner
from orchestrator.process.sandbox import SandboxMode, SandboxNetwork, SandboxSpec, decide

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's sandboxes")]
IPPROTO_MPTCP, IPPROTO_SCTP, AF_VSOCK = 262, 132, 40


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


def sandbox(backend: str, network: SandboxNetwork, work: Path) -> SandboxSpec:
    """The server's decision for ``backend`` and ``network``, opened for a worker writing ``work``."""
    base = decide(SandboxMode.ON, probe(backend=backend), network=network).spec
    assert base is not None and base.backend.value == backend
    return replace(base, writable=(str(work),), egress=EgressPlan() if network is SandboxNetwork.ALLOW else None)


class Listener:
    """A host listener (a Unix path socket, or TCP on 127.0.0.1) that records every connection it accepts."""

    def __init__(self, server: socket.socket) -> None:
        self.server = server
        self.got: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.got.append(conn.recv(64) or b"(connected)")
                except OSError:
                    self.got.append(b"(connected)")

    def close(self) -> None:
        self.server.close()
        self.thread.join(5)


@pytest.fixture
def unix_listener(tmp_path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / "host.sock"
    server.bind(str(path))
    os.chmod(path, 0o777)  # (the ordinary user's worker may connect: only the sandbox should stop it)
    server.listen(8)
    found = Listener(server)
    found.path = str(path)  # type: ignore[attr-defined]
    yield found
    found.close()


@pytest.fixture
def tcp_listener():
    found = Listener(socket.create_server(("127.0.0.1", 0)))
    found.port = found.server.getsockname()[1]  # type: ignore[attr-defined]
    yield found
    found.close()


def run_worker(spec: SandboxSpec, script: str, args: list[str], tmp_path: Path) -> dict:
    """Run ``script`` as a sandboxed worker under the real shim; the JSON line it prints."""
    work = Path(spec.writable[0])
    runner = ProcessRunner()
    log = tmp_path / "worker.log"
    handle = runner.spawn(
        [sys.executable, "-c", script, *args],
        cwd=work,
        env={"PATH": os.environ["PATH"], "HOME": str(work)},
        log_path=log,
        tag=f"reach-{os.getpid()}-{len(list(tmp_path.iterdir()))}",
        sandbox=spec,
    )
    try:
        status = runner.wait(handle, 120)
    finally:
        runner.terminate(handle, grace=1)
        runner.release(handle)
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.startswith("REACH ")]
    assert status == 0 and lines, text
    return json.loads(lines[-1][len("REACH ") :])


# The worker's side of the first test: its shim (its parent) and its bridge (the shim's other child),
# each attached to with gdb, which makes the shim (or bridge) connect to the host's Unix socket and
# write to it; read through process_vm_readv; its memory opened; its descriptors taken.
ATTACH = r"""
import ctypes, json, os, subprocess, sys
path, gdb = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
me = os.getpid()
shim = os.getppid()
def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and int(entry) != me:
                out.append(int(entry))
    return out
targets = {"shim": shim, **{f"bridge {i}": pid for i, pid in enumerate(children(shim))}}
NUMBERS = {"x86_64": (310, 434, 438), "aarch64": (270, 434, 438), "riscv64": (270, 434, 438)}[os.uname().machine]
result = {}
for name, pid in targets.items():
    seen = {}
    if gdb:
        commands = [
            "set $fd = ((int (*)(int, int, int)) socket)(1, 1, 0)",
            "set $a = ((char * (*)(unsigned long)) malloc)(110)",
            "set *(short *) $a = 1",  # AF_UNIX, then the path with its NUL (no strcpy: an ifunc gdb would not call)
            f"set {{char [{len(path) + 1}]}} ($a + 2) = \"{path}\"",
            "print ((int (*)(int, void *, int)) connect)($fd, $a, 110)",
            f"print ((long (*)(int, const char *, unsigned long)) write)($fd, \"{name}\", {len(name)})",
        ]
        argv = [gdb, "-nx", "-batch", "-p", str(pid)]
        for c in commands:
            argv += ["-ex", c]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        seen["gdb"] = (done.stdout + done.stderr)[-400:]
    buf = ctypes.create_string_buffer(8)
    local = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
    remote = (ctypes.c_void_p * 2)(0x1000, 8)
    got = libc.syscall(NUMBERS[0], pid, local, 1, remote, 1, 0)
    err = ctypes.get_errno()
    seen["process_vm_readv"] = "read" if got >= 0 else "allowed (EFAULT at the address asked)" if err == 14 else os.strerror(err)
    try:
        open(f"/proc/{pid}/mem", "rb").close()
        seen["mem"] = "opened"
    except OSError as exc:
        seen["mem"] = exc.strerror
    pidfd = libc.syscall(NUMBERS[1], pid, 0)
    taken = []
    if pidfd >= 0:
        for fd in range(64):
            new = libc.syscall(NUMBERS[2], pidfd, fd, 0)
            if new >= 0:
                taken.append(fd)
                os.close(new)
            elif ctypes.get_errno() == 1:
                break
        seen["pidfd_getfd"] = f"took {taken}" if taken else os.strerror(ctypes.get_errno())
    else:
        seen["pidfd_getfd"] = "no pidfd: " + os.strerror(ctypes.get_errno())
    result[name] = seen
print("REACH " + json.dumps(result), flush=True)
"""


def test_a_worker_cannot_reach_into_its_shim_or_bridge_to_reach_a_host_unix_socket(backend, tmp_path, unix_listener):
    """Item 6: the shim and the bridge are attached to, read and robbed of descriptors by their worker,
    as root and as an ordinary user: the host's Unix socket receives nothing, each way is refused."""
    work = tmp_path / "work"
    work.mkdir()
    spec = sandbox(backend, SandboxNetwork.ALLOW, work)  # allow: under bubblewrap, the shim's bridge runs
    gdb = shutil.which("gdb") or ""
    seen = run_worker(spec, ATTACH, [unix_listener.path, gdb], tmp_path)
    unix_listener.close()
    assert unix_listener.got == [], f"the host's Unix socket was reached: {unix_listener.got} ({seen})"
    assert ("bridge 0" in seen) == (backend == "bubblewrap"), seen  # Landlock has no bridge
    for name, got in seen.items():
        assert got["process_vm_readv"] == os.strerror(errno.EPERM), (name, got)
        assert got["pidfd_getfd"] == os.strerror(errno.EPERM), (name, got)
        if gdb:
            assert "ptrace: Operation not permitted" in got["gdb"], (name, got)
        if name.startswith("bridge"):  # not dumpable: its memory is not the worker's to open
            assert got["mem"] in (os.strerror(errno.EACCES), os.strerror(errno.EPERM)), (name, got)
    if not gdb:
        pytest.skip("gdb is not installed: ptrace refused was proven by process_vm_readv and pidfd_getfd only")


# The worker's side of the second test: every socket kind Landlock's TCP rules do not cover, each
# connected to the host's listener on a port its rules do not allow.
SOCKETS = r"""
import json, socket, sys
port = int(sys.argv[1])
kinds = {
    "mptcp": (socket.AF_INET, socket.SOCK_STREAM, 262),
    "mptcp6": (socket.AF_INET6, socket.SOCK_STREAM, 262),
    "sctp": (socket.AF_INET, socket.SOCK_STREAM, 132),
    "sctp seqpacket": (socket.AF_INET, socket.SOCK_SEQPACKET, 132),
    "raw": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
    "udp": (socket.AF_INET, socket.SOCK_DGRAM, 0),
    "packet": (17, socket.SOCK_RAW, 0),
    "vsock": (40, socket.SOCK_STREAM, 0),
    "tcp": (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP),
}
result = {}
for name, args in kinds.items():
    try:
        s = socket.socket(*args)
    except OSError as exc:
        result[name] = {"made": False, "errno": exc.errno}
        continue
    with s:
        s.settimeout(5)
        try:
            s.connect(("::1" if args[0] == socket.AF_INET6 else "127.0.0.1", port) if args[0] in (2, 10) else None)
            result[name] = {"made": True, "connected": True}
        except (OSError, TypeError) as exc:
            result[name] = {"made": True, "connected": False, "errno": getattr(exc, "errno", None)}
print("REACH " + json.dumps(result), flush=True)
"""


def _mptcp_here() -> str:
    """'' where this kernel makes MPTCP sockets; else why not."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP).close()
    except OSError as exc:
        return f"this kernel cannot make an MPTCP socket ({exc.strerror}: net.mptcp.enabled=0 or no CONFIG_MPTCP)"
    return ""


@pytest.mark.parametrize("network", [SandboxNetwork.NONE, SandboxNetwork.ALLOW])
def test_a_worker_reaches_no_listener_through_a_socket_its_network_rules_do_not_cover(backend, network, tmp_path, tcp_listener):
    """Item 7: with ``sandbox_network`` none or allow, MPTCP (which Landlock's TCP rules do not see),
    SCTP, raw, packet and VSOCK sockets are refused by the sandbox's seccomp filter (EPERM, not the
    kernel's own EPROTONOSUPPORT), under every backend; the host's listener sees no connection."""
    work = tmp_path / "work"
    work.mkdir()
    seen = run_worker(sandbox(backend, network, work), SOCKETS, [str(tcp_listener.port)], tmp_path)
    tcp_listener.close()
    assert tcp_listener.got == [], f"the host's listener was reached: {seen}"
    for name in ("mptcp", "mptcp6", "sctp", "sctp seqpacket", "raw", "packet", "vsock"):
        assert seen[name] == {"made": False, "errno": errno.EPERM}, (name, seen)
    # UDP: refused without a namespace of its own (Landlock); in bubblewrap's it reaches its own loopback only
    assert (seen["udp"] == {"made": False, "errno": errno.EPERM}) == (backend == "landlock"), seen
    assert seen["tcp"]["made"] and not seen["tcp"]["connected"], seen  # TCP: the rules (or the namespace) refuse it
    why = _mptcp_here()
    if why:
        pytest.skip(f"{why}: the filter's EPERM is proven, an MPTCP connection could not have been made anyway")


# The third test's two workers: one that waits (its argv marks it: a cmdline is readable by all), and
# one that reads every process's environment it can for another worker's credential, in the variable
# or in the file the variable names, and tries each on the waiting worker's job (200: it read that tree).
WAITS = "import time; time.sleep(90)"
SNOOPS = r"""
import json, os, sys, time, urllib.request
marker, job, patience = sys.argv[1], sys.argv[2], float(sys.argv[3])
own = os.environ.get("ORCHESTRATOR_API_KEY") or open(os.environ["ORCHESTRATOR_API_KEY_FILE"]).read().strip()
def marked():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                return pid
        except OSError:
            pass
deadline = time.monotonic() + patience
while marked() is None and time.monotonic() < deadline:
    time.sleep(0.1)
found, read, errors, where = set(), 0, {}, []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        environ = dict(e.split("=", 1) for e in open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace").split("\0") if "=" in e)
    except OSError as exc:
        errors[exc.strerror] = errors.get(exc.strerror, 0) + 1
        continue
    read += 1
    if environ.get("ORCHESTRATOR_API_KEY"):
        found.add(environ["ORCHESTRATOR_API_KEY"])
        if environ["ORCHESTRATOR_API_KEY"] != own:
            where.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")[:200].decode(errors="replace"))
    if environ.get("ORCHESTRATOR_API_KEY_FILE"):
        try:
            found.add(open(environ["ORCHESTRATOR_API_KEY_FILE"]).read().strip())
        except OSError as exc:
            errors["key file: " + exc.strerror] = errors.get("key file: " + exc.strerror, 0) + 1
found.discard(own)
statuses = []
for key in sorted(found):
    asked = urllib.request.Request(os.environ["ORCHESTRATOR_API_URL"] + f"/api/v1/jobs/{job}/status", headers={"X-API-Key": key})
    try:
        statuses.append(urllib.request.urlopen(asked, timeout=10).status)
    except OSError as exc:
        statuses.append(getattr(exc, "code", str(exc)))
print("REACH " + json.dumps({"marked": marked() is not None, "own": bool(own), "read": read, "errors": errors, "foreign": len(found), "where": where, "statuses": statuses}), flush=True)
"""


def marked_on_host(marker: str) -> bool:
    """Whether a process whose command line holds ``marker`` runs, as the host's /proc shows it."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


def test_a_worker_reads_no_other_trees_credential_from_the_process_table(backend, tmp_path):
    """Item 7: where /proc is shared (Landlock: no PID namespace), a worker (as root: any) reads the
    environment of every process; another tree's worker key there let it read that tree and start
    jobs in it. The key comes by a file only its worker can read: none is found, none is used."""
    from orchestrator.cli.server import start_in_thread
    from orchestrator.config import load_settings
    from orchestrator.engine.core import Engine

    from .conftest import API_KEY, only_worker, wait_until
    from .helpers.worktree import make_host

    host, folder = make_host(tmp_path)
    marker = f"reach-waits-{os.getpid()}"
    repo = str(Path(__file__).resolve().parent.parent)
    settings = load_settings(
        base_dir=folder,
        environ={},
        overrides={
            "workers": {
                "kill_grace": 0.5,
                "default_timeout": 120,
                "max_retries": 0,
                "sandbox": "on",
                "sandbox_backend": backend,
                "sandbox_network": "host",
                "env": {"PYTHONPATH": repo},
            },
            "orchestrator": {"worker": "command", "command": [sys.executable, "{task}"]},
            "api": {"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
        },
    )
    engine = Engine(settings)
    server = start_in_thread(settings, engine, port=0)
    try:
        waits = tmp_path / f"{marker}.py"  # (a task's text is one line: each script is a file, run by path)
        waits.write_text(WAITS)
        waiting = engine.submission.submit("waits", {"max_workers": 1}, [str(waits)])
        # The other tree's worker runs (seen from the host) before the snooper starts, and long after it.
        wait_until(lambda: marked_on_host(marker), timeout=60, what="the waiting worker's process")
        snoops = tmp_path / "snoops.py"
        # Where /proc is shared (Landlock) it sees that worker at once; bubblewrap's PID namespace never
        # shows it, so a minute's patience there was a minute lost.
        patience = 60 if backend == "landlock" else 1
        snoops.write_text(
            SNOOPS.replace("sys.argv[1], sys.argv[2], float(sys.argv[3])", f"{marker!r}, {waiting.id!r}, {patience}")
        )
        snooping = engine.submission.submit("snoops", {"max_workers": 1}, [str(snoops)])
        snooper = only_worker(engine, engine.queries.wait(snooping.id, timeout=120))
        text = engine.queries.log_path(snooper).read_text(errors="replace")
        assert marked_on_host(marker), "the other tree's worker ran all through the snooper's run"
        engine.cancel(waiting.id)
    finally:
        engine.shutdown(timeout=10)
        server.close()
    lines = [line for line in text.splitlines() if line.startswith("REACH ")]
    assert lines, text[-3000:]
    seen = json.loads(lines[-1][len("REACH ") :])
    # Its own key came to it; the other worker ran meanwhile, seen where /proc is shared (bubblewrap: not in its namespace)
    assert seen["own"] and seen["marked"] == (backend == "landlock"), seen
    # (Keys of other servers' workers on this machine may be found: none opens this server's job.)
    assert 200 not in seen["statuses"], seen


# The worker's side of the last test: its capabilities (/proc/self/status) and another process's
# environment (a process outside, of its user, holding a secret there).
OUTSIDE = r"""
import json, sys
caps = {line.split(":")[0]: int(line.split()[1], 16 if line.startswith("Cap") else 10)
        for line in open("/proc/self/status") if line.startswith(("Cap", "NoNewPrivs"))}
try:
    read = open("/proc/%s/environ" % sys.argv[1], "rb").read().decode(errors="replace")
except OSError as exc:
    read = "refused: " + exc.strerror
print("REACH " + json.dumps({"caps": caps, "environ": read[-2000:]}), flush=True)
"""


def test_a_worker_holds_no_capability_and_reads_no_environment_outside_even_as_root(backend, tmp_path):
    """Landlock lets a process with CAP_SYS_PTRACE read (and write) another process's memory and
    environment, and leaves CAP_SYS_MODULE, CAP_SYS_BOOT or CAP_NET_ADMIN to the kernel's own checks:
    as root a worker under its launcher kept them all. Every backend now starts a worker with no
    capability (effective, permitted, inheritable, ambient, bounding), as bubblewrap always did, and a
    process outside holding a secret in its environment stays unread."""
    secret = f"outside-secret-{os.getpid()}"
    holder = subprocess.Popen(["sleep", "300"], env={**os.environ, "HOLDER_TOKEN": secret})
    work = tmp_path / "work"
    work.mkdir()
    try:
        seen = run_worker(sandbox(backend, SandboxNetwork.NONE, work), OUTSIDE, [str(holder.pid)], tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert secret not in seen["environ"] and seen["environ"].startswith("refused: "), seen
    caps = seen["caps"]
    # none held, and none gained by an exec: no_new_privs (bubblewrap keeps the bounding set; the
    # Landlock launcher empties root's too, so a root exec there has none to gain either way)
    assert {k: caps[k] for k in ("CapInh", "CapPrm", "CapEff", "CapAmb", "NoNewPrivs")} == {
        "CapInh": 0,
        "CapPrm": 0,
        "CapEff": 0,
        "CapAmb": 0,
        "NoNewPrivs": 1,
    }, seen
    assert caps["CapBnd"] == 0 or backend == "bubblewrap" or os.geteuid() != 0, seen  # (a user's is never emptied)
