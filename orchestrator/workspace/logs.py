"""Structured (JSON lines) logging, used when ``logging.enable_structured`` is on.

One JSON object per line, so a log shipper or ``jq`` reads the server log and
each job tree's ``orchestrator.log`` without parsing free text. Every object has
``ts``, ``level``, ``event``, ``message``, ``job_id`` and ``root_id`` (null when
the line is about no job), and ``worker`` when a worker is concerned. Plain text
stays the default: a person reading ``tail -f`` should not need ``jq``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TypedDict


class LogContext(TypedDict):
    """A log call's ``extra=`` about a job or a worker (``context``)."""

    job_id: str | None
    root_id: str | None
    worker: str | None


class _LineKeys(TypedDict):
    ts: str
    level: str
    event: str
    message: str
    job_id: str | None
    root_id: str | None


class LogLine(_LineKeys, total=False):
    """One JSON line of a log (see the module docstring)."""

    depth: int  # a job tree's orchestrator.log
    worker: str
    exception: str  # the server log's traceback


def iso_ts(ts: float) -> str:
    """UTC, millisecond precision: ``2025-01-31T12:00:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def context(job_id: str | None = None, worker: str | None = None, root_id: str | None = None) -> LogContext:
    """``extra=`` for a log call about a job or a worker: ``log.info(msg, extra=context(job.id))``."""
    return {"job_id": job_id, "root_id": root_id or _root_of(job_id), "worker": worker}


def job_line(
    message: str,
    *,
    job_id: str,
    root_id: str,
    depth: int,
    worker: str | None = None,
    level: str = "INFO",
    ts: float | None = None,
) -> str:
    """One line of a job tree's ``orchestrator.log`` as JSON."""
    entry: LogLine = {
        "ts": iso_ts(time.time() if ts is None else ts),
        "level": level,
        "event": "worker" if worker else "job",
        "message": message,
        "job_id": job_id,
        "root_id": root_id,
        "depth": depth,
    }
    if worker:
        entry["worker"] = worker
    return json.dumps(entry, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """The server log as JSON lines (``logging.enable_structured``)."""

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        entry: LogLine = {
            "ts": iso_ts(record.created),
            "level": record.levelname,
            "event": record.name,
            "message": record.getMessage(),
            "job_id": job_id,
            "root_id": getattr(record, "root_id", None) or _root_of(job_id),
        }
        worker = getattr(record, "worker", None)
        if worker:
            entry["worker"] = worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _root_of(job_id: str | None) -> str | None:
    # A child job's id is its root's id plus "-c<n>" (see workspace/ids.py).
    return job_id.split("-", 1)[0] if job_id else None
