"""Shared-checkout locks: advisory locks on paths, one table per root tree.

Workers of an ``isolation: folder`` job that share one directory take a lock on the paths they
are about to edit (``POST /api/v1/jobs/{id}/locks``, or ``orchestrator-lock PATH... -- CMD``).
Paths are relative to the shared folder (or repository), ``/``-separated, never absolute and
never with a ``..`` part; ``.`` is the whole folder. Two requests conflict when a path of one
equals a path of the other or is a folder holding it (``src`` and ``src/a.py``).

* A conflicting request waits up to ``wait`` seconds (``tasks.lock_timeout``) for the holder to
  let go, then raises ``Conflict`` (409) naming the holder (worker and job) and its paths.
* A lock lasts ``lease`` seconds (``tasks.lock_lease``) unless released first; an expired lease
  frees itself. Re-acquiring the same paths as the same holder renews the lease (same lock);
  a holder's own locks never conflict with each other.
* A lock dies with its worker: the engine calls ``release_worker`` when a worker's process ends
  (``Engine.release_locks``, an ``EngineHooks`` hook, outside the engine's lock). A request whose worker ended while it waited is
  granted nothing.
* Locks are advisory: nothing stops a worker that does not ask. ``PathLocks`` keeps them in the
  server's memory (a server restart frees them all); under ``distributed.executor: rq``
  ``cluster/locks.py``'s ``RedisPathLocks`` keeps them in Redis, with the same rules, so that
  several server processes share them. Both are a ``LockTable``.

Time is the engine's ``Clock`` (leases on wall time for the record, waits on monotonic time),
so a test can drive the leases with a fake clock.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..clock import Clock
from ..config.quality import relative_path
from ..config.schema import TasksSettings
from ..errors import Conflict, Forbidden, InvalidParameter, JobNotFound

MAX_PATHS = 100
MAX_PATH_CHARS = 1024
MAX_LEASE = 86400.0
MAX_WAIT = 3600.0
LOCK_ID_RE = re.compile(r"lk-[0-9a-f]{16}")
ADMIN = "admin"  # the holder of a lock the admin key took


@dataclass
class Lock:
    """One granted lock."""

    lock_id: str
    root_id: str
    job_id: str
    worker: str | None  # None: the admin key's
    paths: list[str]
    acquired_at: float
    expires_at: float  # wall time, for the record
    deadline: float = field(default=0.0, repr=False)  # monotonic: when the lease ends

    @property
    def holder(self) -> str:
        return self.worker or ADMIN

    def to_dict(self) -> dict[str, Any]:
        return {
            "lock_id": self.lock_id,
            "paths": list(self.paths),
            "worker": self.worker,
            "job_id": self.job_id,
            "acquired_at": self.acquired_at,
            "expires_at": self.expires_at,
        }


def check_paths(value: object) -> list[str]:
    """Normalised lock paths (``./a//b/`` -> ``a/b``; the whole folder is ``.``), deduplicated in
    order; ``InvalidParameter`` (422) naming the offending entry."""
    if not isinstance(value, list) or not value or len(value) > MAX_PATHS:
        raise InvalidParameter(
            f'paths must be a list of 1 to {MAX_PATHS} paths relative to the shared folder, e.g. ["src/app.py", "docs"]',
            field="paths",
        )
    found: list[str] = []
    for i, raw in enumerate(value):
        where = f"paths[{i}]"
        if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_PATH_CHARS or "\0" in raw:
            raise InvalidParameter(
                f"{where} must be a non-empty path of at most {MAX_PATH_CHARS} characters, relative to the shared folder",
                field=where,
            )
        clean = relative_path(raw)
        if clean is None:
            raise InvalidParameter(
                f"{where}={raw[:200]!r} escapes the shared folder: give a path relative to it, without "
                '".." or a leading "/" (e.g. "src/app.py")',
                field=where,
            )
        path = clean or "."
        if path not in found:
            found.append(path)
    return found


def check_seconds(value: object, name: str, default: float, low: float, high: float) -> float:
    """``lease`` or ``wait`` from a request body: a number of seconds in range (None: ``default``)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidParameter(f"{name} must be a number of seconds from {low:g} to {high:g}", field=name)
    return float(value)


def overlaps(a: str, b: str) -> bool:
    """Equal, or one a folder holding the other (``.`` holds everything)."""
    return a == b or a == "." or b == "." or b.startswith(a + "/") or a.startswith(b + "/")


class LockTable(Protocol):
    """What the API and the engine use of a lock table (``PathLocks``, ``cluster.locks.RedisPathLocks``)."""

    def acquire(
        self,
        root_id: str,
        job_id: str,
        worker: str | None,
        paths: Sequence[str],
        lease: float | None = None,
        wait: float | None = None,
        alive: Callable[[], bool] | None = None,
    ) -> Lock: ...

    def release(self, root_id: str, lock_id: str, by: str | None) -> Lock: ...

    def release_worker(self, root_id: str, worker: str) -> list[Lock]: ...

    def locks(self, root_id: str) -> list[Lock]: ...

    def close(self) -> None: ...


class PathLocks:
    """The lock tables of every root tree; thread-safe. ``settings``: lock_timeout, lock_lease."""

    def __init__(self, clock: Clock, settings: TasksSettings) -> None:
        self.clock = clock
        self.settings = settings
        self._lock = threading.Lock()
        self._trees: dict[str, dict[str, Lock]] = {}  # root id -> lock id -> lock
        self._waiters: set[threading.Event] = set()  # woken on every release

    def acquire(
        self,
        root_id: str,
        job_id: str,
        worker: str | None,
        paths: Sequence[str],
        lease: float | None = None,
        wait: float | None = None,
        alive: Callable[[], bool] | None = None,
    ) -> Lock:
        """Lock ``paths`` (already ``check_paths``-ed) for ``worker`` (None: the admin key), waiting
        up to ``wait`` seconds for conflicting holders. ``alive``: whether the worker still runs (a
        lock granted to a worker that ended while it waited is dropped: ``Conflict``)."""
        lease = self.settings.lock_lease if lease is None else lease
        wait = self.settings.lock_timeout if wait is None else wait
        give_up = self.clock.monotonic() + wait
        wake = threading.Event()
        try:
            while True:
                with self._lock:
                    self._waiters.discard(wake)
                    wake.clear()
                    now = self.clock.monotonic()
                    table = self._tree(root_id, now, create=True)
                    blocking = [h for h in table.values() if h.holder != (worker or ADMIN) and conflict(h.paths, paths)]
                    if not blocking:
                        granted = self._grant(table, root_id, job_id, worker, list(paths), lease, now)
                        break
                    if now >= give_up:
                        raise held_error(blocking[0], wait, now)
                    self._waiters.add(wake)
                    until = min([give_up] + [h.deadline for h in blocking])
                self.clock.wait(wake, until - now)
        finally:
            with self._lock:
                self._waiters.discard(wake)
        if alive is not None and not alive():  # it ended meanwhile (release_worker may have run before the grant)
            self.release(root_id, granted.lock_id, None)
            raise Conflict(f"worker {worker} of job {job_id} is no longer running: no lock for it", worker=worker)
        return granted

    def release(self, root_id: str, lock_id: str, by: str | None) -> Lock:
        """Release a lock: only its holder ``by`` (a worker's name) or the admin key (None)."""
        with self._lock:
            table = self._tree(root_id, self.clock.monotonic())
            found = table.get(lock_id)
            if found is None:
                raise JobNotFound(f"lock {lock_id} not found in job tree {root_id} (released, or its lease ended)")
            if by is not None and found.worker != by:
                raise Forbidden(
                    f"lock {lock_id} is held by {found.holder}, not worker {by}: only its holder or the admin key may release it"
                )
            del table[lock_id]
            if not table:
                self._trees.pop(root_id, None)
            self._wake()
        return found

    def release_worker(self, root_id: str, worker: str) -> list[Lock]:
        """Every lock ``worker`` holds in the tree goes (its process has ended)."""
        with self._lock:
            table = self._trees.get(root_id, {})
            gone = [lock for lock in table.values() if lock.worker == worker]
            for lock in gone:
                del table[lock.lock_id]
            if gone:
                self._wake()
            if not table:
                self._trees.pop(root_id, None)
        return gone

    def locks(self, root_id: str) -> list[Lock]:
        """The tree's live locks, oldest first."""
        with self._lock:
            return sorted(self._tree(root_id, self.clock.monotonic()).values(), key=lambda lock: lock.acquired_at)

    def close(self) -> None:
        """Nothing to let go of (the Redis table's listener has a thread and a connection)."""

    # -- under self._lock ------------------------------------------------------------------
    def _tree(self, root_id: str, now: float, create: bool = False) -> dict[str, Lock]:
        """The tree's table, expired leases dropped (a tree without locks has none unless ``create``)."""
        table = self._trees.setdefault(root_id, {}) if create else self._trees.get(root_id, {})
        expired = [lock_id for lock_id, lock in table.items() if lock.deadline <= now]
        for lock_id in expired:
            del table[lock_id]
        if expired:
            self._wake()
        return table

    def _grant(
        self, table: dict[str, Lock], root_id: str, job_id: str, worker: str | None, paths: list[str], lease: float, now: float
    ) -> Lock:
        wall = self.clock.time()
        for held in table.values():  # the same holder asking for the same paths: a renewal
            if held.worker == worker and held.job_id == job_id and sorted(held.paths) == sorted(paths):
                held.expires_at, held.deadline = wall + lease, now + lease
                return held
        lock = Lock(f"lk-{secrets.token_hex(8)}", root_id, job_id, worker, paths, wall, wall + lease, now + lease)
        table[lock.lock_id] = lock
        return lock

    def _wake(self) -> None:
        for event in self._waiters:
            event.set()


def conflict(held: Sequence[str], wanted: Sequence[str]) -> bool:
    """Whether a lock on ``held`` blocks one on ``wanted`` (some pair ``overlaps``)."""
    return any(overlaps(a, b) for a in held for b in wanted)


def held_error(holder: Lock, waited: float, now: float) -> Conflict:
    """The 409 for a request that waited ``waited`` seconds in vain; ``now`` on the holder's deadline's clock."""
    who = "the admin key" if holder.worker is None else f"worker {holder.worker} of job {holder.job_id}"
    return Conflict(
        f"locked by {who} (paths: {', '.join(holder.paths)}; its lease ends in {max(0.0, holder.deadline - now):.0f}s); "
        f"waited {waited:g}s for it to let go",
        holder=holder.to_dict(),
    )
