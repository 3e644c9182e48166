"""Time, as the engine reads and waits on it: injectable, so a test can drive it.

``SystemClock`` is the real one. Every reading and every pause that a decision rests on
(an attempt's timeout, the backoff before a retry, a tree's deadline) goes through a
``Clock``, so a fake clock (orchestrator.testing.FakeClock) makes them take no real time.
"""

from __future__ import annotations

import time
from typing import Protocol


class Waitable(Protocol):
    """A flag a pause can be cut short by (runner.Wakeup, threading.Event)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Clock(Protocol):
    """Wall time, monotonic time, and a pause that a wake-up ends early."""

    def time(self) -> float:
        """Seconds since the epoch: what records and logs show."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: what timeouts are measured on."""
        ...

    def wait(self, wake: Waitable | None, timeout: float) -> bool:
        """Pause ``timeout`` seconds, or until ``wake`` is set; True if it was set."""
        ...


class SystemClock:
    """The machine's clocks, and real pauses."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, wake: Waitable | None, timeout: float) -> bool:
        if wake is None:
            time.sleep(max(0.0, timeout))
            return False
        return wake.wait(max(0.0, timeout))


SYSTEM_CLOCK = SystemClock()
