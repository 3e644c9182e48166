"""The attempt protocol between the server (cluster/executor.py) and the nodes (cluster/node.py),
as atomic Redis operations (Lua scripts), so that both sides agree on one state machine:

    queued --claim--> running --finish--> ended
      |                  |  \\--mark_lost (its lease expired: the node is gone)--> lost
      \\--cancel_queued--> cancelled

* Every enqueue gets a new **fencing token** (from ``P:fence``, taken by a server in blocks). A node may act on an attempt (claim,
  renew, finish) only with the token the attempt's hash holds now; ``mark_lost`` and a re-enqueue
  change it, so a late result from a lost attempt is ignored, and an attempt is never counted twice.
* A running attempt holds a **lease** (``P:lease:ID``, ``NODE:TOKEN``, expiring ``lease`` seconds
  after its node's last renewal). The server marks an attempt lost only once its lease is gone.
* A Redis restart without its data loses hashes, queues and leases. A node's ``renew`` and
  ``finish`` then recreate the hash from what the node knows (its token is as good as any: the
  server keeps the token it enqueued, and a hash with another token fences the node); the server
  re-enqueues, from its own handles, a queued attempt whose hash stays gone for a lease and whose
  exit file says nothing (cluster/executor.py): one that ran, unheard, is never run again.
* Each run carries its own tag on its node (``AttemptSpec.run_tag``), so the sweep at one run's
  end never kills another run of the same attempt.
* Nothing secret goes through Redis: the spec carries the worker protocol's variables, never
  the server's environment nor the worker's API key, which travels in a 0600 file in the shared
  workspace (``secret_env_file``: cluster/secret_file.py) that the node reads once (``split_env``).

RQ carries only ``(attempt id, token)`` to the node (``RQ_FUNCTION``); the spec is in the hash,
signed by the server (cluster/signing.py): the node takes it as text and runs it only once verified.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from .. import protocol
from ..config.keys import StrEnum
from .names import PROTOCOL_VERSION as PROTOCOL_VERSION
from .names import Names

TOKEN_BLOCK = 64  # fencing tokens a server takes from ``P:fence`` at once (Leases.new_token)


class AttemptState(StrEnum):
    """An attempt's ``state`` in its Redis hash (the Lua scripts below write the same words)."""

    QUEUED = "queued"  # waiting for a node
    RUNNING = "running"  # a node claimed it
    ENDED = "ended"  # its node told how it ended
    CANCELLED = "cancelled"  # cancelled before a node took it
    LOST = "lost"  # its lease ran out: its node is gone


class NodeEvent(StrEnum):
    """What a node tells the server of an attempt (``_event``)."""

    STARTED = "started"
    ENDED = "ended"


class ControlAction(StrEnum):
    """What the server asks of the node running an attempt (a control message's ``action``)."""

    TERMINATE = "terminate"  # run the kill ladder (``Leases.terminate``)


RQ_FUNCTION = "orchestrator.cluster.attempt.run"  # what a node runs for an attempt: run(attempt_id, token)
# RQ's jobs are JSON, never pickle: a pickle from Redis would run whatever code wrote it. A node also
# refuses any job whose function is not RQ_FUNCTION (cluster/node.py).
SERIALIZER = JSONSerializer
# Variables a node never takes from the server (it sets its own): paths into its own install.
NODE_OWN = frozenset({"PATH", "PYTHONPATH", protocol.PYTHON, protocol.API_KEY})


