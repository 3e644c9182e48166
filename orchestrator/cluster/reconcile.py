"""What the rq executor does every ``lease / 6`` seconds to agree with Redis and the shared
workspace (the table in cluster/executor.py's docstring): exit files believed after a grace, a
queued attempt Redis lost enqueued again only once no node shows it ran, a running one whose
lease is gone a full lease marked lost, a hash that moved on caught up with.

A mixin of :class:`~orchestrator.cluster.executor.RQExecutor`, which holds the state and the
actions it names below; kept apart because reconciling is a concern of its own.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time

import redis
from rq.job import Job

from ..process.cgroups import Enforced
from ..process.executor import Sample
from ..process.shim import read_exit_file
from .handle import RemoteHandle
from .leases import AttemptState, Leases
from .marker import Marker
from .names import Names

log = logging.getLogger("orchestrator.cluster.executor")
EXIT_FILE_GRACE = 3.0  # seconds an exit file may precede its "ended" event before it is believed


class Reconciler:
    """Reconciling live attempts with Redis; the state and the actions are RQExecutor's."""

    client: redis.Redis
    names: Names
    attempts: Leases
    marker: Marker
    lease: float
    period: float
    _cond: threading.Condition
    _handles: dict[str, RemoteHandle]

    def _end(
        self, h: RemoteHandle, code: int, rung: str | None, *, lost: bool = False, note: str = "", exited_at: object = None
    ) -> None:
        raise NotImplementedError

    def _placed(self, h: RemoteHandle, node: str, pid: object, spawned_at: object = None) -> None:
        raise NotImplementedError

    def _enqueue(self, handle: RemoteHandle) -> None:
        raise NotImplementedError

    def _index(self, tag: str) -> str:
        raise NotImplementedError

    def _flush_cancels(self) -> None:
        raise NotImplementedError

    def _flush_forget(self) -> None:
        raise NotImplementedError

    def _check_exit_files(self) -> None:
        """An attempt whose exit file says it ended, with no "ended" heard for a few seconds."""
        now = time.monotonic()
        with self._cond:
            running = [h for h in self._handles.values() if h.code is None and not h.queued and h.exit_file is not None]
        for h in running:
            assert h.exit_file is not None
            code = read_exit_file(h.exit_file)
            if code is None:
                h.exit_seen = None
            elif h.exit_seen is None:
                h.exit_seen = now
            elif now - h.exit_seen >= EXIT_FILE_GRACE:
                self._end(h, code, None, note="read from its exit file (no end heard from its node)")

    def _reconcile(self) -> None:
        """Each live attempt against Redis and its exit file (see the module docstring's table)."""
        self._check_exit_files()
        self._flush_cancels()
        self._flush_forget()
        if not self.client.exists(self.names.marker):  # Redis lost it: nodes that start now need it
            self.client.set(self.names.marker, json.dumps({"workspace": self.marker.workspace, "token": self.marker.token}))
        with self._cond:
            live = [h for h in self._handles.values() if h.code is None and not h.enqueuing]
        if not live:
            return
        self._fence_floor(max(self.attempts.reserved_top, *(h.token for h in live)))
        pipe = self.client.pipeline(transaction=False)
        for h in live:
            pipe.hgetall(self.names.attempt(h.id))
            pipe.exists(self.names.lease(h.id))
            pipe.hset(self._index(h.tag), h.id, h.tag)  # the index again, should Redis have lost it
            pipe.exists(Job.key_for(f"{h.id}-{h.token}"))  # its RQ job (Attempts.enqueue's id)
        answers = pipe.execute()
        now = time.monotonic()
        for i, h in enumerate(live):
            raw, leased, job = answers[4 * i], answers[4 * i + 1], answers[4 * i + 3]
            data = {k.decode(): v.decode() for k, v in raw.items()}
            if data.get("state") == AttemptState.QUEUED and data.get("token") == str(h.token) and not job:
                if h.jobless is not None and now - h.jobless >= self.period:  # its RQ job never made it
                    log.warning("attempt %s (%s) was queued without its RQ job: enqueued again", h.id, h.tag)
                    self._enqueue(h)
                h.jobless = None if h.jobless else now
                continue
            h.jobless = None
            self._reconcile_one(h, data, bool(leased), now)

    def _reconcile_one(self, h: RemoteHandle, data: dict[str, str], leased: bool, now: float) -> None:
        state = data.get("state")
        if not data:
            if h.queued and h.spec is not None:
                self._requeue_unknown(h, now)
            elif not leased:
                self._lease_check(h, now, lambda: self._fence_if_absent(h))
            return
        h.unknown = None
        if not h.token and data.get("token", "").isdigit():
            h.token = int(data["token"])  # adopted while Redis had lost it: its node's renewals brought it back
        if data.get("token") != str(h.token):
            return  # not ours to judge (another token: fenced, or enqueued again meanwhile)
        try:  # what the node measured at its latest renewal (the resource caps apply to it)
            sample = json.loads(data.get("sample") or "{}")
            enforced = Enforced.from_dict(sample["enforced"]) if isinstance(sample.get("enforced"), dict) else None
            h.enforced = enforced or h.enforced
            h.sample = Sample(
                int(sample["rss"]),
                int(sample.get("processes", 0)),
                float(sample.get("cpu_seconds", 0)),
                int(sample.get("oom_kills", 0)),
                int(sample.get("forks_refused", 0)),
                enforced,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            pass
        if state == AttemptState.RUNNING:
            if data.get("pid") and data.get("node"):  # (a hash a node's renewal recreated holds its pid)
                self._placed(h, data["node"], data["pid"], _number(data.get("started_at")))
            if leased:
                h.lease_gone = None
            else:
                self._lease_check(h, now, lambda: self.attempts.mark_lost(h.id, h.token) > 0, data.get("node"))
        elif state == AttemptState.ENDED:
            if data.get("node"):
                self._placed(h, data["node"], data.get("pid") or h.pid, _number(data.get("started_at")))
            code = int(data.get("code", -signal.SIGKILL))
            self._end(h, code, data.get("kill_rung"), exited_at=_number(data.get("ended_at")))
        elif state == AttemptState.LOST:
            self._end(h, -signal.SIGKILL, None, lost=True)
        elif state == AttemptState.CANCELLED:
            self._end(h, -signal.SIGTERM, "none")

    def _requeue_unknown(self, h: RemoteHandle, now: float) -> None:
        """A queued attempt Redis no longer knows (it restarted without its data). A node may
        have taken it before, unheard (the events went with Redis): while that run lives, its
        renewal recreates the hash within a third of a lease; once it has ended, its exit file
        says so. Only an attempt that shows neither for a full lease is enqueued again, so an
        attempt that ran is never run again, nor run twice at once."""
        code = read_exit_file(h.exit_file) if h.exit_file is not None else None
        if code is not None:
            self._end(h, code, None, note="read from its exit file (Redis lost the attempt, which had run)")
        elif h.unknown is None:
            h.unknown = now
        elif now - h.unknown >= self.lease:
            h.unknown = None
            log.warning("attempt %s (%s) was no longer in Redis and no node ran it: enqueued again", h.id, h.tag)
            self._enqueue(h)

    def _fence_floor(self, top: int) -> None:
        """A Redis that lost its data restarts the token counter at 0: lift it above every token
        this server holds or has reserved, or a re-enqueued attempt could get its old token back
        (and be unfenced)."""
        current = int(self.client.get(self.names.fence) or 0)
        if current < top:
            self.client.incrby(self.names.fence, top - current)

    def _lease_check(self, h: RemoteHandle, now: float, mark: object, node: str | None = None) -> None:
        """Lost once its lease has been gone a full lease (and its exit file says nothing)."""
        if h.exit_seen is not None:
            return  # it ended: its exit file is read after EXIT_FILE_GRACE
        if h.lease_gone is None:
            h.lease_gone = now
            return
        if now - h.lease_gone < self.lease or not callable(mark) or not mark():
            return
        with self._cond:
            h.node = h.node or node
            h.node_told = h.node_told and h.node is not None
        log.warning("attempt %s (%s) lost: node %s stopped renewing its lease", h.id, h.tag, h.node or "?")
        self._end(h, -signal.SIGKILL, None, lost=True)

    def _fence_if_absent(self, h: RemoteHandle) -> bool:
        """A running attempt Redis forgot, whose node has not renewed since: a hash that fences it."""
        key = self.names.attempt(h.id)
        if not self.client.hsetnx(key, "token", self.attempts.new_token()):
            return False  # its node renewed meanwhile (which recreates the hash): it lives
        self.client.hset(key, mapping={"state": "lost", "ended_at": time.time()})
        return True


def _number(text: str | None) -> float | None:
    """A hash field's number (a node's clock), or None."""
    try:
        return float(text) if text else None
    except ValueError:
        return None
