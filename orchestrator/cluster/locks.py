"""The path locks of checkouts/locks.py in Redis, for ``distributed.executor: rq``: the
same rules (``locks.conflict``, renewal, release by the holder, a worker's locks die with it),
shared by every server process on one Redis and prefix.

* **Keys** (names.py): a lock is the string ``P:lock:ROOT:LOCK`` (its JSON) that Redis expires
  itself (PX = the lease), so a lock whose holder vanished (its server crashed, its worker hung)
  frees itself at its lease's end; the set ``P:locks:ROOT`` indexes a tree's locks (an id whose
  key has expired is dropped when next seen).
* **Atomic acquisition** by optimistic transactions: WATCH the tree's index and every lock key in
  it, read them, decide in Python with ``locks.conflict`` (the one conflict rule, not a Lua copy),
  then MULTI/EXEC the grant; a change by any other server meanwhile aborts the EXEC, and the
  request decides again. A release is a transaction the same way; ``release_worker`` (each worker's
  end, whose common case is a worker that held none) is one script, one round trip (``_RELEASE_WORKER``).
* **Waking waiters**: a release publishes the tree's id on ``P:locks-freed``; one listener
  thread per table (its own connection) wakes the local waiters, which then try again. Pub/sub
  delivers at most once (a message published while the listener reconnects is lost) and Redis
  says nothing when a lease expires, so a waiter also tries again at its blockers' lease end and
  at least every ``RECHECK`` seconds: a lost message costs at most that.
* **A server restart** keeps the locks (a server that crashed or was stopped has granted them into
  Redis, not its memory): under rq the workers on nodes go on running, re-adopted, and keep them.
  A worker's end seen by any server frees its locks; a lease ends the rest.
* **Redis restarted without its data** loses every lock. Nothing re-creates them from the
  server's memory: with several servers, a lock granted by another server meanwhile would then
  have two holders. A holder that still runs re-takes its lock by renewing it (orchestrator-lock
  renews every third of the lease, through the usual conflict check; a new lock id then); until
  then another worker may take the same paths, and the holder's renewal then fails with 409,
  which orchestrator-lock prints. Locks stay advisory.
* Redis unreachable: a lock request is a 503 naming the Redis (without its password).

Leases are Redis's time; the ``Clock`` gives the records' wall times and the waits (the engine's
is the system clock).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis
import redis.client

from ..checkouts.locks import ADMIN, MAX_LEASE, Lock, conflict, held_error
from ..clock import Clock
from ..config.schema import TasksSettings
from ..errors import Conflict, Forbidden, JobNotFound, Unavailable
from .names import Names

log = logging.getLogger(__name__)

RECHECK = 1.0  # seconds: the longest a waiter sleeps between tries (a lost pub/sub message)
LISTEN_TICK = 0.25  # seconds the listener blocks on its socket before looking at close() (no Redis traffic)
SUBSCRIBE_WAIT = 5.0  # seconds the constructor waits for the listener's subscription
# Redis's pub/sub protocol, not ours: the ``type`` of a message redis-py's PubSub.get_message returns
# (Redis's push replies: subscribe, unsubscribe, message, pmessage, ...).
REDIS_SUBSCRIBED = "subscribe"  # the server confirmed a SUBSCRIBE
REDIS_MESSAGE = "message"  # a PUBLISH on a subscribed channel

# The index's PTTL (KEYS[1]), then each lock key's value (or false) and PTTL: one round trip.
_READ = """
local out = {redis.call('PTTL', KEYS[1])}
for i = 2, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i])
  out[#out + 1] = redis.call('PTTL', KEYS[i])
end
return out
"""

# Every lock of one worker goes (KEYS[1] the tree's index; ARGV: the worker's name, the tree's lock
# key prefix, the channel and the tree's id to publish when any went): the JSON of each that went.
# A worker's own name is the whole rule, so it is decided here, atomically, with no WATCH to retry.
_RELEASE_WORKER = """
local gone = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[2] .. id
  local raw = redis.call('GET', key)
  if raw then
    local ok, lock = pcall(cjson.decode, raw)
    if ok and type(lock) == 'table' and lock.worker == ARGV[1] then
      redis.call('DEL', key)
      redis.call('SREM', KEYS[1], id)
      gone[#gone + 1] = raw
    end
  end
end
if #gone > 0 then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return gone
"""


class RedisPathLocks:
    """The lock tables of every root tree, in Redis; thread-safe. ``close`` stops the listener."""

    def __init__(
        self,
        client: redis.Redis,
        names: Names,
        clock: Clock,
        settings: TasksSettings,
        *,
        where: str = "",
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.owns_client = owns_client  # close() closes it
        self.names = names
        self.clock = clock
        self.settings = settings
        self.where = where or "the configured Redis"
        self._read = client.register_script(_READ)
        self._release_worker = client.register_script(_RELEASE_WORKER)
        self._lock = threading.Lock()
        self._waiters: set[threading.Event] = set()
        self._closed = threading.Event()
        self._subscribed = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="locks-freed", daemon=True)
        self._listener.start()
        self._subscribed.wait(SUBSCRIBE_WAIT)  # a release published before it is seen by a waiter's next try

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
        """As ``PathLocks.acquire``: ``paths`` already ``check_paths``-ed; waits up to ``wait``
        seconds for conflicting holders, on any server."""
        lease = self.settings.lock_lease if lease is None else lease
        wait = self.settings.lock_timeout if wait is None else wait
        give_up = self.clock.monotonic() + wait
        wake = threading.Event()
        with self._lock:
            self._waiters.add(wake)  # before each try: a release after it wakes us
        try:
            while True:
                wake.clear()
                granted, blocking = self._try(root_id, job_id, worker, list(paths), lease)
                if granted is not None:
                    break
                now = self.clock.monotonic()
                if now >= give_up:
                    raise held_error(blocking[0], wait, now)
                until = min([give_up, now + RECHECK] + [h.deadline for h in blocking])
                self.clock.wait(wake, max(until - now, 0.001))  # a lease ending now: Redis drops it within a ms
        finally:
            with self._lock:
                self._waiters.discard(wake)
        if alive is not None and not alive():  # it ended meanwhile (release_worker may have run before the grant)
            with contextlib.suppress(JobNotFound):
                self.release(root_id, granted.lock_id, None)
            raise Conflict(f"worker {worker} of job {job_id} is no longer running: no lock for it", worker=worker)
        return granted

    def release(self, root_id: str, lock_id: str, by: str | None) -> Lock:
        """Release a lock: only its holder ``by`` (a worker's name) or the admin key (None)."""
        key = self.names.lock(root_id, lock_id)
        with self._redis(), self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFound(f"lock {lock_id} not found in job tree {root_id} (released, or its lease ended)")
                    found = self._decode(raw, 0)
                    if by is not None and found.worker != by:
                        raise Forbidden(
                            f"lock {lock_id} is held by {found.holder}, not worker {by}: only its holder or the admin "
                            "key may release it"
                        )
                    self._remove(pipe, root_id, [lock_id])
                    break
                except redis.WatchError:
                    continue
        self._wake()
        return found

    def release_worker(self, root_id: str, worker: str) -> list[Lock]:
        """Every lock ``worker`` holds in the tree goes (its process has ended). Redis not
        answering is logged, not raised (the engine calls this as a worker ends): the locks'
        leases end them then."""
        n = self.names
        try:
            with self._redis():
                found: list[bytes] = self._release_worker(
                    keys=[n.locks(root_id)], args=[worker, n.lock_prefix(root_id), n.locks_freed, root_id]
                )
            gone = [self._decode(raw, 0) for raw in found]
        except Unavailable as exc:
            log.warning("the locks of worker %s in tree %s stay until their leases end: %s", worker, root_id, exc.message)
            return []
        if gone:
            self._wake()
        return gone

    def locks(self, root_id: str) -> list[Lock]:
        """The tree's live locks, oldest first."""
        with self._redis():
            table, _, _ = self._table(root_id)
        return sorted(table, key=lambda lock: lock.acquired_at)

    def close(self) -> None:
        """Stop the listener (within ``LISTEN_TICK``) and close its connection."""
        self._closed.set()
        self._listener.join(5)
        if self.owns_client:
            self.client.close()

    # -- one decision ----------------------------------------------------------------------
    def _try(
        self, root_id: str, job_id: str, worker: str | None, paths: list[str], lease: float
    ) -> tuple[Lock | None, list[Lock]]:
        """One atomic try: (the lock granted or renewed, []) or (None, the locks in the way)."""
        index = self.names.locks(root_id)
        with self._redis(), self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(index)
                    table, stale, index_ttl = self._table(root_id, pipe)
                    blocking = [h for h in table if h.holder != (worker or ADMIN) and conflict(h.paths, paths)]
                    if blocking:
                        return None, blocking
                    lock = self._granted(table, root_id, job_id, worker, paths, lease)
                    ms = max(1, round(lease * 1000))
                    pipe.multi()
                    pipe.set(self.names.lock(root_id, lock.lock_id), _encode(lock), px=ms)
                    pipe.sadd(index, lock.lock_id)
                    if stale:
                        pipe.srem(index, *stale)
                    pipe.pexpire(index, max(ms, index_ttl))  # the index outlives its longest lease, no more
                    pipe.execute()
                    return lock, []
                except redis.WatchError:
                    continue

    def _granted(self, table: list[Lock], root_id: str, job_id: str, worker: str | None, paths: list[str], lease: float) -> Lock:
        """The same holder asking for the same paths renews its lock; else a new one."""
        wall, now = self.clock.time(), self.clock.monotonic()
        for held in table:
            if held.worker == worker and held.job_id == job_id and sorted(held.paths) == sorted(paths):
                held.expires_at, held.deadline = wall + lease, now + lease
                return held
        return Lock(f"lk-{secrets.token_hex(8)}", root_id, job_id, worker, paths, wall, wall + lease, now + lease)

    def _table(self, root_id: str, pipe: redis.client.Pipeline | None = None) -> tuple[list[Lock], list[str], int]:
        """The tree's live locks, the ids in its index whose keys have expired, and the index's
        PTTL. ``pipe``: a pipeline watching the index; it watches the lock keys too, before they
        are read (on the table's own connection: what changes after a WATCH aborts the EXEC)."""
        index = self.names.locks(root_id)
        members: set[bytes] = (pipe or self.client).smembers(index)  # type: ignore[assignment]
        ids = sorted(member.decode() for member in members)
        keys = [self.names.lock(root_id, lock_id) for lock_id in ids]
        if pipe is not None and keys:
            pipe.watch(*keys)
        found: list[Any] = self._read(keys=[index, *keys], client=self.client)
        table: list[Lock] = []
        stale: list[str] = []
        for lock_id, raw, ttl in zip(ids, found[1::2], found[2::2], strict=True):
            if raw is None:
                stale.append(lock_id)
            else:
                table.append(self._decode(raw, int(ttl)))
        return table, stale, int(found[0])

    def _decode(self, raw: bytes | str, ttl_ms: int) -> Lock:
        data = json.loads(raw)
        # PTTL -1 (a key without expiry, which only a hand-made key has): no deadline to wait for
        deadline = self.clock.monotonic() + (ttl_ms / 1000 if ttl_ms >= 0 else MAX_LEASE)
        return Lock(
            data["lock_id"],
            data["root_id"],
            data["job_id"],
            data["worker"],
            list(data["paths"]),
            data["acquired_at"],
            data["expires_at"],
            deadline,
        )

    def _remove(self, pipe: redis.client.Pipeline, root_id: str, lock_ids: list[str]) -> None:
        """Delete locks (``pipe`` watches them) and tell every server's waiters."""
        pipe.multi()
        pipe.delete(*(self.names.lock(root_id, lock_id) for lock_id in lock_ids))
        pipe.srem(self.names.locks(root_id), *lock_ids)
        pipe.publish(self.names.locks_freed, root_id)
        pipe.execute()

    # -- waking ----------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._lock:
            for event in self._waiters:
                event.set()

    def _listen(self) -> None:
        """Wake the waiters on every release any server publishes; reconnect after an error."""
        pubsub: redis.client.PubSub | None = None
        while not self._closed.is_set():
            try:
                if pubsub is None:
                    pubsub = self.client.pubsub()
                    pubsub.subscribe(self.names.locks_freed)
                message = pubsub.get_message(timeout=LISTEN_TICK)
                if message is None:
                    continue
                if message["type"] == REDIS_SUBSCRIBED:
                    self._subscribed.set()
                    self._wake()  # (re)subscribed: what was published meanwhile is lost, so try again
                elif message["type"] == REDIS_MESSAGE:
                    self._wake()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.debug("lock listener lost %s: %s", self.where, exc)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                pubsub = None
                self._closed.wait(0.5)
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    @contextlib.contextmanager
    def _redis(self) -> Iterator[None]:
        """Redis unreachable (or refusing): a 503 that names it, never its password."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Unavailable(
                f"the path locks live in Redis at {self.where} (distributed.redis_url), which does not answer: {exc}"
            ) from None
        except redis.ResponseError as exc:
            raise Unavailable(f"Redis at {self.where} refused a path lock operation: {exc}") from None


def _encode(lock: Lock) -> str:
    return json.dumps({**lock.to_dict(), "root_id": lock.root_id}, separators=(",", ":"))
