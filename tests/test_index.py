"""The job index (orchestrator/index/): jobs, tasks and progress events in SQLite
(the default) or PostgreSQL, fed by the engine's events, rebuilt from the workspace when missing,
stale or corrupt, and what GET /api/v1/jobs lists through."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.engine.queries import Queries
from orchestrator.errors import ConfigError
from orchestrator.events import EventBus, EventType
from orchestrator.index import IndexUnavailable, open_index
from orchestrator.index.rows import SUMMARY_KEYS
from orchestrator.models import JobStatus
from orchestrator.workspace.layout import Workspace

from .conftest import make_settings, run_job
from .postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_index import write_jobs  # noqa: E402

FAIL_B = ["sh", "-c", 'echo "doing $0"; [ "$0" != b ] || { echo "b broke" >&2; exit 3; }', "{task}"]
COMMAND = {"orchestrator": {"worker": "command", "command": FAIL_B}}


def index_of(tmp_path, workspace, **database):
    settings = load_settings(base_dir=tmp_path, environ={}, overrides={"database": database} if database else {})
    return open_index(settings, workspace)


def run_three(engine):
    """Three real jobs: completed, partial (worker b fails), completed; oldest first."""
    return [run_job(engine, f"job {i}", tasks=tasks) for i, tasks in enumerate((["a"], ["a", "b"], ["a", "c"]))]


def listed(index, **query):
    jobs, total = index.page(**query)
    return [(j["job_id"], j["status"]) for j in jobs], total


# -- paging and filters (records written straight to a workspace: fast) ------------------------
@pytest.mark.slow
def test_pages_come_newest_first_filtered_by_status_and_tree(tmp_path):
    workspace = Workspace(tmp_path / "workspace", durable=False)
    jobs = write_jobs(workspace, 120, seed=3)
    index = index_of(tmp_path, workspace)
    try:
        newest_first = [j.id for j in reversed(jobs)]
        found, total = index.page(limit=50, offset=0)
        assert total == 120 and [j["job_id"] for j in found] == newest_first[:50]
        assert [j["job_id"] for j in index.page(limit=50, offset=100)[0]] == newest_first[100:]
        assert index.page(limit=50, offset=500) == ([], 120)
        failed = [j.id for j in reversed(jobs) if j.status is JobStatus.FAILED]
        assert 0 < len(failed) < 120
        pages = [index.page("failed", 7, offset)[0] for offset in range(0, len(failed), 7)]
        assert [j["job_id"] for page in pages for j in page] == failed
        assert all(j["status"] == "failed" for page in pages for j in page)
        assert index.page("failed", 7)[1] == len(failed) and index.page("running")[1] == 0
        one = jobs[5]
        assert listed(index, root_id=one.id) == ([(one.id, one.status.value)], 1)
        # The summary is the one GET /api/v1/jobs gave from the record, plus the index's extras
        first = index.page(limit=1)[0][0]
        record = jobs[-1]
        assert {k: first[k] for k in SUMMARY_KEYS} == {
            "job_id": record.id, "status": record.status.value, "request": record.request[:300], "depth": 0,
            "parent_job_id": None, "workers": len(record.worker_names), "created_at": record.created_at,
            "ended_at": record.ended_at, "duration": record.duration,
        }  # fmt: skip
        workers = [workspace.load_worker(record.id, 0, n) for n in record.worker_names]
        assert first["cost_usd"] == pytest.approx(sum(w.cost_usd for w in workers))
        stats = index.stats()
        assert stats["jobs"]["total"] == 120 and sum(stats["jobs"]["by_status"].values()) == 120
        assert stats["jobs"]["by_status"]["failed"] == len(failed)
        assert stats["workers"]["total"] == sum(len(j.worker_names) for j in jobs)
        assert set(stats["workers"]["by_kind"]) == {"simulated"}
    finally:
        index.close()


def test_a_job_folder_removed_by_hand_leaves_the_listing_and_a_new_one_joins_it(tmp_path):
    workspace = Workspace(tmp_path / "workspace", durable=False)
    jobs = write_jobs(workspace, 10, seed=4)
    index = index_of(tmp_path, workspace)
    try:
        assert index.page()[1] == 10
        workspace.remove_job_tree(jobs[3].id)  # as `orchestrator prune` does without a server
        found, total = index.page()
        assert total == 9 and jobs[3].id not in [j["job_id"] for j in found]
        more = write_jobs(workspace, 2, seed=5, start=1_800_000_000.0)  # written by another process
        found, total = index.page(limit=2)
        assert total == 11 and [j["job_id"] for j in found] == [more[1].id, more[0].id]
    finally:
        index.close()


def test_an_ended_root_is_read_back_from_disk_unless_the_engine_told_its_records_even_across_batches(tmp_path, monkeypatch):
    # Given an index over two finished trees, and its reads of a tree from disk counted
    workspace = Workspace(tmp_path / "workspace", durable=False)
    told, untold = write_jobs(workspace, 2, seed=8)
    index = index_of(tmp_path, workspace)
    read: list[str] = []
    real_walk = Workspace.walk_tree
    try:
        assert index.page()[1] == 2  # (built: its first sync reads every tree)
        monkeypatch.setattr(Workspace, "walk_tree", lambda self, root: (read.append(root), real_walk(self, root))[1])
        # When one root's final records are told (changed: the index must show these), a flush
        # between them and its root's end event, and both roots' end events
        jobs, walk = real_walk(workspace, told.id)
        workers = list(walk)
        next(w for w in workers if w.name == "worker_1").cost_usd = 12.5
        index.tree_ended(told, jobs, workers)
        index.flush()
        for job in (told, untold):
            index.job_event(job, EventBus().publish(job.root_id, type=EventType.JOB, job_id=job.id, status=job.status.value))
        index.flush()
        # Then only the untold one was read back, and the told one holds the records it was told
        assert read == [untold.id]
        assert {t["name"]: t["cost_usd"] for t in index.tasks(told.id)}["worker_1"] == 12.5
    finally:
        index.close()


def test_a_tree_changed_on_disk_while_no_index_ran_is_indexed_again_at_the_next_start(tmp_path):
    workspace = Workspace(tmp_path / "workspace", durable=False)
    jobs = write_jobs(workspace, 4, seed=6)
    index_of(tmp_path, workspace).close()
    changed = jobs[0]
    changed.status, changed.request = JobStatus.CANCELLED, "changed on disk"
    workspace.save_job(changed)
    index = index_of(tmp_path, workspace)
    try:
        row = index.page(root_id=changed.id)[0][0]
        assert (row["status"], row["request"]) == ("cancelled", "changed on disk")
    finally:
        index.close()


def test_a_stalled_writer_drops_rows_without_blocking_and_the_trees_are_indexed_again_from_disk(tmp_path, monkeypatch):
    import threading

    from orchestrator.events import Event
    from orchestrator.index import job_index as core

    workspace = Workspace(tmp_path / "workspace", durable=False)
    jobs = write_jobs(workspace, 6, seed=7)
    index = index_of(tmp_path, workspace)
    try:
        index.flush()
        # Given a writer stuck in the database and a queue of 3 rows
        stuck, release = threading.Event(), threading.Event()
        apply = index._apply

        def slow_apply(batch):
            stuck.set()
            release.wait(30)
            apply(batch)

        monkeypatch.setattr(index, "_apply", slow_apply)
        waiting = index._queue
        monkeypatch.setattr(index, "_queue", core.queue.Queue(3))
        waiting.put(("roots",))  # wakes the writer, into the stuck database
        assert stuck.wait(10)
        # When the engine announces six jobs' ends (their records already final on disk)
        for job in jobs:
            job.status, job.request = JobStatus.CANCELLED, f"ended: {job.id}"
            workspace.save_job(job)
        started = time.perf_counter()
        for job in jobs:
            index.job_event(job, Event(seq=1, time=job.ended_at, type="job", root_id=job.id, job_id=job.id, status="cancelled"))
        # Then the announcing never waited, the rows beyond the queue were dropped and counted
        assert time.perf_counter() - started < 0.5
        assert index.dropped == 3
        release.set()
        # And once the writer moves again, every tree is listed as its records say
        found, total = index.page(limit=10)
        assert total == 6 and {(j["status"], j["request"]) for j in found} == {("cancelled", f"ended: {j.id}") for j in jobs}
    finally:
        release.set()
        index.close()


def test_rows_announced_together_share_one_transaction_and_a_query_does_not_wait_for_company(tmp_path, monkeypatch):
    from orchestrator.events import Event
    from orchestrator.index import job_index as core

    workspace = Workspace(tmp_path / "workspace", durable=False)
    jobs = write_jobs(workspace, 6, seed=11)
    index = index_of(tmp_path, workspace)
    try:
        index.flush()
        # Given a writer whose rows wait for company far longer than a query waits (FLUSH_WAIT)
        monkeypatch.setattr(core, "GATHER", 60.0, raising=False)
        batches = _batches_of(index, monkeypatch)
        # When six jobs' ends are announced one after another (spaced: a writer that does not gather
        # applies each alone), then the listing is asked for
        for job in jobs:
            job.status, job.request = JobStatus.CANCELLED, f"ended: {job.id}"
            workspace.save_job(job)
            index.job_event(job, Event(seq=1, time=job.ended_at, type="job", root_id=job.id, job_id=job.id, status="cancelled"))
            time.sleep(0.05)
        found, total = index.page(limit=10)
        # Then the six rows went in one transaction, and the query's flush ended the wait (no IndexUnavailable)
        assert [b.count("job") for b in batches if "job" in b] == [6], batches
        assert total == 6 and {(j["status"], j["request"]) for j in found} == {("cancelled", f"ended: {j.id}") for j in jobs}
    finally:
        index.close()


def _batches_of(index, monkeypatch) -> list[list[str]]:
    """The kinds of the rows of each batch the index's writer applies from now on."""
    batches: list[list[str]] = []
    apply = index._apply

    def counted(batch):
        batches.append([item[0] for item in batch])
        apply(batch)

    monkeypatch.setattr(index, "_apply", counted)
    return batches


