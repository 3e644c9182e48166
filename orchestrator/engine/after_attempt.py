"""The engine's after-attempt steps, in order: the one list a new step joins (the step itself is a
``steps.Step`` in a module of its own, as ownership, gates and integration are)."""

from __future__ import annotations

from ..config import Settings
from ..delivery.integration import IntegrateStep
from ..delivery.landing import DriverFactory, ResolverFactory
from ..quality.gates import GateStep
from ..quality.ownership import OwnershipStep
from ..quality.steps import Step
from ..workspace.layout import Workspace


def default_steps(
    settings: Settings, workspace: Workspace, resolvers: ResolverFactory | None = None, drivers: DriverFactory | None = None
) -> tuple[Step, ...]:
    """The engine's after-attempt steps, in order: file ownership (cheap, first), the quality
    gates, then the merge into a graph job's integration branch (each applies only to the jobs
    that need it: a job with none of them pays nothing after its attempts). ``resolvers``: the
    integration's resolver under ``merge_strategy: resolve`` (None: a conflict fails as ``auto``);
    ``drivers``: its runner of the user's trusted merge drivers (None: none runs)."""
    integrate = IntegrateStep(settings, workspace, resolvers, drivers)
    return (OwnershipStep(settings, workspace), GateStep(settings, workspace), integrate)
