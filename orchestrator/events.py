"""An in-memory, sequence-numbered event log per job tree.

Progress displays, long-polls and the SSE stream all read the same events; a
reader resumes from the last sequence number it saw (SSE's Last-Event-ID).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class EventType(str, Enum):
    """What an event is about, and the SSE stream's event names (``GET /jobs/{id}/events``):
    a job's or a worker's change on the bus; ``end`` only on the stream, once the job is over.
    A member is its value in f-strings too (config.keys.StrEnum's rule, which the API client
    cannot import: the config package brings yaml)."""

    JOB = "job"
    WORKER = "worker"
    END = "end"  # the stream's last event (api/routes.py), never published on the bus

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


@dataclass(frozen=True, slots=True)
class Event:
    """One change (slotted: a tree's bus keeps up to 20,000 of them)."""

    seq: int
    time: float
    type: EventType  # JOB or WORKER
    root_id: str
    job_id: str
    status: str
    worker: str | None = None
    depth: int = 0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventBus:
    """Publish events per root tree; wait for new ones without polling."""

    def __init__(self, max_per_root: int = 20_000) -> None:
        self._seq = itertools.count(1)
        self._events: dict[str, deque[Event]] = {}
        self._max = max_per_root
        self._cond = threading.Condition()

    def publish(self, root_id: str, **fields: Any) -> Event:
        with self._cond:
            event = Event(seq=next(self._seq), time=time.time(), root_id=root_id, **fields)
            self._events.setdefault(root_id, deque(maxlen=self._max)).append(event)
            self._cond.notify_all()
        return event

    def last_seq(self, root_id: str) -> int:
        """The newest event's number for a tree (0 if none): changes whenever the tree does."""
        with self._cond:
            found = self._events.get(root_id)
            return found[-1].seq if found else 0

    def forget(self, root_id: str) -> None:
        """Drop a tree's events (it ended long ago; streams of it end at once)."""
        with self._cond:
            self._events.pop(root_id, None)

    def since(self, root_id: str, after: int = 0) -> list[Event]:
        with self._cond:
            return self._after(root_id, after)

    def _after(self, root_id: str, after: int) -> list[Event]:
        """Under the lock: the events newer than ``after``, read from the newest end, so a
        follower pays for what it has not seen, not for the up to 20,000 it has."""
        found = self._events.get(root_id)
        if not found or found[-1].seq <= after:
            return []
        if found[0].seq > after:
            return list(found)
        newer = []
        for event in reversed(found):  # sequence numbers grow along a tree's deque
            if event.seq <= after:
                break
            newer.append(event)
        newer.reverse()
        return newer

    def wait(self, root_id: str, after: int, timeout: float) -> list[Event]:
        """Events newer than ``after``; blocks up to ``timeout`` seconds for the first one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._after(root_id, after)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self._cond.wait(remaining)
