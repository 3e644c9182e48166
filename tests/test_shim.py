"""The worker shim and re-adoption primitives (runner.py), with real processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.process.procscan import group_alive, process_alive, process_start_id
from orchestrator.process.runner import ProcessRunner
from orchestrator.process.shim import EXIT_ROOM, PERL, Deadline, ExitStatus, find_shims, read_exit, read_exit_file

from .conftest import DEADLINE_SCRIPTS, started_members, wait_until

pytestmark = pytest.mark.slow


def _shim_start_env() -> dict[str, str]:
    """This process's environment as the runner hands it to the perl shim (SHIM_START_ENV's values)."""
    from orchestrator.process.shim import SHIM_START_ENV

    env = {k: v for k, v in os.environ.items() if k not in SHIM_START_ENV}
    return env | {k: v for k, v in SHIM_START_ENV.items() if v is not None}


def _spawn(runner, tmp_path, code: str, tag: str, attempt: int = 1):
    exit_file = tmp_path / f"exit.{attempt}"
    handle = runner.spawn(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "ORCHESTRATOR_ATTEMPT": str(attempt)},
        log_path=tmp_path / "log",
        tag=tag,
        exit_file=exit_file,
    )
    return handle, exit_file


def test_the_shim_records_an_exit_code_and_passes_it_on(tmp_path):
    runner = ProcessRunner()
    handle, exit_file = _spawn(runner, tmp_path, "import sys; print('hi'); sys.exit(3)", "t1.k.1")
    assert runner.wait(handle, 10) == 3
    assert exit_file.read_text() == "exit 3\n" and read_exit_file(exit_file) == 3
    assert (tmp_path / "log").read_text() == "hi\n"


def test_a_worker_killed_by_the_ladder_is_recorded_as_killed_by_that_signal(tmp_path):
    runner = ProcessRunner()
    handle, exit_file = _spawn(runner, tmp_path, "import time; print('up', flush=True); time.sleep(30)", "t2.k.1")
    wait_until(lambda: (tmp_path / "log").exists() and "up" in (tmp_path / "log").read_text())
    rung = runner.terminate(handle, grace=5)
    assert rung == "SIGTERM"  # the shim traps TERM, the worker does not ignore it: it ended at the first rung
    assert handle.returncode == -signal.SIGTERM
    assert exit_file.read_text() == f"signal {signal.SIGTERM.value}\n" and read_exit_file(exit_file) == -signal.SIGTERM


def test_a_stale_exit_file_is_replaced_by_an_empty_one_before_the_attempt_starts(tmp_path):
    """Its room is reserved (shim.EXIT_ROOM), holding no status: a restart knows the attempt began."""
    (tmp_path / "exit.1").write_text("0\n")
    runner = ProcessRunner()
    handle, exit_file = _spawn(runner, tmp_path, "import time; time.sleep(30)", "t3.k.1")
    try:
        assert exit_file.read_bytes() == EXIT_ROOM and read_exit_file(exit_file) is None
    finally:
        runner.terminate(handle, grace=1)


def test_incomplete_or_foreign_exit_files_read_as_unknown(tmp_path):
    path = tmp_path / "exit"
    for text in ("", "1", "abc\n", "-3\n"):
        path.write_text(text)
        assert read_exit_file(path) is None, text
    assert read_exit_file(tmp_path / "missing") is None
    for text in ("exit 256\n", "exit -1\n", "signal 0\n", "signal x\n", "killed 9\n", "exit 1", "exit 1 2\n"):
        path.write_text(text)
        assert read_exit_file(path) is None, text


def test_an_exit_file_of_an_earlier_server_reads_as_that_server_meant_it(tmp_path):
    """Its shell shim wrote $? and re-raised 129-192 on itself as signals; a bare number is
    never the new format, so the old meaning stays."""
    path = tmp_path / "exit"
    for text, code in (("137\n", -signal.SIGKILL), ("147\n", -19), ("0\n", 0), ("2\n", 2), ("200\n", 200)):
        path.write_text(text)
        assert read_exit_file(path) == code, text


def test_an_exit_file_that_says_its_keeper_stopped_the_worker_at_its_deadline_reads_so(tmp_path):
    """The second line (shim.DEADLINE_MARK) names who stopped it; old one-line files read as before;
    a second line that is not one of those is no status."""
    path = tmp_path / "exit"
    for text, found in (
        ("signal 15\ndeadline shim\n", ExitStatus(-signal.SIGTERM, "its shim")),
        ("exit 3\ndeadline supervisor\n", ExitStatus(3, "its workspace's supervisor")),
        ("signal 9\ndeadline shim\n" + "\n" * 13, ExitStatus(-signal.SIGKILL, "its shim")),  # the room's rest
        ("exit 0\n" + "\n" * 9, ExitStatus(0)),
        ("137\n", ExitStatus(-signal.SIGKILL)),
    ):
        path.write_text(text)
        assert read_exit(path) == found, text
    for text in ("exit 3\ndeadline\n", "exit 3\ndeadline other\n", "exit 3\nfoo\n", "exit 3\ndeadline shim\nx\n"):
        path.write_text(text)
        assert read_exit(path) is None and read_exit_file(path) is None, text
    assert len("signal 15\ndeadline supervisor\n") <= len(EXIT_ROOM)  # written over the room, never past it


@pytest.mark.skipif(PERL is None, reason="the deadline is the perl shim's")
@pytest.mark.parametrize(("script", "status"), DEADLINE_SCRIPTS)
def test_a_worker_past_its_deadline_with_no_server_watching_is_stopped_by_its_shim(tmp_path, script, status):
    """No server ever calls the runner's timeout handling here (it is stopped, or killed): the shim
    keeps the deadline the runner gave it, ends the worker's whole process group, and its exit file
    says so."""
    runner = ProcessRunner()
    tag = f"t-deadline-{os.getpid()}-{abs(status)}"
    began = time.time()
    handle = runner.spawn(
        ["sh", "-c", script],
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=tmp_path / "log",
        tag=tag,
        exit_file=tmp_path / "exit",
        deadline=Deadline(began + 2, grace=1),
    )
    try:
        # (the worker says who it is: under load its deadline may end it before a look could find it)
        members = started_members(tmp_path, tmp_path / "exit")
        # (handle.poll reaps the shim, this test's child, as a server's wait would)
        wait_until(lambda: handle.poll() is not None and not group_alive(handle.pid), timeout=20, what="its group ended")
        assert time.time() - began >= 2  # never before its deadline
        assert not any(process_alive(pid, start) for pid, start in members.items() if start)
        assert runner.tagged(tag) == []
        assert read_exit(tmp_path / "exit") == ExitStatus(status, "its shim")
        assert handle.poll() == status and handle.deadline_stop == "its shim"
        assert "deadline passed with no server stopping it" in (tmp_path / "log").read_text()
    finally:
        runner.terminate(handle, grace=0.5)  # (a no-op once it has ended: nothing left behind if it did not)


@pytest.mark.skipif(PERL is None, reason="the deadline is the perl shim's")
def test_a_worker_that_ends_before_its_deadline_is_recorded_as_before(tmp_path):
    """The shim's alarm does not hold it: it exits with its worker, and the exit file has no mark."""
    runner = ProcessRunner()
    handle = runner.spawn(
        ["sh", "-c", "sleep 0.2; exit 4"],
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=tmp_path / "log",
        tag=f"t-deadline-early-{os.getpid()}",
        exit_file=tmp_path / "exit",
        deadline=Deadline(time.time() + 60, grace=1),
    )
    assert runner.wait(handle, 20) == 4
    assert (tmp_path / "exit").read_text() == "exit 4\n" and handle.deadline_stop is None


