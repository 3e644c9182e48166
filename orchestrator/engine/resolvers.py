"""The engine's side of ``merge_strategy: resolve`` (delivery/resolving.py): a resolver for one
merge of a job's workers, root (engine/results.py) or child (engine/nesting.py), whose runs
count toward the tree's cost and budget and run where the engine's helper commands run; and of
``git.trusted_merge_drivers`` (delivery/trusted_drivers.py): the runner of every merge's trusted
drivers, in the workers' sandbox."""

from __future__ import annotations

from pathlib import Path

from ..delivery.landing import DriverFactory, ResolverFactory
from ..delivery.resolving import ConflictResolver
from ..delivery.trusted_drivers import SandboxedDrivers
from ..models import JobRecord, WorkerRecord
from ..process.runner import Wakeup
from ..workers.confinement import Confinement
from .context import EngineContext


def resolver_factory(ctx: EngineContext, confinement: Confinement) -> ResolverFactory:
    """``confinement``: the engine's, the workers' sandbox (a resolver runs worker code)."""

    def make(job: JobRecord, workers: list[WorkerRecord], repo: Path, base: str) -> ConflictResolver:
        def budget() -> str | None:
            with ctx.tables.locked():
                return ctx.tables.budget_note(job).removeprefix("skipped: ") if ctx.tables.budget_spent(job) else None

        stop = _tree_stop(ctx, job)

        def on_cost(usd: float | None) -> None:
            with ctx.tables.locked():
                ctx.add_cost(job.root_id, usd)

        return ConflictResolver(
            settings=ctx.settings,
            workspace=ctx.workspace,
            runner=ctx.runner,
            confinement=confinement,
            repo=repo,
            job=job,
            workers=workers,
            base=base,
            budget=budget,
            on_cost=on_cost,
            cancel=stop,  # the tree's cancel or the engine's shutdown stops it (its merge leaves that worker out)
        )

    return make


def _tree_stop(ctx: EngineContext, job: JobRecord) -> Wakeup:
    """What stops a helper of ``job``'s tree: its cancel, or the engine's shutdown."""
    with ctx.tables.locked():
        stop = ctx.tables.tree_stop.setdefault(job.root_id, Wakeup())
        if ctx.closing.is_set():
            stop.set()
    return stop


def driver_factory(ctx: EngineContext) -> DriverFactory | None:
    """The runner of a job's merges' trusted merge drivers, in ``ctx.confinement`` (None: there is
    none, and no driver runs)."""
    confinement = ctx.confinement
    if confinement is None:
        return None

    def make(job: JobRecord) -> SandboxedDrivers:
        return SandboxedDrivers(
            settings=ctx.settings,
            workspace=ctx.workspace,
            runner=ctx.runner,
            confinement=confinement,
            job=job,
            cancel=_tree_stop(ctx, job),
        )

    return make
