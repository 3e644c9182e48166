"""Pacing for a refresh that costs in proportion to a tree's size and that many events ask for.

A level report is rendered again each time a child job of its level ends. In a tree of
10,000 workers, 90 child jobs of one level each re-rendered a report of 9,900 workers: the
renders grew with the square of the tree. A ``Pacer`` runs the first request at once (as
before, in the caller's thread) and then leaves a pause of ``factor`` times what the last
run took; requests in the pause are merged into one run at its end (on a timer thread), so
the latest state is always rendered and rendering takes at most 1/(factor+1) of the time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

FACTOR = 19.0  # pause after a run, in units of its cost: at most 5% of the time goes to these runs


@dataclass
class _Slot:
    cost: float = 0.0  # seconds the last run took
    ended: float = float("-inf")  # monotonic time it ended
    busy: bool = False
    pending: Callable[[], None] | None = None  # the latest request not yet run
    timer: threading.Timer | None = None


K = TypeVar("K", bound=Hashable)


class Pacer(Generic[K]):
    """At most one run at a time per key, a paused one merging the requests made meanwhile."""

    def __init__(self, factor: float = FACTOR) -> None:
        self.factor = factor
        self._lock = threading.Lock()
        self._slots: dict[K, _Slot] = {}

    def request(self, key: K, run: Callable[[], None]) -> None:
        """Run ``run`` now when ``key`` is due, else once at the end of its pause (the latest
        request made by then is the one run)."""
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            slot.pending = run
            if slot.busy or slot.timer is not None:
                return
            wait = slot.ended + self.factor * slot.cost - time.monotonic()
            if wait > 0:
                self._schedule(key, slot, wait)
                return
            slot.busy, slot.pending = True, None
        self._run(key, slot, run)

    def forget(self, match: Callable[[K], bool]) -> None:
        """Drop the keys ``match`` accepts, with their pending runs (a tree that ended, whose
        final rendering covers them)."""
        with self._lock:
            for key in [k for k in self._slots if match(k)]:
                slot = self._slots.pop(key)
                if slot.timer is not None:
                    slot.timer.cancel()

    def close(self) -> None:
        self.forget(lambda key: True)

    def _schedule(self, key: K, slot: _Slot, wait: float) -> None:
        """Under the lock."""
        slot.timer = threading.Timer(wait, self._fire, (key, slot))
        slot.timer.daemon = True
        slot.timer.start()

    def _fire(self, key: K, slot: _Slot) -> None:
        with self._lock:
            if self._slots.get(key) is not slot or slot.pending is None:
                return  # forgotten meanwhile
            run, slot.pending, slot.timer, slot.busy = slot.pending, None, None, True
        self._run(key, slot, run)

    def _run(self, key: K, slot: _Slot, run: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            run()
        finally:
            with self._lock:
                slot.busy, slot.ended = False, time.monotonic()
                slot.cost = slot.ended - started
                if slot.pending is not None and self._slots.get(key) is slot:
                    self._schedule(key, slot, self.factor * slot.cost)
