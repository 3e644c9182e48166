"""Telling the world: a job's or worker's change goes to the event bus (the API's streams)
and a line to its tree's orchestrator.log (job-level lines to the server log too)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Protocol

from ..config import Settings
from ..events import Event, EventBus, EventType
from ..models import JobRecord, WorkerRecord
from ..workspace import logs
from ..workspace.layout import Workspace, event_line
from .tables import LiveWorker

log = logging.getLogger("orchestrator.engine")


class Sink(Protocol):
    """Something told of every job and worker event as it is published (the job index, webhooks).
    Called often, maybe inside ``tables.locked()``: it must only queue, never block or raise."""

    def job_event(self, job: JobRecord, event: Event) -> None: ...

    def worker_event(self, job: JobRecord, record: WorkerRecord, event: Event) -> None: ...

    def tree_ended(self, job: JobRecord, jobs: list[JobRecord], workers: list[WorkerRecord]) -> None:
        """A root ended and ``jobs``/``workers`` are its tree's final records as the engine wrote them
        (live ones, under ``tables.locked()``: read now, never kept). Optional: a sink without it is
        told the end by its job event alone."""


class Announcer:
    """Publishes events and appends event lines; needs no engine lock."""

    def __init__(self, settings: Settings, workspace: Workspace, events: EventBus) -> None:
        self.settings = settings
        self.workspace = workspace
        self.events = events
        self.sinks: list[Sink] = []
        # A thread inside ``gathered``: its lines per tree, appended when it leaves (None: none kept).
        self._gathering = threading.local()

    def job(self, job: JobRecord, message: str) -> None:
        event = self.events.publish(
            job.root_id, type=EventType.JOB, job_id=job.id, status=job.status.value, depth=job.depth, message=message
        )
        for sink in self.sinks:
            sink.job_event(job, event)

    def worker(self, live: LiveWorker, message: str) -> None:
        rec = live.record
        event = self.events.publish(
            rec.root_id,
            type=EventType.WORKER,
            job_id=rec.job_id,
            status=rec.status.value,
            worker=rec.name,
            depth=rec.depth,
            message=message,
        )
        for sink in self.sinks:
            sink.worker_event(live.job, rec, event)
        self.line(live.job, f"{rec.key} {rec.status.value}: {message}", rec.name)

    def tree_ended(self, job: JobRecord, jobs: list[JobRecord], workers: list[WorkerRecord]) -> None:
        """A root's tree ended with every record of it on disk as held here (``Sink.tree_ended``)."""
        for sink in self.sinks:
            told = getattr(sink, "tree_ended", None)  # optional (Sink.tree_ended): a sink without it is not told
            if told is not None:
                told(job, jobs, workers)

    @contextlib.contextmanager
    def gathered(self) -> Iterator[None]:
        """Within it, this thread's lines to each tree's orchestrator.log are kept, in order, and
        appended together as it leaves (one write per tree, however it leaves): a settling pass
        tells tens of workers in one lock section, and an open and close of the log per line was
        a tenth of the pass. Events are published at once, as always; the lines follow the
        records they tell of as before (written after them, never synced). Nested: the outer
        one writes."""
        if getattr(self._gathering, "lines", None) is not None:
            yield
            return
        kept: dict[str, tuple[JobRecord, list[str]]] = {}
        self._gathering.lines = kept
        try:
            yield
        finally:
            self._gathering.lines = None
            for job, lines in kept.values():
                self._append(job, lines)

    def line(self, job: JobRecord, message: str, worker: str | None = None) -> None:
        if worker is None:  # job-level events also go to the server log; worker ones only to the tree's
            log.info(message, extra=logs.context(job.id, root_id=job.root_id))
        if self.settings.logging.enable_structured:
            line = logs.job_line(message, job_id=job.id, root_id=job.root_id, depth=job.depth, worker=worker)
        else:
            line = event_line(message)
        kept: dict[str, tuple[JobRecord, list[str]]] | None = getattr(self._gathering, "lines", None)
        if kept is None:
            self._append(job, [line])
        else:
            kept.setdefault(job.root_id, (job, []))[1].append(line)

    def _append(self, job: JobRecord, lines: list[str]) -> None:
        try:
            self.workspace.append_lines(self.workspace.orchestrator_log(job.root_id), lines)
        except OSError:
            log.warning("cannot append to orchestrator.log of %s", job.root_id)
