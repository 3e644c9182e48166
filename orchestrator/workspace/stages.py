"""Which stages after a worker's agent ran, and which reached their verdict: the tree's
``state/stages.jsonl``, so that a server killed in the middle of one runs nothing twice.

A stage is one piece of work done on a worker's or a job's result after the agent that made it
ended: one gate on one attempt's commit, the scoring of one candidate, a job's landing, its
publication. Each is named by a key that says what it judges (the worker, the attempt, the
commit; the job and its result commit), so a key found here is the same work. Before it starts,
a line ``started`` is appended; when it reaches its verdict, a line ``verdict`` with what it
found (the stage's own record, e.g. a gate's result). Each line is one ``O_APPEND`` write: a
kill -9 leaves it whole or absent (a line cut short is skipped when read), and with a durable
workspace it is fsynced before the stage moves on.

After a restart (engine/takeover.py adopts the tree), each stage asks ``begin`` before running:

===============================  =====================================================
what the ledger says             the stage
===============================  =====================================================
a verdict                        is not run again: the verdict is taken as it is
started, with no verdict         was cut off by the stop: it runs once more, and says
                                 so ("gate tests re-run: the server stopped during it")
nothing                          runs, as usual
===============================  =====================================================
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypedDict

from .filesystem import read_json_lines, write_all
from .layout import Workspace

log = logging.getLogger("orchestrator.workspace")

LEDGER = "stages.jsonl"  # in the tree's state/ folder


class StageState(str, Enum):
    """What the ledger knows of a stage before it runs now."""

    NEW = "new"  # never started
    CUT_OFF = "cut_off"  # started, and the server stopped before its verdict
    DONE = "done"  # reached its verdict: never run again


class StageEvent(str, Enum):
    """What one line of the ledger records (its ``event``)."""

    STARTED = "started"  # a stage's run began (with what it judges)
    VERDICT = "verdict"  # a stage's run reached its verdict


class LedgerEntry(TypedDict, total=False):
    """One line of the ledger: a stage's start (with its ``data``) or its verdict."""

    key: str
    event: str  # a StageEvent's value
    at: float
    data: dict[str, Any]  # what the stage's caller recorded at its start (e.g. the commit it judges)
    verdict: dict[str, Any]  # the stage's own verdict, as its caller wrote it


@dataclass(frozen=True)
class Stage:
    """One stage as the ledger has it: its state, its verdict (DONE), how many of its runs were
    cut off, and what its last start recorded (``begin``'s ``data``: e.g. the commit it judged)."""

    key: str
    state: StageState = StageState.NEW
    verdict: dict[str, Any] | None = None
    cut_off: int = 0
    started: dict[str, Any] = field(default_factory=dict)

    @property
    def rerun(self) -> bool:
        """It runs again because a server stopped during an earlier run of it."""
        return self.state is StageState.CUT_OFF


def rerun_note(what: str) -> str:
    """The words for a stage run once more after a restart, in the logs and on the record."""
    return f"{what} re-run: the server stopped during it"


class StageLedger:
    """The stages of one job tree (see the module docstring). Threads append to it at once (one
    write per line, ``O_APPEND``); it is read whole, and only by a stage about to run."""

    def __init__(self, workspace: Workspace, root_id: str) -> None:
        self.workspace = workspace
        self.path = workspace.state_dir(root_id) / LEDGER

    def look(self, key: str) -> Stage:
        """The stage ``key`` as the ledger has it, without recording anything."""
        state, verdict, cut_off = StageState.NEW, None, 0
        started: dict[str, Any] = {}
        for entry in self._entries():
            if entry.get("key") != key:
                continue
            if entry.get("event") == StageEvent.STARTED:
                if state is StageState.CUT_OFF:
                    cut_off += 1  # a start after a start: the earlier one never ended
                state, verdict, started = StageState.CUT_OFF, None, entry.get("data") or {}
            elif entry.get("event") == StageEvent.VERDICT:
                state, verdict = StageState.DONE, entry.get("verdict") or {}
        if state is StageState.CUT_OFF:
            cut_off += 1
        return Stage(key, state, verdict, cut_off, started)

    def begin(self, key: str, **data: Any) -> Stage:
        """The stage ``key`` as it was; unless it had a verdict, its start is recorded now (with
        ``data``) and the caller runs it. A DONE stage's caller takes its verdict instead."""
        found = self.look(key)
        if found.state is not StageState.DONE:
            self.started(key, **data)
        return found

    def started(self, key: str, **data: Any) -> None:
        """The stage ``key`` starts now (``begin`` without the look, for a caller that knows no
        server ran it before: its worker's attempt was not re-adopted)."""
        self._append({"key": key, "event": StageEvent.STARTED.value, "at": round(time.time(), 3), "data": data})

    def reached(self, key: str, verdict: dict[str, Any]) -> None:
        """The stage ``key`` reached ``verdict``: on disk before the caller moves on."""
        self._append({"key": key, "event": StageEvent.VERDICT.value, "at": round(time.time(), 3), "verdict": verdict})

    def _entries(self) -> list[dict[str, Any]]:
        return read_json_lines(self.path)

    def _append(self, entry: LedgerEntry) -> None:
        """One line, whole and synced; a line that cannot be written (a full disk) is said and the
        stage goes on: the work is not held back for its record, and a restart finds that stage
        as a stage with no record of it (run again) rather than a job that never ends."""
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            size = os.fstat(fd).st_size
            try:
                write_all(fd, line)
                if self.workspace.durable:
                    os.fdatasync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # no half line for the next one to be glued to
                raise
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning(
                "stage record %s: %s of %r not written (%s): a server restarted before this stage ends runs it again",
                self.path,
                entry.get("event"),
                entry.get("key"),
                exc.strerror or exc,
            )
