"""Telling the world: a job's or worker's change goes to the event bus (the API's streams)
and a line to its tree's orchestrator.log (job-level lines to the server log too)."""

from __future__ import annotations

import logging
from typing import Protocol

from ..config import Settings
from ..events import Event, EventBus, EventType
from ..models import JobRecord, WorkerRecord
from ..workspace import logs
from ..workspace.layout import Workspace
from .tables import LiveWorker

log = logging.getLogger("orchestrator.engine")


class Sink(Protocol):
    """Something told of every job and worker event as it is published (the job index, webhooks).
    Called often, maybe inside ``tables.locked()``: it must only queue, never block or raise."""

    def job_event(self, job: JobRecord, event: Event) -> None: ...

    def worker_event(self, job: JobRecord, record: WorkerRecord, event: Event) -> None: ...


class Announcer:
    """Publishes events and appends event lines; needs no engine lock."""

    def __init__(self, settings: Settings, workspace: Workspace, events: EventBus) -> None:
        self.settings = settings
        self.workspace = workspace
        self.events = events
        self.sinks: list[Sink] = []

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

    def line(self, job: JobRecord, message: str, worker: str | None = None) -> None:
        if worker is None:  # job-level events also go to the server log; worker ones only to the tree's
            log.info(message, extra=logs.context(job.id, root_id=job.root_id))
        try:
            if self.settings.logging.enable_structured:
                line = logs.job_line(message, job_id=job.id, root_id=job.root_id, depth=job.depth, worker=worker)
                self.workspace.append_line(self.workspace.orchestrator_log(job.root_id), line)
            else:
                self.workspace.log_event(job.root_id, message)
        except OSError:
            log.warning("cannot append to orchestrator.log of %s", job.root_id)