def test_rows_announced_a_tenth_of_a_second_apart_share_one_transaction(tmp_path, monkeypatch):
    """One worker at a time, a worker's events come tens of ms apart: each commit rewrites the pages
    it dirtied, so rows wait long enough (``GATHER``) to share one (a query still cuts it short)."""
    from orchestrator.events import Event

    workspace = Workspace(tmp_path / "workspace", durable=False)
    jobs = write_jobs(workspace, 2, seed=12)
    index = index_of(tmp_path, workspace)
    try:
        index.flush()
        batches = _batches_of(index, monkeypatch)
        # When two jobs' ends are announced 0.1 s apart, and nothing asks the index meanwhile
        for n, job in enumerate(jobs):
            job.status = JobStatus.CANCELLED
            workspace.save_job(job)
            index.job_event(job, Event(seq=1, time=job.ended_at, type="job", root_id=job.id, job_id=job.id, status="cancelled"))
            if n == 0:
                time.sleep(0.1)
        time.sleep(0.4)  # (past GATHER: the query below does not cut the wait short)
        found, total = index.page(limit=10)
        # Then the two rows went in one transaction
        assert [b.count("job") for b in batches if "job" in b] == [2], batches
        assert total == 2 and {j["status"] for j in found} == {"cancelled"}
    finally:
        index.close()


