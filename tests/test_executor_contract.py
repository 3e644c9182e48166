"""The Executor contract (orchestrator/process/executor.py), checked the same way against the real
LocalExecutor (real processes under the shim; slow), the RQExecutor (attempts on a node through
a real redis-server) and the FakeExecutor the engine scenarios use (no process): the fake is
only worth its scenarios if it keeps the same promises."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from orchestrator.process.executor import LocalExecutor
from orchestrator.process.runner import CommandNotFound, Wakeup
from orchestrator.process.shim import read_exit_file
from orchestrator.testing import FakeClock, FakeExecutor, Script

from .conftest import wait_until

# Tags are found and swept machine-wide (/proc): this process's own, so that pytest-xdist's other
# workers (and other checkouts' runs on this machine) running these tests neither sweep its attempts
# nor have theirs swept by it.
PREFIX = f"contract{os.getpid()}."

# What each kind of attempt does, as a real command and as a script.
COMMANDS = {
    "exit3": ["sh", "-c", "echo hello; exit 3"],
    "hang": ["sh", "-c", "echo up; exec sleep 30"],
    "stubborn": ["sh", "-c", "trap '' TERM; echo up; sleep 30"],
    "signal": ["sh", "-c", "echo bye; kill -USR1 $$"],
}
SCRIPTS = {
    "exit3": Script(exit=3, output=["hello"]),
    "hang": Script(hang=True, output=["up"]),
    "stubborn": Script(hang=True, ignores_first_signal=True, output=["up"]),
    "signal": Script(dies_by=signal.SIGUSR1, output=["bye"]),
}


class LocalRig:
    slow = True

    def __init__(self, tmp_path):
        self.executor = LocalExecutor()
        self.tmp = tmp_path

    def start(self, kind, tag):
        log, exit_file = self.tmp / f"{tag}.log", self.tmp / f"{tag}.exit"
        env = {**os.environ, "ORCHESTRATOR_ATTEMPT": "1"}
        return self.executor.start(COMMANDS[kind], cwd=self.tmp, env=env, log_path=log, tag=tag, exit_file=exit_file), log


class FakeRig:
    slow = False

    def __init__(self, tmp_path):
        self.executor = FakeExecutor(FakeClock())
        self.tmp = tmp_path

    def start(self, kind, tag):
        log, exit_file = self.tmp / f"{tag}.log", self.tmp / f"{tag}.exit"
        self.executor.default = SCRIPTS[kind]
        argv = [sys.executable, "-c", "pass"]  # never run: the script says what happens
        return self.executor.start(
            argv, cwd=self.tmp, env={"ORCHESTRATOR_ATTEMPT": "1"}, log_path=log, tag=tag, exit_file=exit_file
        ), log


class RQRig:
    """The rq executor with one real node (``python -m orchestrator node``); ``start`` returns once the node runs it
    (a remote attempt's first wait returns None when it is placed: see ``executor.wait``)."""

    slow = True

    def __init__(self, tmp_path, request):
        from orchestrator.cluster.executor import RQExecutor

        from .conftest import make_settings
        from .rqnode_double import real_node

        server, prefix = request.getfixturevalue("redis_server"), request.getfixturevalue("unique_prefix")
        distributed = {"executor": "rq", "redis_url": server.url, "queue_prefix": prefix, "lease": 3}
        self.executor = RQExecutor(make_settings(tmp_path, distributed=distributed))
        self.node = real_node(tmp_path / "node", server.url, prefix, name="contract-node", lease=3)
        self.tmp = tmp_path

    def start(self, kind, tag):
        log, exit_file = self.tmp / f"{tag}.log", self.tmp / f"{tag}.exit"
        env = {**os.environ, "ORCHESTRATOR_ATTEMPT": "1"}
        handle = self.executor.start(COMMANDS[kind], cwd=self.tmp, env=env, log_path=log, tag=tag, exit_file=exit_file)
        while not handle.node_told:
            assert self.executor.wait(handle, 15) is None, "a first wait returns None once a node runs it"
        return handle, log

    def close(self):
        self.node.stop()
        self.executor.close()


@pytest.fixture(
    params=[
        pytest.param(LocalRig, marks=pytest.mark.slow, id="local"),
        pytest.param(RQRig, marks=pytest.mark.slow, id="rq"),
        pytest.param(FakeRig, id="fake"),
    ]
)
def rig(request, tmp_path):
    made = request.param(tmp_path, request) if request.param is RQRig else request.param(tmp_path)
    yield made
    made.executor.sweep_prefix(PREFIX)
    if hasattr(made, "close"):
        made.close()


def test_an_attempt_exits_with_its_code_its_output_in_the_log_and_its_status_in_the_exit_file(rig):
    handle, log = rig.start("exit3", f"{PREFIX}exit3.1")
    assert rig.executor.wait(handle, 10) == 3
    assert handle.exited and handle.code == 3 and handle.pid is not None and handle.id
    assert log.read_text() == "hello\n"
    assert read_exit_file(handle.exit_file) == 3
    assert rig.executor.terminate(handle, grace=1) == "none"  # already gone is success


def test_a_signal_death_reads_as_a_negative_status(rig):
    handle, _ = rig.start("signal", f"{PREFIX}signal.1")
    assert rig.executor.wait(handle, 10) == -signal.SIGUSR1
    assert read_exit_file(handle.exit_file) == -signal.SIGUSR1


def test_a_wait_ends_on_its_timeout_or_its_wakeup_and_the_ladder_ends_the_attempt(rig):
    handle, log = rig.start("hang", f"{PREFIX}hang.1")
    assert rig.executor.wait(handle, 0.2) is None and not handle.exited
    wake = Wakeup()
    threading.Timer(0.1, wake.set).start()
    assert rig.executor.wait(handle, 30, wake=wake) is None  # cut short by the wake-up
    wake.close()
    assert rig.executor.terminate(handle, grace=5) == "SIGTERM" == handle.kill_rung
    assert rig.executor.wait(handle, 10) == -signal.SIGTERM
    assert rig.executor.terminate(handle, grace=5) == "SIGTERM"  # the ladder runs once
    assert log.read_text().startswith("up\n")


def test_a_wakeup_makes_its_event_and_pipe_on_first_use_and_is_the_same_flag_either_way():
    import select

    idle = Wakeup()  # what a worker that is never waited on holds: no Event, no pipe
    assert not idle.is_set() and idle._event is None and idle._pipe is None
    assert idle.wait(0.01) is False and idle._event is not None  # made by the first wait
    early = Wakeup()
    early.set()  # set before anyone waits: a wait and a select see it at once
    assert early.is_set() and early.wait(0) is True and early._event is None
    assert select.select([early], [], [], 0)[0] == [early]
    early.close()
    late = Wakeup()
    threading.Timer(0.1, late.set).start()
    assert late.wait(30) is True and late.is_set()  # set while a thread waits: it wakes


@pytest.mark.skipif(not hasattr(os, "eventfd"), reason="eventfd is Linux's")
def test_a_wakeup_selects_on_one_eventfd_not_a_pipe_and_closes_it():
    import select

    wake = Wakeup()
    fd = wake.fileno()  # one descriptor made (a pipe was two)
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]" and wake._pipe == (fd, fd)
    assert select.select([wake], [], [], 0)[0] == []
    wake.set()
    wake.set()  # set again: still readable, never blocks
    assert select.select([wake], [], [], 0)[0] == [wake]
    wake.close()
    assert wake._pipe is None and not os.path.exists(f"/proc/self/fd/{fd}")
    late = Wakeup()
    late.set()  # set before its descriptor is made: readable at once
    assert select.select([late], [], [], 0)[0] == [late]
    late.close()


