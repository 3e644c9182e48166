"""network/egress.py's shared doors: one listener per process for the proxy and one per forwarded
endpoint, every attempt a registration told apart by the cgroup the kernel says a connection's peer
runs in (network/peer.py: SO_PEERPIDFD, then /proc/<pid>/cgroup, then the pidfd signalled).

Hostile first: a process of attempt A must not get attempt B's policy, nor a door only B's plan names;
a process in no attempt's cgroup, or one that left its cgroup, gets nothing; an unregistered attempt
gets nothing. Real cgroups, real processes joining them, real sockets on 127.0.0.1; then a real
bubblewrap sandbox whose server restarts. Needs a cgroup hierarchy this user may write (root here)
and a kernel with SO_PEERPIDFD (Linux >= 6.5): elsewhere the per-attempt listeners are used
(test_egress.py), and so these tests skip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.network import egress, peer, proxy
from orchestrator.network.egress import EgressPlan, open_egress
from orchestrator.network.policy import Endpoint
from orchestrator.process.cgroups import Cgroup, ChildSetup, Limits, hierarchies, holds_processes
from orchestrator.process.sandbox import SandboxSpec

from .conftest import wait_until
from .helpers.echo import echo_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not peer.supported(), reason="the kernel names no Unix socket peer by a pidfd (Linux < 6.5)"),
]
# Where the attempt has no cgroup of its own, it keeps its own listeners (test_egress.py).
needs_cgroup = pytest.mark.skipif(
    not hierarchies().bases, reason="no cgroup this user may make (no delegation): per-attempt listeners"
)

# Connects to a Unix socket (argv[1]), sends argv[2] (a CONNECT head, or nothing), prints what comes back.
CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
data = b""
try:
    if sys.argv[2]:
        s.sendall(sys.argv[2].encode())
    while len(data) < 4096:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
        if b"hi" in data or b"403" in data:
            break
except OSError as exc:
    data += f"[{exc!r}]".encode()
sys.stdout.write(repr(data))
"""


@pytest.fixture
def echo() -> Iterator[int]:
    """A loopback server that answers each connection with b"hi" and closes."""
    with echo_server() as port:
        yield port


@pytest.fixture(autouse=True)
def short_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temp folder of the test's for the socket folders, and a fresh set of shared doors (a dead
    server's registrations judged by their cgroups, as a server's runner has them judged)."""
    folder = tempfile.mkdtemp(prefix="egress-", dir="/tmp")
    monkeypatch.setattr(egress.tempfile, "gettempdir", lambda: folder)
    monkeypatch.setattr(egress, "_SHARED", egress._Shared())
    monkeypatch.setattr(egress, "_attempt_runs", holds_processes)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def cgroups() -> Iterator[dict[str, Cgroup]]:
    """Two attempts' cgroups, A and B, made as the runner makes them."""
    made: dict[str, Cgroup] = {}
    for name in ("A", "B"):
        cgroup = hierarchies().create(f"orchestrator-shared-test-{os.getpid()}-{name}", Limits(memory=256 << 20))
        assert cgroup is not None
        made[name] = cgroup
    yield made
    for cgroup in made.values():
        cgroup.remove()


def run_in(cgroup: Cgroup | None, path: Path, send: str = "") -> bytes:
    """What a process in ``cgroup`` (None: the test's own) reads from the socket at ``path``."""
    setup = ChildSetup(cgroup.join_fds(), 0) if cgroup is not None else None
    try:
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, str(path), send], capture_output=True, text=True, timeout=30, preexec_fn=setup
        )
    finally:
        for fd in setup.fds if setup is not None else []:
            os.close(fd)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout)  # noqa: S307 - our client's repr of bytes


def nothing(got: bytes) -> bool:
    """Closed unanswered (a reset when it had sent its request first)."""
    return got == b"" or got.startswith((b"[ConnectionResetError", b"[BrokenPipeError"))


def head(port: int) -> str:
    return f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"