# -- the engine's jobs: fed by events, rebuilt after deletion and corruption -------------------
@pytest.mark.slow
def test_the_sqlite_index_holds_the_engine_s_jobs_and_is_rebuilt_after_deletion_and_corruption(make_engine, tmp_path, caplog):
    engine = make_engine(**COMMAND)
    first, partial, last = run_three(engine)
    assert [s for _, s in listed(engine.index)[0]] == ["completed", "partial", "completed"]
    assert listed(engine.index, status="partial") == ([(partial.id, "partial")], 1)
    assert listed(engine.index, limit=1, offset=1) == ([(partial.id, "partial")], 3)
    before = engine.index.page()[0]
    events = engine.index.events(partial.id)
    assert [e["status"] for e in events if e["type"] == "job"][-1] == "partial"
    failed = [e for e in events if e["worker"] == "worker_2" and e["status"] == "failed"]
    assert failed and failed[0]["kind"] == "command" and failed[0]["message"] == "exit code 3; no changes"  # b writes nothing
    assert engine.index.events(partial.id, after=events[-1]["id"]) == []
    stats = engine.index.stats()
    assert stats["jobs"]["by_status"] == {"completed": 2, "partial": 1}
    assert stats["workers"]["by_kind"] == {"command": {"success": 4, "failed": 1}}
    engine.shutdown(timeout=10)
    database = engine.workspace.root / ".index" / "jobs.sqlite3"
    assert database.is_file()

    # Deleted: the next engine builds it again from the records
    database.unlink()
    again = make_engine(**COMMAND)
    assert again.index.page()[0] == before
    assert [e["status"] for e in again.index.events(partial.id) if e["type"] == "job"] == ["pending", "running", "partial"]
    again.shutdown(timeout=10)

    # Corrupt: moved aside with a log line, then rebuilt
    database.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="orchestrator.index"):
        third = make_engine(**COMMAND)
        assert third.index.page()[0] == before
    assert "moved aside" in caplog.text and "not a usable SQLite database" in caplog.text
    assert len(list(database.parent.glob("jobs.sqlite3.corrupt-*"))) == 1
    # And it goes on being fed by the engine
    newest = run_job(third, "job 4", tasks=["b"])
    assert listed(third.index, limit=1) == ([(newest.id, "failed")], 4)


