"""The rq executor: worker attempts run on nodes (``python -m orchestrator node``) through Redis
and RQ, behind the same Executor seam as local processes (orchestrator/process/executor.py).

``start`` writes an attempt's hash and puts ``(id, token)`` on its kind's RQ queue
(cluster/leases.py, the protocol). One listener thread hears what nodes tell (started,
ended) and, every ``lease / 6`` seconds, reconciles each live attempt with Redis and the
shared workspace: a queued attempt whose hash Redis lost (a restart without its data) is
enqueued again with a new token once a lease has passed with no node bringing its hash back
and no exit file (a node may have run it, unheard: it is never run twice); a running one
whose lease has been gone a full lease (its
node died) is marked lost (it ends -SIGKILL, ``lost``; the protocol fences a late result);
an exit file with no "ended" heard for ``EXIT_FILE_GRACE`` seconds is believed (the shared
file system is the truth); a hash that says started, ended or lost is caught up with (an
event lost with Redis). Redis being down never crashes nor blocks the engine: the listener
logs it once, retries and reconciles when it is back; a start meanwhile waits queued here.

Concurrency: the engine's ``workers.global_max_workers`` still bounds the attempts it has out
(queued or running); the nodes' slots bound how many run. A queued attempt's timeout does not
run (engine/attempts.py holds it while ``handle.queued``): it waits for a slot.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import redis

from .. import protocol
from ..config import Settings
from ..errors import ConfigError
from ..process.executor import AttemptHandle, Sample, Sampled
from ..process.procscan import Memory
from ..process.runner import CommandNotFound, ProcessRunner, Wakeup
from ..process.sandbox import SandboxSpec
from ..process.shim import Deadline, FoundAttempt, read_exit_file
from . import marker, registry
from .connect import connect, redacted
from .handle import RemoteHandle
from .leases import AttemptSpec, AttemptState, Leases, NodeEvent, split_env
from .names import Names
from .reconcile import Reconciler
from .registry import NodeInfo
from .secret_file import write_secret_file
from .signing import REFUSED_CODE, Refused, SpecSigner, SpecVerifier

log = logging.getLogger("orchestrator.cluster.executor")

ENDED_TTL = 3600  # seconds a released attempt's hash stays in Redis (for a look at what happened)
WAKE_POLL = 0.25  # a Wakeup does not notify: a wait with one looks at it this often
NODES_TTL = 2.0  # seconds a positive "a live node runs this kind" answer is reused
FORGET_EVERY = 0.5  # seconds between the listener's tellings of released attempts to Redis (one pipeline each)


class RQExecutor(Reconciler):
    """Attempts on nodes through Redis and RQ (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        d = settings.distributed
        self.settings = settings
        self.url = redacted(d.redis_url)
        self.client = connect(d.redis_url)  # a bad URL, password or host: ConfigError, the server refuses to start
        self.names = Names(d.queue_prefix)
        self.lease = d.lease
        self.period = max(0.2, d.lease / 6)
        settings.workspace_root.mkdir(parents=True, exist_ok=True)
        # Every spec is signed: a node runs nothing else (cluster/signing.py; the nodes' key is
        # <workspace>/.keys/cluster-ed25519.pub, written here).
        signer = SpecSigner.for_workspace(settings.workspace_root)
        self.attempts = Leases(self.client, self.names, signer)
        self._own = SpecVerifier(signer.key.public_key())  # what it reads back from Redis after a restart
        self.marker = marker.write_marker(self.client, self.names, settings.workspace_root)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # the executor's state; each handle's own wakes its waiters
        self._handles: dict[str, RemoteHandle] = {}  # live (not released) handles by attempt id
        self._forget: list[tuple[str, str]] = []  # (attempt id, tag) released, for the listener to tell Redis
        self._cancel_later: list[tuple[str, int]] = []  # (attempt id, token) cancelled while Redis was down
        self._kinds_seen: dict[str, float] = {}  # kind -> monotonic time a live node was seen to run it
        self._memory: list[Memory] = []  # each live node's, from its heartbeat (read by the listener)
        self._down = False
        self._down_since: float | None = None  # when Redis stopped answering (queue_outage)
        self._refused_told: set[str] = set()  # refused nodes already logged (once each)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="rq-executor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop and join the listener (the engine's shutdown); attempts on nodes run on. What was
        released since its last round is told to Redis here."""
        self._stop.set()
        self._thread.join(timeout=15)
        if not self._thread.is_alive():
            self._flush_forget()  # (Redis down: its hashes stay, their index entries read as ended)

    # -- starting ---------------------------------------------------------------------------
    def start(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        tag: str,
        exit_file: Path | None = None,
        kind: str = "command",
        sandbox: SandboxSpec | None = None,
        deadline: Deadline | None = None,
    ) -> RemoteHandle:
        if not argv:
            raise ValueError("empty argv")
        if "/" in argv[0] and not os.path.exists(argv[0]):
            # A path is on the shared file system (or the same on every node): missing here is missing there.
            raise CommandNotFound(errno.ENOENT, f"No such file or directory: {argv[0]}", argv[0])
        self._check_kind(kind)
        attempt_id = uuid.uuid4().hex
        public, secret = split_env(env, os.environ, self.settings.workers.env)
        secret_file = None
        if secret:
            secret_file = (exit_file or log_path).with_name(f"{(exit_file or log_path).name}.{attempt_id[:8]}.secret")
            write_secret_file(secret_file, secret)
        files = (str(exit_file) if exit_file else None, str(secret_file) if secret_file else None)
        spec = AttemptSpec(
            attempt_id,
            0,
            kind,
            tag,
            list(argv),
            str(cwd),
            public,
            str(log_path),
            *files,
            lease=self.lease,
            sandbox=sandbox.to_dict() if sandbox is not None else None,
        )
        handle = RemoteHandle(
            attempt_id, tag, 0, kind, time.time(), exit_file, spec=spec, secret_file=secret_file, enqueuing=True
        )
        with self._cond:
            self._track(handle)  # (events for it may come at once; the reconciler waits)
        try:
            self._enqueue(handle)
        except (redis.RedisError, OSError) as exc:  # Redis is down: the listener enqueues it once it is back
            self._note_down(exc)
        finally:
            handle.enqueuing = False
        return handle

    def _check_kind(self, kind: str) -> None:
        """Refuse a kind no live node runs (it would wait in a queue nobody reads), after waiting one
        lease for one to come: a node that starts with its server registers once it sees the marker."""
        deadline = time.monotonic() + self.lease
        while True:
            now = time.monotonic()
            if now - self._kinds_seen.get(kind, -NODES_TTL) < NODES_TTL:
                return
            try:
                found = registry.read(self.client, self.names)
            except (redis.RedisError, OSError) as exc:
                self._note_down(exc)
                if kind in self._kinds_seen:
                    return  # known a moment ago; Redis will be back (the attempt waits queued here)
                raise OSError(f"cannot reach Redis at {self.url} to find a node for worker kind {kind!r}: {exc}") from None
            self._tell_refused(found)
            live = [n for n in found if n.alive and not n.refused]
            self._kinds_seen.update({k: now for node in live for k in node.kinds})
            if kind in self._kinds_seen and now - self._kinds_seen[kind] < NODES_TTL:
                return
            if now >= deadline or self._stop.wait(0.25):
                break
        listing = "; ".join(f"{n.name} ({', '.join(n.kinds) or 'no kinds'})" for n in live) or "none"
        refused = "".join(f" {n.refused}." for n in found if n.alive and n.refused and kind in n.kinds)
        raise ConfigError(
            f"no live node runs worker kind {kind!r} (live nodes: {listing}; waited {self.lease:g}s, distributed.lease).{refused} "
            f"Start one on a machine that mounts the workspace at {self.marker.workspace}: "
            f"python -m orchestrator node --kinds {kind}",
            key="distributed.executor",
        )

    def _tell_refused(self, found: Sequence[NodeInfo]) -> None:
        """Log each node of another protocol once (it is refused: nothing is routed to it)."""
        for node in found:
            if node.alive and node.refused and node.name not in self._refused_told:
                self._refused_told.add(node.name)
                log.error("%s", node.refused)

    def _enqueue(self, handle: RemoteHandle) -> None:
        """Enqueue (again) with a fresh token; the attempt is indexed under its tree for ``find``."""
        assert handle.spec is not None
        token = self.attempts.new_token()
        with self._cond:
            handle.token = handle.spec.token = token
        self.attempts.enqueue(handle.spec, index=self._index(handle.tag))

    def _index(self, tag: str) -> str:
        """The hash (attempt id -> tag) of one job tree's attempts in Redis (find, sweep_prefix)."""
        return self.names.tree(tag.split(".", 1)[0])

    # -- waiting ----------------------------------------------------------------------------
    def wait(self, handle: AttemptHandle, timeout: float | None, wake: Wakeup | None = None) -> int | None:
        h = _remote(handle)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if h.node is not None and not h.node_told:
                    h.node_told = True  # placed: the caller records its node first, then waits on
                    return None
                if h.code is not None:
                    return h.code
                if wake is not None and wake.is_set():
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                if wake is not None:
                    left = WAKE_POLL if left is None else min(left, WAKE_POLL)
                self._changed(h).wait(left)

    # -- ending -----------------------------------------------------------------------------
    def terminate(self, handle: AttemptHandle, *, grace: float, first_signal: int = signal.SIGTERM) -> str:
        h = _remote(handle)
        with self._cond:
            if h.code is not None:
                h.kill_rung = h.kill_rung or "none"
                return h.kill_rung
        if h.queued:
            with self._cond:
                cancelled, h.withheld = h.withheld, False
            if not cancelled:
                cancelled = self._cancel_queued([h], -first_signal)[0]
            if cancelled:
                self._drop_job(h)
                self._end(h, -first_signal, "none", note="cancelled while queued")
                return "none"
        deadline = time.monotonic() + grace + 2 * self.lease + 5  # the node's ladder, or its lease running out
        asked = False
        while time.monotonic() < deadline:
            if not asked:
                try:
                    self.attempts.terminate(h.id, h.token, int(first_signal), grace)
                    asked = True
                except (redis.RedisError, OSError) as exc:
                    self._note_down(exc)
            with self._cond:
                if h.code is not None or self._stop.is_set():  # ended, or the server is going away
                    break
                self._changed(h).wait(min(1.0, max(0.01, deadline - time.monotonic())))
        else:  # no answer at all: fence it (a late result is ignored) and call it lost
            self._fence(h)
            self._end(h, -signal.SIGKILL, "SIGKILL", lost=True, note="no answer to terminate")
        self._end(h, -int(first_signal), None, note="the server stopped while it ended")  # no-op once ended
        with self._cond:
            h.kill_rung = h.kill_rung or "none"
            return h.kill_rung

    def withhold(self, handles: Sequence[AttemptHandle]) -> None:
        """Cancel the queued ones in Redis (a node's claim fails from now) without ending them here:
        the event that says so is ignored (``_end``) until each one's own ``terminate`` ends it."""
        with self._cond:  # marked first: the listener may read the cancel's event before Redis answers
            queued = [h for h in map(_remote, handles) if h.queued and h.code is None and not h.withheld]
            for h in queued:
                h.withheld = True
        cancelled = self._cancel_queued(queued, -signal.SIGTERM)
        with self._cond:  # one a node claimed first runs on (an end heard meanwhile: the reconciler's)
            for h, withheld in zip(queued, cancelled, strict=True):
                h.withheld = withheld

    def _cancel_queued(self, handles: Sequence[RemoteHandle], code: int) -> list[bool]:
        """Which of ``handles`` Redis cancelled while still queued (False: a node has it). With Redis
        down, all: no node can claim one then either, and Redis is told once it is back."""
        try:
            return self.attempts.cancel_queued_all([(h.id, h.token) for h in handles], code)
        except (redis.RedisError, OSError) as exc:
            self._note_down(exc)
            with self._cond:
                self._cancel_later.extend((h.id, h.token) for h in handles)
            return [True] * len(handles)

    def release(self, handle: AttemptHandle) -> None:
        """Forgotten here at once; Redis is told by the listener, every ``FORGET_EVERY`` seconds
        (``_flush_forget``): a round trip on the worker's thread held its slot that much longer."""
        h = _remote(handle)
        with self._cond:
            self._handles.pop(h.id, None)
            self._forget.append((h.id, h.tag))
        if h.secret_file is not None:
            h.secret_file.unlink(missing_ok=True)  # the node hands it back once read; a cancelled one's is ours

    def _flush_forget(self) -> None:
        """Released attempts leave the tree index; their hash stays ENDED_TTL for a look. One
        pipeline for all released since the last call (the listener's)."""
        with self._cond:
            batch, self._forget = self._forget, []
        if not batch:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for attempt_id, tag in batch:
                pipe.hdel(self._index(tag), attempt_id)
                pipe.expire(self.names.attempt(attempt_id), ENDED_TTL)
                pipe.delete(self.names.control(attempt_id))
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._note_down(exc)
            with self._cond:
                self._forget[:0] = batch  # again once Redis answers

    def _flush_cancels(self) -> None:
        """Attempts cancelled while Redis was down: never to run (one a node took since: SIGKILL).
        Only the listener calls it; a Redis error leaves the rest for its next round."""
        while self._cancel_later:
            attempt_id, token = self._cancel_later[0]
            if not self.attempts.cancel_queued(attempt_id, token, -signal.SIGTERM):
                self.attempts.terminate(attempt_id, token, int(signal.SIGKILL), 0)
            self._cancel_later.pop(0)

    # -- after a restart --------------------------------------------------------------------
    def find(self, tag_prefix: str) -> list[FoundAttempt]:
        """Attempts Redis holds as queued or running whose tag starts with ``tag_prefix``."""
        try:
            index: dict[bytes, bytes] = self.client.hgetall(self._index(tag_prefix))  # type: ignore[assignment]
            ids = [k.decode() for k, v in index.items() if v.decode().startswith(tag_prefix)]
            pipe = self.client.pipeline(transaction=False)
            for attempt_id in ids:
                pipe.hgetall(self.names.attempt(attempt_id))
            hashes = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._note_down(exc)
            return []  # recovery then goes by the exit files and the records
        found = []
        for attempt_id, raw in zip(ids, hashes, strict=True):
            data = {k.decode(): v.decode() for k, v in raw.items()}
            if data.get("state") not in (AttemptState.QUEUED, AttemptState.RUNNING) or "spec" not in data:
                continue
            spec = self._read_back(attempt_id, data)
            if spec is None:
                continue
            number = spec.env.get(protocol.ATTEMPT, "")
            attempt = int(number) if number.isdigit() else None
            found.append(FoundAttempt(int(data.get("pid") or 0), spec.tag, attempt_id, Path(spec.exit_file or ""), attempt))
        return found

    def _read_back(self, attempt_id: str, data: Mapping[str, str]) -> AttemptSpec | None:
        """An attempt's spec as Redis holds it, if this server signed it (None: not ours, logged)."""
        try:
            return self._own.verify(data.get("spec"), attempt_id, int(data.get("token") or -1), expired_ok=True)
        except (Refused, ValueError) as exc:
            log.warning("attempt %s in Redis is not one this server signed (%s): ignored", attempt_id[:80], exc)
            return None

    def adopt(
        self, pid: int | None, start_id: str | None, *, tag: str, started_at: float, exit_file: Path | None
    ) -> RemoteHandle:
        """Take over attempt ``start_id`` from its hash, or from its exit file when Redis lost it."""
        with self._cond:
            if start_id is not None and start_id in self._handles:
                return self._handles[start_id]
        handle = RemoteHandle(start_id or uuid.uuid4().hex, tag, 0, "", started_at, exit_file, pid=pid or None)
        data = None
        if start_id:
            try:
                data = self.attempts.read(start_id)
            except (redis.RedisError, OSError) as exc:
                self._note_down(exc)
        if data is not None and "token" in data:
            handle.token = int(data["token"])
            handle.kind = data.get("kind", "")
            handle.node = data.get("node")
            handle.pid = int(data["pid"]) if data.get("pid") else handle.pid
            if "spec" in data:
                handle.spec = self._read_back(handle.id, data)
            state = data.get("state")
            handle.queued = state == AttemptState.QUEUED
            if state == AttemptState.ENDED:
                handle.code, handle.kill_rung = int(data.get("code", -signal.SIGKILL)), data.get("kill_rung")
            elif state == AttemptState.LOST:
                handle.code, handle.lost = -signal.SIGKILL, True
            elif state == AttemptState.CANCELLED:
                handle.code, handle.kill_rung = -signal.SIGTERM, "none"
        else:  # Redis does not know it: its exit file, else a node that renews will recreate its hash
            handle.queued = False
            code = read_exit_file(exit_file) if exit_file is not None else None
            if code is not None:
                handle.code = code
        if handle.code is not None:
            handle.ended_at = handle.ended_at or time.time()
        with self._cond:
            self._track(handle)
        return handle

    def _track(self, h: RemoteHandle) -> None:
        """Hold ``h`` as live, with a condition of its own on the executor's lock: a node's event wakes
        the one thread waiting on that attempt, not every waiting worker thread (at 24 attempts at
        once, two events an attempt woke 48 threads to find nothing for them)."""
        h.changed = threading.Condition(self._lock)
        self._handles[h.id] = h

    # -- what runs --------------------------------------------------------------------------
    def sample(self, attempts: Sequence[Sampled]) -> dict[str, Sample]:
        """From the sample each node sends with its renewals (read by the reconciler)."""
        with self._cond:
            by_tag = {h.tag: h.sample for h in self._handles.values() if h.code is None and h.sample is not None}
        return {a.tag: s for a in attempts if (s := by_tag.get(a.tag)) is not None}

    def sweep(self, tag: str, since: float = 0.0) -> None:
        """Nothing here: the node sweeps an attempt's tag at its end, on its own machine."""

    def sweep_prefix(self, prefix: str, *, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """End every queued or running attempt under ``prefix`` whose tag is not kept (SIGKILL)."""
        count = 0
        for found in self.find(prefix):
            if found.tag in keep or found.start_id is None:
                continue
            try:
                data = self.attempts.read(found.start_id) or {}
                token = int(data.get("token", 0))
                if data.get("state") == AttemptState.QUEUED and self.attempts.cancel_queued(
                    found.start_id, token, -signal.SIGKILL
                ):
                    count += 1
                elif data.get("state") == AttemptState.RUNNING:
                    self.attempts.terminate(found.start_id, token, int(signal.SIGKILL), 0)
                    count += 1
            except (redis.RedisError, OSError) as exc:
                self._note_down(exc)
        return count

    def nodes(self) -> list[NodeInfo] | None:
        """The registry; an unreachable Redis is an error (the API answers 503 saying so), never
        an empty list that reads as "no nodes"."""
        try:
            return registry.read(self.client, self.names)
        except (redis.RedisError, OSError) as exc:
            self._note_down(exc)
            raise

    def queue_outage(self) -> float | None:
        with self._cond:
            return self._down_since

    def local_runner(self) -> ProcessRunner | None:
        return None  # attempts run on the nodes

    def memory(self) -> list[Memory]:
        """Each live node's memory as its last heartbeat said (the listener reads them every
        ``lease / 6`` seconds, so a dispatch pass never waits on Redis). Nodes too old to
        report memory are left out."""
        return self._memory

    def _read_memory(self) -> None:
        found = registry.read(self.client, self.names)
        self._tell_refused(found)
        self._memory = [
            Memory(n.memory_total, n.memory_available, n.name, frozenset(n.kinds))
            for n in found
            if n.alive and n.memory_total and not n.refused
        ]

    # -- the listener -----------------------------------------------------------------------
    def _listen(self) -> None:
        next_check = next_forget = 0.0
        while not self._stop.is_set():
            try:
                for event in self.attempts.next_events(min(1.0, self.period)):
                    self._apply(event)
                if self._forget and time.monotonic() >= next_forget:  # (a round trip each time would delay the events)
                    self._flush_forget()
                    next_forget = time.monotonic() + FORGET_EVERY
                if self._down:
                    log.warning("Redis at %s answers again: reconciling the attempts on nodes", self.url)
                    self._down = False
                    with self._cond:
                        self._down_since = None
                    next_check = 0.0
                if time.monotonic() >= next_check:
                    self._reconcile()
                    self._read_memory()
                    next_check = time.monotonic() + self.period
            except (redis.RedisError, OSError) as exc:
                self._note_down(exc)
                self._check_exit_files()  # the shared file system still says what ended
                self._stop.wait(1.0)
            except Exception:  # a bug must not stop the listener: every attempt would hang
                log.exception("the rq executor's listener failed; going on")
                self._stop.wait(1.0)

    def _note_down(self, exc: Exception) -> None:
        if not self._down:
            self._down = True
            with self._cond:
                self._down_since = self._down_since or time.time()
            log.warning("Redis at %s does not answer (%s): retrying; attempts wait", self.url, exc)

    def _apply(self, event: Mapping[str, object]) -> None:
        """One event from a node, for the handle it names with the token it holds now."""
        with self._cond:
            h = self._handles.get(str(event.get("id")))
            if h is None or event.get("token") != h.token:
                return  # a released attempt's, or a fenced one's (a late result)
        if event.get("event") == NodeEvent.STARTED:
            self._placed(h, str(event.get("node") or "?"), event.get("pid"), event.get("spawned_at"))
        elif event.get("event") == NodeEvent.ENDED:
            code = event.get("code")
            rung = event.get("kill_rung")
            if event.get("node"):
                self._placed(h, str(event["node"]), event.get("pid") or h.pid)
            h.cap_hit = str(event.get("cap") or "") or h.cap_hit  # a cap its node's kernel held it at
            code = int(code) if isinstance(code, int) else -signal.SIGKILL
            note = str(event.get("note") or "")
            if code == REFUSED_CODE and note.startswith("refused by node"):  # the node ran nothing of it
                log.error("attempt %s (%s): %s", h.id, h.tag, note)
                if h.spec is not None:  # this server's own spec (in memory), never a path from Redis
                    _append(Path(h.spec.log_path), f"===== {note} =====\n")
            self._end(h, code, str(rung) if rung else None, exited_at=event.get("exited_at"))

    def _placed(self, h: RemoteHandle, node: str, pid: object, spawned_at: object = None) -> None:
        """The attempt runs on ``node``. It runs from its node's spawn (as a local attempt runs from
        its spawn), not from its enqueue: another machine's clock, so it is kept between the
        enqueue and now; without it (an adoption, a hash read back), from now."""
        with self._cond:
            if h.queued or h.node != node:
                if h.queued:
                    h.started_at = _node_clock(spawned_at, h.started_at)
                h.queued, h.node = False, node
                h.pid = int(pid) if isinstance(pid, int | str) and str(pid).isdigit() else h.pid
                self._changed(h).notify_all()

    def _end(
        self, h: RemoteHandle, code: int, rung: str | None, *, lost: bool = False, note: str = "", exited_at: object = None
    ) -> None:
        """It ended. ``exited_at``: its node's clock when it saw the end (its start is its node's
        too, see _placed), kept between its start and now; without it, now."""
        with self._cond:
            if h.code is not None or h.withheld:
                return
            h.code, h.ended_at, h.queued = code, _node_clock(exited_at, h.started_at), False
            h.kill_rung = h.kill_rung or rung
            h.lost = h.lost or lost
            self._changed(h).notify_all()
        if note:
            log.info("attempt %s (%s) ended: %s", h.id, h.tag, note)

    def _changed(self, h: RemoteHandle) -> threading.Condition:
        """What a change to ``h`` is told through (a handle never tracked: the executor's own)."""
        return h.changed if h.changed is not None else self._cond

    def _drop_job(self, h: RemoteHandle) -> None:
        try:
            self.attempts.queue(h.kind).remove(f"{h.id}-{h.token}")
        except (redis.RedisError, OSError):
            pass  # a node would find it cancelled anyway (its claim fails); ``release`` deletes its secret file

    def _fence(self, h: RemoteHandle) -> None:
        """Give the attempt a new token so that anything its node still says is ignored."""
        try:
            token = self.attempts.new_token()
            self.client.hset(self.names.attempt(h.id), mapping={"token": token, "state": "lost", "ended_at": time.time()})
        except (redis.RedisError, OSError) as exc:
            self._note_down(exc)


def _node_clock(reading: object, earliest: float) -> float:
    """A node's clock reading, kept between ``earliest`` and now on this server's clock (another
    machine's clock may be off); now when the node sent none."""
    now = time.time()
    return min(now, max(earliest, float(reading))) if isinstance(reading, int | float) else now


def _append(path: Path, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line)
    except OSError:
        pass


def _remote(handle: AttemptHandle) -> RemoteHandle:
    if not isinstance(handle, RemoteHandle):
        raise TypeError(f"RQExecutor got a handle it did not make: {type(handle).__name__}")
    return handle


__all__ = ["RQExecutor", "RemoteHandle"]
