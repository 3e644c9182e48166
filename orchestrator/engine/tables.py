"""What the engine holds in memory, guarded by its one lock: the jobs of the trees it runs,
their workers (``LiveWorker``: the record plus the engine's runtime state), the counts the
limits are judged on, and the numbered snapshots that keep record writes in order.

``Tables`` owns that lock: everything here is read and changed inside ``with
tables.locked():``; nothing here does I/O except ``Snapshot.write`` (outside the lock) and
``Tables.forget_tree`` (events only).
"""

from __future__ import annotations

import functools
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import states
from ..errors import no_space
from ..events import EventBus
from ..models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from ..process.executor import AttemptHandle
from ..process.monitor import Footprint
from ..process.runner import Wakeup
from ..states import WorkerPhase
from ..workers.adapters.base import ParsedResult
from ..workspace.ids import worker_key
from ..workspace.layout import Workspace
from . import limits
from .locked_only import own_lock_only


@dataclass
class Versions:
    """A record's writes, made outside the engine lock: each snapshot is numbered under the
    lock, and a write never replaces a newer version another thread already put on disk."""

    taken: int = 0  # the newest snapshot's number
    written: int = 0  # the number on disk
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Snapshot:
    """One record's state, numbered inside ``tables.locked()``, written by ``write`` outside it."""

    versions: Versions
    number: int
    save: Callable[[], None]
    target: tuple[Path, dict[str, Any]] | None = None  # its file and data, for ``write_together``

    def write(self) -> None:
        """Durably (temp + fsync + rename + folder fsync), unless a newer one is on disk."""
        with self.versions.lock:
            if self.number > self.versions.written:
                self.save()
                self.versions.written = self.number


def numbered(versions: Versions, save: Callable[[], None], target: tuple[Path, dict[str, Any]] | None = None) -> Snapshot:
    versions.taken += 1
    return Snapshot(versions, versions.taken, save, target)


def write_snapshots(writes: list[Snapshot]) -> None:
    """Outside the lock, in order (an fsync'd write costs ~1 ms, tens on a busy disk)."""
    for snapshot in writes:
        snapshot.write()


def write_together(workspace: Workspace, writes: list[Snapshot]) -> list[Exception | None]:
    """Outside the lock: each snapshot as ``write_unless_full`` would, the syncs shared
    (``Workspace.save_json_together``); per snapshot, the full disk's exception or None. When the
    shared write fails, each is written alone: each then gets its own answer."""
    ready = [(s, s.target) for s in writes if s.target is not None]
    if len(ready) < 2:
        return [write_unless_full([s]) for s in writes]
    locks = [s.versions.lock for s, _ in ready]
    for lock in locks:  # (only a writer of many holds more than one: one at a time, here)
        lock.acquire()
    try:
        newer = [(s, target) for s, target in ready if s.number > s.versions.written]
        try:
            workspace.save_json_together([target for _, target in newer])
        except Exception:  # each alone, below: the full disk (or the other error) said per record
            pass
        else:
            for snapshot, _ in newer:
                snapshot.versions.written = snapshot.number
            return [None if s.target is not None else write_unless_full([s]) for s in writes]
    finally:
        for lock in locks:
            lock.release()
    return [write_unless_full([s]) for s in writes]


def write_unless_full(writes: list[Snapshot]) -> Exception | None:
    """``write_snapshots``, where a full disk is not an error but an answer: the exception that
    says so is returned (the caller says what an unwritten record means), any other is raised."""
    try:
        write_snapshots(writes)
    except Exception as exc:
        if not no_space(exc):
            raise
        return exc
    return None


@dataclass
class Outcome:
    """How a worker's last attempt ended."""

    status: WorkerStatus
    exit_reason: str
    error: str | None = None
    parsed: ParsedResult | None = None


class RunningAttempts(Protocol):
    """A worker's attempts while they run (``attempts.Attempts``): what the tables read of them."""

    handle: AttemptHandle | None  # the attempt's process, while one runs
    footprint: Footprint  # what its disk cap counts (process/monitor.py)

    def abort(self, reason: str) -> None:
        """Stop the running attempt for ``reason`` (a cap the resource monitor saw exceeded)."""