@needs_cgroup
def test_an_attempt_gets_its_own_policy_and_doors_never_anothers(tmp_path: Path, echo: int, cgroups: dict[str, Cgroup]) -> None:
    """B allows the echo server and names it as an endpoint; A allows nothing. Through the one shared
    folder, A's process is refused at the proxy and at B's endpoint door (a refusal in A's log, none
    in B's), B's gets through both, a process of neither gets nothing."""
    logs = {name: tmp_path / f"{name}.log" for name in "AB"}
    for log in logs.values():
        log.write_text("")
    opened = {
        "A": open_egress(EgressPlan(), key="A", log_path=logs["A"], cgroups=hierarchies().proc_paths(cgroups["A"])),
        "B": open_egress(
            EgressPlan(allow=(f"127.0.0.1:{echo}",)),
            key="B",
            log_path=logs["B"],
            cgroups=hierarchies().proc_paths(cgroups["B"]),
        ),
    }
    try:
        folder = opened["A"].folder
        assert (
            opened["B"].folder == folder and opened["A"].listeners == [] == opened["B"].listeners
        )  # one folder, no listener of their own
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        assert (
            opened["B"].bridge
            == f"127.0.0.1:3128={egress.INSIDE}/proxy.sock 127.0.0.1:{echo}={egress.INSIDE}/127.0.0.1-{echo}.sock"
        )
        door = folder / f"127.0.0.1-{echo}.sock"
        # B: its policy lets it through the proxy, and its endpoint's door forwards.
        got = run_in(cgroups["B"], folder / "proxy.sock", head(echo))
        assert b" 200 " in got and got.endswith(b"hi"), got
        assert run_in(cgroups["B"], door) == b"hi"
        # A: the same request is refused by A's policy, not let through by B's.
        got = run_in(cgroups["A"], folder / "proxy.sock", head(echo))
        assert b"403" in got and b"hi" not in got, got
        # A at the door only B's plan names: closed, and told in A's log as a refusal.
        assert nothing(run_in(cgroups["A"], door))
        a_log = logs["A"].read_text()
        assert f"{egress.REFUSED}127.0.0.1:{echo}: not an endpoint this worker's plan names" in a_log, a_log
        assert egress.REFUSED not in logs["B"].read_text()
        # A process of no attempt (the test's own cgroup): nothing, at either door.
        assert nothing(run_in(None, folder / "proxy.sock", head(echo)))
        assert nothing(run_in(None, door))
        # B ended: its processes (were there any left) get nothing any more.
        opened["B"].close()
        assert nothing(run_in(cgroups["B"], door))
        assert nothing(run_in(cgroups["B"], folder / "proxy.sock", head(echo)))
    finally:
        for one in opened.values():
            one.close()
    journal = egress._SHARED._journal
    assert journal is not None and egress._replay(journal.path) == {}  # both registrations ended in the file


def wait_gone(path: Path) -> bool:
    deadline = time.monotonic() + 5
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not path.exists()


@needs_cgroup
def test_a_process_that_left_its_attempts_cgroup_is_refused(echo: int, cgroups: dict[str, Cgroup]) -> None:
    """Started in B's cgroup, moved out of it (to the cgroup B's was made in) before it connects: the
    kernel says where it is now, and that is no attempt's."""
    opened = open_egress(
        EgressPlan(allow=(f"127.0.0.1:{echo}",)), key="B", log_path=None, cgroups=hierarchies().proc_paths(cgroups["B"])
    )
    setup = ChildSetup(cgroups["B"].join_fds(), 0)
    waits = "import sys; sys.stdin.readline()\n" + CLIENT
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", waits, str(opened.folder / "proxy.sock"), head(echo)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=setup,
        )
    finally:
        for fd in setup.fds:
            os.close(fd)
    try:
        assert child.pid in cgroups["B"].members()
        for directory in cgroups["B"].dirs.values():  # out, into the parent (a hierarchy's whole process)
            (directory.parent / "cgroup.procs").write_text(str(child.pid))
        assert child.pid not in cgroups["B"].members()
        out, _ = child.communicate("go\n", timeout=30)
        assert nothing(eval(out)), out  # noqa: S307 - our client's repr of bytes
    finally:
        child.kill()
        child.wait()
        opened.close()


def _bubblewrap_reaching(echo: int, tmp_path: Path) -> tuple[SandboxSpec, Path]:
    """A bubblewrap sandbox (a network namespace of its own) whose plan names the echo endpoint, and the
    folder it may write; the test is skipped where bubblewrap cannot run."""
    from dataclasses import replace

    from orchestrator.process.backends import probe
    from orchestrator.process.sandbox import SandboxMode, SandboxNetwork, decide

    base = decide(SandboxMode.ON, probe(), network=SandboxNetwork.ALLOW).spec
    if base is None or base.backend.value != "bubblewrap":
        pytest.skip("needs bubblewrap (a network namespace of its own)")
    work = tmp_path / "work"
    work.mkdir()
    return replace(base, writable=(str(work),), egress=EgressPlan(always=(Endpoint("127.0.0.1", echo),))), work


