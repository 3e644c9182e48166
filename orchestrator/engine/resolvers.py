"""The engine's side of ``merge_strategy: resolve`` (delivery/resolving.py): a resolver for one
merge of a job's workers, root (engine/results.py) or child (engine/nesting.py), whose runs
count toward the tree's cost and budget and run where the engine's helper commands run."""

from __future__ import annotations

from pathlib import Path

from ..delivery.landing import ResolverFactory
from ..delivery.resolving import ConflictResolver
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

        with ctx.tables.locked():
            stop = ctx.tables.tree_stop.setdefault(job.root_id, Wakeup())
            if ctx.closing.is_set():
                stop.set()

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
