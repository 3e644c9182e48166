"""The engine's after-attempt steps, in order: the one list a new step joins (the step itself is a
``steps.Step`` in a module of its own, as ownership, gates and integration are, or in a package of
its own: an installed ``orchestrator.steps`` entry point, or a dotted path in ``tasks.steps``,
docs/plugins.md)."""

from __future__ import annotations

from ..config import Settings, plugins
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
    gates, the plugin steps (``plugin_steps``), then the merge into a graph job's integration branch
    (each applies only to the jobs that need it: a job with none of them pays nothing after its
    attempts). ``resolvers``: the integration's resolver under ``merge_strategy: resolve`` (None: a
    conflict fails as ``auto``); ``drivers``: its runner of the user's trusted merge drivers (None: none runs)."""
    integrate = IntegrateStep(settings, workspace, resolvers, drivers)
    return (OwnershipStep(settings, workspace), GateStep(settings, workspace), *plugin_steps(settings), integrate)


SHIPPED_STEPS = frozenset({OwnershipStep.name, GateStep.name, IntegrateStep.name})


def plugin_steps(settings: Settings) -> list[Step]:
    """The steps of plugins: each installed ``orchestrator.steps`` entry point, then each of
    ``tasks.steps``, loaded now (the server's start). A target is a ``Step`` subclass (made with no
    argument) or instance; one that does not load, is no step or takes a name already taken raises
    ``ConfigError`` naming the plugin, its distribution and the fix."""
    declared = [*plugins.entry_points(plugins.Group.STEPS)]
    declared += [plugins.config_step(target, i) for i, target in enumerate(settings.tasks.steps)]
    steps: list[Step] = []
    taken = set(SHIPPED_STEPS)
    for d in declared:
        step = _step_of(d)
        name = getattr(step, "name", "") or type(step).__name__
        if name in taken:
            raise d.error(
                f"its step is named {name!r}, which another step has",
                f"give its class another name attribute ({'ask the authors of ' + d.distribution if d.distribution else 'in your module'})",
            )
        taken.add(name)
        steps.append(step)
    return steps


def _step_of(declared: plugins.Declared) -> Step:
    found = declared.load()
    if isinstance(found, type) and issubclass(found, Step):
        try:
            return found()
        except Exception as exc:
            raise declared.error(
                f"{declared.target}() raised {type(exc).__name__}: {exc}", "make the step's class take no argument"
            ) from None
    if isinstance(found, Step):
        return found
    raise declared.error(
        f"{declared.target} is a {type(found).__name__}, not an after-attempt step",
        "point it at a subclass of orchestrator.quality.steps.Step (docs/plugins.md)",
    )
