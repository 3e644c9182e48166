"""Reads apart from state changes: ``orchestrator.engine.queries`` answers from the
engine's memory while it holds a tree and from the records on disk otherwise, the same way."""

from __future__ import annotations

import pytest

from orchestrator.engine.queries import Queries
from orchestrator.errors import JobNotFound
from orchestrator.models import JobStatus
from orchestrator.workspace.ids import child_job_id

from .conftest import run_job

pytestmark = pytest.mark.slow

FAIL_B = ["sh", "-c", 'echo "doing $0"; [ "$0" != b ] || { echo "b broke" >&2; exit 3; }', "{task}"]


def test_a_reader_without_an_engine_answers_from_disk_as_the_engine_does_from_memory(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": FAIL_B})
    job = run_job(engine, "two parts", tasks=["a", "b"])
    held, disk = engine.queries, Queries(engine.workspace)
    assert held.holds(job.id) and not disk.holds(job.id)
    assert held.job_counts() == {"partial": 1} and disk.job_counts() == {}
    assert held.get_job(job.id).to_dict() == disk.get_job(job.id).to_dict()
    assert held.wait(job.id, 0).to_dict() == disk.wait(job.id, 0).to_dict()
    assert disk.get_job(job.id).status is JobStatus.PARTIAL
    assert [j.id for j in held.list_jobs()] == [j.id for j in disk.list_jobs()] == [job.id]
    (hj, hw), (dj, dw) = held.snapshot(job.id), disk.snapshot(job.id)
    assert [j.to_dict() for j in hj] == [j.to_dict() for j in dj] and [w.to_dict() for w in hw] == [w.to_dict() for w in dw]
    worker = held.find_worker(job.id, None, "worker_2")
    assert worker.to_dict() == disk.find_worker(job.id, 0, "worker_2").to_dict()
    assert "b broke" in held.read_log(worker)[0] and held.read_log(worker) == disk.read_log(worker)
    assert held.read_report(job.id, "final") == disk.read_report(job.id, "final")
    doc = held.status_document(job.id)
    assert doc["status"] == "partial" and [t["status"] for t in doc["results"]["tasks"]] == ["success", "failed"]
    assert doc == disk.status_document(job.id)


def test_the_status_document_of_a_job_the_tree_does_not_have_is_not_found(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": ["true"]})
    job = run_job(engine, "x", tasks=["a"])
    missing = child_job_id(job.id, 7)
    for reader in (engine.queries, Queries(engine.workspace)):
        with pytest.raises(JobNotFound, match=f"job {missing} not found"):
            reader.status_document(missing)
