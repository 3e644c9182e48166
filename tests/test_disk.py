"""A worker's disk: what its cap counts (its folder, its worktree's git dir, its TMPDIR, what it adds to
the workers' object store), and a workspace whose file system is full."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.engine.core import Engine
from orchestrator.errors import NoSpace, WorkspaceError, no_space
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process import monitor, supervisor
from orchestrator.process.backends import probe
from orchestrator.process.monitor import Footprint, folder_bytes
from orchestrator.process.runner import ProcessRunner
from orchestrator.process.sandbox import SandboxSpec
from orchestrator.process.shim import PERL, read_exit_file
from orchestrator.process.supervisor import SupervisorClient
from orchestrator.workspace.layout import Workspace

from .conftest import make_settings
from .helpers.disk import fill_command, small_filesystem
from .helpers.worktree import host_engine, make_host, snapshot, workers

MB = 1024 * 1024
SUPPORT = probe()
needs_bwrap = pytest.mark.skipif(not SUPPORT.available, reason=f"no sandbox on this machine: {SUPPORT.reason}")


def test_a_footprint_counts_its_own_folders_whole_and_the_shared_store_from_its_start(tmp_path):
    # Given a worker's folder and TMPDIR, and a shared store that already holds 3 MB
    folder, tmp, store = (tmp_path / name for name in ("folder", "tmp", "store"))
    for path in (folder, tmp, store / "ab"):
        path.mkdir(parents=True)
    (store / "ab" / "old").write_bytes(b"x" * 3 * MB)
    (folder / "a").write_bytes(b"x" * MB)
    footprint = Footprint.start((folder, tmp), store)
    assert footprint.bytes() == MB, "what the store held before the attempt is not its"
    # When it writes to its TMPDIR and adds to the store (an object, and a name that is none)
    (tmp / "t").write_bytes(b"x" * 2 * MB)
    (store / "ab" / "new").write_bytes(b"x" * MB)
    (store / "junk").write_bytes(b"x" * MB)
    # Then all of it counts
    assert footprint.bytes() == 5 * MB
    # and a store emptied beneath it (objects taken into the repository) counts nothing, never less
    for path in (store / "ab" / "old", store / "ab" / "new", store / "junk"):
        path.unlink()
    assert footprint.bytes() == 3 * MB


def test_one_walk_of_the_shared_store_serves_every_worker_in_a_monitor_pass(tmp_path):
    # Given two workers' footprints over one store, which grows by 1 MB after both started
    store = tmp_path / "store"
    store.mkdir()
    first, second = (Footprint.start((tmp_path / name,), store) for name in ("a", "b"))
    (store / "new").write_bytes(b"x" * MB)
    # When one pass measures both, the store's size read for the first is the one the second is charged
    sizes: dict = {}
    assert first.bytes(sizes) == MB and sizes == {store: MB}
    (store / "later").write_bytes(b"x" * MB)
    assert second.bytes(sizes) == MB, "read once a pass"
    assert second.bytes() == 2 * MB


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_walk_counts_every_file_below_however_deep_holding_few_folders_open(tmp_path, monkeypatch):
    # Given files at every level of a folder nested 40 deep, and a walk that may hold 3 folders open
    monkeypatch.setattr(monitor, "HELD_FOLDERS", 3)
    level, expected = tmp_path / "top", 0
    for depth in range(40):
        level.mkdir()
        (level / "f").write_bytes(b"x" * (depth + 1))
        (level / "empty").mkdir()
        expected += depth + 1
        level = level / f"d{depth}"
    held, most, real_open, real_close = set(), [0], os.open, os.close

    def counting_open(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        held.add(fd)
        most[0] = max(most[0], len(held))
        return fd

    def counting_close(fd):
        held.discard(fd)
        real_close(fd)

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "close", counting_close)
    before = _open_fds()
    # When it is walked, Then every file counts, and no more than 3 folders (and one opened by its path) were open at once
    assert folder_bytes(tmp_path / "top") == expected
    assert most[0] <= 4 and not held
    assert _open_fds() == before, "every folder it opened is closed"


def test_a_walk_follows_no_link_below_its_folder_not_even_a_folder_swapped_for_one_while_it_walks(tmp_path, monkeypatch):
    # Given a worker's folder with a file, a link to a large folder outside and a folder that will be swapped for one
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"x" * MB)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f").write_bytes(b"x" * 10)
    (folder / "a").write_bytes(b"x" * 100)
    (folder / "link").symlink_to(outside, target_is_directory=True)
    link_size = os.lstat(folder / "link").st_size
    assert folder_bytes(folder) == 100 + 10 + link_size, "a link counts as itself"
    # and the folder itself reached through a link (a checkout outside the workspace) is walked
    (tmp_path / "entry").symlink_to(folder, target_is_directory=True)
    assert folder_bytes(tmp_path / "entry") == 100 + 10 + link_size
    # When "sub" becomes a link to the large folder after its parent was listed
    read = monitor._Count.read

    def swapping(count, fd):
        names = read(count, fd)
        if "sub" in names:
            (folder / "sub" / "f").unlink()
            (folder / "sub").rmdir()
            (folder / "sub").symlink_to(outside, target_is_directory=True)
        return names

    monkeypatch.setattr(monitor._Count, "read", swapping)
    # Then what it points to is not counted
    assert folder_bytes(folder) == 100 + link_size


def test_a_walk_stops_counting_at_its_limit_and_a_missing_folder_is_empty(tmp_path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for name in ("a", "b", "sub/c", "sub/d"):
        (folder / name).write_bytes(b"x" * 10)
    assert folder_bytes(folder) == 40
    assert folder_bytes(folder, limit=3) == 30
    assert folder_bytes(tmp_path / "missing") == 0
    assert folder_bytes(folder / "a") == 0, "a file is no folder"


def test_a_full_file_system_is_told_from_other_write_failures():
    assert no_space(OSError(errno.ENOSPC, "No space left on device"))
    assert no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert no_space(NoSpace("cannot write x: No space left on device"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("while committing") from exc
    except RuntimeError as chained:
        assert no_space(chained)
    assert not no_space(OSError(errno.EACCES, "Permission denied"))
    assert not no_space(WorkspaceError("cannot write x: Permission denied"))


@pytest.mark.slow
def test_a_workspace_write_on_a_full_file_system_is_a_no_space_error(tmp_path):
    with small_filesystem(tmp_path / "fs", "64k") as fs:
        with open(fs / "fill", "ab", buffering=0) as fill, contextlib.suppress(OSError):
            while True:
                fill.write(b"x" * 4096)
        ws = Workspace(fs / "workspace", durable=False)
        with pytest.raises(NoSpace, match="No space left on device"):
            ws.write_text(fs / "record.json", "x" * 65536)


WRITES = {
    "TMPDIR": 'd="$TMPDIR"',
    "its git dir": 'd="$(git rev-parse --absolute-git-dir)"',
    "the object store": 'd="$(git rev-parse --git-path objects)"',
}


@pytest.mark.slow
@needs_bwrap
@pytest.mark.parametrize("where", list(WRITES))
def test_writing_past_the_disk_cap_outside_the_checkout_stops_the_worker(hosted, where):
    # Given a sandboxed worker in a worktree of the user's repository, under a 20 MB disk cap,
    # that writes 40 files of 1 MiB (each below the file-size limit) somewhere not in its checkout
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(
        git={"isolation": "worktree"},
        workers={"sandbox": "on", "max_disk_mb": 20, "max_log_mb": 5, "monitor_interval": 0.1},
    )
    writer = f'{WRITES[where]}; for i in $(seq 40); do head -c {MB} /dev/zero > "$d/junk_$i" || exit 3; done; sleep 20'
    job = engine.submission.submit("x", {"max_retries": 1, "default_timeout": 60}, [writer])
    engine.queries.wait(job.id, 60)
    # Then it is stopped by the disk cap, not retried
    worker = workers(engine, job)["worker_1"]
    assert worker.status is WorkerStatus.FAILED and worker.exit_reason.startswith("disk cap"), worker.exit_reason
    assert "git dir, TMPDIR and new objects" in worker.exit_reason
    assert len(worker.attempts) == 1 and worker.attempts[0].end_reason == "cap"
    assert snapshot(host, folder) == before


@pytest.mark.slow
@needs_bwrap
@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_writing_past_the_disk_cap_in_the_checkout_stops_the_worker_on_either_backend(hosted, backend):
    # Given a sandboxed worker in a worktree under a 20 MB disk cap (under Landlock its checkout is
    # outside the workspace, which names it by a link), that writes 40 files of 1 MiB in its checkout
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(
        git={"isolation": "worktree"},
        workers={"sandbox": "on", "sandbox_backend": backend, "max_disk_mb": 20, "max_log_mb": 5, "monitor_interval": 0.1},
    )
    writer = f'for i in $(seq 40); do head -c {MB} /dev/zero > "junk_$i" || exit 3; done; sleep 20'
    job = engine.submission.submit("x", {"max_retries": 1, "default_timeout": 60}, [writer])
    engine.queries.wait(job.id, 60)
    # Then its checkout is counted wherever it is: it is stopped by the disk cap
    worker = workers(engine, job)["worker_1"]
    linked = engine.workspace.worker_dir(job.id, 0, "worker_1").is_symlink()
    assert linked is (backend == "landlock")
    assert worker.status is WorkerStatus.FAILED and worker.exit_reason.startswith("disk cap"), worker.exit_reason
    assert len(worker.attempts) == 1 and worker.attempts[0].end_reason == "cap"
    assert snapshot(host, folder) == before


# -- a full file system ----------------------------------------------------------------------------
SHIMS = ["perl shim", "shell shim", "supervisor", "sandboxed"]


@pytest.mark.slow
@pytest.mark.parametrize("shim", SHIMS)
def test_an_exit_status_is_written_on_a_file_system_the_worker_filled(tmp_path, shim):
    # Given an attempt whose exit file is on a small file system, which the worker fills before it exits 0
    with small_filesystem(tmp_path / "fs") as fs:
        if shim == "supervisor":
            if not supervisor.supported():
                pytest.skip("the supervisor needs Linux pidfds")
            runner = ProcessRunner(supervisor=SupervisorClient(tmp_path / "sup"))
        else:
            runner = ProcessRunner(perl=None if shim == "shell shim" else PERL)
        if shim != "shell shim" and PERL is None:
            pytest.skip("no perl on this machine")
        if shim == "sandboxed" and not SUPPORT.available:
            pytest.skip(f"no sandbox on this machine: {SUPPORT.reason}")
        work = fs / "work"  # (in the sandbox, the worker's only writable folder: its exit file is bound on its own)
        work.mkdir()
        sandbox = SandboxSpec(SUPPORT.bwrap, writable=(str(work),)) if shim == "sandboxed" and SUPPORT.bwrap else None
        try:
            exit_file = fs / "exit.1"
            handle = runner.spawn(
                fill_command(work / "fill"),
                cwd=tmp_path,
                env=dict(os.environ),
                log_path=tmp_path / "log",
                tag="f.k.1",
                exit_file=exit_file,
                sandbox=sandbox,
            )
            assert runner.wait(handle, 30) == 0
        finally:
            runner.close()
        # Then the file system is full, and the exit file says how the worker ended (what a restart reads)
        assert os.statvfs(fs).f_bavail == 0
        assert read_exit_file(exit_file) == 0


@pytest.mark.slow
def test_an_attempt_that_finds_no_room_for_its_exit_file_does_not_start_and_leaves_none(tmp_path):
    # Given a full file system where the attempt's exit file goes
    with small_filesystem(tmp_path / "fs", "64k") as fs:
        subprocess.run(fill_command(fs / "fill"), check=True)
        # When an attempt is spawned, it fails with ENOSPC, and no exit file says it began
        with pytest.raises(OSError) as raised:
            ProcessRunner().spawn(
                ["sh", "-c", "touch ran"],
                cwd=fs,
                env=dict(os.environ),
                log_path=tmp_path / "log",
                tag="n.k.1",
                exit_file=fs / "exit.1",
            )
        assert raised.value.errno == errno.ENOSPC
        assert not (fs / "exit.1").exists() and not (fs / "ran").exists()


@pytest.mark.slow
def test_a_full_workspace_ends_the_job_and_a_restart_settles_its_workers_from_their_exit_files(tmp_path):
    # Given a workspace on a small file system, a worker that fills it and exits 0, and one after it
    _, _, fill, path = fill_command(Path("fill"))
    script = 'if [ "$0" = fill ]; then exec python3 -c "$1" "$2"; fi; echo rest ran'
    with small_filesystem(tmp_path / "workspace", "8m") as workspace:
        settings = make_settings(
            tmp_path,
            orchestrator={"worker": "command", "command": ["sh", "-c", script, "{task}", fill, path]},
            workers={"max_disk_mb": 0, "max_log_mb": 0, "max_workers": 1},
        )
        engine = Engine(settings)
        try:
            job = engine.submission.submit("fill the disk", None, ["fill", "rest"])
            # Then the job ends (it never stays running), each worker failed with the reason: the
            # first's final record, the second's start found no room
            done = engine.queries.wait(job.id, 60)
            assert done.status.terminal, done.status
            reasons = {w.name: w.exit_reason for w in engine.queries.snapshot(job.id)[1]}
            assert reasons["worker_1"].startswith("no space left on device while writing its final record"), reasons
            assert reasons["worker_2"].startswith("no space left on device while"), reasons
            assert all(w.status is WorkerStatus.FAILED for w in engine.queries.snapshot(job.id)[1])
            assert any("no space left on device" in note for note in done.notes)
        finally:
            engine.shutdown(timeout=10)
        # and what was on disk is still there and readable: the tree unfinished, the first's exit file
        # with its status, none for the second (it never began)
        ws = engine.workspace
        assert not ws.load_job(job.id).status.terminal
        assert read_exit_file(ws.exit_file(job.id, 0, "worker_1", 1)) == 0
        assert not ws.exit_file(job.id, 0, "worker_2", 1).exists()
        # When a new server takes the tree over while the disk is still full
        middle = Engine(settings)
        try:
            assert middle.takeover.recover() == [job.id]
            # Then the first is not run again, and the job ends here too
            assert middle.queries.wait(job.id, 60).status.terminal
            for worker in middle.queries.snapshot(job.id)[1]:
                assert worker.status is WorkerStatus.FAILED
                assert worker.exit_reason.startswith("no space left on device while"), worker.exit_reason
            assert [a.number for a in workers(middle, job)["worker_1"].attempts] == [1]
        finally:
            middle.shutdown(timeout=10)
        # When there is room again and a third server takes the tree over
        (workspace / f"job_{job.id}" / "depth_0" / "worker_1" / "fill").unlink()
        fresh = Engine(settings)
        try:
            assert fresh.takeover.recover() == [job.id]
            done = fresh.queries.wait(job.id, 60)
            # Then the first is settled from its exit file (its true status) and never ran again, and
            # the second, which never began, runs now, once
            assert done.status is JobStatus.COMPLETED, done.notes
            for worker in fresh.queries.snapshot(job.id)[1]:
                assert worker.status is WorkerStatus.SUCCESS and [a.number for a in worker.attempts] == [1]
                assert ws.worker_log(job.id, 0, worker.name).read_text().count(" started ") == 1
            assert "rest ran" in ws.worker_log(job.id, 0, "worker_2").read_text()
            assert ws.load_job(job.id).status is JobStatus.COMPLETED
        finally:
            fresh.shutdown(timeout=10)


@pytest.mark.slow
def test_a_worktree_job_on_a_full_disk_ends_and_leaves_the_users_repository_as_it_was(tmp_path):
    # Given the user's repository, and the workspace in it, on a small file system, and two workers
    # in worktrees that fill it
    with small_filesystem(tmp_path / "fs", "16m") as fs:
        host, folder = make_host(fs)
        before = snapshot(host, folder)
        sections = {
            "git": {"isolation": "worktree"},
            "orchestrator": {"worker": "command", "command": fill_command(Path("fill"))},
            "workers": {"max_disk_mb": 0, "max_log_mb": 0, "max_workers": 2},
        }
        engine = host_engine(folder, **sections)
        try:
            job = engine.submission.submit("fill the disk", None, ["a", "b"])
            # Then the job ends, each worker failed with the reason
            done = engine.queries.wait(job.id, 60)
            assert done.status.terminal, done.status
            for worker in engine.queries.snapshot(job.id)[1]:
                assert worker.status is WorkerStatus.FAILED
                assert "no space left on device" in worker.exit_reason.lower(), worker.exit_reason
        finally:
            engine.shutdown(timeout=10)
        # and once there is room again, a restart runs nothing again, and the user's repository is as it was
        for fill in (folder / "workspace").glob(f"job_{job.id}/depth_0/*/fill"):
            fill.unlink()
        fresh = host_engine(folder, **sections)
        try:
            fresh.takeover.recover()
            assert fresh.queries.wait(job.id, 60).status.terminal
            for worker in fresh.queries.snapshot(job.id)[1]:
                assert [a.number for a in worker.attempts] == [1]
        finally:
            fresh.shutdown(timeout=10)
        assert snapshot(host, folder) == before


@pytest.mark.slow
def test_a_plain_folders_git_pointer_is_never_followed_by_the_disk_cap(tmp_path):
    # Given a folder (not a worktree) whose worker, in its first attempt, writes a .git pointer to a
    # folder of 30 MB it does not own, and fails; its retry runs a second under a 20 MB cap
    big = tmp_path / "not its own"
    big.mkdir()
    for i in range(30):
        (big / f"f{i}").write_bytes(b"x" * MB)
    script = f'if [ "$ORCHESTRATOR_ATTEMPT" = 1 ]; then printf "gitdir: {big}\\n" > .git; exit 1; fi; sleep 1'
    settings = make_settings(
        tmp_path,
        orchestrator={"worker": "command", "command": ["sh", "-c", script]},
        workers={"max_disk_mb": 20, "max_log_mb": 5, "monitor_interval": 0.1},
    )
    engine = Engine(settings)
    try:
        job = engine.submission.submit("x", {"max_retries": 1}, ["a"])
        engine.queries.wait(job.id, 60)
        # Then its retry is not charged for what the pointer names
        worker = workers(engine, job)["worker_1"]
        assert worker.status is WorkerStatus.SUCCESS, worker.exit_reason
        assert len(worker.attempts) == 2
    finally:
        engine.shutdown(timeout=10)


@pytest.mark.slow
def test_a_worker_that_fills_the_disk_as_it_starts_runs_to_its_end(tmp_path):
    # Given a worker that fills the workspace's file system at once, before its "running" record is
    # written, then runs on for a second and notes (outside) that it did
    seen = tmp_path / "seen"
    seen.mkdir()
    _, _, fill, path = fill_command(Path("fill"))
    script = f'python3 -c "$0" "$1"; sleep 1; touch "{seen}/ran on"'
    with small_filesystem(tmp_path / "workspace", "8m"):
        engine = Engine(
            make_settings(
                tmp_path,
                orchestrator={"worker": "command", "command": ["sh", "-c", script, fill, path]},
                workers={"max_disk_mb": 0, "max_log_mb": 0, "sandbox_writable": [str(seen)]},
            )
        )
        try:
            job = engine.submission.submit("x", None, ["a"])
            engine.queries.wait(job.id, 60)
            # Then it was not stopped for the record the disk refused: it ran to its end, which the
            # record the disk refused at the end says
            worker = workers(engine, job)["worker_1"]
            assert (seen / "ran on").exists(), worker.exit_reason
            assert worker.exit_reason == "no space left on device while writing its final record (it ended: exit code 0)"
        finally:
            engine.shutdown(timeout=10)