def test_another_runner_adopts_a_live_shim_and_reads_its_status_when_it_ends(tmp_path):
    first = ProcessRunner()
    handle, exit_file = _spawn(
        first, tmp_path, "import sys, time; time.sleep(0.8); sys.exit(7)", "t4.depth_0_worker_1.ab", attempt=2
    )
    # (Its argv and environment show in /proc a moment after Popen returns: look until they do.)
    wait_until(lambda: any(s.pid == handle.pid for s in find_shims("t4.")))
    found = [s for s in find_shims("t4.") if s.pid == handle.pid]
    assert len(found) == 1 and found[0].attempt == 2 and found[0].exit_file == exit_file
    assert found[0].start_id == handle.start_id == process_start_id(handle.pid)
    # A second runner (a restarted server) is not the shim's parent: it waits by pidfd and exit file.
    adopted = ProcessRunner().adopt(handle.pid, handle.start_id, tag=found[0].tag, started_at=time.time(), exit_file=exit_file)
    assert adopted.poll() is None
    began = time.monotonic()
    assert ProcessRunner().wait(adopted, 10) == 7
    assert time.monotonic() - began < 5 and adopted.ended_at is not None
    first.wait(handle, 5)  # reap it in the test (the first "server" is still its parent)


def test_a_reused_pid_is_not_adopted(tmp_path):
    runner = ProcessRunner()
    handle, exit_file = _spawn(runner, tmp_path, "import time; time.sleep(30)", "t5.k.1")
    try:
        assert process_alive(handle.pid, handle.start_id)
        assert not process_alive(handle.pid, "1")  # same pid, another start time: another process
        adopted = runner.adopt(handle.pid, "1", tag="t5.k.1", started_at=time.time(), exit_file=exit_file)
        assert adopted.poll() == -signal.SIGKILL  # gone as far as we know, and no exit file: lost
    finally:
        runner.terminate(handle, grace=1)


