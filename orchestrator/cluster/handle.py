"""The rq executor's handle on one attempt out on a node (executor.AttemptHandle)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..process.cgroups import Enforced
from ..process.executor import Sample
from .leases import AttemptSpec


@dataclass(eq=False)
class RemoteHandle:
    """One attempt on a node (executor.AttemptHandle). ``id`` is the attempt's id in Redis,
    ``token`` its current fencing token; the listener thread updates the rest."""

    id: str
    tag: str
    token: int
    kind: str
    started_at: float
    exit_file: Path | None
    spec: AttemptSpec | None = None  # kept to enqueue it again if Redis loses it
    pid: int | None = None  # the worker's pid on its node, once started
    node: str | None = None
    queued: bool = True
    lost: bool = False
    deadline_stop: str | None = None  # (its node watches its deadline: never set by a shim here)
    kill_rung: str | None = None
    code: int | None = None
    ended_at: float | None = None
    sample: Sample | None = None  # from the node's latest renew
    node_told: bool = False  # a wait has returned None once since it was placed (execution records the node)
    lease_gone: float | None = None  # monotonic time its lease was first seen missing
    exit_seen: float | None = None  # monotonic time its exit file was first seen without an "ended"
    jobless: float | None = None  # monotonic time it was first seen queued without its RQ job
    unknown: float | None = None  # monotonic time it was first seen queued here and absent from Redis
    withheld: bool = False  # cancelled in Redis by ``withhold``: only its terminate ends it here
    enqueuing: bool = False  # start() is enqueueing it: the reconciler must not (it would enqueue it twice)
    secret_file: Path | None = None
    enforced: Enforced | None = None  # which enforcement held its caps on its node (from its renewals)
    cap_hit: str | None = None  # a cap its node's kernel held it at (from its "ended" event)
    # Notified (under the executor's lock) when it is placed or ends: its waiters alone wake.
    changed: threading.Condition | None = field(default=None, repr=False)

    @property
    def start_id(self) -> str:
        return self.id  # what the record keeps (Attempt.pid_start): a restart adopts it by this

    @property
    def exited(self) -> bool:
        return self.code is not None

    @property
    def shim_pid(self) -> int | None:
        """Its node samples it (a node's attempt runs under the shim): the monitor here does not."""
        return self.pid if self.exit_file is not None else None