@needs_cgroup
def test_a_restarted_server_serves_a_running_sandbox_in_the_same_shared_folder(tmp_path: Path, echo: int) -> None:
    """A real bubblewrap sandbox with a cgroup binds the shared folder; its server's proxy stops (the
    server died), a new one (fresh doors, no registration) adopts the attempt: the worker, still
    running in the same sandbox, reaches its endpoint again through the same paths."""
    from orchestrator.process.procscan import process_start_id
    from orchestrator.process.runner import ProcessRunner

    spec, work = _bubblewrap_reaching(echo, tmp_path)
    # Reaches the endpoint at its own address inside (the bridge), once per "go" file, forever.
    worker = (
        "import os, socket, time\n"
        "n = 0\n"
        "while True:\n"
        f"    if os.path.exists('{work}/go-%d' % n):\n"
        "        try:\n"
        f"            data = socket.create_connection(('127.0.0.1', {echo}), timeout=5).recv(2)\n"
        "        except OSError as exc:\n"
        "            data = repr(exc).encode()\n"
        f"        open('{work}/got-%d' % n, 'wb').write(data)\n"
        "        n += 1\n"
        "    time.sleep(0.02)\n"
    )
    tag = f"shared-restart-{os.getpid()}"
    limits = Limits(memory=512 << 20)
    runner = ProcessRunner()
    handle = runner.spawn(
        [sys.executable, "-c", worker],
        cwd=work,
        env={"PATH": os.environ["PATH"]},
        log_path=tmp_path / "log",
        tag=tag,
        sandbox=spec,
        limits=limits,
    )
    adopted = None
    try:
        assert handle.egress is not None and handle.egress.registered is not None  # the shared doors, not its own
        assert handle.egress.folder.name == f"shared-{os.getpid()}"

        def reach(n: int) -> bytes:
            (work / f"go-{n}").write_text("")
            got = work / f"got-{n}"
            deadline = time.monotonic() + 30
            while not got.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.05)
            return got.read_bytes()

        assert reach(0) == b"hi"
        proxy.shared().stop()  # the server is gone: every door with it
        assert reach(1) != b"hi"
        egress._SHARED = egress._Shared()  # the next server: nothing registered, no door open
        adopted = ProcessRunner().adopt(
            handle.pid, process_start_id(handle.pid), tag=tag, started_at=time.time(), exit_file=None, limits=limits
        )
        assert adopted.egress is not None and adopted.egress.folder == handle.egress.folder
        assert reach(2) == b"hi"
    finally:
        runner.terminate(handle, grace=1)
        runner.release(handle)
        if adopted is not None:
            adopted.poll()
            ProcessRunner().release(adopted)


@needs_cgroup
def test_a_worker_cannot_replace_or_add_a_door_in_the_shared_folder(tmp_path: Path, echo: int) -> None:
    """The shared folder is every attempt's way out: a worker that could put its own socket at
    ``proxy.sock`` (or at an endpoint's) would be the proxy of every sandbox started after it, and
    read their API keys. It is bound read-only: unlinking, renaming, binding over and adding fail
    inside, and the doors outside are the server's, as they were."""
    from orchestrator.process.runner import ProcessRunner

    spec, work = _bubblewrap_reaching(echo, tmp_path)
    attack = (
        "import json, os, socket\n"
        f"inside = {egress.INSIDE!r}\n"
        "doors = sorted(n for n in os.listdir(inside) if n.endswith('.sock'))\n"
        "tried = {}\n"
        "def attempt(name, call):\n"
        "    try:\n"
        "        call()\n"
        "        tried[name] = 'done'\n"
        "    except OSError as exc:\n"
        "        tried[name] = exc.strerror\n"
        "for door in doors:\n"
        "    path = os.path.join(inside, door)\n"
        "    attempt('unlink ' + door, lambda: os.unlink(path))\n"
        "    attempt('rename ' + door, lambda: os.rename(path, path + '.old'))\n"
        "    attempt('bind over ' + door, lambda: socket.socket(socket.AF_UNIX).bind(path))\n"
        "attempt('add a door', lambda: socket.socket(socket.AF_UNIX).bind(os.path.join(inside, 'evil.sock')))\n"
        "attempt('add a file', lambda: open(os.path.join(inside, 'evil'), 'w').close())\n"
        f"open('{work}/tried.json', 'w').write(json.dumps({{'doors': doors, 'tried': tried}}))\n"
    )
    tag = f"shared-plant-{os.getpid()}"
    runner = ProcessRunner()
    handle = runner.spawn(
        [sys.executable, "-c", attack],
        cwd=work,
        env={"PATH": os.environ["PATH"]},
        log_path=tmp_path / "log",
        tag=tag,
        sandbox=spec,
        limits=Limits(memory=512 << 20),
    )
    try:
        assert handle.egress is not None and handle.egress.registered is not None  # the shared doors
        folder = handle.egress.folder
        before = {p.name: os.lstat(p).st_ino for p in folder.iterdir()}
        deadline = time.monotonic() + 30
        while handle.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        import json

        found = json.loads((work / "tried.json").read_text())
        assert "proxy.sock" in found["doors"] and f"127.0.0.1-{echo}.sock" in found["doors"]
        done = {name: why for name, why in found["tried"].items() if why == "done"}
        assert not done, f"a sandboxed worker changed the shared doors: {sorted(done)}"
        assert {p.name: os.lstat(p).st_ino for p in folder.iterdir()} == before
    finally:
        runner.terminate(handle, grace=1)
        runner.release(handle)


