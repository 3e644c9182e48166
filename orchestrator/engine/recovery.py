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
an exit file with no status, and no shim            LOST          failed, with the reason; not rerun
its process had ended, it waits for child jobs      WAITING       ends when its children end
it never started (no attempt, shim or exit file)    START         runs now, for the first time
an attempt was running and left no trace            LOST          failed, with the reason; not rerun
==================================================  ============  =====================================

Nothing runs twice: a worker with any trace of a start is adopted or marked lost, never
started again. And no run goes unlisted: the record on disk may lag behind by several
attempts (a short one gets no "running" write, so a failure and its retry can both end
before the next write); the attempts before the adopted one are rebuilt from their start
lines in the worker log and their exit files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..models import Attempt, EndReason, WorkerRecord
from ..process.procscan import process_alive
from ..process.shim import FoundAttempt, read_exit, read_exit_file

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
    shims: list[FoundAttempt],
    exit_file: Callable[[int], Path],
    max_attempts: int,
    attempt_start: Callable[[int], tuple[int, float] | None] = lambda n: None,
) -> Recovered:
    """The fate of one worker. ``shims``: the live shims carrying this worker's tag;
    ``exit_file(n)``: where attempt n's shim writes its status; ``attempt_start(n)``: where
    attempt n's output starts in the worker log and when it began, if its start line is there.
    May add to the record's attempts those the old server started but did not live to record:
    the record on disk lags behind by every attempt that ended (or began) since its last write."""
    if worker.status.terminal:
        return Recovered(worker, Fate.KEEP)
    fate = _decide(worker, shims, exit_file, max_attempts, attempt_start)
    if fate.fate is Fate.ADOPT and fate.attempt is not None:
        _add_unrecorded(worker, fate.attempt, exit_file, attempt_start)
    # Attempts before the one adopted ended before it began: settle what the record missed.
    for attempt in worker.attempts:
        if attempt is not fate.attempt and attempt.ended_at is None and fate.fate is not Fate.LOST:
            _settle_from_exit_file(attempt, exit_file(attempt.number))
    return fate


def _decide(
    worker: WorkerRecord,
    shims: list[FoundAttempt],
    exit_file: Callable[[int], Path],
    max_attempts: int,
    attempt_start: Callable[[int], tuple[int, float] | None],
) -> Recovered:
    last = worker.attempts[-1] if worker.attempts else None
    # 1. A live shim: the record may lag behind it (killed between spawning and recording).
    if shims:
        shim = max(shims, key=lambda s: s.attempt or 0)  # the latest attempt's
        number = shim.attempt or (last.number if last else 1)
        attempt = _attempt(worker, number, shim.exit_file, attempt_start, pid=shim.pid, start_id=shim.start_id)
        return Recovered(worker, Fate.ADOPT, attempt, shim.pid, shim.start_id, shim.tag, shim.exit_file)
    # 2. An exit file newer than anything recorded as ended: it finished while no server watched.
    first = last.number if last is not None and last.ended_at is None else (last.number + 1 if last else 1)
    begun: int | None = None  # the latest attempt whose exit file is there with no status in it
    for number in range(max(max_attempts, first), first - 1, -1):
        path = exit_file(number)
        if read_exit_file(path) is not None:
            attempt = _attempt(worker, number, path, attempt_start)
            if attempt.pid is not None and process_alive(attempt.pid, attempt.pid_start):
                continue  # cannot be: its shim wrote the file and then exits; look again next start
            return Recovered(worker, Fate.ADOPT, attempt, attempt.pid, attempt.pid_start, None, path)
        if begun is None and path.exists():
            begun = number
    if last is not None and last.ended_at is not None and begun is None:
        # Its process ended with the old server watching; it was waiting for its child jobs.
        return Recovered(worker, Fate.WAITING)
    if last is not None and last.ended_at is None and last.pid is not None and process_alive(last.pid, last.pid_start):
        # Recorded, alive, but its tag was not found (another user's process table view?): adopt by pid.
        return Recovered(worker, Fate.ADOPT, last, last.pid, last.pid_start, None, exit_file(last.number))
    if begun is not None:
        # Its spawn made the exit file (shim.reserve_exit_file), and no shim lives or told a status:
        # it began (whatever the record managed to say), so it is never started again.
        return Recovered(worker, Fate.LOST, _attempt(worker, begun, exit_file(begun), attempt_start))
    if last is None:
        return Recovered(worker, Fate.START)
    return Recovered(worker, Fate.LOST, last)


def _add_unrecorded(
    worker: WorkerRecord,
    adopted: Attempt,
    exit_file: Callable[[int], Path],
    attempt_start: Callable[[int], tuple[int, float] | None],
) -> None:
    """Attempts before the adopted one that the record never listed (each ran, ended, and was
    retried before the old server wrote the record again): rebuilt from the log's start line
    and, by ``decide``, from their exit files, so no run goes unaccounted for."""
    recorded = {a.number for a in worker.attempts}
    for number in range(1, adopted.number):
        if number in recorded:
            continue
        offset, started = _start_of(number, None, exit_file(number), attempt_start)
        worker.attempts.append(Attempt(number=number, started_at=started, log_offset=offset))
    worker.attempts.sort(key=lambda a: a.number)
    worker.started_at = min(a.started_at for a in worker.attempts)


def _settle_from_exit_file(attempt: Attempt, path: Path) -> None:
    """An earlier attempt's end, as its shim recorded it (or lost, if it recorded nothing); a timeout
    when its shim (or supervisor) stopped it at its deadline."""
    found = read_exit(path)
    code = found.code if found is not None else None
    try:
        attempt.ended_at = os.stat(path).st_mtime if code is not None else attempt.started_at
    except OSError:
        attempt.ended_at = attempt.started_at
    if code is None:
        attempt.end_reason = EndReason.LOST
    elif code < 0:
        attempt.signal, attempt.end_reason = -code, EndReason.SIGNAL
    else:
        attempt.exit_code, attempt.end_reason = code, EndReason.EXIT
    if found is not None and found.stopped_by:
        attempt.end_reason = EndReason.TIMEOUT


def _attempt(
    worker: WorkerRecord,
    number: int,
    path: Path,
    attempt_start: Callable[[int], tuple[int, float] | None],
    *,
    pid: int | None = None,
    start_id: str | None = None,
) -> Attempt:
    """The record's attempt ``number``, added if the old server never recorded it."""
    for attempt in worker.attempts:
        if attempt.number == number:
            if pid is not None and attempt.pid is None:
                attempt.pid, attempt.pid_start = pid, start_id
            return attempt
    offset, started = _start_of(number, pid, path, attempt_start)
    attempt = Attempt(number=number, started_at=started, pid=pid, pid_start=start_id, log_offset=offset)
    worker.attempts.append(attempt)
    worker.started_at = worker.started_at or started
    return attempt


def _start_of(
    number: int, pid: int | None, path: Path, attempt_start: Callable[[int], tuple[int, float] | None]
) -> tuple[int, float]:
    """(log offset, start time) of an unrecorded attempt: from its start line in the worker
    log (to the millisecond), else from its shim or exit file, with offset 0 (no start line to
    mark where its output begins)."""
    found = attempt_start(number)
    return found if found is not None else (0, _start_time(pid, path))


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