@dataclass
class LiveWorker:
    """A worker the engine holds: its record, its phase (``states.WorkerPhase``) and runtime state."""

    record: WorkerRecord
    job: JobRecord
    tag: str
    phase: WorkerPhase = WorkerPhase.WAITING
    cancel: Wakeup = field(default_factory=Wakeup)
    outcome: Outcome | None = None  # how its process ended (set as it becomes EXITED, read once as it settles)
    execution: RunningAttempts | None = None  # while its attempts run
    versions: Versions = field(default_factory=Versions)  # of its record on disk

    def exited(self, outcome: Outcome) -> None:
        """Its process ended with ``outcome`` (or it will never start: a skipped outcome)."""
        if states.set_phase(self, WorkerPhase.EXITED):
            self.outcome = outcome


def new_tag(root_id: str, key: str) -> str:
    """The tag a worker's processes carry (how they are found in /proc): unique per worker."""
    return f"{root_id}.{key}.{secrets.token_hex(4)}"


_WORKER_TAG = re.compile(r"[^.]+\.[^.]+\.[0-9a-f]{8}")


def worker_of(tag: str) -> str | None:
    """The key of the worker whose agent carries ``tag`` (``new_tag``'s form), or None for any other
    process of its tree: a gate's (``<root>.<key>.gate-...``), a resolver's. Only a worker's own
    shim is adopted as its attempt after a restart; a gate's exit is never taken for the agent's."""
    return tag.split(".")[1] if _WORKER_TAG.fullmatch(tag) else None