def test_a_shared_folder_of_an_ended_process_goes_unless_a_running_attempt_binds_it(short_tmp: Path) -> None:
    """Made once per process, a shared folder outlives its server (a successor may adopt its
    attempts): the next process to make its own removes those of ended processes that no attempt's
    plan file names, and keeps the one an attempt still runs with, and those of live processes."""
    dead = [subprocess.Popen(["true"]) for _ in range(2)]
    for child in dead:
        child.wait()
    base = egress.sockets_base()
    gone, bound, live = (base / f"shared-{dead[0].pid}", base / f"shared-{dead[1].pid}", base / f"shared-{os.getppid()}")
    for folder in (gone, bound, live):
        folder.mkdir(mode=0o700)
        (folder / "proxy.sock").write_text("")  # (a dead socket's file)
    (base / "0123456789abcdef.json").write_text(f'{{"shared": "{bound}"}}')
    mine = egress._SHARED._folder()
    assert mine == base / f"shared-{os.getpid()}" and mine.is_dir()
    assert not gone.exists() and bound.is_dir() and live.is_dir()


# A server of its own (a real other process): registers X and Y on its shared doors, ends Y, and exits.
OTHER_SERVER = """
import json, sys, tempfile
from orchestrator.network import egress
from orchestrator.network.egress import EgressPlan, open_egress
tempfile.gettempdir = lambda: sys.argv[1]
plan = EgressPlan(allow=("example.com", "127.0.0.1:4873"), record=sys.argv[1] + "/X.network")
x = open_egress(plan, key="X", log_path=None, cgroups={"memory": "/orchestrator-test/X", "pids": "/orchestrator-test/X"})
y = open_egress(EgressPlan(), key="Y", log_path=None, cgroups={"memory": "/orchestrator-test/Y"})
y.close()
print(json.dumps({"folder": str(x.folder), "env": x.env, "bridge": x.bridge, "ports": x.ports}))
"""


def test_a_restarted_server_registers_again_what_its_predecessors_registrations_file_holds(short_tmp: Path) -> None:
    """A server (a real process) registers X and Y and ends Y, then exits: the next server finds X in
    its registrations file and registers it again as it was (the same shared folder, environment,
    bridge, ports, plan and cgroups), finds no Y, and the file goes once X has moved to its own; a
    third server finds X in the second's file (a restart of a restart). The ended server's shared
    folder is kept while X runs there, and goes when X has ended and nothing names it."""
    out = subprocess.run(
        [sys.executable, "-c", OTHER_SERVER, str(short_tmp)], capture_output=True, text=True, timeout=60, check=True
    )
    first = json.loads(out.stdout)
    base = egress.sockets_base()
    (old_file,) = base.glob("registrations-*.jsonl")
    assert sorted(egress._replay(old_file)) == ["X"]  # Y's end is in the file too

    again = egress.reopen_egress("Y")
    assert again is None  # ended: nothing to listen for
    x = egress.reopen_egress("X")
    assert x is not None and x.registered is not None
    assert (str(x.folder), x.env, x.bridge, x.ports) == (first["folder"], first["env"], first["bridge"], first["ports"])
    assert x.registered.cgroups == {"memory": "/orchestrator-test/X", "pids": "/orchestrator-test/X"}
    assert x.registered.doors[None].policy.check_name("example.com", 443).allowed
    assert not old_file.exists()  # its server ended, and it holds nothing live: gone
    mine = egress._SHARED._journal
    assert mine is not None and sorted(egress._replay(mine.path)) == ["X"]
    assert egress._replay(mine.path)["X"]["plan"]["record"] == f"{short_tmp}/X.network"

    # The folder the first server's X runs with is kept by the next server's sweep, while X is live.
    server_folder = Path(first["folder"])
    egress._SHARED = egress._Shared()  # a third server in this process (the second's file still held)
    egress._SHARED._folder()
    assert server_folder.is_dir()
    x3 = egress.reopen_egress("X")
    assert x3 is not None and str(x3.folder) == first["folder"]
    assert mine.path.exists()  # its server (the second) still holds it: kept though nothing is live in it
    assert egress._replay(mine.path) == {}
    x3.close()
    assert egress.reopen_egress("X") is None
    mine._close()  # the second server ends
    egress._SHARED = egress._Shared()
    egress._SHARED._folder()  # its sweep: the second's file holds nothing and is not held; the folder is named by none
    assert not mine.path.exists() and not server_folder.exists()


