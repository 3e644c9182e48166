"""Group commit: many threads that each need "an X that started after my request" share one X.

Used for folder fsyncs (every worker record renamed into ``state/workers/`` needs the
folder fsynced before its writer goes on) and for the tag sweep (every finished
worker needs one /proc scan that started after its process exited). Under load one
operation serves every caller that arrived while the previous one ran; the
guarantee each caller gets is unchanged. With ``gather``, the caller that starts a
run first waits that long for company: fewer, larger runs, for callers that can wait. It
waits only while requests come often (the one before came within twice ``gather``): a lone
request (one worker of a chain, each waiting on the one before) is never held up for
company that is not coming.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Run ``operation(batch)`` for a batch of requests; each caller waits for the run that includes it."""

    def __init__(self, operation: Callable[[list[T]], object], *, gather: float = 0.0) -> None:
        self._operation = operation
        self._gather = gather
        self._cond = threading.Condition()
        self._queue: list[T] = []
        self._generation = 0  # number of runs started
        self._finished = 0  # number of runs finished
        self._running = False
        self._errors: dict[int, BaseException] = {}
        self._last_request = -float("inf")  # time.monotonic() of the latest request

    def __call__(self, request: T) -> None:
        with self._cond:
            now = time.monotonic()
            busy = now - self._last_request < 2 * self._gather  # company is likely
            self._last_request = now
            self._queue.append(request)
            target = self._generation + 1  # the next run to start is the first that can include us
            while self._finished < target:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                if self._gather and busy:  # who arrives meanwhile joins this run (the batch is taken after)
                    self._cond.release()
                    try:
                        time.sleep(self._gather)
                    finally:
                        self._cond.acquire()
                self._generation += 1
                number, batch, self._queue = self._generation, self._queue, []
                self._cond.release()
                try:
                    self._operation(batch)
                except BaseException as exc:  # every caller of this run gets the error
                    self._errors = {n: e for n, e in self._errors.items() if n > number - 8}
                    self._errors[number] = exc
                finally:
                    self._cond.acquire()
                    self._finished = number
                    self._running = False
                    self._cond.notify_all()
            error = self._errors.get(target)
        if error is not None:
            raise error
