"""The stage ledger (workspace/stages.py) and the tag rule that keeps a gate's process from being
adopted as its worker's attempt (engine/tables.worker_of). The whole behaviour across a real
server's kill -9 is tests/chaos/test_stage_restart.py's."""

from __future__ import annotations

import os

from orchestrator.engine.tables import new_tag, worker_of
from orchestrator.workspace.layout import Workspace
from orchestrator.workspace.stages import StageLedger, StageState, rerun_note

ROOT = "0123456789ab"


def ledger(tmp_path) -> StageLedger:
    workspace = Workspace(tmp_path / "workspace")
    workspace.create_job_tree(ROOT)
    return StageLedger(workspace, ROOT)


def test_a_stage_is_new_then_cut_off_then_done_with_its_verdict(tmp_path):
    stages = ledger(tmp_path)
    assert stages.look("gate a").state is StageState.NEW
    first = stages.begin("gate a", commit="c1")
    assert first.state is StageState.NEW and not first.rerun
    # A server stopped here: the next look finds it started, with what its start recorded.
    cut = stages.look("gate a")
    assert cut.state is StageState.CUT_OFF and cut.rerun and cut.started == {"commit": "c1"} and cut.cut_off == 1
    assert stages.begin("gate a").rerun  # run once more, and its start recorded again
    stages.reached("gate a", {"status": "passed"})
    done = stages.look("gate a")
    assert done.state is StageState.DONE and done.verdict == {"status": "passed"} and done.cut_off == 1
    # A stage with a verdict is not started again by ``begin``: the ledger does not grow.
    size = stages.path.stat().st_size
    assert stages.begin("gate a").state is StageState.DONE and stages.path.stat().st_size == size
    assert stages.look("gate b").state is StageState.NEW  # other keys are other stages


def test_a_line_a_kill_cut_short_is_no_write(tmp_path):
    stages = ledger(tmp_path)
    stages.started("landing j")
    with stages.path.open("ab") as out:
        out.write(b'{"key":"landing j","event":"verd')  # the kill came in the middle of the verdict's write
    assert stages.look("landing j").state is StageState.CUT_OFF


def test_the_words_for_a_rerun():
    assert rerun_note("gate tests") == "gate tests re-run: the server stopped during it"


def test_only_a_workers_own_tag_names_the_worker_a_restart_adopts():
    tag = new_tag(ROOT, "depth_0_worker_1")
    assert worker_of(tag) == "depth_0_worker_1"
    assert worker_of(f"{ROOT}.depth_0_worker_1.gate-tests-0a1b2c3d") is None  # a gate's process
    assert worker_of(f"{ROOT}.resolve-0a1b2c3d4e5f") is None  # a resolver's
    assert worker_of(f"{ROOT}.depth_0_worker_1.resolve-gate-0a1b2c3d") is None


def test_a_record_that_cannot_be_written_is_said_and_its_stage_goes_on(tmp_path, caplog, monkeypatch):
    # A full disk must not stop the stage: a job whose landing could not record its start would
    # otherwise never end (tests/test_disk.py has the real full disk). Here the write fails after
    # half a line, as on a disk that fills mid-write.
    import errno

    from orchestrator.workspace import stages as module

    stages = ledger(tmp_path)
    stages.started("gate a")
    before = stages.path.read_bytes()

    def half_then_full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, "write_all", half_then_full)
    assert stages.begin("landing j").state is StageState.NEW
    stages.reached("landing j", {"merge": None})
    assert "not written" in caplog.text and "runs it again" in caplog.text
    assert stages.path.read_bytes() == before  # no half line left for the next one to be glued to
    monkeypatch.undo()
    stages.reached("gate a", {"status": "passed"})
    assert stages.look("gate a").state is StageState.DONE and stages.look("landing j").state is StageState.NEW
