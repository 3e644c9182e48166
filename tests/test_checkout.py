"""The Checkout seam: where the engine prepares, resets, inspects and cleans up a worker's
directory, with real quick workers (``sh -c`` through the command kind) and a recording double."""

from __future__ import annotations

import pytest

from orchestrator.checkouts.checkout import Changes, Checkout, FolderCheckout, finish_checkout
from orchestrator.engine.core import Engine
from orchestrator.errors import ConfigError
from orchestrator.models import JobStatus, WorkerRecord, WorkerStatus
from orchestrator.workspace.layout import Workspace

from .checkout_double import RecordingCheckout, seamed_engines
from .conftest import make_settings, only_worker, run_job, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def seamed(tmp_path):
    with seamed_engines(tmp_path) as factory:
        yield factory


def test_a_worker_that_succeeds_is_prepared_once_then_its_changes_are_read_and_it_is_cleaned_up(seamed):
    engine = seamed()
    job = run_job(engine, "x", tasks=["echo hi > a.txt"], config={"max_retries": 2})
    assert job.status is JobStatus.COMPLETED
    assert engine.checkout.calls == [("prepare", "worker_1", 0), ("changes", "worker_1", 1), ("cleanup", "worker_1", True)]


def test_reset_comes_before_each_retry_and_only_then(seamed):
    # Given a worker that fails every attempt, with two retries
    engine = seamed()
    job = run_job(engine, "x", tasks=["exit 3"], config={"max_retries": 2})
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 3
    # Then each retry was preceded by one reset, after the failed attempt had ended
    assert engine.checkout.calls == [
        ("prepare", "worker_1", 0),
        ("reset", "worker_1", 2, 1, True),
        ("reset", "worker_1", 3, 2, True),
        ("changes", "worker_1", 3),
        ("cleanup", "worker_1", False),
    ]


def test_a_cancelled_worker_is_cleaned_up_once_and_never_reset(seamed):
    engine = seamed()
    job = engine.submission.submit("x", {"max_retries": 2}, ["sleep 30"])
    wait_until(lambda: only_worker(engine, job).attempts, what="the worker started")
    engine.cancel(job.id)
    done = engine.queries.wait(job.id, 20)
    assert done.status is JobStatus.CANCELLED and only_worker(engine, done).status is WorkerStatus.CANCELLED
    assert engine.checkout.calls == [("prepare", "worker_1", 0), ("changes", "worker_1", 1), ("cleanup", "worker_1", False)]


def test_a_timed_out_worker_is_cleaned_up_once_and_never_reset(seamed):
    engine = seamed()
    job = run_job(engine, "x", tasks=["sleep 30"], config={"default_timeout": 0.5, "max_retries": 2})
    assert only_worker(engine, job).status is WorkerStatus.TIMEOUT
    assert engine.checkout.calls == [("prepare", "worker_1", 0), ("changes", "worker_1", 1), ("cleanup", "worker_1", False)]


def test_folder_checkout_gives_todays_files_created(seamed):
    # Given a worker writing two files in its folder and one in its TMPDIR
    engine = seamed(make=FolderCheckout)
    job = run_job(engine, "x", tasks=['mkdir sub && echo a > a.txt && echo b > sub/b.txt && echo t > "$TMPDIR/scratch"'])
    worker = only_worker(engine, job)
    ws = engine.workspace
    folder = ws.worker_dir(job.id, 0, "worker_1")
    # Then files_created lists its folder's files (as Workspace.files_in does), not its TMPDIR's
    assert worker.files_created == ["a.txt", "sub/b.txt"] == ws.files_in(folder)
    assert worker.dir_path == "depth_0/worker_1" and (folder / "a.txt").read_text() == "a\n"


