"""The worker shim and re-adoption primitives (runner.py), with real processes."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from orchestrator.runner import ProcessRunner, find_shims, process_alive, process_start_id, read_exit_file

from .conftest import wait_until

pytestmark = pytest.mark.slow


def _spawn(runner, tmp_path, code: str, tag: str, attempt: int = 1):
    exit_file = tmp_path / f"exit.{attempt}"
    handle = runner.spawn([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "ORCHESTRATOR_ATTEMPT": str(attempt)},
                          log_path=tmp_path / "log", tag=tag, exit_file=exit_file)
    return handle, exit_file


def test_the_shim_records_an_exit_code_and_passes_it_on(tmp_path):
    runner = ProcessRunner()
    handle, exit_file = _spawn(runner, tmp_path, "import sys; print('hi'); sys.exit(3)", "t1.k.1")
    assert runner.wait(handle, 10) == 3
    assert exit_file.read_text() == "3\n" and read_exit_file(exit_file) == 3
    assert (tmp_path / "log").read_text() == "hi\n"


def test_a_worker_killed_by_a_signal_kills_its_shim_with_the_same_signal(tmp_path):
    runner = ProcessRunner()
    handle, exit_file = _spawn(runner, tmp_path, "import time; print('up', flush=True); time.sleep(30)", "t2.k.1")
    wait_until(lambda: (tmp_path / "log").exists() and "up" in (tmp_path / "log").read_text())
    rung = runner.terminate(handle, grace=5)
    assert rung == "SIGTERM"  # the shim traps TERM, the worker does not ignore it: it ended at the first rung
    assert handle.returncode == -signal.SIGTERM
    assert read_exit_file(exit_file) == -signal.SIGTERM


def test_a_stale_exit_file_is_removed_before_the_attempt_starts(tmp_path):
    (tmp_path / "exit.1").write_text("0\n")
    runner = ProcessRunner()
    handle, exit_file = _spawn(runner, tmp_path, "import time; time.sleep(30)", "t3.k.1")
    try:
        assert not exit_file.exists()
    finally:
        runner.terminate(handle, grace=1)


def test_incomplete_or_foreign_exit_files_read_as_unknown(tmp_path):
    path = tmp_path / "exit"
    for text in ("", "1", "abc\n", "-3\n"):
        path.write_text(text)
        assert read_exit_file(path) is None, text
    assert read_exit_file(tmp_path / "missing") is None
    path.write_text("137\n")
    assert read_exit_file(path) == -signal.SIGKILL


def test_another_runner_adopts_a_live_shim_and_reads_its_status_when_it_ends(tmp_path):
    first = ProcessRunner()
    handle, exit_file = _spawn(first, tmp_path, "import sys, time; time.sleep(0.8); sys.exit(7)", "t4.depth_0_worker_1.ab", attempt=2)
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