def test_an_attempt_that_ended_while_no_server_ran_is_forgotten(short_tmp: Path) -> None:
    """Adopted as ended (runner.adopt), an attempt's registration ends in its server's file, which
    goes with the last of them: nothing of an ended server is kept for an attempt that has ended."""
    from orchestrator.process.runner import ProcessRunner

    server = subprocess.run([sys.executable, "-c", OTHER_SERVER, str(short_tmp)], capture_output=True, timeout=60, check=True)
    (old_file,) = egress.sockets_base().glob("registrations-*.jsonl")
    ended = subprocess.Popen(["true"])  # X's process, ended (its pid not reused: reaped just now)
    ended.wait()
    handle = ProcessRunner().adopt(ended.pid, None, tag="X", started_at=time.time(), exit_file=None)
    assert handle.egress is None and server.returncode == 0
    assert not old_file.exists()
    assert egress.reopen_egress("X") is None


# A server of its own (a real other process): registers X with the cgroups argv[2] names, and ends.
REGISTERING = """
import json, sys, tempfile
from orchestrator.network import egress
from orchestrator.network.egress import EgressPlan, open_egress
tempfile.gettempdir = lambda: sys.argv[1]
x = open_egress(EgressPlan(), key="X", log_path=None, cgroups=json.loads(sys.argv[2]))
print(json.dumps({"folder": str(x.folder), "file": str(egress._SHARED._journal.path)}))
"""


