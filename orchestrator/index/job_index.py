"""The job index: a queryable copy of every job, worker and progress event, fed by the engine's
events and rebuilt from the workspace, which stays the source of truth.

Feeding. ``JobIndex`` is an ``announce.Sink``: told of each event, maybe under the engine's
lock, it copies the few fields it needs into a row and queues it (never blocks, never raises).
One writer thread applies the queue in batches: an event's row waits up to ``GATHER`` for the
rows of the workers starting and ending meanwhile, so they share one transaction (a query's
flush, or the close, cuts the wait short; the rows are a copy of the records, never the only
one, so the wait risks nothing a restart's sync does not rebuild). A database that is slow or down never slows
the engine: a full queue drops rows (counted in ``dropped``, logged), a failed batch is logged,
and the trees whose rows were lost are marked dirty and indexed again from their records once
the database answers.

Staleness (what is rebuilt, and when). The ``roots`` table keeps, per root tree, a marker of its
records on disk when it was indexed: the modification times of its ``state/jobs`` and
``state/workers`` folders (every record write is a rename into one of them, which changes the
folder's time). At start the writer compares every root folder's marker with the stored one:
new or changed trees are indexed from disk, trees whose folder is gone are dropped. A tree fed
by events is indexed again from its final records when its root job ends (they hold what no event
told, such as a losing candidate's ``selected``): from the engine's own, the records it has just
written (``tree_ended``: no second read of the tree), or, where the engine does not hold them all
on disk (a full disk kept one from it) or did not say so, read back from disk. While serving, each query first
compares the workspace folder's own time (a root folder created or removed changes it) and, when
it moved, syncs the set of roots the same way. A schema version or workspace other than this
one's empties the tables; a SQLite file that is not a usable database is moved aside and rebuilt
(both logged). So deleting the file, corrupting it, deleting a job folder by hand or running
jobs with another process are all repaired by the next start or query.

Exactness. A query first waits for the writer to apply everything queued before it (a flush), so
a job the engine announced is listed with the state it announced. When the index cannot answer
(not built yet, database down, flush too slow) it raises ``IndexUnavailable`` and the caller
reads the workspace instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ..errors import Unavailable
from ..events import Event, EventType
from ..models import JobRecord, WorkerRecord
from ..workspace.layout import Workspace
from . import rows
from .store import (
    EVENT_COLUMNS,
    JOB_COLUMNS,
    TASK_COLUMNS,
    Connection,
    Corrupt,
    SqliteStore,
    Store,
    transaction,
    upsert,
)

log = logging.getLogger("orchestrator.index")

QUEUE_MAX = 100_000  # rows waiting for the writer; beyond it rows are dropped (and their trees re-indexed later)
BATCH = 1000  # rows per transaction
READY_WAIT = 2.0  # seconds a query waits for the first build before the caller reads the workspace instead
FLUSH_WAIT = 5.0  # seconds a query waits for the writer to catch up
RACY_NS = 50_000_000  # a folder time this close to its reading may hide a change in the same clock tick
ROOTS_PER_COMMIT = 200
# Seconds a row waits for company before its batch is applied: a transaction per event (two per
# worker) was most of the writer's CPU, about a tenth of the server's on 1,000 no-op workers. Each
# commit writes the pages it dirtied again (about 0.4 ms of the writer's CPU a batch), so 0.25 s
# where 0.05 s was: 500 no-op workers one at a time 70-90 -> 17-20 batches, the writer 109-129 ->
# 64-77 us a worker (16 at once: 40-47 -> 10-13 batches, 82-90 -> 55-60 us). A query's flush and
# the close still cut the wait short; a crash loses no more than the restart's sync rebuilds.
GATHER = 0.25


class IndexUnavailable(Unavailable):
    """The index cannot answer now (being built, database down): read the workspace instead
    (a 503 if it reaches a client)."""


class Announcing(Protocol):
    """What ``attach`` needs of the engine's ``announce.Announcer``: its list of sinks."""

    sinks: list[Any]


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class JobIndex:
    """Jobs, tasks (workers) and progress events in SQLite or PostgreSQL; see the module docstring."""

    def __init__(self, store: Store, workspace: Workspace) -> None:
        self.store = store
        self.workspace = workspace
        self.dropped = 0  # rows lost to a full queue (their trees are re-indexed from disk)
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(QUEUE_MAX)
        self._dirty: set[str] = set()  # roots whose rows were lost: indexed again from disk
        self._error: str | None = None  # why the database last failed (None: it works)
        self._ready = threading.Event()
        self._stopping = threading.Event()  # wakes the writer from a back-off at close
        self._gather = threading.Condition()  # a gathering writer waits on it, cut short by ``_flushes``
        self._flushes = 0  # flushes queued and not yet answered: while any is, the writer does not gather
        self._closed = False
        self._conn: Connection | None = None  # the writer's
        self._reader: Connection | None = None
        self._read_lock = threading.Lock()
        self._root_mtime: int | None = None  # the workspace folder's time at the last sync of its roots
        # Ended roots whose rows came from the engine's final records (``tree_ended``): their root's
        # ended job event, which follows, does not read the tree back from disk.
        self._told: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="job-index", daemon=True)
        self._thread.start()

    # -- the sink (called by the engine, maybe under its lock) -------------------------------
    def job_event(self, job: JobRecord, event: Event) -> None:
        try:
            ev = rows.event_row(
                root_id=job.root_id, job_id=job.id, worker=None, kind=None, type=EventType.JOB.value,
                status=event.status, message=event.message, time=event.time,
            )  # fmt: skip
            ended = job.depth == 0 and job.status.terminal
            self._put(("job", job.root_id, rows.job_row(job), ev, ended))
        except Exception:  # a sink never raises into the engine
            log.exception("job index: cannot queue an event of job %s", getattr(job, "id", "?"))

    def worker_event(self, job: JobRecord, record: WorkerRecord, event: Event) -> None:
        try:
            ev = rows.event_row(
                root_id=record.root_id, job_id=record.job_id, worker=record.name, kind=record.kind,
                type=EventType.WORKER.value, status=event.status, message=event.message, time=event.time,
            )  # fmt: skip
            self._put(("worker", record.root_id, rows.task_row(record), ev))
        except Exception:
            log.exception("job index: cannot queue an event of worker %s", getattr(record, "name", "?"))

    def tree_ended(self, job: JobRecord, jobs: list[JobRecord], workers: list[WorkerRecord]) -> None:
        """A root ended and the engine's final records of its tree are on disk (``announce.Sink``):
        its rows are made from them now and replace what the events told, as a read of its records
        would. Its marker is taken first, so a record written after it (a write numbered earlier,
        landing late) shows as a change at the next start and the tree is read again then."""
        try:
            marker = self.marker(job.root_id)
            self._put(("tree", job.root_id, marker, rows.tree_rows(jobs, workers, events=False)))
        except Exception:
            log.exception("job index: cannot queue the rows of tree %s", getattr(job, "root_id", "?"))

    def _put(self, item: tuple[Any, ...]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            if item[0] in ("job", "worker", "tree"):
                self._dirty.add(item[1])
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning(
                    "job index: %d event(s) dropped (the database is slow or down); their trees are re-indexed", self.dropped
                )

    # -- queries ------------------------------------------------------------------------------
    def page(
        self,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        root_only: bool = True,
        root_id: str | None = None,
        outcome: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of jobs, newest first, and how many match: root jobs only unless
        ``root_only`` is false, of every tree or of ``root_id``'s. Each dict is the summary
        GET /api/v1/jobs gives (``rows.SUMMARY_KEYS``) plus the index's extras (``rows.job_dict``)."""
        self.catch_up()
        where, args = [], []
        if root_only:
            where.append("depth = 0")
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if root_id is not None:
            where.append("root_id = ?")
            args.append(root_id)
        if outcome is not None:  # a task status (the task API's filter: api/tasks_routes.py)
            where.append("outcome = ?")
            args.append(outcome)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        cost = "(SELECT SUM(t.cost_usd) FROM tasks t WHERE t.job_id = jobs.id)"
        columns = ", ".join(JOB_COLUMNS)
        listing = f"SELECT {columns}, {cost} FROM jobs{clause} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        found = self._read(
            [(f"SELECT COUNT(*) FROM jobs{clause}", args), (listing, [*args, limit, offset])],
        )
        total = found[0][0][0]
        jobs = [rows.job_dict(r[:-1], _add(r[-1], r[JOB_COLUMNS.index("planner_cost_usd")])) for r in found[1]]
        return jobs, total

    def stats(self) -> dict[str, Any]:
        """Counts across every tree: root jobs by status, child jobs, workers by status and by
        kind and status, total cost (workers and planners), mean root duration, events, drops."""
        self.catch_up()
        found = self._read(
            [
                ("SELECT status, COUNT(*) FROM jobs WHERE depth = 0 GROUP BY status", []),
                ("SELECT COUNT(*), SUM(planner_cost_usd), SUM(selections) FROM jobs WHERE depth > 0", []),
                ("SELECT kind, status, COUNT(*), SUM(cost_usd) FROM tasks GROUP BY kind, status", []),
                ("SELECT AVG(ended_at - started_at), SUM(planner_cost_usd), SUM(selections) FROM jobs WHERE depth = 0", []),
                ("SELECT COUNT(*) FROM events", []),
                ("SELECT outcome, COUNT(*) FROM jobs WHERE depth = 0 GROUP BY outcome", []),
                (  # a completion is WorkerStatus.complete: child_incomplete (a child job missed work) is not one
                    "SELECT kind, COUNT(*), SUM(CASE WHEN status IN ('success', 'recursive_success') THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN selected = 1 THEN 1 ELSE 0 END), SUM(cost_usd), SUM(duration) "
                    "FROM tasks WHERE depth = 0 GROUP BY kind",
                    [],
                ),
            ]
        )
        by_status = {s: n for s, n in found[0]}
        children, child_planning, child_selections = found[1][0]
        mean, root_planning, root_selections = found[3][0]
        workers: dict[str, int] = {}
        by_kind: dict[str, dict[str, int]] = {}
        worker_cost = 0.0
        for kind, status, count, cost in found[2]:
            workers[status] = workers.get(status, 0) + count
            by_kind.setdefault(kind, {})[status] = count
            worker_cost += cost or 0.0
        return {
            "jobs": {"total": sum(by_status.values()), "by_status": by_status},
            "child_jobs": children,
            "workers": {"total": sum(workers.values()), "by_status": workers, "by_kind": by_kind},
            "selections": (root_selections or 0) + (child_selections or 0),
            "cost_usd": round(worker_cost + (root_planning or 0.0) + (child_planning or 0.0), 6),
            "mean_duration": mean,
            "events": found[4][0][0],
            "dropped": self.dropped,
            # The tasks facade's: root jobs by their task status (their outcome), and the root jobs'
            # workers by kind: runs, successes, selections, cost and time.
            "outcomes": {o: n for o, n in found[5]},
            "root_runs": {
                kind: {"runs": n, "completed": ok or 0, "selected": chosen or 0, "cost": cost or 0.0, "duration": took or 0.0}
                for kind, n, ok, chosen, cost, took in found[6]
            },
        }

    def events(self, job_id: str, after: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """A job's progress events (its own and its workers'), oldest first, with ``id`` > ``after``:
        ``{"id", "root_id", "job_id", "worker", "kind", "type", "status", "message", "time"}``
        (``kind``: the worker's kind, the task API's ``cli_name``)."""
        self.catch_up()
        columns = ("id", *EVENT_COLUMNS)
        statement = f"SELECT {', '.join(columns)} FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?"
        found = self._read([(statement, [job_id, after, limit])])[0]
        return [dict(zip(columns, r, strict=True)) for r in found]

    def tasks(self, job_id: str) -> list[dict[str, Any]]:
        """A job's workers as indexed, in plan order: ``store.TASK_COLUMNS`` as keys (``kind`` is
        the task API's ``cli_name``; ``selected`` None, True or False; ``files_changed`` a count)."""
        self.catch_up()
        statement = f"SELECT {', '.join(TASK_COLUMNS)} FROM tasks WHERE job_id = ? ORDER BY created_at, name"
        found = [dict(zip(TASK_COLUMNS, r, strict=True)) for r in self._read([(statement, [job_id])])[0]]
        for task in found:
            task["selected"] = None if task["selected"] is None else bool(task["selected"])
        return sorted(found, key=lambda t: int(t["name"].rsplit("_", 1)[-1]) if t["name"][-1:].isdigit() else 0)

    def catch_up(self) -> None:
        """Before a query: the first build done, the set of roots synced if the workspace folder
        changed, and everything queued before now applied. Raises IndexUnavailable."""
        if self._closed:
            raise IndexUnavailable("the job index is closed")
        if self._error is not None:
            raise IndexUnavailable(f"the job index is unavailable: {self._error}")
        if not self._ready.wait(READY_WAIT):
            raise IndexUnavailable("the job index is still being built from the workspace")
        mtime = _mtime(self.workspace.root)
        if mtime is None or mtime != self._root_mtime:
            try:
                self._queue.put_nowait(("roots",))
            except queue.Full:
                raise IndexUnavailable("the job index's writer is behind") from None
        self.flush()

    def flush(self, timeout: float = FLUSH_WAIT) -> None:
        """Wait until the writer has applied everything queued before this call."""
        marker = _Flush()
        try:
            self._queue.put(("flush", marker), timeout=timeout)
        except queue.Full:
            raise IndexUnavailable("the job index's writer is behind") from None
        with self._gather:  # (after the put: the writer that wakes finds the marker queued)
            self._flushes += 1
            self._gather.notify()
        if not marker.done.wait(timeout) or not marker.ok:
            raise IndexUnavailable(f"the job index's writer is behind or failing: {self._error or 'timed out'}")

    def _read(self, statements: list[tuple[str, list[Any]]]) -> list[list[tuple[Any, ...]]]:
        dialect = self.store.dialect
        with self._read_lock:
            try:
                if self._reader is None:
                    self._reader = self.store.connect()
                with transaction(self._reader) as cur:  # one snapshot for the count and the page
                    answers = []
                    for statement, args in statements:
                        cur.execute(dialect.sql(statement), args)
                        answers.append([tuple(r) for r in cur.fetchall()])
                    return answers
            except Exception as exc:
                self._close_reader()
                raise IndexUnavailable(f"the job index cannot be read: {type(exc).__name__}") from None

    def _close_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                self._reader.close()
            self._reader = None

    def close(self, timeout: float = 10.0) -> None:
        """Apply what is queued, stop the writer, close the connections."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(("stop",), timeout=timeout)
        with self._gather:
            self._gather.notify()
        self._thread.join(timeout)
        with self._read_lock:
            self._close_reader()

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.5
        while not self._closed or not self._queue.empty():
            if self._conn is None and not self._open():
                if self._closed:
                    return
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                self._fail_flushes()
                continue
            backoff = 0.5
            batch = self._take()
            stop = any(item[0] == "stop" for item in batch)
            try:
                self._apply(batch)
                self._error = None
            except Exception as exc:
                self._failed(exc, batch)
            self._finish_flushes(batch)
            if stop:
                break
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()

    def _open(self) -> bool:
        """Connect, make the tables ready (moving a corrupt SQLite file aside) and sync with the
        workspace: everything on the first call, the dirty trees after an outage."""
        try:
            self._conn = self._connect()
            first = not self._ready.is_set()
            started = time.perf_counter()
            if first:
                self._take_dirty()  # the first sync reads every changed tree anyway
                count = self.sync()
            else:
                count = self._reindex(sorted(self._take_dirty()))
            if first:
                log.info(
                    "job index %s ready: %d tree(s) indexed in %.2f s", self.store.where, count, time.perf_counter() - started
                )
            self._error = None
            self._ready.set()
            return True
        except Exception as exc:
            self._failed(exc, [])
            return False

    def _connect(self) -> Connection:
        identity = str(self.workspace.root)
        conn = None
        try:
            conn = self.store.connect()
            self.store.prepare(conn, identity)
        except Corrupt as exc:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            assert isinstance(self.store, SqliteStore)
            aside = self.store.move_aside()
            log.warning("job index: %s; moved aside to %s and rebuilt from the workspace", exc, aside.name)
            conn = self.store.connect()
            self.store.prepare(conn, identity)
        return conn

    def _failed(self, exc: Exception, batch: list[tuple[Any, ...]]) -> None:
        first = self._error is None
        self._error = f"{type(exc).__name__} at {self.store.where}"
        self._dirty.update(item[1] for item in batch if item[0] in ("job", "worker", "tree"))
        if first:
            log.warning("job index: the database failed (%s: %s); the trees it missed are re-indexed when it answers",
                        type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")  # fmt: skip
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _take(self) -> list[tuple[Any, ...]]:
        batch = [self._queue.get()]
        if batch[0][0] in ("job", "worker"):
            with self._gather:  # company for its transaction (see the module docstring)
                self._gather.wait_for(lambda: self._flushes > 0 or self._closed, GATHER)
        # A tree's rows end a batch: what was queued before them is applied first, what follows after.
        while len(batch) < BATCH and batch[-1][0] not in ("stop", "flush", "tree"):
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _take_dirty(self) -> set[str]:
        dirty, self._dirty = self._dirty, set()
        return dirty

    def _fail_flushes(self) -> None:
        """While the database is down: answer waiting flushes (failed) rather than leave them
        hanging, and hold no rows (their trees are re-indexed from disk when it answers)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item[0] == "flush":
                self._answered()
                item[1].done.set()
            elif item[0] == "stop":
                self._closed = True
            elif item[0] in ("job", "worker", "tree"):
                self._dirty.add(item[1])
                self.dropped += 1

    def _finish_flushes(self, batch: list[tuple[Any, ...]]) -> None:
        for item in batch:
            if item[0] == "flush":
                self._answered()
                item[1].ok = self._error is None
                item[1].done.set()

    def _answered(self) -> None:
        with self._gather:
            self._flushes -= 1

    def _apply(self, batch: list[tuple[Any, ...]]) -> None:
        assert self._conn is not None
        dialect = self.store.dialect
        ended: list[str] = []
        new_roots = {item[1] for item in batch if item[0] == "job"}
        with transaction(self._conn) as cur:
            for root in sorted(new_roots):
                cur.execute(
                    dialect.sql("INSERT INTO roots (root_id, marker) VALUES (?, '') ON CONFLICT (root_id) DO NOTHING"), [root]
                )
            jobs = [item[2] for item in batch if item[0] == "job"]
            tasks = [item[2] for item in batch if item[0] == "worker"]
            events = [item[3] for item in batch if item[0] in ("job", "worker")]
            if jobs:
                cur.executemany(dialect.sql(upsert("jobs", JOB_COLUMNS, ("id",))), jobs)
            if tasks:
                cur.executemany(dialect.sql(upsert("tasks", TASK_COLUMNS, ("job_id", "name"))), tasks)
            if events:
                cur.executemany(dialect.sql(_insert("events", EVENT_COLUMNS)), events)
            ended = [item[1] for item in batch if item[0] == "job" and item[4]]
        told = [(item[1], item[2], item[3]) for item in batch if item[0] == "tree"]
        if told:  # an ended tree's final records, as the engine wrote them (the last item of its batch)
            self._write_trees(told, events=False)
            self._told.update(root for root, *_ in told)
        # A tree's records are final on disk when its root ends: its rows are read from them, unless
        # the engine's own were told above (a change no event told, e.g. a loser's selected, is in both).
        reread = [root for root in dict.fromkeys(ended) if root not in self._told]
        self._told.difference_update(ended)
        if reread:
            self._reindex(reread, events=False)
        if any(item[0] == "roots" for item in batch):
            self._sync_roots()
        if self._dirty:
            self._reindex(sorted(self._take_dirty()))

    # -- syncing with the workspace -------------------------------------------------------------
    def marker(self, root_id: str) -> str:
        """Where a tree's records on disk stand: its two record folders' modification times."""
        state = self.workspace.state_dir(root_id)
        return f"{_mtime(state / 'jobs') or 0}:{_mtime(state / 'workers') or 0}"

    def sync(self) -> int:
        """Compare every root folder with what is indexed: drop trees that are gone, index new or
        changed ones from their records. Returns how many trees were indexed."""
        self._root_mtime = _clean_mtime(self.workspace.root, settle=True)
        disk = self.workspace.root_ids()
        known = self._known()
        gone = [root for root in known if root not in set(disk)]
        self._drop(gone)
        markers = {root: self.marker(root) for root in disk}
        return self._reindex([root for root in disk if known.get(root) != markers[root]], markers=markers)

    def _sync_roots(self) -> None:
        """The workspace folder changed: a root folder came or went (by this server or another)."""
        self._root_mtime = _clean_mtime(self.workspace.root)
        disk = set(self.workspace.root_ids())
        known = self._known()
        self._drop([root for root in known if root not in disk])
        self._reindex(sorted(disk.difference(known)))

    def _known(self) -> dict[str, str]:
        assert self._conn is not None
        with transaction(self._conn) as cur:
            cur.execute("SELECT root_id, marker FROM roots")
            return {root: marker for root, marker in cur.fetchall()}

    def _drop(self, roots: list[str]) -> None:
        assert self._conn is not None
        with transaction(self._conn) as cur:
            self._delete(cur, roots)

    def _delete(self, cur: Any, roots: list[str], *, events: bool = True) -> None:
        for table in ("events", "tasks", "jobs", "roots") if events else ("tasks", "jobs", "roots"):
            cur.executemany(self.store.dialect.sql(f"DELETE FROM {table} WHERE root_id = ?"), [(root,) for root in roots])

    def _reindex(self, roots: Iterable[str], *, events: bool = True, markers: dict[str, str] | None = None) -> int:
        """Index trees from their records on disk (replacing what was indexed of them; with
        ``events`` false, their progress events are kept as the live feed recorded them). Each
        tree's rows are made as its records are read, and its records let go: the tree at a
        10,000-worker root's end was read whole beside the engine's own copy of it."""
        count = 0
        chunk: list[tuple[str, str, rows.TreeRows]] = []
        for root in roots:
            # Taken before reading: a write during the read shows as a change next time.
            marker = markers[root] if markers is not None else self.marker(root)
            try:
                jobs, workers = self.workspace.walk_tree(root)
                if not jobs:
                    continue  # being created: its first event indexes it
                found = rows.tree_rows(jobs, workers, events=events)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("job index: cannot read the records of tree %s (%s); it is left out", root, type(exc).__name__)
                continue
            chunk.append((root, marker, found))
            count += 1
            if len(chunk) >= ROOTS_PER_COMMIT:
                self._write_trees(chunk, events)
                chunk = []
        if chunk:
            self._write_trees(chunk, events)
        return count

    def _write_trees(self, trees: list[tuple[str, str, rows.TreeRows]], events: bool) -> None:
        assert self._conn is not None
        dialect = self.store.dialect
        with transaction(self._conn) as cur:  # one transaction: a reader sees the old tree or the new one
            self._delete(cur, [root for root, *_ in trees], events=events)
            cur.executemany(dialect.sql(_insert("roots", ("root_id", "marker"))), [(root, marker) for root, marker, _ in trees])
            cur.executemany(dialect.sql(_insert("jobs", JOB_COLUMNS)), [r for _, _, tree in trees for r in tree.jobs])
            cur.executemany(dialect.sql(_insert("tasks", TASK_COLUMNS)), [r for _, _, tree in trees for r in tree.tasks])
            if events:
                cur.executemany(dialect.sql(_insert("events", EVENT_COLUMNS)), [e for _, _, tree in trees for e in tree.events])


@functools.lru_cache(maxsize=64)  # the same few statements, asked for with every batch
def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _clean_mtime(path: Path, *, settle: bool = False) -> int | None:
    """The folder's time, or None when it is so recent that a change in the same clock tick
    could hide behind it (the next query syncs again). ``settle``: first wait out that tick
    (at most RACY_NS), as the first sync may, so that the first query need not sync again."""
    found = _mtime(path)
    age = time.time_ns() - (found or 0)
    if settle and found is not None and age < RACY_NS:
        time.sleep((RACY_NS - age) / 1e9)
        found = _mtime(path)
        age = time.time_ns() - (found or 0)
    return None if found is None or age < RACY_NS else found