needs_perl = pytest.mark.skipif(PERL is None, reason="no perl on this machine: the shell shim is the only one")


def _sh(runner, tmp_path, script: str, tag: str = "t6.k.1"):
    exit_file = tmp_path / "exit.1"
    handle = runner.spawn(
        ["sh", "-c", script],
        cwd=tmp_path,
        env={**os.environ, "ORCHESTRATOR_ATTEMPT": "1"},
        log_path=tmp_path / "log",
        tag=tag,
        exit_file=exit_file,
    )
    return handle, exit_file


@needs_perl
@pytest.mark.parametrize("code", [147, 144, 173, 129, 192, 139])
def test_an_exit_code_above_128_is_an_exit_code_not_a_signal(tmp_path, code):
    """Gemini exits with the HTTP status mod 256 (403 -> 147). The old shell shim read 129-192
    as "killed by signal code-128" and re-raised it on itself: 147 sent it SIGSTOP (a hang)."""
    runner = ProcessRunner()
    began = time.monotonic()
    handle, exit_file = _sh(runner, tmp_path, f"exit {code}")
    assert runner.wait(handle, 10) == code  # at once: nothing stopped, nothing re-raised
    assert time.monotonic() - began < 5
    assert exit_file.read_text() == f"exit {code}\n" and read_exit_file(exit_file) == code
    assert handle.popen is not None and handle.popen.returncode == code  # the shim exited too; it did not die of a signal
    assert not list(tmp_path.glob("core*"))


@needs_perl
@pytest.mark.parametrize("name", ["TERM", "KILL", "SEGV"])
def test_a_real_signal_death_is_recorded_as_that_signal(tmp_path, name):
    runner = ProcessRunner()
    handle, exit_file = _sh(runner, tmp_path, f"kill -{name} $$")
    number = signal.Signals[f"SIG{name}"].value
    assert runner.wait(handle, 10) == -number
    assert exit_file.read_text() == f"signal {number}\n"
    assert handle.popen.returncode == 128 + number  # the shim exits as a shell would report it; it raises nothing
    assert not list(tmp_path.glob("core*"))  # the shim never dumps core (the worker's own core follows ulimit -c)


@pytest.mark.parametrize(
    "script, code", [("exit 147", 147), ("kill -TERM $$", -signal.SIGTERM), ("kill -SEGV $$", -signal.SIGSEGV)]
)
def test_a_restarted_runner_adopting_a_finished_shim_reads_the_true_status(tmp_path, script, code):
    if PERL is None and code < 0:
        pytest.skip("without perl a signal death reads as exit 128+N")
    first = ProcessRunner()
    handle, exit_file = _sh(first, tmp_path, script)
    wait_until(lambda: exit_file.exists() and exit_file.read_text().endswith("\n"))
    wait_until(lambda: not process_alive(handle.pid, handle.start_id))  # ended (a zombie of the first runner)
    adopted = ProcessRunner().adopt(handle.pid, handle.start_id, tag="t6.k.1", started_at=time.time(), exit_file=exit_file)
    assert adopted.poll() == code and adopted.ended_at is not None
    first.wait(handle, 5)


