"""The engine's parts built and wired to each other: the one place that knows which part needs which.

``core.Engine`` builds what every part shares (``context.EngineContext``) and is the parts' hooks;
``build_parts`` makes the parts from that context (submission, the worker threads, settling, ending
with its choosing and approvals, results, reporting, nesting, the scheduler, takeover, continue rounds,
the pull request's checks watch) with the after-attempt steps. ``load_plugins``, ``watch_resources``
and ``attach_listeners`` build the engine's other collaborators where their settings are read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import index, webhooks
from ..config import Settings
from ..delivery.pull_requests import load_forges
from ..index.job_index import JobIndex
from ..models import JobRecord
from ..process.admission import MemoryAdmission, MemoryProbe
from ..process.executor import Executor
from ..process.monitor import Caps, ResourceMonitor, Watched
from ..quality.steps import Step
from ..webhooks import Webhooks
from ..workers.adapters import load_plugins as load_worker_kinds
from ..workers.adapters import memory_peaks
from ..workers.confinement import Confinement
from ..workers.environment import WorkerPrompts
from ..workspace.layout import Workspace
from .after_attempt import default_steps
from .announce import Announcer
from .context import EngineContext
from .continuing import Continuing
from .ending import Ending
from .nesting import Nesting
from .pr_checks import ChecksWatch
from .queries import Queries
from .reporting import Reporting
from .resolvers import driver_factory, resolver_factory
from .results import Results
from .scheduling import Scheduler
from .submission import Submission
from .takeover import Takeover
from .worker_thread import WorkerThread

log = logging.getLogger("orchestrator.engine")


def load_plugins(settings: Settings) -> None:
    """Plugin kinds and forges (entry points, ``workers.kinds``, ``git.pull_request``) join the
    registry: a bad one stops the start, naming the plugin and the fix (docs/plugins.md), before any
    job runs."""
    for loaded in [*load_worker_kinds(settings), *load_forges(settings)]:
        log.info("plugin: %s", loaded)


def watch_resources(
    settings: Settings,
    executor: Executor,
    memory: MemoryProbe | None,
    announce: Announcer,
    watched: Callable[[], list[Watched]],
    tick: Callable[[], None],
) -> tuple[ResourceMonitor, MemoryAdmission]:
    """The monitor of the workers' caps (memory, processes, log, disk; ``tick`` runs each interval),
    and the admission that starts a worker only where its kind's measured peak fits in free memory
    (``memory``: this machine's unless a test injects one, or the nodes' heartbeats under rq)."""
    w = settings.workers
    caps = Caps(w.max_memory_mb, w.max_processes, w.max_log_mb, w.max_disk_mb)
    monitor = ResourceMonitor(executor, caps, w.monitor_interval, watched, tick=tick)
    probe = memory or executor.memory
    admission = MemoryAdmission(w.memory_reserve_mb, probe, monitor.peaks, announce.worker, memory_peaks())
    return monitor, admission


def attach_listeners(
    settings: Settings, workspace: Workspace, announce: Announcer, api_url: Callable[[], str | None], now: float
) -> tuple[JobIndex, Webhooks]:
    """The job index (history for listings, index/) and the webhooks, told of every event announced."""
    return index.attach(settings, workspace, announce), webhooks.attach(settings, workspace, announce, api_url, now)


@dataclass(frozen=True)
class Parts:
    """The engine's parts, each made once (``build_parts``)."""

    steps: tuple[Step, ...]  # after each attempt, in order: by default the quality gates and a graph's merge
    nesting: Nesting
    scheduler: Scheduler
    reporting: Reporting
    results: Results
    ending: Ending
    submission: Submission
    worker_threads: WorkerThread
    takeover: Takeover
    continuing: Continuing
    checks_watch: ChecksWatch


def build_parts(
    ctx: EngineContext,
    *,
    queries: Queries,
    monitor: ResourceMonitor,
    confinement: Confinement,
    prompts: WorkerPrompts,
    steps: Sequence[Step] | None,
    release: Callable[[str], None],
    after_round: Callable[[JobRecord, bool], None],
    tree_ended: Callable[[JobRecord], bool],
    after_checks: Callable[[JobRecord], object],
) -> Parts:
    """Every part from the context, wired to the parts it calls. ``release``, ``after_round``,
    ``tree_ended`` and ``after_checks`` are the engine's own (a tree let go, a continue round's end,
    whether a tree has ended, a pull request's checks changed)."""
    # merge_strategy resolve's resolver workers, for every merge: a root's, a child's, a graph's integration.
    resolvers = resolver_factory(ctx, confinement)
    chosen = (
        tuple(steps)
        if steps is not None
        else default_steps(ctx.settings, ctx.workspace, resolvers=resolvers, drivers=driver_factory(ctx))
    )
    # A worktree worker's child jobs: its work committed at the spawn, theirs merged back at their end.
    nesting = Nesting(ctx, resolvers)
    # A task graph's order: readiness, and what a failed prerequisite does (engine/scheduling.py).
    scheduler = Scheduler(ctx)
    # A tree's reports; a root's result landed, recorded and published; a job's end, with the
    # parts that end one: its workers' settling, its task's choice, a person's approval.
    reporting = Reporting(ctx, queries=queries)
    results = Results(ctx, queries=queries, reporting=reporting, resolvers=resolvers)
    ending = Ending(
        ctx, monitor=monitor, queries=queries, nesting=nesting, scheduler=scheduler, results=results, reporting=reporting
    )
    worker_threads = WorkerThread(
        ctx, settling=ending.settling, ending=ending, prompts=prompts, steps=chosen, confinement=confinement
    )
    # A finished worker's continue rounds (engine/continuing.py).
    continuing = Continuing(ctx, release=release, steps=chosen, prompts=prompts, confinement=confinement, after=after_round)
    ending.breakers = continuing.breakers
    ending.send_back = continuing.send_back
    # After the pull request: its checks watched, a failed one sent back to a worker (engine/pr_checks.py).
    checks_watch = ChecksWatch(
        ctx, continuing=continuing, release=release, ended=tree_ended, render=after_checks, environ=os.environ
    )
    return Parts(
        steps=chosen,
        nesting=nesting,
        scheduler=scheduler,
        reporting=reporting,
        results=results,
        ending=ending,
        submission=Submission(ctx, nesting=nesting),
        worker_threads=worker_threads,
        takeover=Takeover(ctx, queries=queries, ending=ending),
        continuing=continuing,
        checks_watch=checks_watch,
    )


__all__ = ["Parts", "attach_listeners", "build_parts", "load_plugins", "watch_resources"]
