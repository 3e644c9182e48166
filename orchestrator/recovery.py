"""What a restarted server makes of the job trees a previous server left unfinished.

The records say what the old server knew; the process table and the shims' exit
files say what happened since. Each unfinished worker gets one fate, decided here
from those three sources (no side effects: the engine applies the fates):

==================================================  ============  =====================================
what is found                                       fate          then
==================================================  ============  =====================================
a live shim with the worker's tag                   ADOPT         waited on like any running worker
  (even if the record never said ``running``)
no shim, but an exit file for its latest attempt    ADOPT         its true status is read at once
its process had ended, it waits for child jobs      WAITING       ends when its children end
it never started (no attempt, shim or exit file)    START         runs now, for the first time
an attempt was running and left no trace            LOST          failed, with the reason; not rerun
==================================================  ============  =====================================

Nothing runs twice: a worker with any trace of a start is adopted or marked lost, never
started again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

from .models import Attempt, WorkerRecord
from .runner import FoundShim, process_alive, read_exit_file

LOST_REASON = "lost: the server stopped while it ran, and it left no exit status"


class Fate(str, Enum):
    KEEP = "keep"  # already terminal
    ADOPT = "adopt"
    WAITING = "waiting"
    START = "start"
    LOST = "lost"


@dataclass
class Recovered:
    """One worker's fate; for ADOPT, the shim to adopt (its pid, start time and exit file)."""

    record: WorkerRecord
    fate: Fate
    attempt: Attempt | None = None
    pid: int | None = None
    start_id: str | None = None
    tag: str | None = None
    exit_file: Path | None = None


def decide(
    worker: WorkerRecord,
    shims: list[FoundShim],
    exit_file: Callable[[int], Path],
    max_attempts: int,
) -> Recovered:
    """The fate of one worker. ``shims``: the live shims carrying this worker's tag;
    ``exit_file(n)``: where attempt n's shim writes its status. May append to the record's
    attempts an attempt the old server started but did not live to record."""
    if worker.status.terminal:
        return Recovered(worker, Fate.KEEP)
    fate = _decide(worker, shims, exit_file, max_attempts)
    # Attempts before the one adopted ended before it began: settle what the record missed.
    for attempt in worker.attempts:
        if attempt is not fate.attempt and attempt.ended_at is None and fate.fate is not Fate.LOST:
            _settle_from_exit_file(attempt, exit_file(attempt.number))
    return fate


def _decide(worker: WorkerRecord, shims: list[FoundShim], exit_file: Callable[[int], Path],
            max_attempts: int) -> Recovered:
    last = worker.attempts[-1] if worker.attempts else None
    # 1. A live shim: the record may lag behind it (killed between spawning and recording).
    if shims:
        shim = max(shims, key=lambda s: s.attempt or 0)  # the latest attempt's
        number = shim.attempt or (last.number if last else 1)
        attempt = _attempt(worker, number, shim.exit_file, pid=shim.pid, start_id=shim.start_id)
        return Recovered(worker, Fate.ADOPT, attempt, shim.pid, shim.start_id, shim.tag, shim.exit_file)
    # 2. An exit file newer than anything recorded as ended: it finished while no server watched.
    first = last.number if last is not None and last.ended_at is None else (last.number + 1 if last else 1)
    for number in range(max(max_attempts, first), first - 1, -1):
        path = exit_file(number)
        if read_exit_file(path) is not None:
            attempt = _attempt(worker, number, path)
            if attempt.pid is not None and process_alive(attempt.pid, attempt.pid_start):
                continue  # cannot be: its shim wrote the file and then exits; look again next start
            return Recovered(worker, Fate.ADOPT, attempt, attempt.pid, attempt.pid_start, None, path)
    if last is not None and last.ended_at is not None:
        # Its process ended with the old server watching; it was waiting for its child jobs.
        return Recovered(worker, Fate.WAITING)
    if last is None:
        return Recovered(worker, Fate.START)
    if last.pid is not None and process_alive(last.pid, last.pid_start):
        # Recorded, alive, but its tag was not found (another user's process table view?): adopt by pid.
        return Recovered(worker, Fate.ADOPT, last, last.pid, last.pid_start, None, exit_file(last.number))
    return Recovered(worker, Fate.LOST, last)


def _settle_from_exit_file(attempt: Attempt, path: Path) -> None:
    """An earlier attempt's end, as its shim recorded it (or lost, if it recorded nothing)."""
    code = read_exit_file(path)
    try:
        attempt.ended_at = os.stat(path).st_mtime if code is not None else attempt.started_at
    except OSError:
        attempt.ended_at = attempt.started_at
    if code is None:
        attempt.end_reason = "lost"
    elif code < 0:
        attempt.signal, attempt.end_reason = -code, "signal"
    else:
        attempt.exit_code, attempt.end_reason = code, "exit"


def _attempt(worker: WorkerRecord, number: int, path: Path, *, pid: int | None = None,
             start_id: str | None = None) -> Attempt:
    """The record's attempt ``number``, added if the old server never recorded it."""
    for attempt in worker.attempts:
        if attempt.number == number:
            if pid is not None and attempt.pid is None:
                attempt.pid, attempt.pid_start = pid, start_id
            return attempt
    started = _start_time(pid, path)
    attempt = Attempt(number=number, started_at=started, pid=pid, pid_start=start_id)
    worker.attempts.append(attempt)
    worker.started_at = worker.started_at or started
    return attempt


def _start_time(pid: int | None, path: Path) -> float:
    """When an unrecorded attempt began: its shim's start (or, if gone, its exit file's time)."""
    if pid is not None:
        try:
            import psutil

            return psutil.Process(pid).create_time()
        except Exception:  # noqa: BLE001 - gone meanwhile
            pass
    try:
        return os.stat(path).st_mtime
    except OSError:
        import time

        return time.time()