def test_without_perl_the_shell_shim_records_exit_codes_and_never_signals_itself(tmp_path):
    runner = ProcessRunner(perl=None)
    handle, exit_file = _sh(runner, tmp_path, "exit 147")
    assert runner.wait(handle, 10) == 147 and read_exit_file(exit_file) == 147
    assert exit_file.read_text().rstrip("\n") == "exit 147", "written over the reserved room: its padding stays"
    # What a shell cannot know: a worker killed by SIGTERM reads as exit 143 (documented).
    handle, exit_file = _sh(runner, tmp_path, "kill -TERM $$", tag="t7.k.1")
    assert runner.wait(handle, 10) == 143 and handle.popen.returncode == 143


@needs_perl
def test_the_perl_shim_leaves_perl5opt_to_the_worker(tmp_path):
    """A user's PERL5OPT must not break the shim's own start, and the worker still gets it."""
    runner = ProcessRunner()
    exit_file = tmp_path / "exit.1"
    env = {**os.environ, "PERL5OPT": "-MNo::Such::Module::Anywhere"}
    handle = runner.spawn(
        ["sh", "-c", 'echo "opt=$PERL5OPT"; env | grep -c ORCHESTRATOR_SHIM_ || true'],
        cwd=tmp_path,
        env=env,
        log_path=tmp_path / "log",
        tag="t8.k.1",
        exit_file=exit_file,
    )
    assert runner.wait(handle, 10) == 0
    assert (tmp_path / "log").read_text() == "opt=-MNo::Such::Module::Anywhere\n0\n"


@needs_perl
@pytest.mark.parametrize("own", [{"LC_ALL": "de_DE.UTF-8", "PERL_HASH_SEED": "7"}, {}])
def test_the_perl_shim_starts_in_its_own_environment_and_the_worker_gets_its_own_back(tmp_path, own):
    """Perl starts with LC_ALL=C and a fixed hash seed (no locale files, no /dev/urandom: cheaper per
    worker); the worker gets the environment it was given, with or without those variables."""
    runner = ProcessRunner()
    env = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "PERL_HASH_SEED")} | own
    script = 'sleep 0.5; env | grep -E "^(LC_ALL|PERL_HASH_SEED|ORCHESTRATOR_SHIM_)" | sort; echo end'
    handle = runner.spawn(
        ["sh", "-c", script], cwd=tmp_path, env=env, log_path=tmp_path / "log", tag="t10.k.1", exit_file=tmp_path / "exit.1"
    )
    shim_env: dict[str, str] = {}

    def shim_environment_readable() -> bool:
        entries = Path(f"/proc/{handle.pid}/environ").read_bytes().split(b"\0")
        shim_env.update(e.decode().split("=", 1) for e in entries if b"=" in e)
        return "ORCHESTRATOR_TAG" in shim_env

    wait_until(shim_environment_readable)
    assert shim_env["LC_ALL"] == "C" and shim_env["PERL_HASH_SEED"] == "0"
    assert runner.wait(handle, 10) == 0
    expected = "".join(f"{k}={v}\n" for k, v in sorted(own.items())) + "end\n"
    assert (tmp_path / "log").read_text() == expected


def test_the_shim_a_server_finds_is_the_one_it_started(tmp_path):
    runner = ProcessRunner()
    handle, exit_file = _sh(runner, tmp_path, "sleep 30", tag="t9.depth_0_worker_1.cd")
    try:
        # (Popen returns once the kernel has switched the child's memory, a moment before its
        # argv and environment are readable in /proc: look until they are.)
        wait_until(lambda: any(s.pid == handle.pid for s in find_shims("t9.")))
        found = [s for s in find_shims("t9.") if s.pid == handle.pid]
        assert len(found) == 1 and found[0].exit_file == exit_file and found[0].attempt == 1
    finally:
        runner.terminate(handle, grace=1)


