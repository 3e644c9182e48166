"""The statuses of jobs and workers, the transitions allowed between them, and the one place
that changes a status.

Job status (``JobRecord.status``, on disk and in every response)::

    pending  -> running                      (its plan and workers exist)
    running  -> completed | partial | failed | cancelled   (its last worker ended)
    running  -> waiting                      (approval: before_merge, a root whose workers are all
                                              done and earned completed or partial: nothing merged)
    waiting  -> completed | partial          (approved: landed, the status its workers earned)
    waiting  -> failed                       (rejected with a reason: nothing merged)
    waiting  -> cancelled                    (cancelled while waiting: nothing merged)

A waiting job is not terminal, but nothing of it runs (``JobStatus.at_rest``): a server that
stops or restarts leaves it waiting (engine/takeover.py), and ``wait`` returns on it.

Worker status (``WorkerRecord.status``)::

    pending  -> running                      (dispatched: it holds a slot)
    pending  -> skipped                      (never started: cancelled, or the budget was spent)
    running  -> success | recursive_success | child_incomplete | failed | timeout | cancelled   (settled)
    success | recursive_success | child_incomplete | failed | timeout | cancelled -> running
                                             (a continue round, its job ended: engine/continuing.py)

A worker that exited 0 (its steps passed) is ``success``, or, when it started child jobs,
``recursive_success`` if every one completed and ``child_incomplete`` if one did not (its
``exit_reason`` names it and its status). A job ends ``completed`` only when each of its tasks
is ``success`` or ``recursive_success`` (``WorkerStatus.complete``); a ``child_incomplete``
worker's work still lands and unblocks its dependents (``WorkerStatus.ok``), but its job ends
``partial``, and so does every job above it: work is missing below.

Terminal statuses have no way out. Writing the status a record already has is no transition
and always accepted (each retry's attempt says "running" again); a phase, below, changes or
is refused.

Beside its status, a worker the engine holds has a phase (``WorkerPhase``): where it is in
the engine's own life cycle (does it hold a global slot, has its process ended, is its final
record being written). It is never on disk; a restart rebuilds it from the record.

    waiting  -> running                      (dispatched: its process starts, it takes a slot)
    waiting  -> exited                       (never started: its outcome is "skipped")
    running  -> lending                      (it started a child job, which uses its slot)
    lending  -> running                      (its child jobs ended while it runs: it counts again)
    running | lending -> exited              (its process ended; it may still wait for child jobs)
    exited   -> settling                     (its process and child jobs are done: final record)
    settling -> settled                      (the final record is on disk; its status is terminal)

An illegal change is a bug in the engine. It raises ``IllegalTransition`` when the
``ORCHESTRATOR_STRICT_STATES`` variable is "1" (the tests set it, for the servers they start
too); otherwise it is logged and the old status kept, so a bug shows in the log instead of
ending a server that runs other people's jobs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Protocol

from . import protocol
from .models import JobRecord, JobStatus, WorkerRecord, WorkerStatus

log = logging.getLogger("orchestrator.states")

_J, _W = JobStatus, WorkerStatus

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    _J.PENDING: frozenset({_J.RUNNING}),
    _J.RUNNING: frozenset({_J.COMPLETED, _J.PARTIAL, _J.FAILED, _J.CANCELLED, _J.WAITING}),
    _J.WAITING: frozenset({_J.COMPLETED, _J.PARTIAL, _J.FAILED, _J.CANCELLED}),
    _J.COMPLETED: frozenset(),
    _J.PARTIAL: frozenset(),
    _J.FAILED: frozenset(),
    _J.CANCELLED: frozenset(),
}

# A continue round (engine/continuing.py) can make an ended job's result whole: the one way out of
# an end status, and only upward (what the job reports is what is now true, never less).
AFTER_ROUND: dict[JobStatus, frozenset[JobStatus]] = {
    _J.FAILED: frozenset({_J.PARTIAL, _J.COMPLETED}),
    _J.PARTIAL: frozenset({_J.COMPLETED}),
}

WORKER_TRANSITIONS: dict[WorkerStatus, frozenset[WorkerStatus]] = {
    _W.PENDING: frozenset({_W.RUNNING, _W.SKIPPED}),
    _W.RUNNING: frozenset({_W.SUCCESS, _W.RECURSIVE_SUCCESS, _W.CHILD_INCOMPLETE, _W.FAILED, _W.TIMEOUT, _W.CANCELLED}),
    # A worker that ran may run again only in a continue round (engine/continuing.py), its job ended.
    _W.SUCCESS: frozenset({_W.RUNNING}),
    _W.RECURSIVE_SUCCESS: frozenset({_W.RUNNING}),
    _W.CHILD_INCOMPLETE: frozenset({_W.RUNNING}),
    _W.FAILED: frozenset({_W.RUNNING}),
    _W.TIMEOUT: frozenset({_W.RUNNING}),
    _W.CANCELLED: frozenset({_W.RUNNING}),
    _W.SKIPPED: frozenset(),
}


class WorkerPhase(str, Enum):
    """A held worker's place in the engine's life cycle (see the module docstring)."""

    WAITING = "waiting"  # not started; holds no slot
    RUNNING = "running"  # its process runs and holds a global slot
    LENDING = "lending"  # its process runs; its child job holds its slot meanwhile
    EXITED = "exited"  # its process ended (outcome known); it may wait for child jobs
    SETTLING = "settling"  # its final record is being written
    SETTLED = "settled"  # its status is terminal

    @property
    def holds_slot(self) -> bool:
        return self is WorkerPhase.RUNNING

    @property
    def process_ended(self) -> bool:
        """Its process has ended (or never will start)."""
        return self in (WorkerPhase.EXITED, WorkerPhase.SETTLING, WorkerPhase.SETTLED)


_P = WorkerPhase
PHASE_TRANSITIONS: dict[WorkerPhase, frozenset[WorkerPhase]] = {
    _P.WAITING: frozenset({_P.RUNNING, _P.EXITED}),
    _P.RUNNING: frozenset({_P.LENDING, _P.EXITED}),
    _P.LENDING: frozenset({_P.RUNNING, _P.EXITED}),
    _P.EXITED: frozenset({_P.SETTLING}),
    _P.SETTLING: frozenset({_P.SETTLED}),
    _P.SETTLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A status change the tables above do not allow (a bug in the engine)."""


