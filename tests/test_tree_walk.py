"""A tree's records read one worker at a time (``Workspace.walk_tree``) and the job index's rows
made from them as they are read (``rows.tree_rows``): the same rows as from the whole tree, no
record kept, and a record that cannot be read still leaves that tree out of the index."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from orchestrator.config import load_settings
from orchestrator.index import open_index, rows
from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.workspace.layout import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_index import write_jobs  # noqa: E402


def tree_with_a_pending_worker(workspace: Workspace) -> JobRecord:
    """A root of three workers: two with records on disk, the third never started (no record)."""
    job = JobRecord(
        id="aa0000000001", root_id="aa0000000001", request="walk", status=JobStatus.RUNNING,
        tasks=["one", "two", "three"], worker_names=["worker_1", "worker_2", "worker_3"], planner="explicit",
        created_at=100.0, started_at=101.0,
    )  # fmt: skip
    workspace.create_job_tree(job.root_id)
    workspace.save_job(job)
    for n in (2, 1):
        workspace.save_worker(
            WorkerRecord(
                job_id=job.id,
                root_id=job.id,
                name=f"worker_{n}",
                index=n,
                depth=0,
                task=job.tasks[n - 1],
                kind="command",
                status=WorkerStatus.SUCCESS,
                created_at=100.0 + n,
                started_at=102.0 + n,
                ended_at=110.0 + n,
            )  # fmt: skip
        )
    return job


def test_walk_tree_gives_load_tree_s_records(tmp_path: Path) -> None:
    """Given a tree with a pending worker, walk_tree's jobs and (sorted) workers are load_tree's."""
    workspace = Workspace(tmp_path / "ws", durable=False)
    job = tree_with_a_pending_worker(workspace)
    jobs, walk = workspace.walk_tree(job.root_id)
    walked = sorted(walk, key=lambda w: (w.depth, w.created_at, w.index))
    loaded_jobs, loaded = workspace.load_tree(job.root_id)
    assert [j.to_dict() for j in jobs] == [j.to_dict() for j in loaded_jobs]
    assert [w.to_dict() for w in walked] == [w.to_dict() for w in loaded]
    assert {w.name: w.status for w in loaded} == {
        "worker_1": WorkerStatus.SUCCESS,
        "worker_2": WorkerStatus.SUCCESS,
        "worker_3": WorkerStatus.PENDING,
    }


def test_walk_tree_reads_each_record_as_it_is_drawn(tmp_path: Path) -> None:
    """Given the walk started, when a record not yet drawn is spoiled, then the walk raises there
    (it read nothing ahead), while load_tree, whole, refuses the tree at once."""
    workspace = Workspace(tmp_path / "ws", durable=False)
    job = tree_with_a_pending_worker(workspace)
    _, walk = workspace.walk_tree(job.root_id)
    first = next(walk)
    other = {"worker_1": "worker_2", "worker_2": "worker_1"}[first.name]
    workspace.worker_record_path(job.root_id, 0, other).write_text("{not json", encoding="utf-8")
    try:
        list(walk)
    except ValueError:
        pass
    else:
        raise AssertionError("the spoiled record was read before the walk reached it")


def test_tree_rows_are_the_rows_of_the_whole_tree(tmp_path: Path) -> None:
    """Given seeded trees, the rows made while walking equal those made from the loaded lists."""
    workspace = Workspace(tmp_path / "ws", durable=False)
    for job in write_jobs(workspace, 6, seed=11):
        loaded_jobs, loaded = workspace.load_tree(job.root_id)
        for events in (True, False):
            jobs, walk = workspace.walk_tree(job.root_id)
            found = rows.tree_rows(jobs, walk, events=events)
            assert found.jobs == [rows.job_row(j) for j in loaded_jobs]
            assert sorted(found.tasks, key=repr) == sorted((rows.task_row(w) for w in loaded), key=repr)
            assert found.events == (rows.tree_events(loaded_jobs, loaded) if events else [])


def test_a_tree_whose_record_breaks_mid_walk_is_left_out_of_the_index(tmp_path: Path, caplog) -> None:
    """Given two trees, one with a worker record that is not JSON, when the index is built, then
    that tree is left out with a warning and the other is listed (as when the whole tree was read)."""
    workspace = Workspace(tmp_path / "workspace", durable=False)
    good, bad = write_jobs(workspace, 2, seed=5)
    _, workers = workspace.load_tree(bad.root_id)
    workspace.worker_record_path(bad.root_id, 0, workers[-1].name).write_text("{not json", encoding="utf-8")
    settings = load_settings(base_dir=tmp_path, environ={}, overrides={})
    with caplog.at_level(logging.WARNING, logger="orchestrator.index"):
        index = open_index(settings, workspace)
    try:
        listed = [j["job_id"] for j in index.page(limit=10, offset=0)[0]]
    finally:
        index.close()
    assert listed == [good.id]
    assert f"cannot read the records of tree {bad.root_id}" in caplog.text