@needs_perl
def test_a_restarted_engine_rebuilds_unrecorded_attempts_with_their_true_status(make_engine):
    """The recovery reader (recovery.py) uses the same exit files: a signal death, an exit 147
    and a success, none of them recorded by the server that ran them, read back exactly."""
    import json

    from orchestrator.models import JobStatus, WorkerStatus

    script = "set -- $1; shift $((ORCHESTRATOR_ATTEMPT - 1)); case $1 in term) kill -TERM $$ ;; *) exit $1 ;; esac"
    sections = {
        "orchestrator": {"worker": "command", "command": ["sh", "-c", script, "sh", "{task}"]},
        "workers": {"retry_backoff": 0.05},
    }
    engine = make_engine(**sections)
    job = engine.submission.submit("x", {"max_retries": 2}, ["term 147 0"])
    assert engine.queries.wait(job.id, 30).status is JobStatus.COMPLETED
    engine.shutdown()
    ws = engine.workspace
    ws.worker_record_path(job.id, 0, "worker_1").unlink()  # as if the server died before writing it
    data = json.loads(ws.job_record_path(job.id).read_text())
    data.update(status="running", ended_at=None)
    ws.job_record_path(job.id).write_text(json.dumps(data))
    fresh = make_engine(**sections)
    assert fresh.takeover.recover() == [job.id]
    assert fresh.queries.wait(job.id, 30).status is JobStatus.COMPLETED
    _, workers = fresh.queries.snapshot(job.id)
    worker = workers[0]
    assert worker.status is WorkerStatus.SUCCESS
    assert [(a.number, a.exit_code, a.signal, a.end_reason) for a in worker.attempts] == [
        (1, None, signal.SIGTERM, "signal"),
        (2, 147, None, "exit"),
        (3, 0, None, "exit"),
    ]
    assert ws.worker_log(job.id, 0, "worker_1").read_text().count(" started ") == 3  # nothing ran again


def test_an_engine_without_perl_says_what_it_cannot_tell(tmp_path, caplog):
    from orchestrator.engine.core import Engine

    from .conftest import make_settings

    engine = Engine(make_settings(tmp_path), runner=ProcessRunner(perl=None))
    try:
        assert any("no perl on this machine" in r.getMessage() and "128+N" in r.getMessage() for r in caplog.records)
    finally:
        engine.shutdown(timeout=5)


@needs_perl
def test_every_choice_of_the_shims_parts_is_a_script_perl_compiles():
    """The shim's script leaves out the parts its start does not set (``perl_shim``): every one of
    the 64 choices compiles, and the one of all parts is the shim as it always was (PERL_SHIM)."""
    import itertools

    from orchestrator.process.shim import PERL_SHIM, SHIM_PARTS, perl_shim

    env = _shim_start_env()
    choices = [frozenset(c) for r in range(len(SHIM_PARTS) + 1) for c in itertools.combinations(SHIM_PARTS, r)]
    assert len(choices) == 64 and perl_shim(frozenset(SHIM_PARTS)) == PERL_SHIM
    for parts in choices:
        compiled = subprocess.run([PERL, "-c", "-e", perl_shim(parts)], env=env, capture_output=True, text=True)
        assert compiled.returncode == 0, (sorted(parts), compiled.stderr)
    assert len(perl_shim(frozenset())) < len(PERL_SHIM) / 3


@needs_perl
def test_a_node_attempts_shim_carries_its_lifeline_and_deadline_and_not_a_sandboxs_network_or_filter(tmp_path):
    # Given a node's attempt without a sandbox: a parent-death signal and a deadline
    from orchestrator.process.shim import perl_shim

    runner = ProcessRunner()
    handle = runner.spawn(
        ["sleep", "30"],
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=tmp_path / "log",
        tag="t9.p.1",
        exit_file=tmp_path / "exit.1",
        parent_death_signal=signal.SIGKILL,
        deadline=Deadline(time.time() + 60, 1),
    )
    try:
        # Then its shim's script has the parts it runs, and no bridge, seccomp filter or connect guard
        script = Path(f"/proc/{handle.pid}/cmdline").read_bytes().split(b"\0")[2].decode()
        assert script == perl_shim(frozenset({"PDEATHSIG", "LIFELINE", "DEADLINE"}))
        assert "vec($m, $l, 1)" in script and "$SIG{ALRM}" in script
        assert "sub pump" not in script and "syscall($n + 0, 38" not in script
        # And it runs as ever: a terminate ends the worker, and the shim records it
        runner.terminate(handle, grace=5)
        assert runner.wait(handle, 10) == -signal.SIGTERM
    finally:
        runner.terminate(handle, grace=1)
        runner.release(handle)


