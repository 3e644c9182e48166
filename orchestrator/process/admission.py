"""Admission by measured memory: a worker starts only where the memory its kind needs is free,
keeping ``workers.memory_reserve_mb`` free for the rest of the machine; otherwise it stays pending
and its record says why ("waiting for memory: 300 MB needed, 120 MB free ...").

What a kind needs is learned: the largest peak RSS of its recent workers (the resource monitor's
``Usage``, kept in each worker's record), and until one is measured, its kind's declared peak. Free
memory is read once per dispatch pass (this machine's, or under the rq executor each live node's
from its heartbeat), less what running workers are still expected to grow by (their kind's need
less the peak sampled so far: a CLI starts small and grows) and what the pass itself started.

A worker that could never fit (its kind needs more than the largest machine has in total, less the
reserve) does not wait forever: it starts once no other worker this server started runs, with a
note saying so, and its own ``workers.max_memory_mb`` cap still applies.

``Room`` and ``Peaks`` are pure; ``MemoryAdmission`` applies them to the engine's workers under its
lock, and reads memory through one seam (``MemoryProbe``: procscan.machine_memory, or the nodes'
heartbeats), which a test replaces.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ..models import JobRecord, WorkerRecord
from .procscan import Memory

MB = 1 << 20
GB = 1 << 30
SETTING = "workers.memory_reserve_mb"

# A worker's whole process tree at its peak, in MB, until attempts of its kind are measured here:
# each kind declares its own (workers/adapters, ``WorkerKind.memory_peak_mb``), which the engine
# passes in (``defaults``); a kind it does not name needs as much as an AI CLI.
UNKNOWN_KIND_MB = 300  # a kind with no declared peak (as much as an AI CLI)
RECENT = 20  # a kind's need is the largest peak of its last RECENT measured workers


def size_text(n: int) -> str:
    """``300 MB``, ``1.2 GB`` (negative amounts read as 0)."""
    n = max(0, n)
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / MB:.0f} MB"


MemoryProbe = Callable[[], list[Memory]]


class Admitted(Protocol):
    """A worker as admission sees it (the engine's W): its record, and the tag its processes carry."""

    @property
    def record(self) -> WorkerRecord: ...

    @property
    def tag(self) -> str: ...


W = TypeVar("W", bound=Admitted)


@dataclass(frozen=True)
class Decision:
    """Whether a worker starts now, where it was judged to fit, and why it waits (or, for one that
    can never fit and starts alone, the note saying so)."""

    start: bool
    place: str | None = None
    reason: str = ""


class Peaks:
    """Each kind's need: the largest peak RSS of its last ``RECENT`` measured workers, else its default."""

    def __init__(self, defaults: Mapping[str, int] | None = None) -> None:
        self.defaults: Mapping[str, int] = {} if defaults is None else defaults
        self.recent: dict[str, deque[int]] = {}

    def need(self, kind: str) -> int:
        seen = self.recent.get(kind)
        if seen:
            return max(seen)
        return self.defaults.get(kind, UNKNOWN_KIND_MB) * MB

    def learn(self, kind: str, peak: int | None) -> None:
        """A worker of ``kind`` ended having held ``peak`` bytes at most (None or 0: never sampled)."""
        if peak:
            self.recent.setdefault(kind, deque(maxlen=RECENT)).append(peak)


class Room:
    """What one dispatch pass may still give out: each machine's available memory less the reserve,
    less what is charged to it (running workers still growing, workers started in the pass)."""

    def __init__(self, places: list[Memory], reserve: int) -> None:
        self.places = places
        self.reserve = reserve
        self.free = {p.name: p.available - reserve for p in places}
        self.charged = {p.name: 0 for p in places}

    def _roomiest(self, kind: str) -> Memory | None:
        fit = [p for p in self.places if p.runs(kind)]
        return max(fit, key=lambda p: self.free[p.name]) if fit else None

    def charge(self, kind: str, amount: int, place: str | None = None) -> None:
        """``amount`` bytes will be taken on ``place``; on the roomiest machine that runs ``kind``
        when the place is not known (a worker queued for any node, or not placed yet)."""
        if place not in self.free:
            best = self._roomiest(kind)
            if best is None:
                return
            place = best.name
        self.free[place] -= amount
        self.charged[place] += amount

    def decide(self, kind: str, need: int, *, alone: bool) -> Decision:
        """Whether a worker of ``kind`` needing ``need`` bytes starts now (and is charged), or why not.
        ``alone``: no other worker of this server runs, so one that can never fit may start."""
        best = self._roomiest(kind)
        if best is None:  # nothing measured that runs it (a node too old to report memory): not ours to judge
            return Decision(True)
        free = self.free[best.name]
        if need <= free:
            self.charge(kind, need, best.name)
            return Decision(True, best.name)
        largest = max(p.total for p in self.places if p.runs(kind)) - self.reserve
        if need > largest:
            beyond = (
                f"{kind} needs {size_text(need)} by its recent peaks, more than the largest machine's "
                f"{size_text(largest + self.reserve)} less the {size_text(self.reserve)} reserve ({SETTING})"
            )
            if alone:
                self.charge(kind, need, best.name)
                return Decision(True, best.name, f"started though it may not fit: {beyond}; no other worker runs")
            return Decision(False, reason=f"waiting for memory: {beyond}; it starts once no other worker runs")
        where = f" on {best.name}" if best.name is not None else ""
        growing = self.charged[best.name]
        tail = f", {size_text(growing)} still to be taken by running workers" if growing > 0 else ""
        return Decision(
            False,
            reason=f"waiting for memory: {size_text(need)} needed, {size_text(free)} free{where} "
            f"({size_text(best.available)} available, {size_text(self.reserve)} kept free by {SETTING}{tail})",
        )


@dataclass
class _Held(Generic[W]):
    live: W
    need: int


class MemoryAdmission(Generic[W]):
    """The engine's admission by memory; every method runs under the engine's lock. ``probe``
    reads memory (once per pass that has a worker to start), ``peaks`` gives the peak RSS sampled
    so far of running workers by tag (the resource monitor's), ``say`` tells a worker's events;
    ``defaults``: each kind's declared peak in MB, until its workers are measured."""

    def __init__(
        self,
        reserve_mb: int,
        probe: MemoryProbe,
        peaks: Callable[[Iterable[str]], dict[str, int]],
        say: Callable[[W, str], None],
        defaults: Mapping[str, int] | None = None,
    ) -> None:
        self.reserve = reserve_mb * MB
        self.enabled = reserve_mb > 0  # 0: admission off, workers start by count alone
        self.probe = probe
        self.sampled = peaks
        self.say = say
        self.peaks = Peaks(defaults)
        self.held: dict[tuple[str, str], _Held[W]] = {}  # (root id, worker key) -> a worker it admitted, running
        self.flagged: dict[tuple[str, str], W] = {}  # pending workers whose record says why they wait
        self._told: set[tuple[str, str]] = set()  # flagged in the pass before: told already
        self._room: Room | None = None

    @property
    def waiting(self) -> bool:
        """A worker waits for memory: the engine tries again each monitor interval (memory may
        free without any worker of ours ending)."""
        return bool(self.flagged)

    def begin(self) -> None:
        """A dispatch pass starts: memory is read again (lazily), and reasons are set afresh (a
        worker this pass does not reach waits for a slot, not for memory)."""
        self._room = None
        self._told = set(self.flagged)
        for live in self.flagged.values():
            live.record.waiting = None
        self.flagged = {}

    def admit(self, job: JobRecord, ready: list[W]) -> int:
        """How many of ``ready`` (in order; the count limits allow them all) start now. Those that
        start are held until their process ends; the first that does not fit and every one after
        it wait, their records saying why."""
        if not self.enabled or not ready:
            return len(ready)
        room = self._room or self._read()
        for n, live in enumerate(ready):
            rec = live.record
            need = self.peaks.need(rec.kind)
            decision = room.decide(rec.kind, need, alone=not self.held)
            if not decision.start:
                self._flag(ready[n:], decision.reason)
                return n
            self.held[(rec.root_id, rec.key)] = _Held(live, need)
            if decision.reason:
                job.notes.append(f"{rec.name}: {decision.reason}")
                self.say(live, decision.reason)
        return len(ready)

    def ended(self, rec: WorkerRecord) -> None:
        """A worker's process ended: it holds nothing more, and its peak teaches its kind's need."""
        self.held.pop((rec.root_id, rec.key), None)
        if self.enabled:
            self.peaks.learn(rec.kind, rec.peak_rss)

    def _read(self) -> Room:
        """Memory as read now, less what the running workers this server admitted are still expected to take."""
        room = self._room = Room(self.probe(), self.reserve)
        if self.held:
            sampled = self.sampled(h.live.tag for h in self.held.values())
            for held in self.held.values():
                rec = held.live.record
                room.charge(rec.kind, max(0, held.need - sampled.get(held.live.tag, 0)), rec.node)
        return room

    def _flag(self, waiting: list[W], reason: str) -> None:
        for live in waiting:
            key = (live.record.root_id, live.record.key)
            live.record.waiting = reason
            self.flagged[key] = live
            if key not in self._told:
                self.say(live, reason)
