"""The workers' supervisor (process/supervisor.py, process/supervisor.py), with real processes: it
starts each worker with no shim, records each status exactly, outlives the server that asked and is
adopted by the next one, and leaves once nobody needs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.process import procscan, supervisor
from orchestrator.process.cgroups import Limits
from orchestrator.process.runner import ProcessRunner
from orchestrator.process.shim import Deadline, ExitStatus, read_exit, read_exit_file
from orchestrator.process.supervisor import SupervisorClient, SupervisorError

from .conftest import DEADLINE_SCRIPTS, started_members, wait_until, warm_supervisor

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not supervisor.supported(), reason="the supervisor needs Linux pidfds"),
]


def _runner(folder: Path) -> ProcessRunner:
    return ProcessRunner(supervisor=SupervisorClient(folder))


def _spawn(runner: ProcessRunner, tmp_path: Path, code: str, tag: str, attempt: int = 1, limits: Limits | None = None):
    exit_file = tmp_path / f"exit.{tag}"
    handle = runner.spawn(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "ORCHESTRATOR_ATTEMPT": str(attempt)},
        log_path=tmp_path / f"{tag}.log",
        tag=tag,
        exit_file=exit_file,
        limits=limits,
    )
    return handle, exit_file


def _supervisor_gone(folder: Path, pid: int) -> bool:
    return not procscan.process_alive(pid, None) and not any(p.name.endswith(".sock") for p in folder.iterdir())


@pytest.mark.parametrize(
    ("code", "status", "line"),
    [
        ("import sys; sys.exit(3)", 3, "exit 3\n"),
        ("import sys; sys.exit(147)", 147, "exit 147\n"),  # an exit code above 128 is not a signal
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", -signal.SIGSEGV, f"signal {signal.SIGSEGV.value}\n"),
    ],
)
def test_the_supervisor_records_each_status_exactly(tmp_path, code, status, line):
    runner = _runner(tmp_path / "sup")
    try:
        handle, exit_file = _spawn(runner, tmp_path, code, "s1.k.1")
        assert runner.wait(handle, 20) == status
        assert exit_file.read_text() == line and read_exit_file(exit_file) == status
    finally:
        runner.close()


def test_a_worker_ended_before_its_supervisor_writes_its_status_is_waited_for_without_polling(tmp_path, monkeypatch):
    import threading

    from orchestrator.process import runner as runner_module

    # Given a supervised worker that exits while its supervisor is stopped (it cannot write the
    # status nor reap it: the worker stays a zombie, its end unknown), each look at it counted
    runner = _runner(tmp_path / "sup")
    looks = []
    poll = runner_module.ProcessHandle.poll
    monkeypatch.setattr(runner_module.ProcessHandle, "poll", lambda self: looks.append(1) or poll(self))
    handle, exit_file = _spawn(runner, tmp_path, "import sys, time; time.sleep(0.3); sys.exit(5)", "s20.k.1")
    os.kill(handle.reaper, signal.SIGSTOP)
    try:
        got = []
        waiter = threading.Thread(target=lambda: got.append(runner.wait(handle, 30)))
        waiter.start()
        assert wait_until(lambda: procscan.zombie_of(handle.pid, handle.start_id) == handle.reaper, timeout=10)
        time.sleep(1.0)
        # When a second passes with the worker ended and its status not written
        seen = len(looks)
    finally:
        os.kill(handle.reaper, signal.SIGCONT)
    waiter.join(30)
    # Then the wait looked at it once per REAP_SLICE (0.1 s), not every half millisecond (about 2,000 looks), and once
    # the supervisor wrote the status and reaped it the wait returned that status
    if runner_module.reaping_wakes_pidfd():
        assert seen <= 25, seen
    assert got == [5] and exit_file.read_text() == "exit 5\n"
    runner.close()


def test_a_wait_on_a_running_worker_looks_at_its_proc_stat_only_once_its_pidfd_says_it_ended(tmp_path, monkeypatch):
    # Given a supervised worker that runs a second, each look at a process's /proc stat counted
    runner = _runner(tmp_path / "sup")
    looks: list[int] = []
    look = procscan.look
    monkeypatch.setattr(procscan, "look", lambda pid: looks.append(pid) or look(pid))
    try:
        handle, exit_file = _spawn(runner, tmp_path, "import time; time.sleep(1.0)", "s21.k.1")
        assert handle.pidfd is not None
        looks.clear()  # (its start looked once, to open its pidfd)
        # When it is waited on while it runs: for a moment, then not at all (a timeout of 0)
        first, second = runner.wait(handle, 0.2), runner.wait(handle, 0)
        # Then both say it runs, and neither looked at it: its pidfd, not readable, said so
        assert (first, second, looks) == (None, None, [])
        # And waited on to its end, it is told exactly (its status is its exit file's); looked at only
        # where the kernel does not say when its supervisor reaped it (then nothing is left to look at)
        assert runner.wait(handle, 20) == 0 and exit_file.read_text() == "exit 0\n"
        assert looks == [] if handle.reaped else handle.pid in looks
    finally:
        runner.close()


def test_whether_a_running_worker_has_exited_is_told_by_its_pidfd_without_a_look_at_its_proc_stat(tmp_path, monkeypatch):
    # Given a supervised worker that runs until it is told to end, each look at a process's /proc stat counted
    runner = _runner(tmp_path / "sup")
    looks: list[int] = []
    look = procscan.look
    monkeypatch.setattr(procscan, "look", lambda pid: looks.append(pid) or look(pid))
    stop = tmp_path / "stop"
    try:
        code = f"import os, time\nwhile not os.path.exists({str(stop)!r}): time.sleep(0.01)"
        handle, _ = _spawn(runner, tmp_path, code, "s22.k.1")
        assert handle.pidfd is not None
        looks.clear()
        # When the monitor asks (from its thread) whether it has exited, many times while it runs
        assert not any(handle.exited for _ in range(50))
        # Then its pidfd answered, and nothing looked at /proc
        assert looks == []
        # And once it has ended it is told so, with its status, before its handle is released and after
        stop.touch()
        wait_until(lambda: handle.exited, what="the worker's end told")
        assert handle.code == 0
        runner.release(handle)
        assert handle.pidfd is None and handle.exited
    finally:
        runner.close()


def test_a_running_supervised_worker_s_end_is_one_wait_for_its_reaping(tmp_path, monkeypatch):
    from orchestrator.process import runner as runner_module

    if not runner_module.reaping_wakes_pidfd():
        pytest.skip("this kernel raises no POLLHUP on a pidfd when its process is reaped")
    # Given a supervised worker that runs a moment, each wait of the runner's for a descriptor counted
    # (a select: for its exit; a poll for no event: for its reaping) and each look at a /proc stat
    runner = _runner(tmp_path / "sup")
    waits: list[str] = []
    looks: list[int] = []
    select_, reaped = runner_module.select.select, runner_module._wait_reaped
    monkeypatch.setattr(runner_module.select, "select", lambda *a: waits.append("select") or select_(*a))
    monkeypatch.setattr(runner_module, "_wait_reaped", lambda *a: waits.append("reaped") or reaped(*a))
    look = procscan.look
    monkeypatch.setattr(procscan, "look", lambda pid: looks.append(pid) or look(pid))
    try:
        handle, exit_file = _spawn(runner, tmp_path, "import sys, time; time.sleep(0.5); sys.exit(7)", "s22.k.1")
        waits.clear()
        looks.clear()
        # When it is waited on to its end
        assert runner.wait(handle, 20) == 7 and exit_file.read_text() == "exit 7\n"
        # Then one wait took it from running to reaped (none woke at its exit to wait again for its reaping),
        # and nothing looked at its /proc stat: reaped, it has none, and its exit file said how it ended
        assert (waits, looks, handle.reaped) == (["reaped"], [], True)
    finally:
        runner.close()


def test_a_message_and_its_descriptors_go_in_one_send_and_come_in_one_read(monkeypatch):
    import socket

    # Given a connection, a descriptor to pass (a pipe's end) and every send or read past the first counted
    ours, theirs = socket.socketpair()
    readable, writable = os.pipe()
    extra: list[str] = []
    for name in ("sendall", "recv"):
        method = getattr(socket.socket, name)
        monkeypatch.setattr(socket.socket, name, lambda self, *a, _n=name, _m=method: extra.append(_n) or _m(self, *a))
    try:
        # When a request as large as a worker's (its environment a few KB) is sent with it, and read
        request = {"op": "spawn", "env": {"KEY": "v" * 4000}}
        supervisor.send(ours, request, [writable])
        message, fds = supervisor.receive(theirs)
        # Then it came whole with the descriptor, in one system call each way
        assert (message, len(fds), extra) == (request, 1, [])
        os.write(fds[0], b"x")
        assert os.read(readable, 1) == b"x"
        os.close(fds[0])
        # And one longer than the first read takes (FIRST_READ) comes whole all the same, read on after it
        large = {"op": "spawn", "env": {"KEY": "v" * (3 * supervisor.FIRST_READ)}}
        supervisor.send(ours, large)
        assert supervisor.receive(theirs) == (large, [])
    finally:
        for fd in (readable, writable):
            os.close(fd)
        ours.close()
        theirs.close()


def test_an_ended_worker_whose_supervisor_died_is_told_though_nobody_ever_reaps_it(tmp_path):
    import ctypes
    import threading

    # Given this process a subreaper (as a server that is a container's pid 1 is), so a supervisor it
    # starts is its child and an orphaned worker comes to it, which never reaps it
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    child_subreaper = 36  # PR_SET_CHILD_SUBREAPER
    assert prctl(child_subreaper, 1, 0, 0, 0) == 0
    runner = _runner(tmp_path / "sup-orphan")
    try:
        handle, exit_file = _spawn(runner, tmp_path, "import time; time.sleep(0.3)", "s21.k.1")
        # When the worker ends while its supervisor is stopped, is waited for (with no timeout), and
        # the supervisor is then killed
        os.kill(handle.reaper, signal.SIGSTOP)
        assert wait_until(lambda: procscan.zombie_of(handle.pid, handle.start_id) == handle.reaper, timeout=10)
        got = []
        waiter = threading.Thread(target=lambda: got.append(runner.wait(handle, None)), daemon=True)
        waiter.start()
        time.sleep(0.3)
        os.kill(handle.reaper, signal.SIGKILL)
        assert wait_until(lambda: procscan.zombie_of(handle.pid, handle.start_id) == os.getpid(), timeout=10)
        waiter.join(10)
        # Then a wait with no timeout still returns: no status was written, so it reads as killed
        assert got == [-signal.SIGKILL] and exit_file.read_text().strip() == ""
    finally:
        prctl(child_subreaper, 0, 0, 0, 0)
        for pid in (handle.pid, handle.reaper):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        runner.close()


def test_a_worker_gets_the_servers_umask_and_limits_not_the_supervisors_own(tmp_path):
    runner = _runner(tmp_path / "sup")
    old = os.umask(0o027)  # the server's, when it started the supervisor
    try:
        code = "import os, resource; print(oct(os.umask(0)), resource.getrlimit(resource.RLIMIT_NOFILE), flush=True)"
        handle, _ = _spawn(runner, tmp_path, code, "s10.k.1")
        assert runner.wait(handle, 20) == 0
    finally:
        os.umask(old)
        runner.close()
    import resource

    assert (tmp_path / "s10.k.1.log").read_text() == f"0o27 {resource.getrlimit(resource.RLIMIT_NOFILE)}\n"


def test_a_worker_is_the_supervisors_child_in_a_session_of_its_own_with_no_shim(tmp_path):
    runner = _runner(tmp_path / "sup")
    try:
        handle, _ = _spawn(runner, tmp_path, "import time; print('up', flush=True); time.sleep(30)", "s2.k.1")
        wait_until(lambda: "up" in (tmp_path / "s2.k.1.log").read_text())
        assert handle.supervised and handle.reaper is not None
        assert procscan.parent_of(handle.pid) == handle.reaper  # not the server's child, and no shim between
        cmdline = Path(f"/proc/{handle.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0] == sys.executable.encode()  # the pid is the worker itself
        assert os.getsid(handle.pid) == handle.pid and os.getpgid(handle.pid) == handle.pid
        assert handle.shim_pid is None  # the monitor counts the worker itself against its caps
        assert runner.terminate(handle, grace=5) == "SIGTERM"
        assert handle.returncode == -signal.SIGTERM
    finally:
        runner.close()


def test_an_orphan_of_a_workers_tree_is_the_supervisors_to_reap_not_the_machines_init(tmp_path):
    # Given a worker whose child leaves it behind (as a sandbox's launcher leaves its init): the worker
    # prints its grandchild's pid and exits, the grandchild lives on 3 s more (room for a busy machine's look)
    code = "import os, subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3)'])\nprint('orphan', p.pid, flush=True)"
    runner = _runner(tmp_path / "sup")
    try:
        handle, _ = _spawn(runner, tmp_path, code, "s9.k.1")
        assert runner.wait(handle, 20) == 0
        orphan = int((tmp_path / "s9.k.1.log").read_text().split("orphan ")[1].split()[0])
        # Then while it lives, its parent is the worker's supervisor (a subreaper), not the machine's init
        assert procscan.parent_of(orphan) == handle.reaper
        # And once it exits, the supervisor reaps it at once: no zombie waits for an init that reaps late
        assert wait_until(lambda: not Path(f"/proc/{orphan}").exists(), timeout=15)
    finally:
        runner.close()


@pytest.mark.parametrize(("script", "status"), DEADLINE_SCRIPTS)
def test_a_worker_past_its_deadline_after_its_server_let_go_is_stopped_by_the_supervisor(tmp_path, script, status):
    """The server's connection is closed right after the spawn (as a killed server's is), and no
    timeout handling of a runner ever runs: the supervisor keeps the deadline the spawn carried, ends
    the worker's whole process group, and its exit file says who stopped it."""
    runner = _runner(tmp_path / "sup")
    tag = f"s-deadline-{os.getpid()}-{abs(status)}"
    warm_supervisor(runner, tmp_path, tag + "-first")
    began = time.time()
    try:
        handle = runner.spawn(
            ["sh", "-c", script],
            cwd=tmp_path,
            env=dict(os.environ),
            log_path=tmp_path / "w.log",
            tag=tag,
            exit_file=tmp_path / "exit",
            deadline=Deadline(began + 2, grace=1),
        )
    finally:
        runner.close()
    try:
        assert handle.supervised and handle.reaper is not None
        # (the worker says who it is: under load its deadline may end it before a look could find it)
        members = started_members(tmp_path, tmp_path / "exit")
        wait_until(lambda: runner.tagged(tag) == [], timeout=20, what="the worker's process group ended")
        assert time.time() - began >= 2  # never before its deadline
        # (a killed process's environment reads empty from when its memory is released until it is a
        # zombie, so its tag can vanish a moment before it does: each must end, not at the same instant)
        wait_until(
            lambda: not any(procscan.process_alive(pid, start) for pid, start in members.items() if start),
            timeout=10,
            what="each member ended",
        )
        assert not procscan.group_alive(handle.pid)  # (an orphan's zombie waits for init, which may be slow to reap)
        assert read_exit(tmp_path / "exit") == ExitStatus(status, "its workspace's supervisor")
        assert handle.poll() == status and handle.deadline_stop == "its workspace's supervisor"
    finally:
        runner.terminate(handle, grace=0.5)  # (a no-op once it has ended: nothing left behind if it did not)