def test_a_chain_of_workers_takes_the_emptied_tmpdir_of_the_one_before_and_never_what_it_left(seamed):
    # Given three workers one after the other (each waits for the one before to end): each tells its
    # TMPDIR's inode and what it found in it, and the second leaves a file there
    engine = seamed(make=FolderCheckout)
    look = 'stat -c %i "$TMPDIR" > ino && ls -A "$TMPDIR" > seen'
    tasks = [
        {"id": "a", "task": look},
        {"id": "b", "task": look + ' && echo left > "$TMPDIR/left"', "depends_on": ["a"]},
        {"id": "c", "task": look, "depends_on": ["b"]},
    ]
    job = run_job(engine, "x", tasks=tasks)
    assert job.status is JobStatus.COMPLETED
    ws = engine.workspace
    folders = [ws.worker_dir(job.id, 0, f"worker_{i}") for i in (1, 2, 3)]
    inodes = [(folder / "ino").read_text().strip() for folder in folders]
    # Then the second worker's TMPDIR was the first's, emptied and renamed (no new folder), every
    # worker found its TMPDIR empty (the second's file went with it), and the tree's end removed them
    assert inodes[0] == inodes[1], inodes
    assert [(folder / "seen").read_text() for folder in folders] == ["", "", ""]
    assert not ws.worker_tmp(job.id, 0, "worker_1").parent.exists()


def _prepared_folder(tmp_path):
    """A workspace with one tree, its worker_1's record and a FolderCheckout that prepared its folder."""
    ws = Workspace(tmp_path / "ws")
    ws.create_job_tree("0123456789ab")
    record = WorkerRecord(
        job_id="0123456789ab", root_id="0123456789ab", name="worker_1", index=1, depth=0, task="t", kind="command"
    )
    checkout = FolderCheckout(ws)
    return ws, record, checkout, checkout.prepare(record, None)


def test_folder_checkout_prepares_the_folder_and_tmpdir_and_its_cleanup_empties_only_the_tmpdir(tmp_path):
    ws, record, checkout, folder = _prepared_folder(tmp_path)
    tmp = ws.worker_tmp("0123456789ab", 0, "worker_1")
    assert folder == ws.worker_dir("0123456789ab", 0, "worker_1") and folder.is_dir() and tmp.is_dir()
    (folder / "work.txt").write_text("w")
    (tmp / "scratch").write_text("s")
    assert checkout.prepare(record, None) == folder and (tmp / "scratch").exists(), (
        "prepare again (a re-adopted worker) keeps both"
    )
    assert checkout.changes(record).unchanged is False  # a file in its folder: a change (its TMPDIR's are not)
    (folder / "work.txt").unlink()
    assert checkout.changes(record) == Changes(files_created=[], unchanged=True)
    (folder / "work.txt").write_text("w")
    checkout.reset(record, 2)
    assert checkout.changes(record) == Changes(files_created=["work.txt"], unchanged=False)
    checkout.cleanup(record, succeeded=True)
    assert not (tmp / "scratch").exists() and (folder / "work.txt").read_text() == "w"