def test_an_attempt_that_ignores_the_first_signal_is_killed_after_the_grace(rig):
    handle, log = rig.start("stubborn", f"{PREFIX}stubborn.1")
    assert rig.executor.wait(handle, 0.3) is None
    # Its trap is set once it says "up" (before that, under load, SIGTERM still ends it)
    wait_until(lambda: log.is_file() and log.read_text().startswith("up\n"), timeout=30, what="the trap set")
    assert rig.executor.terminate(handle, grace=0.5, first_signal=signal.SIGTERM) == "SIGKILL"
    assert rig.executor.wait(handle, 10) == -signal.SIGKILL


def test_a_missing_command_or_an_empty_argv_never_starts(rig, tmp_path):
    with pytest.raises(CommandNotFound):
        rig.executor.start(
            ["/nonexistent/orchestrator-contract-cmd"],
            cwd=tmp_path,
            env={"PATH": "/usr/bin"},
            log_path=tmp_path / "x.log",
            tag=f"{PREFIX}missing.1",
            exit_file=tmp_path / "x.exit",
        )
    with pytest.raises(ValueError):
        rig.executor.start([], cwd=tmp_path, env={}, log_path=tmp_path / "y.log", tag=f"{PREFIX}empty.1")
    assert not (tmp_path / "x.exit").exists()


def test_a_restarted_server_finds_a_running_attempt_by_its_tag_and_adopts_it(rig):
    handle, _ = rig.start("hang", f"{PREFIX}adopt.1")
    rig.executor.wait(handle, 0.2)
    found = [f for f in rig.executor.find(f"{PREFIX}adopt.") if f.tag == f"{PREFIX}adopt.1"]
    assert [(f.pid, f.exit_file, f.attempt) for f in found] == [(handle.pid, handle.exit_file, 1)]
    adopted = rig.executor.adopt(
        found[0].pid, found[0].start_id, tag=found[0].tag, started_at=handle.started_at, exit_file=found[0].exit_file
    )
    assert rig.executor.wait(adopted, 0.1) is None
    assert rig.executor.sweep_prefix(f"{PREFIX}adopt.", keep={f"{PREFIX}other"}) >= 1
    assert rig.executor.wait(adopted, 10) == -signal.SIGKILL
    assert rig.executor.wait(handle, 10) == -signal.SIGKILL  # the first server's handle (reaped, locally)
    assert rig.executor.find(f"{PREFIX}adopt.") == []