@pytest.mark.slow
def test_a_tree_s_rows_match_its_records_once_it_ends_even_what_no_event_told(make_engine):
    # Given a task run as two candidates: only the winner hears of its selection by an event
    engine = make_engine(orchestrator={"worker": "command", "command": ["sh", "-c", "echo $0", "{task}"]})
    job = run_job(engine, "two candidates", tasks=["a"], config={"attempts": 2, "select": "fastest"})
    _, records = engine.queries.snapshot(job.root_id)
    # Then the index holds both as the records say: the loser's selected is False, not None
    tasks = engine.index.tasks(job.id)
    assert [(t["name"], t["candidate"], t["selected"], t["status"], t["kind"]) for t in tasks] == [
        (w.name, w.candidate, w.selected, w.status.value, w.kind) for w in records
    ]
    assert sorted(t["selected"] for t in tasks) == [False, True]
    assert engine.index.page()[0][0]["selections"] == 1


@pytest.mark.slow
def test_an_ended_tree_is_indexed_from_the_records_the_engine_wrote_not_read_back_and_equals_a_rebuild(
    make_engine, tmp_path, monkeypatch
):
    # Given a job whose two tasks run as two candidates each (a loser's selected is told by no event),
    # and every read of a tree's records from disk counted
    engine = make_engine(orchestrator={"worker": "command", "command": ["sh", "-c", "echo $0", "{task}"]})
    read: list[str] = []
    real_walk = Workspace.walk_tree

    def walk_tree(self, root_id):
        read.append(root_id)
        return real_walk(self, root_id)

    assert engine.index.page() == ([], 0)  # (built: its first sync reads every tree it finds)
    monkeypatch.setattr(Workspace, "walk_tree", walk_tree)
    job = run_job(engine, "candidates", tasks=["a", "b"], config={"attempts": 2, "select": "fastest"})
    found, listed_row = engine.index.tasks(job.id), engine.index.page(root_id=job.id)
    # Then the index did not read the ended tree back, and holds what its records on disk say
    assert job.id not in read
    assert sorted(t["selected"] for t in found) == [False, False, True, True]
    engine.shutdown(timeout=10)
    rebuilt = index_of(tmp_path, Workspace(engine.workspace.root))
    try:
        assert rebuilt.tasks(job.id) == found
        assert rebuilt.page(root_id=job.id) == listed_row
    finally:
        rebuilt.close()


@pytest.mark.slow
def test_an_unreachable_database_never_stops_the_engine_and_the_listing_reads_the_workspace(make_live, caplog):
    # Given a database URL where nothing listens
    secret = "s3cret-pass"
    with caplog.at_level(logging.INFO):
        live = make_live(database={"url": f"postgresql://orchestrator:{secret}@127.0.0.1:9/none"}, **COMMAND)
        job_id = live.submit(request="x", tasks=["a"]).json()["job_id"]
        # Then jobs still run, the index says it cannot answer, and the route lists from the workspace
        assert live.wait(job_id)["status"] == "completed"
        with pytest.raises(IndexUnavailable):
            live.engine.index.page()
        listing = live.call("GET", "/api/v1/jobs").json()
    assert listing["total"] == 1 and listing["jobs"][0]["job_id"] == job_id and set(listing["jobs"][0]) == set(SUMMARY_KEYS)
    assert "job index: the database failed" in caplog.text and "listing jobs from the workspace" in caplog.text
    assert secret not in caplog.text