@pytest.mark.skipif(PERL is None, reason="the lifeline is the perl shim's")
def test_a_node_shim_whose_spawner_is_gone_never_starts_the_worker(tmp_path):
    # Given the perl shim with a lifeline pipe, as a node's attempt starts it
    from orchestrator import protocol
    from orchestrator.process.shim import PERL_SHIM, SHIM_NAME

    def start(keep_writer: bool):
        marker, exit_file = tmp_path / f"ran.{keep_writer}", tmp_path / f"exit.{keep_writer}"
        read, write = os.pipe()
        if not keep_writer:
            os.close(write)  # the spawner died between its fork and the shim's start
        env = {**os.environ, protocol.SHIM_STASH + "LIFELINE": str(read)}
        worker = [sys.executable, "-c", f"import os; open({str(marker)!r}, 'w').write(str(sorted(os.listdir('/proc/self/fd'))))"]
        shim = subprocess.run(
            [PERL, "-e", PERL_SHIM, SHIM_NAME, str(exit_file), *worker], env=env, pass_fds=(read,), capture_output=True, text=True
        )
        os.close(read)
        if keep_writer:
            os.close(write)
        return shim, marker, exit_file, read

    # When its spawner is gone before it looks, Then the worker never runs and no exit file says it did
    shim, marker, exit_file, _ = start(keep_writer=False)
    assert shim.returncode == 125 and "the node process that started it is gone" in shim.stderr
    assert not marker.exists() and not exit_file.exists()
    # When its spawner lives, Then the worker runs as ever, without the lifeline's descriptor
    shim, marker, exit_file, read = start(keep_writer=True)
    assert shim.returncode == 0 and read_exit_file(exit_file) == 0, shim.stderr
    assert str(read) not in eval(marker.read_text())


@pytest.mark.skipif(PERL is None, reason="the lifeline is the perl shim's")
def test_a_node_shim_whose_spawner_dies_while_its_worker_runs_kills_the_worker_and_says_nothing(tmp_path):
    # Given the perl shim with a lifeline pipe running a worker with a child of its own (its
    # parent-death signal never set: the link that did not fire)
    from orchestrator import protocol
    from orchestrator.process.shim import PERL_SHIM, SHIM_NAME

    pid_file, exit_file = tmp_path / "sleep.pid", tmp_path / "exit"
    read, write = os.pipe()
    env = {**os.environ, protocol.SHIM_STASH + "LIFELINE": str(read)}
    worker = ["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"]
    with open(tmp_path / "log", "wb") as log:
        shim = subprocess.Popen(
            [PERL, "-e", PERL_SHIM, SHIM_NAME, str(exit_file), *worker],
            env=env,
            pass_fds=(read,),
            start_new_session=True,
            stderr=log,
        )
    os.close(read)
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10)
    sleep = int(pid_file.read_text())
    # When its spawner is gone (the write end's last holder closes it)
    os.close(write)
    # Then the shim kills its process group, the worker's child with it, and no exit file says it ran
    assert shim.wait(10) == -signal.SIGKILL
    assert "the node process that started it is gone: the worker is killed" in (tmp_path / "log").read_text()
    wait_until(lambda: not process_alive(sleep, None), 10)
    assert not exit_file.exists()


@pytest.mark.skipif(PERL is None, reason="the lifeline is the perl shim's")
def test_a_node_attempt_holds_its_lifeline_while_it_runs_and_closes_it_once_released(tmp_path):
    # Given a node's attempt: a worker started with a parent-death signal
    runner = ProcessRunner()
    handle = runner.spawn(
        [sys.executable, "-c", "print('ran')"],
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=tmp_path / "log",
        tag="t9.k.1",
        exit_file=tmp_path / "exit.1",
        parent_death_signal=signal.SIGKILL,
    )
    # Then it holds the lifeline's write end while it runs, and the worker ran through it
    assert handle.lifeline is not None
    held, pipe = handle.lifeline, os.fstat(handle.lifeline).st_ino
    assert runner.wait(handle, 10) == 0 and (tmp_path / "log").read_text() == "ran\n"
    # And releasing the ended attempt closes it (the descriptor is gone, or a new file took its number)
    runner.release(handle)
    assert handle.lifeline is None
    assert not os.path.exists(f"/proc/self/fd/{held}") or os.fstat(held).st_ino != pipe