@needs_cgroup
def test_a_dead_servers_registration_is_kept_while_its_attempt_runs_and_ended_once_its_cgroup_is_empty(
    short_tmp: Path, cgroups: dict[str, Cgroup]
) -> None:
    """A server registers an attempt whose process runs in its cgroup, and dies. Servers that start
    (none of them adopting it) keep its line and its shared folder while a process runs in the
    attempt's cgroup, whatever pid its server had; once none does (the kernel's word), the next one
    ends the line and removes the dead server's file and folder."""
    paths = hierarchies().proc_paths(cgroups["A"])
    setup = ChildSetup(cgroups["A"].join_fds(), 0)
    try:
        attempt = subprocess.Popen(["sleep", "60"], preexec_fn=setup)
    finally:
        for fd in setup.fds:
            os.close(fd)
    try:
        out = subprocess.run(
            [sys.executable, "-c", REGISTERING, str(short_tmp), json.dumps(paths)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        made = json.loads(out.stdout)
        dead_file, folder = Path(made["file"]), Path(made["folder"])
        for _ in range(2):
            egress._SHARED = egress._Shared()  # a server that starts: its sweep at its first registration
            egress._SHARED._folder()
            assert "X" in egress._replay(dead_file) and folder.is_dir()
    finally:
        attempt.kill()
        attempt.wait()
    wait_until(lambda: cgroups["A"].members() == [], timeout=5)
    egress._SHARED = egress._Shared()
    egress._SHARED._folder()
    assert not dead_file.exists() and not folder.exists()
    assert egress.reopen_egress("X") is None


def test_a_shared_folder_goes_with_its_servers_flock_whatever_process_has_its_pid_now(short_tmp: Path) -> None:
    """A server's registrations file (held by its flock while it runs) is made before its shared
    folder: a folder whose server's files are none of them held is a dead server's, though its pid
    runs (another process has it now), and goes; one whose server holds its file stays."""
    base = egress.sockets_base()
    reused, running = os.getppid(), os.getpid() + 1_000_000  # (no process has the second: only its file says it runs)
    (base / f"registrations-{reused}-00000000.jsonl").write_text("")  # not held: its server has ended
    holder = egress._held_file(base / f"registrations-{running}-00000000.jsonl")
    try:
        for pid in (reused, running):
            (base / f"shared-{pid}").mkdir(mode=0o700)
        egress._SHARED._folder()
        assert not (base / f"shared-{reused}").exists()
        assert (base / f"shared-{running}").is_dir()
    finally:
        os.close(holder)


def test_the_registrations_file_is_compacted_and_still_replays(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Grown past its bound with mostly ended registrations, the file is rewritten with the live ones
    alone: shorter, and a restarted server still registers every live one again, and none ended."""
    monkeypatch.setattr(egress, "_COMPACT_AT", 4096)
    opened = {}
    for n in range(60):
        opened[n] = open_egress(EgressPlan(), key=f"k{n}", log_path=None, cgroups={"memory": f"/orchestrator-test/{n}"})
        if n % 3:
            opened.pop(n).close()
    journal = egress._SHARED._journal
    assert journal is not None
    lines = journal.path.read_bytes().splitlines()
    assert len(lines) < 60 + 40  # compacted (each registration and each end a line until then)
    assert len(journal.path.read_bytes()) < 4096 * 2
    assert sorted(egress._replay(journal.path)) == sorted(f"k{n}" for n in opened)
    journal._close()  # the server ends
    egress._SHARED = egress._Shared()
    for n in range(60):
        found = egress.reopen_egress(f"k{n}")
        assert (found is not None) == (n in opened), n
        if found is not None:
            assert found.registered is not None and found.registered.cgroups == {"memory": f"/orchestrator-test/{n}"}


def test_every_attempt_of_one_plan_is_told_of_an_endpoint_it_cannot_be_shown(tmp_path: Path) -> None:
    """What the shared doors keep once per plan (the bridge, the policy, the carried endpoints) is not
    an attempt's to miss: each attempt of the same plan gets the log's note of an endpoint below port
    1024 (left to the proxy), its own log; and the same bridge and ports as the first."""
    plan = EgressPlan(always=(Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 8000)))
    opened = []
    for n in range(3):
        log = tmp_path / f"{n}.log"
        log.write_text("")
        opened.append(open_egress(plan, key=f"low-{n}", log_path=log, cgroups={"memory": f"/orchestrator-test/low-{n}"}))
    try:
        for n, one in enumerate(opened):
            assert one.registered is not None and [line.split("=")[0] for line in one.bridge.split()] == [
                "127.0.0.1:3128",
                "127.0.0.1:8000",
            ]
            assert one.ports == [3128, 80, 8000] and sorted(map(str, one.registered.doors)) == sorted(
                ["None", str(Endpoint("127.0.0.1", 8000))]
            )
            assert (tmp_path / f"{n}.log").read_text().count("127.0.0.1:80 is not shown in the sandbox") == 1
    finally:
        for one in opened:
            one.close()


def test_a_sweep_before_a_fork_stands_for_the_first_registrations_not_for_a_later_one(short_tmp: Path) -> None:
    """``sweep_dead(for_forks=True)`` (a node, before it forks its workers) clears what an ended server
    left, and stands for the sweep at this process's first registration (a forked worker's copy of
    it): what another server leaves after it stays until a later sweep, one when the process's
    shared folder must be made again (a cleaner of /tmp removed it), which clears it."""

    def dead_server() -> tuple[Path, Path]:
        gone = subprocess.Popen(["true"])
        gone.wait()
        base = egress.sockets_base()
        left = (base / f"registrations-{gone.pid}-00000000.jsonl", base / f"shared-{gone.pid}")
        left[0].write_text("")  # not held: its server has ended; nothing live in it
        left[1].mkdir(mode=0o700)
        return left

    first = dead_server()
    egress.sweep_dead(holds_processes, for_forks=True)
    assert not any(path.exists() for path in first)
    second = dead_server()
    mine = egress._SHARED._folder()  # the first registration: no sweep of its own
    assert all(path.exists() for path in second)
    shutil.rmtree(mine)
    assert egress._SHARED._folder() == mine and mine.is_dir()  # made again, after a sweep
    assert not any(path.exists() for path in second)