@dataclass
class AttemptSpec:
    """What a node needs to run one attempt. Paths are the same on every machine (the shared
    workspace is mounted at the same path everywhere)."""

    id: str
    token: int
    kind: str
    tag: str
    argv: list[str]
    cwd: str
    env: dict[str, str]  # the worker protocol's variables (split_env), nothing secret
    log_path: str
    exit_file: str | None
    secret_env_file: str | None = None  # a 0600 JSON object of secret variables (the worker's API key)
    lease: float = 30.0
    enqueued_at: float = field(default_factory=time.time)
    sandbox: dict[str, Any] | None = None  # sandbox.SandboxSpec.to_dict(): the node confines the attempt so, or refuses it

    @property
    def run_tag(self) -> str:
        """The tag one run of the attempt carries on its node: the worker's tag, the attempt and
        its token. A re-enqueued attempt (Redis lost it) is another run, whose end sweeps only its
        own processes, never those of a run beside it (a prefix of the worker's tag finds both)."""
        return f"{self.tag}.{self.id[:8]}-{self.token}"

    def to_dict(self) -> dict[str, Any]:
        """The fields by name, the values themselves (no copy: ``dataclasses.asdict``'s deep copy
        of the environment and the sandbox cost a server a third of an enqueue's CPU; what reads
        this serializes it)."""
        return {name: getattr(self, name) for name in _SPEC_FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> AttemptSpec:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


_SPEC_FIELDS = tuple(f.name for f in fields(AttemptSpec))


def split_env(
    env: Mapping[str, str], server_environ: Mapping[str, str], server_workers_env: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(public, secret): what of a worker's environment travels to its node. Public: what the
    server added for this worker (the protocol's variables, TMPDIR, an adapter's extras), never
    a variable of the server's own environment or of its workers.env (a node starts from its own:
    its CLI credentials, never the server's). Secret: the worker's API key."""
    public, secret = {}, {}
    for name, value in env.items():
        if name == protocol.API_KEY:
            secret[name] = value
        elif name in NODE_OWN:
            continue
        elif server_environ.get(name) == value or server_workers_env.get(name) == value:
            continue
        else:
            public[name] = value
    return public, secret


# -- the scripts -------------------------------------------------------------------------------
# KEYS and ARGV are documented above each one; every script returns a small integer or string.

# KEYS: attempt hash, lease, events. ARGV: token, node, now, lease ms.
# Returns the spec when the claim is granted, else false (fenced, cancelled, or gone).
_CLAIM = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'queued' then
  return false
end
redis.call('HSET', KEYS[1], 'state', 'running', 'node', ARGV[2], 'claimed_at', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2] .. ':' .. ARGV[1], 'PX', ARGV[4])
return redis.call('HGET', KEYS[1], 'spec')
"""

# A node's dequeue and claim in one round trip (node.NodeWorker, instead of RQ's dequeue, its job's
# fetch and decoding, and then the claim). KEYS: the node worker's RQ key, then each RQ queue's
# list and its intermediate list, in the worker's order. ARGV: prefix, node, now, lease ms, RQ's
# job key prefix, a job id already popped ("" to pop one here), the index in KEYS of the queue it
# came from, the worker's control list ("": none; else the claim names it in the hash, where the
# server's terminate finds it, and moves onto it what the attempt's own list holds). An RQ job of ours is named ``<attempt id>-<token>`` (job_id): the attempt's hash,
# not RQ's job, says what to run. Returns false (every queue empty: the worker is idle), or
# {what, job id, queue index[, spec]}: what is "claimed" (the claim's lease starts, the worker is
# busy, RQ's job is deleted: nobody reads it), "stale" (an attempt no longer this token's to
# run: cancelled, fenced or re-enqueued; its job deleted), or "rq" (no attempt of ours by that
# name: the job is put on the queue's intermediate list for RQ's own path, which refuses it).
_TAKE = """
local function take(job, qi)
  local id, token = string.match(job, '^([%w_]+)%-(%d+)$')
  local key = id and (ARGV[1] .. ':attempt:' .. id)
  local held = key and redis.call('HGET', key, 'token')
  if not held then
    redis.call('LPUSH', KEYS[qi + 1], job)
    return {'rq', job, qi}
  end
  redis.call('DEL', ARGV[5] .. job)
  if held ~= token or redis.call('HGET', key, 'state') ~= 'queued' then
    return {'stale', job, qi}
  end
  redis.call('HSET', key, 'state', 'running', 'node', ARGV[2], 'claimed_at', ARGV[3])
  redis.call('SET', ARGV[1] .. ':lease:' .. id, ARGV[2] .. ':' .. token, 'PX', ARGV[4])
  redis.call('HSET', KEYS[1], 'state', 'busy')
  if ARGV[8] ~= '' then
    redis.call('HSET', key, 'control', ARGV[8])
    local own = ARGV[1] .. ':control:' .. id
    local waiting = redis.call('LRANGE', own, 0, -1)
    if #waiting > 0 then
      redis.call('RPUSH', ARGV[8], unpack(waiting))
      redis.call('EXPIRE', ARGV[8], 86400)
      redis.call('DEL', own)
    end
  end
  return {'claimed', job, qi, redis.call('HGET', key, 'spec')}
end
if ARGV[6] ~= '' then
  local qi = tonumber(ARGV[7])
  redis.call('LREM', KEYS[qi + 1], 1, ARGV[6])
  return take(ARGV[6], qi)
end
for qi = 2, #KEYS, 2 do
  local job = redis.call('LPOP', KEYS[qi])
  if job then return take(job, qi) end
end
redis.call('HSET', KEYS[1], 'state', 'idle')
return false
"""

# KEYS: attempt hash, lease, events. ARGV: token, node, now, pid, start_id, event json.
_STARTED = """
local token = redis.call('HGET', KEYS[1], 'token')
if token ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'pid', ARGV[4], 'start_id', ARGV[5], 'started_at', ARGV[3])
redis.call('RPUSH', KEYS[3], ARGV[6])
return 1
"""

# KEYS: attempt hash, lease, the attempt's control list. ARGV: token, node, lease ms, now, sample
# json, pid, the node worker's control list ("": none). A hash Redis lost is recreated naming that
# list again, and a terminate the server put on the attempt's own list meanwhile is moved onto it.
# "renewed"; "fenced" (the attempt is another's now, or lost or cancelled: stop it).
_RENEW = """
local token = redis.call('HGET', KEYS[1], 'token')
if not token then
  redis.call('HSET', KEYS[1], 'token', ARGV[1], 'state', 'running', 'node', ARGV[2], 'pid', ARGV[6], 'recreated_at', ARGV[4])
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'control', ARGV[7]) end
elseif token ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 'fenced'
end
if ARGV[7] ~= '' then
  local waiting = redis.call('LRANGE', KEYS[3], 0, -1)
  if #waiting > 0 then
    redis.call('RPUSH', ARGV[7], unpack(waiting))
    redis.call('EXPIRE', ARGV[7], 86400)
    redis.call('DEL', KEYS[3])
  end
end
redis.call('SET', KEYS[2], ARGV[2] .. ':' .. ARGV[1], 'PX', ARGV[3])
redis.call('HSET', KEYS[1], 'renewed_at', ARGV[4], 'sample', ARGV[5])
return 'renewed'
"""

# KEYS: attempt hash, lease, events. ARGV: token, node, code, kill_rung, now, event json, note, ended_at
# (the node's clock when it saw the worker end, the one its event carries: a reconciler that reads
# the hash ends the attempt then too, not when it read it). 1: recorded; 0: fenced (a late result: ignored).
_FINISH = """
local token = redis.call('HGET', KEYS[1], 'token')
if not token then
  redis.call('HSET', KEYS[1], 'token', ARGV[1], 'node', ARGV[2], 'recreated_at', ARGV[5])
elseif token ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'ended', 'code', ARGV[3], 'kill_rung', ARGV[4], 'ended_at', ARGV[8], 'note', ARGV[7])
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[3], ARGV[6])
return 1
"""

# KEYS: attempt hash, the attempt's control list. ARGV: message json. The message goes to the list
# of the node worker that claimed the attempt (the hash's ``control``: read there by one kept
# thread), else to the attempt's own (a claim by a node worker moves it onto that worker's list).
_TERMINATE = """
local to = redis.call('HGET', KEYS[1], 'control')
if not to then to = KEYS[2] end
redis.call('RPUSH', to, ARGV[1])
redis.call('EXPIRE', to, 86400)
return 1
"""

# KEYS: attempt hash, events. ARGV: token, now, event json.  1: it was still queued, now cancelled.
_CANCEL_QUEUED = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'queued' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'ended_at', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
return 1
"""

# KEYS: attempt hash, lease, fence. ARGV: token, now.  The new token when marked lost, else 0.
_MARK_LOST = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local fresh = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'state', 'lost', 'token', fresh, 'ended_at', ARGV[2])
return fresh
"""


class Signer(Protocol):
    """What signs a spec for the hash (signing.SpecSigner): the JSON a node will verify."""

    def sign(self, spec: AttemptSpec, now: float | None = None) -> str: ...


class Leases:
    """The protocol's operations on one Redis, under one prefix. Thread-safe (redis-py's client
    is); every method is one round trip. ``signer``: the server's (its enqueues are signed);
    without one a spec goes unsigned, and no node runs it."""

    def __init__(self, client: redis.Redis, names: Names, signer: Signer | None = None) -> None:
        self.client = client
        self.names = names
        self.signer = signer
        self._claim = client.register_script(_CLAIM)
        self._started = client.register_script(_STARTED)
        self._renew = client.register_script(_RENEW)
        self._finish = client.register_script(_FINISH)
        self._cancel_queued = client.register_script(_CANCEL_QUEUED)
        self._mark_lost = client.register_script(_MARK_LOST)
        self._take = client.register_script(_TAKE)
        self._terminate = client.register_script(_TERMINATE)
        self._blmpop = True  # next_events: until this Redis says it has no BLMPOP
        self._tokens_lock = threading.Lock()
        self._next_token, self._block_top = 1, 0  # the block of tokens taken and not yet handed out
        self._queues: dict[str, Queue] = {}  # kind -> its RQ queue (made once: RQ resolves its serializer per Queue)

    # -- server side
    def new_token(self) -> int:
        """A token no enqueue has had: the next of a block this server took with one INCRBY (so an
        enqueue costs no round trip of its own for it). Tokens are compared only for equality, so
        a block's order among other servers' blocks and ``mark_lost``'s INCRs does not matter."""
        with self._tokens_lock:
            if self._next_token > self._block_top:
                self._block_top = int(self.client.incrby(self.names.fence, TOKEN_BLOCK))
                self._next_token = self._block_top - TOKEN_BLOCK + 1
            token, self._next_token = self._next_token, self._next_token + 1
            return token

    @property
    def reserved_top(self) -> int:
        """The highest token this server has taken (handed out or not): the floor the fence
        counter must be above after a Redis that lost its data (reconcile._fence_floor)."""
        return self._block_top

    def record(self, spec: AttemptSpec, pipe: redis.client.Pipeline | None = None) -> None:
        """Write the attempt's hash (state queued), replacing any it had, before its RQ job is
        enqueued (in ``pipe``, a transaction, when given)."""
        key = self.names.attempt(spec.id)
        with self.client.pipeline() if pipe is None else contextlib.nullcontext(pipe) as p:
            p.delete(key)
            p.hset(
                key,
                mapping={
                    "token": spec.token,
                    "spec": self.signer.sign(spec) if self.signer is not None else spec.to_json(),
                    "kind": spec.kind,
                    "tag": spec.tag,
                    "state": AttemptState.QUEUED,
                    "enqueued_at": time.time(),
                },
            )
            if pipe is None:
                p.execute()

    def queue(self, kind: str) -> Queue:
        """The RQ queue of attempts of worker kind ``kind`` (JSON jobs), one kept per kind (it holds
        no state of one enqueue's)."""
        found = self._queues.get(kind)
        if found is None:
            found = self._queues[kind] = Queue(self.names.queue(kind), connection=self.client, serializer=SERIALIZER)
        return found

    def enqueue(self, spec: AttemptSpec, queue: Queue | None = None, *, index: str | None = None) -> None:
        """Record the attempt (queued) and put ``(id, token)`` on its kind's RQ queue. RQ's own
        timeout is off (-1): the server's timeout and the lease end an attempt, not RQ. ``index``:
        a hash that gets ``id -> tag`` (the server's index of a job tree's attempts). The hash, RQ's
        job and the index go in one transaction, one round trip (the hash first: a node that pops
        the job finds it; RQ alone takes two)."""
        with self.client.pipeline() as pipe:
            pipe.multi()  # before any command (RQ would start it after ours otherwise, which redis-py refuses)
            self.record(spec, pipe)
            (queue or self.queue(spec.kind)).enqueue_call(
                RQ_FUNCTION,
                args=(spec.id, spec.token),
                timeout=-1,
                result_ttl=0,
                failure_ttl=3600,
                description=spec.tag,
                job_id=job_id(spec.id, spec.token),
                pipeline=pipe,
            )
            if index is not None:
                pipe.hset(index, spec.id, spec.tag)
            pipe.execute()

    def cancel_queued(self, attempt_id: str, token: int, code: int) -> bool:
        """Cancel an attempt no node has claimed yet (a later claim fails); tells the event list."""
        return self.cancel_queued_all([(attempt_id, token)], code)[0]

    def cancel_queued_all(self, attempts: Sequence[tuple[str, int]], code: int) -> list[bool]:
        """``cancel_queued`` for each (attempt id, token), in one round trip."""
        n, pipe = self.names, self.client.pipeline(transaction=False)
        for attempt_id, token in attempts:
            event = _event(
                attempt_id, token, NodeEvent.ENDED, code=code, kill_rung="none", note="cancelled before a node started it"
            )
            self._cancel_queued(keys=[n.attempt(attempt_id), n.events], args=[token, time.time(), event], client=pipe)
        return [bool(found) for found in pipe.execute()]

    def terminate(self, attempt_id: str, token: int, signal: int, grace: float) -> None:
        """Ask the node that runs the attempt to run the kill ladder (first ``signal``, then SIGKILL):
        on the list of the node worker that claimed it, else on the attempt's own (``_TERMINATE``)."""
        message = {"action": ControlAction.TERMINATE, "id": attempt_id, "token": token, "signal": signal, "grace": grace}
        n = self.names
        self._terminate(keys=[n.attempt(attempt_id), n.control(attempt_id)], args=[json.dumps(message)])

    def mark_lost(self, attempt_id: str, token: int) -> int:
        """Mark a running attempt whose lease is gone lost; returns its new token (0: not lost)."""
        n = self.names
        return int(self._mark_lost(keys=[n.attempt(attempt_id), n.lease(attempt_id), n.fence], args=[token, time.time()]))

    def read(self, attempt_id: str) -> dict[str, str] | None:
        raw: dict[bytes, bytes] = self.client.hgetall(self.names.attempt(attempt_id))  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()} if raw else None

    def lease_holder(self, attempt_id: str) -> str | None:
        value = self.client.get(self.names.lease(attempt_id))
        return value.decode() if isinstance(value, bytes) else None

    def next_events(self, timeout: float, most: int = 512) -> list[dict[str, Any]]:
        """What nodes told since the last call (waits up to ``timeout`` for the first one): one
        BLMPOP of up to ``most`` (Redis 7), else a BLPOP and an LPOP of the rest."""
        raw: list[Any] = []
        if self._blmpop:
            try:
                popped = self.client.blmpop(max(timeout, 0.01), 1, self.names.events, direction="LEFT", count=most)
            except redis.ResponseError:  # a Redis before 7.0: no BLMPOP
                self._blmpop = False
            else:
                raw = list(popped[1]) if popped else []
        if not self._blmpop:
            found = self.client.blpop([self.names.events], timeout=max(timeout, 0.01))
            if not found:
                return []
            raw = [found[1]]
            more = self.client.lpop(self.names.events, most - 1)
            raw.extend(more or [])
        events = []
        for item in raw:
            try:
                events.append(json.loads(item))
            except ValueError:
                continue
        return events

    def forget(self, attempt_id: str) -> None:
        """Remove an ended attempt's keys (the workspace records keep its story)."""
        n = self.names
        self.client.delete(n.attempt(attempt_id), n.lease(attempt_id), n.control(attempt_id))

    # -- node side
    def claim(self, attempt_id: str, token: int, node: str, lease: float) -> bytes | None:
        """Take a queued attempt (its lease starts): its spec as the hash holds it, for the node to
        verify (signing.SpecVerifier); None when it is no longer this token's to run."""
        n = self.names
        found = self._claim(
            keys=[n.attempt(attempt_id), n.lease(attempt_id), n.events], args=[token, node, time.time(), _ms(lease)]
        )
        return found if isinstance(found, bytes) else None

    def take(
        self,
        worker_key: str,
        queues: Sequence[tuple[str, str]],
        node: str,
        lease: float,
        job_prefix: str,
        popped: tuple[str, int] | None = None,
        control: str = "",
    ) -> Taken | None:
        """Dequeue and claim in one round trip (``_TAKE``): the first job of the first non-empty
        RQ queue of ``queues`` ((list key, intermediate list key) each), or the job ``popped``
        (its id, the index of its queue in ``queues``) that a blocking move has just put on its
        queue's intermediate list. None when every queue is empty. ``control``: the worker's control
        list (Names.worker_control), where the server's terminates for the attempt it claims go."""
        keys = [worker_key]
        for queue, intermediate in queues:
            keys += [queue, intermediate]
        job, index = popped if popped is not None else ("", 0)
        found = self._take(
            keys=keys,
            args=[self.names.prefix, node, time.time(), _ms(lease), job_prefix, job, 2 + 2 * index, control],
        )
        if not found:
            return None
        what, job_id, at = found[0].decode(), found[1].decode(), (int(found[2]) - 2) // 2
        raw = found[3] if what == "claimed" and len(found) > 3 else None
        return Taken(what, job_id, at, raw if isinstance(raw, bytes) else None)

    def started(
        self, attempt_id: str, token: int, node: str, pid: int, start_id: str | None, spawned_at: float | None = None
    ) -> bool:
        """Tell the server the attempt's process runs. ``spawned_at``: the node's clock just before
        its spawn, the moment the local executor records as an attempt's start (the server's
        record takes it, bounded by the enqueue and by when it hears this)."""
        n = self.names
        now = time.time()
        spawned = now if spawned_at is None else spawned_at
        event = _event(attempt_id, token, NodeEvent.STARTED, node=node, pid=pid, start_id=start_id, at=now, spawned_at=spawned)
        return bool(
            self._started(
                keys=[n.attempt(attempt_id), n.lease(attempt_id), n.events],
                args=[token, node, spawned, pid, start_id or "", event],
            )
        )

    def renew(
        self,
        attempt_id: str,
        token: int,
        node: str,
        lease: float,
        sample: Mapping[str, Any] | None = None,
        pid: int = 0,
        control: str = "",
    ) -> bool:
        """Extend the lease; False when the attempt is fenced (stop it: it is no longer ours).
        ``pid``: the worker's, for a hash Redis lost (the server then knows it started);
        ``control``: the node worker's control list its claim named (``take``), named again there."""
        n = self.names
        result = self._renew(
            keys=[n.attempt(attempt_id), n.lease(attempt_id), n.control(attempt_id)],
            args=[token, node, _ms(lease), time.time(), json.dumps(dict(sample or {})), pid, control],
        )
        return (result.decode() if isinstance(result, bytes) else result) == "renewed"

    def finish(
        self,
        attempt_id: str,
        token: int,
        node: str,
        code: int,
        kill_rung: str | None,
        note: str = "",
        cap: str | None = None,
        exited_at: float | None = None,
    ) -> bool:
        """Report the end (``cap``: a cap the node's kernel held it at; ``exited_at``: the node's
        clock when it saw the worker end, the end that matches ``started``'s ``spawned_at``);
        False when fenced (a late result from a lost attempt: ignored)."""
        n = self.names
        now = time.time()
        fields = {"kill_rung": kill_rung or "none", "at": now, "note": note, "cap": cap or ""}
        if exited_at is not None:
            fields["exited_at"] = exited_at
        event = _event(attempt_id, token, NodeEvent.ENDED, node=node, code=code, **fields)
        return bool(
            self._finish(
                keys=[n.attempt(attempt_id), n.lease(attempt_id), n.events],
                args=[token, node, code, kill_rung or "none", now, event, note, now if exited_at is None else exited_at],
            )
        )

    def next_control(self, attempt_id: str, timeout: float) -> dict[str, Any] | None:
        """The server's next request for this attempt (terminate), waiting up to ``timeout``."""
        return self.next_control_on(self.names.control(attempt_id), timeout)

    def next_control_on(self, key: str, timeout: float) -> dict[str, Any] | None:
        """The next request on control list ``key`` (an attempt's, or a node worker's: its message
        names the attempt and token), waiting up to ``timeout``."""
        found = self.client.blpop([key], timeout=max(timeout, 0.01))
        if not found:
            return None
        try:
            message = json.loads(found[1])
        except ValueError:
            return None
        return message if isinstance(message, dict) else None


@dataclass(frozen=True)
class Taken:
    """What ``Leases.take`` found: ``what`` is "claimed" (this node claimed it: ``spec`` is its
    hash's spec as written there, unverified, or None when the hash holds none), "stale" (not
    this token's to run any more: nothing to do) or "rq" (not an attempt's job: RQ's own path
    takes it); ``queue``: the index of its queue in the list given."""

    what: str
    job_id: str
    queue: int
    spec: bytes | None = None

    @property
    def attempt(self) -> tuple[str, int]:
        """(attempt id, token) the job names (``job_id``: ``<id>-<token>``, as _TAKE matched it)."""
        attempt_id, _, token = self.job_id.rpartition("-")
        return attempt_id, int(token)


def job_id(attempt_id: str, token: int) -> str:
    """The RQ job's id: RQ allows only letters, digits, _ and - (an attempt id may hold . and :);
    the token, new at each enqueue, keeps it unique."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', attempt_id)}-{token}"


def _event(attempt_id: str, token: int, event: NodeEvent, **fields: Any) -> str:
    return json.dumps({"id": attempt_id, "token": token, "event": event, **fields}, separators=(",", ":"))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