def strict() -> bool:
    """Whether a refused change raises (tests) rather than being logged (production)."""
    return os.environ.get(protocol.STRICT_STATES) == "1"


def _refuse(what: str, old: Enum, new: Enum, allowed: frozenset[Enum]) -> bool:
    shown = ", ".join(sorted(s.value for s in allowed)) or "nothing (it is terminal)"
    message = f"illegal transition of {what}: {old.value} -> {new.value} (from {old.value} it may go to {shown})"
    if strict():
        raise IllegalTransition(message)
    log.error("%s; kept %s", message, old.value)
    return False


def set_job_status(job: JobRecord, status: JobStatus) -> bool:
    """The one writer of a job's status (``job`` may be a copy about to be written).
    Returns whether the status is now ``status``."""
    return _set_status(job, status, JOB_TRANSITIONS, lambda: f"job {job.id}")


def set_job_status_after_round(job: JobRecord, status: JobStatus) -> bool:
    """An ended job's status once a continue round landed work in its result (``AFTER_ROUND``);
    anything else is refused as ``set_job_status`` refuses."""
    return _set_status(job, status, {old: AFTER_ROUND.get(old, frozenset()) for old in JobStatus}, lambda: f"job {job.id}")


def set_worker_status(record: WorkerRecord, status: WorkerStatus) -> bool:
    """The one writer of a worker's status (``record`` may be a copy about to be written).
    Returns whether the status is now ``status``."""
    return _set_status(record, status, WORKER_TRANSITIONS, lambda: f"worker {record.key} of job {record.job_id}")


def _set_status(record: Any, status: Enum, table: Mapping[Any, frozenset[Any]], what: Callable[[], str]) -> bool:
    """A status change by ``table``: writing the status a record already has is no change and
    always accepted (each retry says "running" again); any other must be in the table."""
    old = record.status
    if status is old:
        return True
    allowed = table[old]
    if status not in allowed:
        return _refuse(what(), old, status, allowed)
    record.status = status
    return True


class PhaseHolder(Protocol):
    """A worker the engine holds: its phase, and its record (to name it in a refusal)."""

    phase: WorkerPhase

    @property
    def record(self) -> WorkerRecord: ...


def set_phase(holder: PhaseHolder, phase: WorkerPhase) -> bool:
    """The one writer of a held worker's phase. Unlike a status, a phase is never written
    twice: a worker that exits or settles twice is a bug. Returns whether it changed."""
    old = holder.phase
    allowed = PHASE_TRANSITIONS[old]
    if phase not in allowed:
        return _refuse(f"the phase of worker {holder.record.key} of job {holder.record.job_id}", old, phase, allowed)
    holder.phase = phase
    return True
