"""A recording Checkout and an engine factory for the seam tests (test_checkout, test_steps)."""

from __future__ import annotations

import contextlib
import threading

from orchestrator.checkouts.checkout import FolderCheckout
from orchestrator.engine.core import Engine
from orchestrator.workspace.layout import Workspace

from .conftest import make_settings


class RecordingCheckout(FolderCheckout):
    """Today's folder, noting each call with what the worker's record said at that moment."""

    def __init__(self, workspace):
        super().__init__(workspace)
        self.calls = []
        self.lock = threading.Lock()

    def note(self, *call):
        with self.lock:
            self.calls.append(call)

    def prepare(self, record, job):
        self.note("prepare", record.name, len(record.attempts))
        return super().prepare(record, job)

    def reset(self, record, attempt):
        last = record.attempts[-1]
        self.note("reset", record.name, attempt, len(record.attempts), last.ended_at is not None)
        super().reset(record, attempt)

    def changes(self, record):
        self.note("changes", record.name, len(record.attempts))
        return super().changes(record)

    def cleanup(self, record, succeeded):
        self.note("cleanup", record.name, succeeded)
        super().cleanup(record, succeeded)


@contextlib.contextmanager
def seamed_engines(tmp_path):
    """A factory of engines running ``sh -c TASK`` workers, with the Checkout ``make(workspace)``
    gives and ``steps``; every engine is shut down at the end."""
    engines = []

    def factory(make=RecordingCheckout, steps=(), **sections):
        settings = make_settings(tmp_path, orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]}, **sections)
        workspace = Workspace(settings.workspace_root)
        engine = Engine(settings, workspace=workspace, checkout=make(workspace), steps=steps)
        engines.append(engine)
        return engine

    try:
        yield factory
    finally:
        for engine in engines:
            engine.shutdown(timeout=10)
