"""Reads: list and find jobs and workers, wait for a job, read logs and reports, copy a tree's
records for a reader, and build a job's status document.

The engine changes state; this module only reads it. A tree the engine holds in memory is
read there, inside ``tables.locked()``, as copies (a reader never sees a record change under
it); any other tree (finished and forgotten, or left by an earlier server run) is read from
its records on disk. ``Queries(workspace)`` alone, with no engine, reads only the disk: what
the command line does with no server running.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

from .. import states
from ..config.quality import GATE_NAME
from ..errors import JobNotFound, ValidationError, WorkerNotFound
from ..models import JobRecord, JobStatus, WorkerRecord
from ..quality.gates import gate_log
from ..reports.status_document import QUIET_AFTER, job_status
from ..reports.status_shapes import StatusDocument
from ..workspace.ids import root_of, validate_job_id, worker_key
from ..workspace.layout import Workspace, read_served
from .locked_only import locked_only


class HeldWorker(Protocol):
    """What a query reads of a worker the engine holds: its record (the engine's ``tables.LiveWorker``)."""

    @property
    def record(self) -> WorkerRecord: ...


class HeldTables(Protocol):
    """What the queries read of the engine's memory (its ``tables.Tables``), inside ``locked()``."""

    @property
    def jobs(self) -> Mapping[str, JobRecord]: ...

    @property
    def workers(self) -> Mapping[tuple[str, str], HeldWorker]: ...

    @property
    def ending(self) -> Mapping[str, tuple[JobStatus, float]]: ...

    def locked(self) -> threading.Condition: ...

    def held(self) -> bool: ...

    def wait(self, timeout: float) -> None: ...


class _DiskOnly:
    """No engine: nothing held in memory, every answer comes from the disk (and the engine
    package's tables are not even imported: the command line starts fast)."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.workers: dict[tuple[str, str], HeldWorker] = {}
        self.ending: dict[str, tuple[JobStatus, float]] = {}
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        self._owned: Callable[[], bool] = lock._is_owned  # type: ignore[attr-defined]

    def locked(self) -> threading.Condition:
        return self._cond

    def held(self) -> bool:
        """Whether this thread holds the lock (``locked_only``): its condition refuses ``wait`` otherwise."""
        return self._owned()

    def wait(self, timeout: float) -> None:
        self._cond.wait(timeout)


class Queries:
    """Read-only answers about jobs and workers, from the engine's memory, else the disk.

    ``tables`` are the engine's (read inside ``tables.locked()``; ``tables.wait`` wakes when a
    job ends): its jobs by id, its workers by (root id, worker key), and the outcome of each job
    whose reports are being rendered. The engine keeps changing them in place; the queries never
    change them. Without ``tables``, only the disk is read."""

    def __init__(
        self,
        workspace: Workspace,
        tables: HeldTables | None = None,
        *,
        quiet_after: float = QUIET_AFTER,
        queue_outage: Callable[[], float | None] | None = None,
    ) -> None:
        self.workspace = workspace
        # Since when the queue to the nodes has not answered (Executor.queue_outage); None: no queue.
        self.queue_outage = queue_outage
        self.quiet_after = quiet_after  # workers.quiet_after: when a running worker's silence is shown
        self.tables: HeldTables = tables if tables is not None else _DiskOnly()
        self._jobs: Mapping[str, JobRecord] = self.tables.jobs
        self._workers: Mapping[tuple[str, str], HeldWorker] = self.tables.workers
        self._ending: Mapping[str, tuple[JobStatus, float]] = self.tables.ending

    @locked_only
    def _record(self, root_id: str, depth: int, name: str) -> WorkerRecord:
        """The live record of a held worker."""
        return self._workers[(root_id, worker_key(depth, name))].record

    # -- trees ------------------------------------------------------------------------
    def snapshot(
        self, root_id: str, job_id: str | None = None, *, outcomes: bool = False
    ) -> tuple[list[JobRecord], list[WorkerRecord]]:
        """Copies of a tree's records, or of one job's subtree; read from disk when the tree is
        not live. ``outcomes``: jobs whose reports are being rendered show the outcome they are
        about to get (for the reports); everyone else sees them running until the reports exist."""
        with self.tables.locked():
            if job_id is not None and job_id in self._jobs:
                jobs = self._subtree(job_id)
            else:
                jobs = [j for j in self._jobs.values() if j.root_id == root_id]
            if not jobs:  # not held: from disk (a root held for its breakers' rounds ends so: engine/ending.py)
                loaded, found = self.workspace.load_tree(root_id)
                for dup in loaded if outcomes else []:
                    if dup.id in self._ending:
                        status, dup.ended_at = self._ending[dup.id]
                        states.set_job_status(dup, status)
                return loaded, found
            copies: list[JobRecord] = []
            workers: list[WorkerRecord] = []
            for job in jobs:
                dup = job.copy()
                if outcomes and job.id in self._ending:
                    status, dup.ended_at = self._ending[job.id]
                    states.set_job_status(dup, status)
                copies.append(dup)
                workers.extend(self._record(job.root_id, job.depth, n).copy() for n in job.worker_names)
        copies.sort(key=lambda j: (j.depth, j.created_at, j.id))
        workers.sort(key=lambda w: (w.depth, w.created_at, w.index))
        return copies, workers

    def _subtree(self, job_id: str) -> list[JobRecord]:
        found = [self._jobs[job_id]]
        for job in found:  # grows while it is walked: breadth first
            for name in job.worker_names:
                record = self._record(job.root_id, job.depth, name)
                found.extend(self._jobs[c] for c in record.child_job_ids if c in self._jobs)
        return found

    def status_document(self, job_id: str) -> StatusDocument:
        """The job's status document (``status_document.job_status``) over its subtree as it is now."""
        root = root_of(job_id)
        jobs, workers = self.snapshot(root, job_id)
        if not any(j.id == job_id for j in jobs):
            raise JobNotFound(f"job {job_id} not found")
        since = self.queue_outage() if self.queue_outage is not None else None
        return job_status(
            job_id, jobs, workers, self.workspace.job_dir(root), quiet_after=self.quiet_after, queue_unreachable_since=since
        )

    def holds(self, root_id: str) -> bool:
        """Whether the engine holds this tree in memory (else it is read from disk)."""
        with self.tables.locked():
            return any(j.root_id == root_id for j in self._jobs.values())

    # -- jobs -------------------------------------------------------------------------
    def get_job(self, job_id: str) -> JobRecord:
        validate_job_id(job_id)
        with self.tables.locked():
            job = self._jobs.get(job_id)
            if job is not None:
                return job.copy()  # the JobConfig is frozen: shared, never rebuilt
        return self.workspace.load_job(job_id)

    def status_of(self, job_id: str) -> JobStatus:
        """A job's status, without a copy of its record (which lists every worker of the job)."""
        validate_job_id(job_id)
        with self.tables.locked():
            job = self._jobs.get(job_id)
            if job is not None:
                return job.status
        return self.workspace.load_job(job_id).status

    def wait(self, job_id: str, timeout: float) -> JobRecord:
        """Block until the job is terminal (reports written), waits for approval, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self.tables.locked():
            while True:
                job = self._jobs.get(validate_job_id(job_id))
                # Not held: its record on disk, which may still say running (a root whose breakers are
                # sent back before it ends, engine/continuing.py): woken again when a job ends.
                found = job if job is not None else self.workspace.load_job(job_id)
                remaining = deadline - time.monotonic()
                if found.status.at_rest or remaining <= 0:  # a job waiting for approval waits for a person
                    return found.copy() if job is not None else found  # the JobConfig is frozen: shared, never rebuilt
                self.tables.wait(remaining)

    def list_jobs(self) -> list[JobRecord]:
        """Live jobs and every root job on disk, newest first."""
        with self.tables.locked():
            seen = {j.id: j.copy() for j in self._jobs.values()}
        for root_id in self.workspace.root_ids():
            if root_id not in seen:
                try:
                    seen[root_id] = self.workspace.load_job(root_id)
                except (JobNotFound, ValueError, OSError):
                    continue
        return sorted(seen.values(), key=lambda j: j.created_at, reverse=True)

    def job_counts(self) -> dict[str, int]:
        """Jobs the engine holds, by status (for the metrics)."""
        with self.tables.locked():
            found: dict[str, int] = {}
            for job in self._jobs.values():
                found[job.status.value] = found.get(job.status.value, 0) + 1
            return found

    # -- workers, logs, reports ---------------------------------------------------------
    def find_worker(self, job_id: str, depth: int | None, name: str) -> WorkerRecord:
        """A worker of the job's tree, by name (at the job's depth) or by depth and name. A held
        job's record is read in place, not copied: it lists every worker of the job, so a copy
        per lookup made following a 10,000-worker job quadratic (``run`` looks up each worker an
        event names)."""
        validate_job_id(job_id)
        with self.tables.locked():
            job = self._jobs.get(job_id)
            if job is not None:
                root_id, at = job.root_id, job.depth if depth is None else depth
                held = self._workers.get((root_id, worker_key(at, name)))
                if held is not None:
                    return WorkerRecord.from_dict(held.record.to_dict())
        if job is None:
            stored = self.workspace.load_job(job_id)
            root_id, at = stored.root_id, stored.depth if depth is None else depth
        return self.workspace.load_worker(root_id, at, name)

    def log_path(self, record: WorkerRecord, gate: str | None = None) -> Path:
        """A worker's log or, with ``gate``, that gate's output (quality/gates.py's ``gate_log``):
        a gate its record lists, or one its job configures (its log appears as it runs). A name
        no gate can have is a ValidationError; another name, WorkerNotFound naming its gates."""
        job_dir = self.workspace.job_dir(record.root_id)
        if gate is None:
            return job_dir / record.log_path
        if not GATE_NAME.match(gate):
            raise ValidationError(f'gate={gate[:70]!r} is not a gate name (letters, digits, "_", "-", "."; at most 64)')
        for entry in record.gates:
            if entry.name == gate and entry.log_path:
                return job_dir / entry.log_path
        names = list(
            dict.fromkeys([g.name for g in record.gates] + [g["name"] for g in self.get_job(record.job_id).config.gates])
        )
        if gate in names:
            return gate_log(self.workspace, record, gate)
        has = f"its gates: {', '.join(names)}" if names else "its job has no gates"
        raise WorkerNotFound(f"worker {record.key} of job {record.job_id} has no gate {gate!r} ({has})", gates=names)

    def read_log(self, record: WorkerRecord, *, tail: int = 0, offset: int = 0, gate: str | None = None) -> tuple[str, int]:
        """A worker's log (or its gate ``gate``'s): whole, its last ``tail`` lines, or from ``offset``;
        and the offset just past what was read."""
        data, size = read_served(self.workspace, self.log_path(record, gate), offset=offset, tail_lines=tail)
        return data.decode("utf-8", errors="replace"), size

    def follow_log(self, record: WorkerRecord, offset: int, deadline: float, gate: str | None = None) -> Iterator[bytes]:
        """New bytes of a worker log (or its gate ``gate``'s) as they are written, until the worker
        ends or ``deadline``."""
        path = self.log_path(record, gate)
        while True:
            data, size = read_served(self.workspace, path, offset=offset, max_bytes=1 << 20)
            if data:
                offset += len(data)
                yield data
                continue
            current = self.find_worker(record.job_id, record.depth, record.name)
            if current.status.terminal or time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def read_report(self, job_id: str, name: str) -> str:
        job = self.get_job(job_id)
        if name == "final":
            path = self.workspace.final_report(job.root_id)
        elif name.startswith("level_") and name[6:].isascii() and name[6:].isdigit() and len(name) < 10:
            path = self.workspace.level_report(job.root_id, int(name[6:]))
        else:
            raise ValidationError(f"report name {name[:40]!r}: use 'final' or 'level_<depth>' (e.g. level_0)")
        data, _ = read_served(self.workspace, path)
        if not data and not path.is_file():
            raise JobNotFound(
                f"report {name} of job {job_id} is not written yet (job {job.status.value}); it appears when the job ends"
            )
        return data.decode("utf-8", errors="replace")