def test_a_folder_swapped_for_a_link_lists_nothing_of_its_target_whether_or_not_it_is_empty(tmp_path):
    # Given a worker's folder, empty (nothing to walk), then swapped for a link to a folder of files
    # the worker could have made it point at (its listing would name them as its work)
    ws, record, checkout, folder = _prepared_folder(tmp_path)
    assert checkout.changes(record) == Changes(files_created=[], unchanged=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("s")
    folder.rmdir()
    folder.symlink_to(elsewhere)
    # When its changes are read, Then none of the target's files is listed
    assert checkout.changes(record) == Changes(files_created=[], unchanged=True)
    # And a link to an empty folder, or no folder at all, lists nothing either
    (elsewhere / "secret.txt").unlink()
    assert checkout.changes(record) == Changes(files_created=[], unchanged=True)
    folder.unlink()
    assert checkout.changes(record) == Changes(files_created=[], unchanged=True)


def test_folder_checkout_keeps_a_failed_attempts_files_for_the_retry(seamed):
    # Given a worker whose first attempt leaves a file and fails, and whose second needs that file
    engine = seamed(make=FolderCheckout)
    script = 'if [ "$ORCHESTRATOR_ATTEMPT" = 1 ]; then echo one > first.txt; exit 1; fi; cat first.txt && echo two > second.txt'
    job = run_job(engine, "x", tasks=[script], config={"max_retries": 1})
    worker = only_worker(engine, job)
    # Then the retry found it (no reset) and both are the worker's files
    assert worker.status is WorkerStatus.SUCCESS and len(worker.attempts) == 2
    assert worker.files_created == ["first.txt", "second.txt"]


def test_the_worker_runs_in_the_directory_prepare_returns(seamed):
    class Inner(RecordingCheckout):
        def prepare(self, record, job):
            inner = super().prepare(record, job) / "inner"
            inner.mkdir()
            return inner

    engine = seamed(make=Inner)
    job = run_job(engine, "x", tasks=["pwd > where.txt"])
    worker = only_worker(engine, job)
    folder = engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert worker.files_created == ["inner/where.txt"]
    assert (folder / "inner" / "where.txt").read_text().strip() == str(folder / "inner")


def test_a_reset_that_raises_fails_the_worker_instead_of_retrying(seamed):
    class Unresettable(RecordingCheckout):
        def reset(self, record, attempt):
            super().reset(record, attempt)
            raise OSError("worktree locked")

    engine = seamed(make=Unresettable)
    job = run_job(engine, "x", tasks=["exit 3"], config={"max_retries": 2})
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1
    assert worker.exit_reason == "could not reset its directory before attempt 2"
    assert worker.error == "could not reset its directory before attempt 2: worktree locked"
    log = (engine.workspace.job_dir(job.id) / worker.log_path).read_text()
    assert "===== could not reset its directory before attempt 2: worktree locked =====" in log
    assert [c[0] for c in engine.checkout.calls] == ["prepare", "reset", "changes", "cleanup"]


def test_a_checkout_that_raises_after_the_last_attempt_does_not_strand_the_worker(seamed):
    class Broken(RecordingCheckout):
        def changes(self, record):
            super().changes(record)
            raise RuntimeError("git exploded")

    engine = seamed(make=Broken)
    job = run_job(engine, "x", tasks=["echo hi > a.txt"])
    worker = only_worker(engine, job)
    # Its work is not known to be anywhere: it fails with the reason, never "success" with no changes.
    assert worker.status is WorkerStatus.FAILED and job.status is not JobStatus.COMPLETED
    assert worker.error == "what it left could not be committed: git exploded"
    assert worker.files_created == []  # unknown, so none listed
    assert engine.checkout.calls[-1] == ("cleanup", "worker_1", True)  # cleaned up all the same


def test_finish_checkout_reads_changes_then_cleans_up_and_never_raises(tmp_path):
    class Failing(Checkout):
        name = "failing"

        def __init__(self):
            self.calls = []

        def prepare(self, record, job):
            raise AssertionError("not called")

        def reset(self, record, attempt):
            raise AssertionError("not called")

        def changes(self, record):
            self.calls.append("changes")
            return Changes(files_created=["x"])

        def cleanup(self, record, succeeded):
            self.calls.append(("cleanup", succeeded))
            raise OSError("disk gone")

        def discard(self, record):
            self.calls.append("discard")
            raise OSError("disk gone")

    record = WorkerRecord(
        job_id="0123456789ab", root_id="0123456789ab", name="worker_1", index=1, depth=0, task="t", kind="command"
    )
    checkout = Failing()
    assert finish_checkout(checkout, record, succeeded=False) == Changes(files_created=["x"])
    assert checkout.calls == ["changes", ("cleanup", False)]


def test_make_checkout_gives_the_isolated_checkout_and_names_the_choices_for_an_unknown_one(tmp_path):
    from orchestrator.checkouts.isolated import IsolatedCheckout, make_checkout

    settings = make_settings(tmp_path)
    workspace = Workspace(settings.workspace_root)
    checkout = make_checkout(settings, workspace)
    # Each job's config.isolation chooses (worktree.py); its folders are today's FolderCheckout
    assert type(checkout) is IsolatedCheckout and checkout.folder.workspace is workspace
    assert type(make_checkout(settings, workspace, "folder")) is FolderCheckout
    engine = Engine(settings, workspace=workspace)
    try:
        assert type(engine.checkout) is IsolatedCheckout and engine.checkout.folder.workspace is workspace
    finally:
        engine.shutdown(timeout=10)
    with pytest.raises(ConfigError, match="unknown checkout 'svn': expected one of isolated, folder"):
        make_checkout(settings, workspace, "svn")


def test_a_prepare_that_raises_fails_the_worker_before_it_runs_and_still_cleans_up(seamed):
    class Unpreparable(RecordingCheckout):
        def prepare(self, record, job):
            super().prepare(record, job)
            raise OSError("no space left for the worktree")

    engine = seamed(make=Unpreparable)
    job = run_job(engine, "x", tasks=["echo ran > ran.txt"], config={"max_retries": 2})
    worker = only_worker(engine, job)
    assert job.status is JobStatus.FAILED and worker.status is WorkerStatus.FAILED and worker.attempts == []
    assert "no space left for the worktree" in worker.error
    assert not (engine.workspace.worker_dir(job.id, 0, "worker_1") / "ran.txt").exists()
    assert [c[0] for c in engine.checkout.calls] == ["prepare", "changes", "cleanup"]


def test_a_checkout_failure_of_the_users_making_is_the_workers_exit_reason_not_an_engine_error(seamed):
    from orchestrator.checkouts.checkout import CheckoutFailed

    class SetupFails(RecordingCheckout):
        def prepare(self, record, job):
            super().prepare(record, job)
            raise CheckoutFailed("setup failed: exit code 7")

    engine = seamed(make=SetupFails)
    job = run_job(engine, "x", tasks=["echo ran > ran.txt"], config={"max_retries": 2})
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and worker.attempts == []
    assert worker.exit_reason == worker.error == "setup failed: exit code 7"
    assert [c[0] for c in engine.checkout.calls] == ["prepare", "changes", "cleanup"]


def test_a_checkout_stopped_by_a_cancel_ends_the_worker_cancelled(seamed):
    from orchestrator.checkouts.checkout import CheckoutFailed

    class Cancelled(RecordingCheckout):
        def prepare(self, record, job):
            super().prepare(record, job)
            raise CheckoutFailed("cancelled during its setup", cancelled=True)

    engine = seamed(make=Cancelled)
    job = run_job(engine, "x", tasks=["echo ran > ran.txt"])
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.CANCELLED and worker.exit_reason == "cancelled during its setup"
    assert worker.error is None and worker.attempts == []


def test_discard_never_raises_and_empties_a_folder(tmp_path):
    """A worker stopped at the disk cap: its files are thrown away, whatever the checkout does."""
    from orchestrator.checkouts.checkout import FolderCheckout, discard

    settings = make_settings(tmp_path)
    workspace = Workspace(settings.workspace_root)
    record = WorkerRecord(
        job_id="0123456789ab", root_id="0123456789ab", name="worker_1", index=1, depth=0, task="t", kind="command"
    )
    folder = workspace.worker_dir(record.root_id, 0, "worker_1")
    (folder / "deep" / "er").mkdir(parents=True)
    (folder / "big").write_bytes(b"x" * 1024)
    (folder / "deep" / "er" / "f").write_text("y")
    discard(FolderCheckout(workspace), record)
    assert list(folder.iterdir()) == []
    folder.rmdir()
    discard(FolderCheckout(workspace), record)  # a folder already gone: logged, never raised
