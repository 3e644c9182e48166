"""What the engine's parts share, and what they may ask of the engine.

``EngineContext`` is built once by ``core.Engine`` and handed to every part (submission,
scheduling, nesting, settling, ending, choosing, the worker threads, takeover): its settings, its
workspace, the clock, the tables (and their one lock, ``tables.locked()``), the announcer (the
event bus and the logs), the metrics, and where attempts and helper commands run.

``EnginePart`` is the base of each part: it reads those from its context by the same names, so no part
copies them into itself.

``EngineHooks`` is the engine's side: the few things a part asks the engine to do, named
(``core.Engine`` implements it). The call path reads one way: a part calls ``ctx.hooks.dispatch()``;
the engine never hands a part its bound methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..checkouts.checkout import Checkout
from ..clock import Clock
from ..config import JobConfig, Settings
from ..models import JobRecord, WorkerRecord
from ..process.executor import Executor
from ..process.runner import ProcessRunner, Wakeup
from ..process.shim import FoundAttempt
from ..reports.metrics import Metrics
from ..workers.cli_configs import CliConfigs
from ..workers.confinement import Confinement
from ..workspace.layout import Workspace
from .locked_only import locked_only

if TYPE_CHECKING:
    from .announce import Announcer
    from .recovery import Recovered
    from .tables import LiveWorker, Tables


class EngineHooks(Protocol):
    """What the engine's parts ask of the engine (``core.Engine``). The ones marked "locked" are
    called inside ``tables.locked()`` (``core.Engine``'s refuse to run outside it: ``locked_only``)."""

    def check_open(self) -> None:
        """Locked: raise Unavailable once the engine is shutting down (no new job)."""

    def dispatch(self) -> None:
        """Locked: start the pending workers the limits and free memory let start."""

    def skip_pending(self, job: JobRecord, keys: list[str], reason: str) -> None:
        """Locked: these pending workers will never start; they end skipped for ``reason``."""

    def stop_job(self, job: JobRecord, reason: str) -> None:
        """Locked: the rest of ``job`` is cancelled for ``reason`` (a graph's on_failure: stop)."""

    def start_thread(self, live: LiveWorker, adopted: Recovered | None = None) -> None:
        """The worker's thread starts (``worker_thread.WorkerThread.run_worker``), or a re-adopted one's."""

    def process_ended(self, rec: WorkerRecord) -> None:
        """Locked: the worker's process has ended: its memory is free."""

    def release_locks(self, rec: WorkerRecord) -> None:
        """Not locked, after the section that ended the worker's process: its path locks go (under
        rq a round trip to Redis, which every thread waiting for the engine's lock would wait for)."""

    def kill_unaccounted(self, root_id: str, adopted_tags: set[str], shims: list[FoundAttempt]) -> int:
        """At a takeover: kill the tree's processes no adopted shim accounts for; how many."""

    def worker_env(self, rec: WorkerRecord, cfg: JobConfig, shared: Path | None = None) -> dict[str, str]:
        """The environment a worker's processes start with."""


@dataclass(frozen=True)
class EngineContext:
    """What every part of one engine shares (see the module's docstring)."""

    settings: Settings
    workspace: Workspace
    clock: Clock
    tables: Tables  # the engine's memory; ``tables.locked()`` is its one lock
    announce: Announcer  # events (the API's streams, the index, webhooks) and log lines
    metrics: Metrics
    executor: Executor  # where worker attempts run
    runner: ProcessRunner  # where helper commands run (the AI planner, a judge, scoring)
    checkout: Checkout  # prepares each worker's directory
    hooks: EngineHooks
    # The CLIs' config files as the server found them at its start (workers/cli_configs.py): the model
    # endpoints they name are the ones a sandboxed worker may reach besides its settings'.
    cli_configs: CliConfigs = field(default_factory=lambda: CliConfigs({}))
    # Set at shutdown: what runs outside a worker's attempt and may take long (a merge's resolver) stops.
    closing: Wakeup = field(default_factory=Wakeup)
    # The workers' sandbox: where a merge's trusted merge drivers run (engine/resolvers.py; None: none runs).
    confinement: Confinement | None = None

    def restart_note(self, job: JobRecord, note: str) -> None:
        """What a server's restart did to a stage of ``job``'s (workspace/stages.py: re-run, or its
        verdict kept): in its notes and its tree's log. Outside the lock; takes it."""
        with self.tables.locked():
            job.notes.append(note)
            self.announce.line(job, f"job {job.id}: {note}")

    @locked_only
    def add_cost(self, root_id: str, usd: float | None) -> None:
        """AI cost reported by a worker, the AI planner or a judge, toward the tree's budget."""
        if usd:
            self.tables.tree_cost[root_id] = self.tables.tree_cost.get(root_id, 0.0) + usd
            self.metrics.add_cost(usd)


class EnginePart:
    """A part of the engine (submission, settling, ending, the worker threads, ...): what it shares with
    the others is read from ``self.ctx`` under the context's own names, never copied into the part."""

    ctx: EngineContext

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def workspace(self) -> Workspace:
        return self.ctx.workspace

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    @property
    def tables(self) -> Tables:
        return self.ctx.tables

    @property
    def announce(self) -> Announcer:
        return self.ctx.announce

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    @property
    def executor(self) -> Executor:
        return self.ctx.executor

    @property
    def runner(self) -> ProcessRunner:
        return self.ctx.runner

    @property
    def checkout(self) -> Checkout:
        return self.ctx.checkout

    @property
    def hooks(self) -> EngineHooks:
        return self.ctx.hooks