class Tables:
    """The engine's memory of the trees it runs, and the one lock that guards it: every table is
    used inside ``with tables.locked():``, and every method but ``locked`` and ``held`` refuses to
    run outside it (``locked_only``)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        # Reentrant (a part holding it calls another that takes it); its condition wakes the
        # readers waiting for a job to end (``wait``, ``notify_all``).
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        # Whether the calling thread holds the lock: the RLock's own owner check (C, no Python
        # bookkeeping on each acquire), the one ``threading.Condition`` itself relies on.
        self._owned: Callable[[], bool] = lock._is_owned  # type: ignore[attr-defined]
        self.jobs: dict[str, JobRecord] = {}
        self.workers: dict[tuple[str, str], LiveWorker] = {}  # (root id, worker key) -> live worker
        self.pending: dict[str, list[str]] = {}  # job id -> worker keys not started yet
        # (root id, worker key) -> the workers whose attempts run (``LiveWorker.execution`` set):
        # what the resource monitor samples each interval, without a scan of every worker held.
        self.executing: dict[tuple[str, str], LiveWorker] = {}
        self.running: dict[str, int] = {}  # job id -> workers with a live process
        self.unfinished: dict[str, int] = {}  # job id -> workers not yet terminal
        self.tree_cost: dict[str, float] = {}  # root id -> AI cost reported so far (budget)
        # root id -> set when the tree is cancelled: what runs for it outside a worker's attempt (a
        # merge's resolver, delivery/resolving.py) stops; made when first asked for.
        self.tree_stop: dict[str, Wakeup] = {}
        self.slots_used = 0  # global slots held (workers in phase RUNNING)
        self.ending: dict[str, tuple[JobStatus, float]] = {}  # job id -> its outcome, while its reports render
        self.render_locks: dict[str, threading.Lock] = {}
        self.finished_roots: deque[str] = deque()  # newest last; older ones are read from disk
        # Trees a full disk kept a final record of from the disk: they end in memory only, and stay
        # there; on disk they stay unfinished, for a restart to settle from the exit files.
        self.unwritten: set[str] = set()
        # Job records are snapshotted inside ``tables.locked()`` and written (temp + fsync + rename) outside
        # it: an fsync can take tens of ms on a busy disk, and every request (a child job's
        # refusal, a credential check) waits for this lock. Versions keep writes in order.
        self.job_versions: dict[str, Versions] = {}

    def locked(self) -> threading.Condition:
        """The engine's one lock, as a context manager: ``with tables.locked(): ...``."""
        return self._cond

    def held(self) -> bool:
        """Whether the calling thread holds the lock (what ``locked_only`` checks)."""
        return self._owned()

    @own_lock_only
    def wait(self, timeout: float) -> None:
        """Release the lock until ``notify_all`` (a job ended) or ``timeout``."""
        self._cond.wait(timeout)

    @own_lock_only
    def notify_all(self) -> None:
        """Wake every reader in ``wait`` (a job's status changed)."""
        self._cond.notify_all()

    @own_lock_only
    def worker(self, root_id: str, depth: int, name: str) -> LiveWorker | None:
        return self.workers.get((root_id, worker_key(depth, name)))

    @own_lock_only
    def parent_of(self, job: JobRecord) -> LiveWorker | None:
        """The worker that started ``job`` (None for a root)."""
        return self.worker(job.root_id, job.depth - 1, job.parent_worker) if job.parent_worker else None

    @own_lock_only
    def family(self, job: JobRecord) -> tuple[WorkerRecord, list[WorkerRecord]] | None:
        """A child job's parent worker's record and its own workers' records in plan order
        (None for a root, or a parent not held): what merging it back needs (engine/nesting.py)."""
        parent = self.parent_of(job)
        if parent is None:
            return None
        return parent.record, [self.workers[(job.root_id, worker_key(job.depth, n))].record for n in job.worker_names]

    @own_lock_only
    def live_children(self, live: LiveWorker) -> list[str]:
        """The worker's child jobs that have not ended."""
        return [c for c in live.record.child_job_ids if c in self.jobs and not self.jobs[c].status.terminal]

    @own_lock_only
    def tree_spent(self, job: JobRecord) -> float:
        return self.tree_cost.get(job.root_id, 0.0)

    @own_lock_only
    def budget_spent(self, job: JobRecord) -> bool:
        return limits.budget_spent(self.tree_spent(job), job.config.max_cost_usd)

    @own_lock_only
    def budget_note(self, job: JobRecord) -> str:
        return limits.budget_note(self.tree_spent(job), job.config.max_cost_usd)

    @own_lock_only
    def job_snapshot(self, job: JobRecord) -> Snapshot:
        """A job record's current state (``job`` may be a copy about to be applied), numbered,
        to write outside the lock."""
        data = job.to_dict()
        versions = self.job_versions.setdefault(job.id, Versions())
        return numbered(versions, functools.partial(self.workspace.save_job_dict, job.id, data))

    @own_lock_only
    def worker_snapshot(self, live: LiveWorker, record: WorkerRecord | None = None) -> Snapshot:
        """A worker record's current state (or ``record``, a copy about to be applied),
        numbered, to write outside the lock."""
        rec = record or live.record
        data = rec.to_dict()
        save = functools.partial(self.workspace.save_worker_dict, rec.root_id, rec.depth, rec.name, data)
        return numbered(live.versions, save, (self.workspace.worker_record_path(rec.root_id, rec.depth, rec.name), data))

    @own_lock_only
    def counts(self) -> dict[str, int]:
        return {
            "jobs_running": sum(1 for j in self.jobs.values() if not j.status.terminal),
            "workers_running": sum(self.running.values()),
            "slots_used": self.slots_used,
        }

    @own_lock_only
    def forget_tree(self, root_id: str, events: EventBus) -> None:
        """Drop a finished (or deleted) tree's in-memory state."""
        for jid in [j.id for j in self.jobs.values() if j.root_id == root_id]:
            del self.jobs[jid]
            for table in (self.running, self.unfinished, self.pending):
                table.pop(jid, None)
        for key in [k for k in self.workers if k[0] == root_id]:
            del self.workers[key]
            self.executing.pop(key, None)
        self.tree_cost.pop(root_id, None)
        stop = self.tree_stop.pop(root_id, None)
        if stop is not None:
            stop.close()
        self.render_locks.pop(root_id, None)
        for jid in [j for j in self.job_versions if j == root_id or j.startswith(root_id + "-")]:
            del self.job_versions[jid]
        events.forget(root_id)