def test_a_command_that_cannot_run_is_the_error_popen_would_raise(tmp_path):
    runner = _runner(tmp_path / "sup")
    script = tmp_path / "script"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    log = tmp_path / "log"
    try:
        with pytest.raises(FileNotFoundError):
            runner.spawn([str(script)], cwd=tmp_path, env={}, log_path=log, tag="s3.k.1", exit_file=tmp_path / "e")
        with pytest.raises(FileNotFoundError, match="gone"):
            runner.spawn(
                ["true"], cwd=tmp_path / "gone", env={"PATH": os.defpath}, log_path=log, tag="s3.k.2", exit_file=tmp_path / "e2"
            )
        handle, _ = _spawn(runner, tmp_path, "pass", "s3.k.3")  # the supervisor serves on
        assert runner.wait(handle, 20) == 0
    finally:
        runner.close()


SERVER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from orchestrator.process.runner import ProcessRunner
    from orchestrator.process.supervisor import SupervisorClient
    tmp = Path(sys.argv[2])
    runner = ProcessRunner(supervisor=SupervisorClient(tmp / "sup"))
    handle = runner.spawn(
        [sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1])); sys.exit(7)", sys.argv[3]],
        cwd=tmp, env={"ORCHESTRATOR_ATTEMPT": "2"}, log_path=tmp / "w.log", tag="s4.k.1", exit_file=tmp / "exit.1",
    )
    print(handle.pid, handle.start_id, handle.reaper, flush=True)
    os.kill(os.getpid(), 9)  # the server dies without a word
    """
)


def test_the_supervisor_outlives_a_killed_server_and_the_next_one_adopts_its_worker(tmp_path):
    package = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", SERVER, package, str(tmp_path), "1.5"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    pid_text, start_id, reaper_text = done.stdout.split()
    pid, reaper = int(pid_text), int(reaper_text)
    assert procscan.process_alive(pid, start_id) and procscan.parent_of(pid) == reaper

    runner = _runner(tmp_path / "sup")  # the restarted server
    try:
        found = runner.find("s4.")
        assert [(f.pid, f.tag, f.start_id, f.exit_file, f.attempt) for f in found] == [
            (pid, "s4.k.1", start_id, tmp_path / "exit.1", 2)
        ]
        handle = runner.adopt(pid, start_id, tag="s4.k.1", started_at=time.time() - 1, exit_file=tmp_path / "exit.1")
        assert handle.supervised and handle.reaper == reaper
        assert runner.wait(handle, 30) == 7  # its true status, though the server that started it is gone
    finally:
        runner.close()
    wait_until(lambda: _supervisor_gone(tmp_path / "sup", reaper), timeout=15)


def test_with_no_server_the_supervisor_writes_the_status_and_leaves(tmp_path):
    package = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", SERVER, package, str(tmp_path), "0.5"], capture_output=True, text=True, timeout=60
    )
    pid_text, start_id, reaper_text = done.stdout.split()
    wait_until(lambda: _supervisor_gone(tmp_path / "sup", int(reaper_text)), timeout=15)
    assert read_exit_file(tmp_path / "exit.1") == 7
    assert not procscan.process_alive(int(pid_text), start_id)


def test_a_supervisor_nobody_needs_leaves_and_the_next_spawn_starts_another(tmp_path):
    folder = tmp_path / "sup"
    runner = _runner(folder)
    handle, _ = _spawn(runner, tmp_path, "pass", "s5.k.1")
    assert runner.wait(handle, 20) == 0
    first = handle.reaper
    assert first is not None and procscan.process_alive(first, None)
    runner.close()
    wait_until(lambda: _supervisor_gone(folder, first), timeout=15)
    handle, _ = _spawn(runner, tmp_path, "pass", "s5.k.2")
    try:
        assert runner.wait(handle, 20) == 0 and handle.reaper not in (None, first)
    finally:
        runner.close()


def test_each_file_size_limit_has_its_own_supervisor_and_a_worker_is_held_by_its_limit(tmp_path):
    runner = _runner(tmp_path / "sup")
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_FSIZE), flush=True)"
    try:
        small, _ = _spawn(runner, tmp_path, code, "s6.k.1", limits=Limits(log=3 << 20, disk=5 << 20))
        none, _ = _spawn(runner, tmp_path, code, "s6.k.2", limits=Limits())
        assert runner.wait(small, 20) == 0 and runner.wait(none, 20) == 0
        assert (tmp_path / "s6.k.1.log").read_text() == f"({5 << 20}, {5 << 20})\n"  # soft and hard: it cannot raise it
        limit = resource_unlimited()
        assert (tmp_path / "s6.k.2.log").read_text() == f"({limit}, {limit})\n"
        assert small.reaper != none.reaper
        assert sorted(p.name for p in (tmp_path / "sup").iterdir() if p.name.endswith(".sock")) == [
            "supervisor-0.sock",
            f"supervisor-{5 << 20}.sock",
        ]
    finally:
        runner.close()
        for tag in ("s6.k.1", "s6.k.2"):
            runner.sweep(tag)  # their cgroups go too


def resource_unlimited() -> int:
    import resource

    return resource.RLIM_INFINITY


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups for workers: root on this machine")
def test_a_worker_is_born_in_its_cgroup_and_the_supervisor_steps_back_out(tmp_path):
    runner = _runner(tmp_path / "sup")
    try:
        handle, _ = _spawn(
            runner,
            tmp_path,
            "print(open('/proc/self/cgroup').read(), flush=True)",
            "s7.k.1",
            limits=Limits(memory=256 << 20, processes=20),
        )
        if handle.cgroup is None:
            pytest.skip("no writable memory or pids cgroup here")
        assert runner.wait(handle, 20) == 0
        said = (tmp_path / "s7.k.1.log").read_text()
        assert all(str(d).rsplit("/", 1)[1] in said for d in handle.cgroup.dirs.values())
        assert handle.reaper is not None
        supervisor_cgroups = Path(f"/proc/{handle.reaper}/cgroup").read_text()
        assert handle.cgroup.name not in supervisor_cgroups  # back where it was
        assert supervisor_cgroups == Path("/proc/self/cgroup").read_text()  # the server's, which it inherited
    finally:
        runner.close()
        runner.sweep("s7.k.1")


def test_the_supervisor_folder_must_be_the_users_alone(tmp_path):
    folder = tmp_path / "sup"
    runner = _runner(folder)
    assert (folder.stat().st_mode & 0o777) == 0o700
    folder.chmod(0o755)
    with pytest.raises(SupervisorError, match="chmod 700"):
        _spawn(runner, tmp_path, "pass", "s8.k.1")
    assert not any(p.name.endswith(".sock") for p in folder.iterdir())  # nothing was started


def test_an_engines_workers_are_the_supervisors_and_an_offline_delete_sees_one_still_running(make_engine, tmp_path):
    from orchestrator.retention.pruning import delete_offline

    from .conftest import run_job

    # Given an engine (a server's) whose unsandboxed worker reports its parent's command line (in a
    # sandbox, its parent is the shim that tells its true status from inside: bubblewrap's cannot)
    engine = make_engine(
        orchestrator={"worker": "command", "command": ["sh", "-c", "tr '\\0' ' ' </proc/$PPID/cmdline"]},
        workers={"sandbox": "off"},
    )
    done = run_job(engine, tasks=["who started me"])
    assert done.status.value == "completed"
    log = engine.workspace.worker_log(done.id, 0, "worker_1").read_text()
    # Then its parent was the workspace's supervisor: no shim, and not the server itself
    assert "orchestrator.process.supervisor" in log and str(engine.workspace.supervisor_dir) in log
    engine.shutdown(timeout=10)
    # And with no server, a tree with a process of it still running is not deleted (whoever started it)
    runner = _runner(tmp_path / "sup2")
    handle, _ = _spawn(runner, tmp_path, "import time; time.sleep(30)", f"{done.id}.0.worker_1.x")
    try:
        # Its tag is readable once its exec has set its environment (the spawn returns a moment before).
        wait_until(lambda: runner.tagged(f"{done.id}.0.worker_1.x"), timeout=10)
        why = delete_offline(engine.workspace, done.id)
        assert why is not None and f"pid {handle.pid}" in why and "start the server" in why
        assert engine.workspace.job_dir(done.id).is_dir()
    finally:
        runner.terminate(handle, grace=1)
        runner.close()
    assert delete_offline(engine.workspace, done.id) is None and not engine.workspace.job_dir(done.id).exists()


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_sandboxed_worker_cannot_reach_the_supervisor(make_engine, backend):
    from orchestrator.process.backends import probe

    from .conftest import run_job

    support = probe(backend=backend)
    if not support.available:
        pytest.skip(f"no {backend} sandbox on this machine: {support.reason}")
    # Given a sandboxed worker that looks into the supervisor's folder and tries every socket it can name
    probe_code = (
        "import os, socket, sys; d = sys.argv[1]\n"
        "try: print('sees', sorted(os.listdir(d)) if os.path.isdir(d) else 'nothing')\n"
        "except PermissionError: print('sees', 'denied')\n"
        "for size in (0, 5 << 20, 200 << 20, 4096 << 20):\n"
        "    try: s = socket.socket(socket.AF_UNIX); s.connect(os.path.join(d, f'supervisor-{size}.sock')); print('REACHED', size)\n"
        "    except OSError as e: print('refused', e.errno)\n"
    )
    # (its folder is workspace/job_<id>/depth_0/worker_1: the supervisor's is three levels up)
    command = [sys.executable, "-c", probe_code, "../../../.supervisor"]
    engine = make_engine(
        orchestrator={"worker": "command", "command": command}, workers={"sandbox": "on", "sandbox_backend": backend}
    )
    folder = engine.workspace.supervisor_dir
    done = run_job(engine, tasks=["reach the supervisor"])
    log = engine.workspace.worker_log(done.id, 0, "worker_1").read_text()
    # Then the folder is not there or not readable (the workspace shows the worker its own paths only) and no socket
    # answers (none can be made: the sandbox's seccomp filter), though the supervisor runs outside
    assert done.status.value == "completed", log
    # (bubblewrap: shown empty, so not there; Landlock: there, and reading it refused)
    seen = "sees nothing" if backend == "bubblewrap" else "sees denied"
    assert seen in log and "REACHED" not in log and log.count("refused") == 4, log
    assert any(p.name.endswith(".sock") for p in folder.iterdir())


def test_many_threads_start_workers_at_once_and_each_gets_its_own_status(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    runner = _runner(tmp_path / "sup")

    def one(i: int) -> int | None:
        handle, _ = _spawn(runner, tmp_path, f"import sys; sys.exit({i % 200})", f"s9.k.{i}")
        try:
            return runner.wait(handle, 30)
        finally:
            runner.release(handle)

    try:
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(one, range(80)))
        assert codes == [i % 200 for i in range(80)]
        assert len({pid for pool in runner.supervisor._idle.values() for _, pid in pool}) == 1  # one supervisor
    finally:
        runner.close()


def test_a_killed_supervisor_is_replaced_at_the_next_spawn_and_its_orphan_reads_as_killed(tmp_path):
    runner = _runner(tmp_path / "sup")
    try:
        handle, _ = _spawn(runner, tmp_path, "import time; time.sleep(30)", "s11.k.1")
        first = handle.reaper
        assert first is not None
        os.kill(first, signal.SIGKILL)  # someone kills it: its worker's status can no longer be told
        wait_until(lambda: not procscan.process_alive(first, None))
        os.kill(handle.pid, signal.SIGTERM)
        assert runner.wait(handle, 20) == -signal.SIGKILL  # no exit file: said as killed, never as success
        again, _ = _spawn(runner, tmp_path, "import sys; sys.exit(5)", "s11.k.2")  # a new supervisor serves
        assert runner.wait(again, 20) == 5 and again.reaper not in (None, first)
    finally:
        runner.close()


def test_a_spawn_that_fails_leaves_the_supervisor_as_it_was(tmp_path):
    client = SupervisorClient(tmp_path / "sup")
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        ok = client.spawn(
            ["/bin/true"], cwd=tmp_path, env={}, log_fd=log, tag="s12.k.1", exit_file=None, cgroup_fds=[], file_size=0
        )
        supervisor = ok[2]
        if ok.pidfd is not None:
            os.close(ok.pidfd)

        def ignored() -> int:
            line = next(x for x in Path(f"/proc/{supervisor}/status").read_text().splitlines() if x.startswith("SigIgn:"))
            return int(line.split()[1], 16)

        before = ignored()
        with pytest.raises(FileNotFoundError):  # a sandbox launcher's spawn, into a folder that is gone
            client.spawn(
                ["/bin/true"],
                cwd=tmp_path / "gone",
                env={},
                log_fd=log,
                tag="s12.k.2",
                exit_file=None,
                cgroup_fds=[],
                file_size=0,
                ignore=(signal.SIGTERM, signal.SIGUSR1),
            )
        assert ignored() == before and not before & (1 << (signal.SIGTERM - 1))  # it still dies of SIGTERM
        assert os.readlink(f"/proc/{supervisor}/cwd") == "/"
    finally:
        os.close(log)
        client.close()


def test_a_node_attempt_runs_without_a_shim_tied_to_the_spawning_process_by_the_supervisor(tmp_path):
    """A cluster node's unconfined attempt (``parent_death_signal``) is started by the node's
    supervisor with no shim: the worker is the supervisor's child, the supervisor writes its exact
    status, and once the spawning process's lifeline closes it kills the worker's group, says so in
    its log and writes no status (the perl shim's way, without a process per attempt)."""
    runner = _runner(tmp_path / "sup")
    try:
        runs = []
        go = tmp_path / "go"
        first = f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\nsys.exit(3)"
        held_code = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
        for tag, code in (("n1.k.1", first), ("n2.k.1", held_code)):
            exit_file = tmp_path / f"exit.{tag}"
            handle = runner.spawn(
                [sys.executable, "-c", code],
                cwd=tmp_path,
                env=dict(os.environ),
                log_path=tmp_path / f"{tag}.log",
                tag=tag,
                exit_file=exit_file,
                parent_death_signal=signal.SIGKILL,
            )
            assert handle.supervised and handle.shim_pid is None and handle.lifeline is not None and not handle.shimmed
            assert procscan.parent_of(handle.pid) == handle.reaper  # the supervisor's child, the worker itself
            cmdline = Path(f"/proc/{handle.pid}/cmdline")  # (before its exec it is the supervisor's fork)
            wait_until(lambda c=cmdline: b"time.sleep" in c.read_bytes(), timeout=10)
            pipe = f"pipe:[{os.fstat(handle.lifeline).st_ino}]"
            held_by_worker = [os.readlink(f) for f in Path(f"/proc/{handle.pid}/fd").iterdir() if f.exists()]
            assert pipe not in held_by_worker  # the lifeline is the supervisor's alone
            runs.append((handle, exit_file))
        (done, done_file), (held, held_file) = runs
        go.touch()
        assert runner.wait(done, 20) == 3 and done_file.read_text() == "exit 3\n"
        wait_until(lambda: len(runner.tagged("n2.k.1")) == 2, timeout=10)  # the worker and its sleep
        assert runner.wait(held, 0.5) is None
        os.close(held.lifeline)  # as the node's worker process dying closes it
        held.lifeline = None
        assert runner.wait(held, 20) == -signal.SIGKILL and read_exit_file(held_file) is None  # killed with its group, no status
        wait_until(lambda: not runner.tagged("n2.k.1"), timeout=10)  # its sleep went with the group
        assert "the node process that started it is gone: the worker is killed" in (tmp_path / "n2.k.1.log").read_text()
        for handle, _ in runs:
            runner.release(handle)
    finally:
        runner.close()


def test_a_supervisor_refuses_a_tethered_start_whose_spawner_is_gone(tmp_path):
    """The lifeline already closed when the request is read (the node's worker died after sending
    it): nothing starts, and no exit file says it did."""
    client = SupervisorClient(tmp_path / "sup")
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    read, write = os.pipe()
    os.close(write)
    marker, exit_file = tmp_path / "ran", tmp_path / "exit"
    try:
        with pytest.raises(ProcessLookupError, match="is gone: the worker is not started"):
            client.spawn(
                [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"],
                cwd=tmp_path,
                env={},
                log_fd=log,
                tag="s30.k.1",
                exit_file=exit_file,
                cgroup_fds=[],
                file_size=0,
                lifeline=read,
                tether=True,
            )
        time.sleep(0.5)
        assert not marker.exists() and not exit_file.exists()
    finally:
        os.close(read)
        os.close(log)
        client.close()


def _supervisor_patched(monkeypatch, patch: str) -> None:
    """Supervisors started from here on run ``patch`` (Python, with the module as ``_s``) first."""
    from orchestrator.process import interpreter

    def patched(module: str, entry: str, args: list[str]) -> list[str]:
        argv = interpreter.package_argv(module, entry, args)
        launch = argv[3].replace(f"; sys.exit({entry}())", f"; import {module} as _s; {patch}; sys.exit({entry}())")
        assert launch != argv[3]
        return [*argv[:3], launch, *argv[4:]]

    monkeypatch.setattr(supervisor, "package_argv", patched)


@pytest.mark.parametrize("way", ["setpriv", "fork"])
def test_a_tethered_worker_dies_with_its_supervisor(tmp_path, monkeypatch, way):
    """Nothing else watches a held lifeline: a supervisor killed takes its tethered workers with it
    (their parent-death signal, set by setpriv or, where there is none, by the supervisor's fork),
    while an untethered one (a server's) runs on to be adopted."""
    if way == "setpriv" and not supervisor.pdeathsig_exec():
        pytest.skip("no setpriv --pdeathsig here")
    if way == "fork":
        _supervisor_patched(monkeypatch, "_s.pdeathsig_exec = lambda: ()")
    client = SupervisorClient(tmp_path / "sup")
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    read, write = os.pipe()
    started = []
    try:
        for tag, lifeline in (("s31.k.1", read), ("s31.k.2", None)):
            spawned = client.spawn(
                ["/bin/sleep", "300"],
                cwd=tmp_path,
                env={},
                log_fd=log,
                tag=tag,
                exit_file=tmp_path / f"exit.{tag}",
                cgroup_fds=[],
                file_size=0,
                lifeline=lifeline,
                tether=lifeline is not None,
            )
            assert spawned.tethered is (lifeline is not None)
            started.append(spawned)
        tethered, free = started
        os.kill(tethered.supervisor, signal.SIGKILL)
        wait_until(lambda: not procscan.process_alive(tethered.pid, tethered.start_id), timeout=10)
        assert procscan.process_alive(free.pid, free.start_id)
    finally:
        for spawned in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(spawned.pid, signal.SIGKILL)
            if spawned.pidfd is not None:
                os.close(spawned.pidfd)
        os.close(read)
        os.close(write)
        os.close(log)
        client.close()


def test_an_attempt_an_older_supervisor_would_not_tether_is_ended_and_started_otherwise(tmp_path, monkeypatch):
    """A supervisor that predates held lifelines passes the lifeline on to the worker, which ignores
    it: the runner kills that worker before it is anyone's, and says so (the node then starts the
    attempt by a fork of its own, under the shim)."""
    _supervisor_patched(
        monkeypatch,
        "_f = _s.Supervisor._spawn; _s.Supervisor._spawn = lambda self, spec, fds, out: _f(self, {**spec, 'tether': False}, fds, out)",
    )
    runner = _runner(tmp_path / "sup")
    marker = tmp_path / "ran"
    try:
        with pytest.raises(supervisor.SupervisorError, match="predates held lifelines"):
            runner.spawn(
                [sys.executable, "-c", f"import time; time.sleep(0.3); open({str(marker)!r}, 'w').close(); time.sleep(300)"],
                cwd=tmp_path,
                env=dict(os.environ),
                log_path=tmp_path / "log",
                tag="s32.k.1",
                exit_file=tmp_path / "exit",
                parent_death_signal=signal.SIGKILL,
            )
        assert not runner.tagged("s32.k.1") and not (tmp_path / "exit").exists()
        time.sleep(0.5)
        assert not marker.exists()
    finally:
        runner.close()


def _fdinfo_pid(fd: int) -> int:
    line = next(x for x in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines() if x.startswith("Pid:"))
    return int(line.split()[1])


def test_a_spawned_workers_pidfd_comes_with_the_supervisors_reply(tmp_path, monkeypatch):
    """The supervisor opens the worker's pidfd before its loop can reap it and sends it with the reply:
    the server neither opens one nor looks at the worker's /proc stat to rule out a reused pid."""
    from orchestrator.process import runner as runner_module

    client = SupervisorClient(tmp_path / "sup")
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        spawned = client.spawn(
            ["/bin/sleep", "30"], cwd=tmp_path, env={}, log_fd=log, tag="s20.k.1", exit_file=None, cgroup_fds=[], file_size=0
        )
        assert spawned.pidfd is not None and _fdinfo_pid(spawned.pidfd) == spawned.pid  # this very process's
        os.kill(spawned.pid, signal.SIGKILL)
        os.close(spawned.pidfd)
    finally:
        os.close(log)
        client.close()

    def no_second_pidfd(*_args, **_kwargs):
        raise AssertionError("the runner opened a pidfd of its own for a supervised worker")

    monkeypatch.setattr(runner_module, "_pidfd_of", no_second_pidfd)
    runner = _runner(tmp_path / "sup2")
    try:
        handle, exit_file = _spawn(runner, tmp_path, "import sys; sys.exit(4)", "s20.k.2")
        assert handle.pidfd is not None and _fdinfo_pid(handle.pidfd) == handle.pid
        assert runner.wait(handle, 20) == 4 and exit_file.read_text() == "exit 4\n"
        found = read_exit(exit_file)  # its time read with it, from the same descriptor
        assert found is not None and found.written == exit_file.stat().st_mtime
        runner.release(handle)
        assert handle.pidfd is None
    finally:
        runner.close()


def test_a_supervisor_that_sends_no_pidfd_as_an_older_one_leaves_the_server_to_open_its_own(tmp_path, monkeypatch):
    """A supervisor started before an upgrade answers a spawn without a pidfd: the server opens one
    itself (checked against the worker's start id) and waits on the worker as before."""
    from orchestrator.process import interpreter

    def older(module: str, entry: str, args: list[str]) -> list[str]:
        argv = interpreter.package_argv(module, entry, args)
        # The same supervisor with no pidfd to send: its reply is an older one's, no key and no descriptor.
        patch = "import os, errno\ndef _none(*a): raise OSError(errno.ENOSYS, 'no pidfd here')\nos.pidfd_open = _none\n"
        return [*argv[:3], patch + argv[3], *argv[4:]]

    monkeypatch.setattr(supervisor, "package_argv", older)
    client = SupervisorClient(tmp_path / "sup")
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        spawned = client.spawn(
            ["/bin/sleep", "30"], cwd=tmp_path, env={}, log_fd=log, tag="s21.k.1", exit_file=None, cgroup_fds=[], file_size=0
        )
        assert spawned.pidfd is None
        os.kill(spawned.pid, signal.SIGKILL)
    finally:
        os.close(log)
        client.close()

    runner = _runner(tmp_path / "sup2")
    try:
        handle, exit_file = _spawn(runner, tmp_path, "import sys; sys.exit(5)", "s21.k.2")
        assert handle.pidfd is not None and _fdinfo_pid(handle.pidfd) == handle.pid  # the server's own
        assert runner.wait(handle, 20) == 5 and exit_file.read_text() == "exit 5\n"
        runner.release(handle)
    finally:
        runner.close()


def test_a_supervised_worker_holds_its_standard_three_descriptors_and_no_other(tmp_path):
    """What the supervisor gets over its socket (each worker's log, its cgroup's join files, a node
    attempt's lifeline) is close-on-exec: neither that worker nor the next one holds a copy."""
    runner = _runner(tmp_path / "sup")
    listing = "import json, os; print(json.dumps(sorted(n for n in os.listdir('/proc/self/fd') if os.path.exists(f'/proc/self/fd/{n}'))))"
    try:
        for tag, death in (("d1.k.1", None), ("d2.k.1", signal.SIGKILL), ("d3.k.1", None)):
            handle = runner.spawn(
                [sys.executable, "-c", listing],
                cwd=tmp_path,
                env=dict(os.environ),
                log_path=tmp_path / f"{tag}.log",
                tag=tag,
                exit_file=tmp_path / f"exit.{tag}",
                parent_death_signal=death,
                limits=Limits.from_mb(512, 64, 0, 0),
            )
            assert runner.wait(handle, 20) == 0
            runner.release(handle)
            assert (tmp_path / f"{tag}.log").read_text() == '["0", "1", "2"]\n', tag
    finally:
        runner.close()
