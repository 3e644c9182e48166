"""The engine's after-attempt steps, in order: the one list a new step joins (the step itself is a
``steps.Step`` in a module of its own, as ownership, gates and integration are)."""

from __future__ import annotations

from ..config import Settings
from ..workspace.layout import Workspace
from .gates import GateStep
from .integration import IntegrateStep
from .ownership import OwnershipStep
from .steps import Step


def default_steps(settings: Settings, workspace: Workspace) -> tuple[Step, ...]:
    """The engine's after-attempt steps, in order: file ownership (cheap, first), the quality
    gates, then the merge into a graph job's integration branch (each applies only to the jobs
    that need it: a job with none of them pays nothing after its attempts)."""
    return (OwnershipStep(settings, workspace), GateStep(settings, workspace), IntegrateStep(settings, workspace))