@pytest.mark.slow
def test_the_listing_route_answers_from_the_index_through_a_real_server(make_live):
    live = make_live(**COMMAND)
    ids = [live.submit(request=f"job {i}", tasks=tasks).json()["job_id"] for i, tasks in enumerate((["a"], ["a", "b"], ["c"]))]
    for job_id in ids:
        live.wait(job_id)
    scanned = live.call("GET", "/api/v1/jobs").json()  # (the index answers; the scan below is the old way)

    def no_scan():
        raise AssertionError("the listing scanned the workspace")

    live.engine.queries.list_jobs = no_scan
    answer = live.call("GET", "/api/v1/jobs?status=partial&limit=1").json()
    assert answer["total"] == 1 and answer["limit"] == 1 and answer["offset"] == 0
    assert [j["job_id"] for j in answer["jobs"]] == [ids[1]] and set(answer["jobs"][0]) == set(SUMMARY_KEYS)
    everything = live.call("GET", "/api/v1/jobs").json()
    assert [j["job_id"] for j in everything["jobs"]] == ids[::-1] and everything["total"] == 3
    # The same answer as the workspace scan the route used before
    disk = Queries(live.engine.workspace).list_jobs()
    assert [j["job_id"] for j in scanned["jobs"]] == [j.id for j in disk]
    assert live.call("GET", "/api/v1/jobs?offset=2").json()["jobs"] == everything["jobs"][2:]
    # (A worker's credential lists only its own tree: test_api's and test_security's credential tests.)
    # A deleted job leaves the listing at once
    assert live.call("DELETE", f"/api/v1/jobs/{ids[2]}").status_code == 204
    assert [j["job_id"] for j in live.call("GET", "/api/v1/jobs").json()["jobs"]] == ids[1::-1]


# -- PostgreSQL ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_postgresql_backend_holds_the_same_jobs_as_sqlite_and_rebuilds_the_same_way(make_engine, postgres_url, tmp_path):  # noqa: F811
    engine = make_engine(database={"url": postgres_url}, **COMMAND)
    first, partial, last = run_three(engine)
    on_postgres, _ = engine.index.page(limit=10)
    assert [(j["job_id"], j["status"]) for j in on_postgres] == [
        (last.id, "completed"),
        (partial.id, "partial"),
        (first.id, "completed"),
    ]
    assert listed(engine.index, status="partial") == ([(partial.id, "partial")], 1)
    failed = [e for e in engine.index.events(partial.id) if e["worker"] == "worker_2" and e["status"] == "failed"]
    assert failed and failed[0]["kind"] == "command"
    pg_stats = engine.index.stats()
    engine.shutdown(timeout=10)
    # The same tables and answers as the SQLite index built from the same workspace
    sqlite = index_of(tmp_path, engine.workspace)
    try:
        assert sqlite.page(limit=10)[0] == on_postgres
        assert {k: v for k, v in sqlite.stats().items() if k != "events"} == {k: v for k, v in pg_stats.items() if k != "events"}
    finally:
        sqlite.close()
    # A tree deleted while no server ran, and the tables dropped: both rebuilt from the workspace
    engine.workspace.remove_job_tree(first.id)
    second = make_engine(database={"url": postgres_url}, **COMMAND)
    assert listed(second.index) == ([(last.id, "completed"), (partial.id, "partial")], 2)
    second.shutdown(timeout=10)
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE jobs")
    third = make_engine(database={"url": postgres_url}, **COMMAND)
    assert listed(third.index) == ([(last.id, "completed"), (partial.id, "partial")], 2)
    newest = run_job(third, "job 4", tasks=["a"])
    assert listed(third.index, limit=1) == ([(newest.id, "completed")], 3)


# -- settings -----------------------------------------------------------------------------------
def test_database_url_must_be_empty_or_postgresql_and_is_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as refused:
        make_settings(tmp_path, database={"url": "mysql://root:hunter2@db/x"})
    assert "database.url" in str(refused.value) and "postgresql://" in str(refused.value)
    assert "hunter2" not in str(refused.value)
    settings = make_settings(tmp_path, database={"url": "postgresql://u:hunter2@127.0.0.1:5432/jobs"})
    assert "hunter2" not in repr(settings) and settings.database.url.endswith("/jobs")