@pytest.mark.skipif(PERL is None, reason="the seccomp filter is the perl shim's")
def test_a_seccomp_filter_the_shim_cannot_install_starts_no_worker(tmp_path):
    """A sandboxed worker's seccomp filter (process/sandbox.py) is installed by the shim before it
    starts the worker; one the kernel refuses (here an empty program) must not leave the worker
    running unfiltered: it is not started, and the exit file says 126."""
    from orchestrator import protocol
    from orchestrator.process.sandbox import SandboxSpec, worker_filter

    found = worker_filter(SandboxSpec(bwrap=""))
    if found is None:
        pytest.skip("no seccomp filter for this machine")
    marker = tmp_path / "started"
    runner = ProcessRunner()
    prctl, seccomp, _ = found.split()
    for program, started in ((found.split()[2], True), ("", False)):
        env = {**os.environ, "ORCHESTRATOR_ATTEMPT": "1", protocol.SHIM_STASH + "SECCOMP": f"{prctl} {seccomp} {program}"}
        handle = runner.spawn(
            [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"],
            cwd=tmp_path,
            env=env,
            log_path=tmp_path / "log",
            tag=f"seccomp-{started}.k.1",
            exit_file=tmp_path / "exit",
        )
        assert runner.wait(handle, 10) == (0 if started else 126), (tmp_path / "log").read_text()
        assert marker.exists() is started
        marker.unlink(missing_ok=True)
    assert "cannot install the sandbox seccomp filter" in (tmp_path / "log").read_text()


@pytest.mark.skipif(PERL is None or shutil.which("strace") is None, reason="the bridge is the perl shim's; strace delays it")
def test_a_bridge_slow_to_make_its_process_group_still_ends_with_its_worker(tmp_path):
    """workers.sandbox_network: allow. The shim forks the bridge, then the worker, and kills the
    bridge's process group once the worker has ended. strace holds every setpgid back 0.3 s, so the
    worker (true) ends before the bridge has made its group: a group made by the bridge alone did not
    exist yet when it was killed, and the bridge outlived its worker, holding the worker's output
    open (and, in a sandbox, bubblewrap's namespace). The shim makes the group from its side too."""
    from orchestrator import protocol
    from orchestrator.process.shim import PERL_SHIM, SHIM_NAME

    with socket.socket(socket.AF_UNIX) as proxy, socket.socket() as probe:
        proxy.bind(str(tmp_path / "proxy.sock"))
        proxy.listen()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # the bridge listens there
        env = _shim_start_env()
        env[protocol.SHIM_STASH + "BRIDGE"] = f"127.0.0.1:{port}={tmp_path / 'proxy.sock'}"
        exit_file = tmp_path / "exit"
        delayed = ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=setpgid", "-e", "inject=setpgid:delay_enter=300000"]
        shim = subprocess.Popen(
            [*delayed, PERL, "-e", PERL_SHIM, SHIM_NAME, str(exit_file), "true"],
            env=env,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            shim.communicate(timeout=10)  # its output closes once nothing of it is left
        left = subprocess.run(["pgrep", "-f", str(exit_file)], capture_output=True, text=True).stdout.split()
        for pid in left:
            os.kill(int(pid), signal.SIGKILL)
        if shim.poll() is None:
            os.killpg(shim.pid, signal.SIGKILL)
        shim.communicate()
        assert left == [], "the bridge outlived its worker"
        assert shim.returncode == 0 and exit_file.read_text() == "exit 0\n"


# Starts the shim as a child subreaper that reaps nothing but the shim: what of the shim's outlives
# it (a bridge's connection given up by the bridge as it died) is given to it, and listed.
SUBREAPER = """
import ctypes, os, subprocess, sys
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
shim = subprocess.run(sys.argv[1:])
try:
    left = os.waitpid(-1, os.WNOHANG)
except ChildProcessError:
    left = None
print(shim.returncode, "left" if left else "none left")
"""


@needs_perl
def test_the_shim_ends_only_once_its_bridge_and_the_bridges_connections_are_gone(tmp_path):
    """bubblewrap's launcher returns once the shim has: a bridge's connection still dying then was a
    live process of the worker's tag after the sandbox had ended. The worker holds a connection
    through the bridge (the proxy keeps it open) and ends; nothing of the bridge's group is left once
    the shim has ended (it reaps the connections the dying bridge gives up). Three rounds: a connection
    that ends before its bridge is reaped by the bridge, and proves nothing."""
    import threading

    from orchestrator import protocol
    from orchestrator.process.sandbox import Refusals, _filter_words
    from orchestrator.process.shim import PERL_SHIM, SHIM_NAME

    words = _filter_words(Refusals())
    if words is None:
        pytest.skip(f"no seccomp filter for {os.uname().machine}: the shim has no prctl number")
    for round_ in range(3):
        held: list[socket.socket] = []
        with socket.socket(socket.AF_UNIX) as proxy, socket.socket() as probe:
            proxy.bind(str(tmp_path / f"proxy.{round_}"))
            proxy.listen()

            def serve(proxy: socket.socket = proxy, held: list[socket.socket] = held) -> None:
                with contextlib.suppress(OSError):
                    conn, _ = proxy.accept()
                    conn.sendall(b"x")
                    held.append(conn)  # open until the round ends

            threading.Thread(target=serve, daemon=True).start()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()  # the bridge listens there
            env = _shim_start_env()
            env[protocol.SHIM_STASH + "BRIDGE"] = f"127.0.0.1:{port}={tmp_path / f'proxy.{round_}'}"
            env[protocol.SHIM_STASH + "SECCOMP"] = words  # as install_worker_filter sets it
            worker = f"import socket; s = socket.create_connection(('127.0.0.1', {port})); assert s.recv(1) == b'x'"
            shim = subprocess.run(
                [sys.executable, "-c", SUBREAPER, PERL, "-e", PERL_SHIM, SHIM_NAME, str(tmp_path / "exit")]
                + [sys.executable, "-c", worker],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                start_new_session=True,
            )
            for conn in held:
                conn.close()
        assert held, "the worker's connection never reached the proxy"
        assert shim.stdout == "0 none left\n", (round_, shim.stdout, shim.stderr)


@needs_perl
@pytest.mark.parametrize("where", ["before its fork", "in its child before the exec"])
def test_a_signal_to_the_group_while_the_shim_starts_its_worker_still_reaches_the_worker(tmp_path, where):
    """A terminate (SIGTERM to the attempt's process group) that lands while the shim is starting the
    worker ends the worker by SIGTERM: not caught by the shim's no-op handler in the fork's child and
    lost, which left the worker running until the kill ladder's SIGKILL after the grace. The shim's
    script is run with a pause at the named point (it says so on stderr), and the signal sent there."""
    from orchestrator.process.shim import PERL_SHIM, SHIM_NAME

    fork = "my $p = fork;\n"
    assert PERL_SHIM.count(fork) == 1, "the pause's place in the shim's script moved"
    pause = 'print STDERR "paused\\n"; select(undef, undef, undef, 3);\n'
    script = PERL_SHIM.replace(fork, pause + fork if where == "before its fork" else fork + "if (!$p) { " + pause + "}\n")
    env = _shim_start_env()
    exit_file = tmp_path / "exit"
    shim = subprocess.Popen(
        [PERL, "-e", script, SHIM_NAME, str(exit_file), "sleep", "30"], env=env, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        assert shim.stderr is not None and shim.stderr.readline() == b"paused\n"
        os.killpg(shim.pid, signal.SIGTERM)
        try:
            shim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the signal was lost: the worker (sleep 30) ran on")
        assert exit_file.read_text() == f"signal {signal.SIGTERM.value}\n"
        assert shim.returncode == 128 + signal.SIGTERM
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shim.pid, signal.SIGKILL)
        shim.wait()
        assert shim.stderr is not None
        shim.stderr.close()
