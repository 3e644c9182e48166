"""Choosing among a task's candidates, with every step recorded.

``choose`` is called by the engine (engine/choosing.py) from a worker thread, never under the engine
lock, once a task's candidates have settled (for ``first_passing``, as soon as one passes). It
runs processes (``scoring.command``, the judge's CLI) but changes nothing of the job: the
engine merges the winner and records the Selection (``Selection.record``: a SelectionRecord) in JobRecord.selections.

- ``best``, ``cheapest``, ``fastest``, ``first_passing``: scoring.py (the measures, the
  weights, the normalisation and the tie rule are in its docstring).
- ``judge``: judge.py, an AI CLI's knockout over the ``best`` ranking, which is also every
  pair's fallback.
- ``candidates``: candidates.py, the plan expanded into a worker per candidate (pure).

Only eligible candidates (they succeeded, so every required gate passed) can win; the others
are ranked last with why they are out. No eligible candidate: ``winner`` None and why.

Modules:

- ``candidates``: the plan expanded into a worker per candidate (pure);
- ``scoring``: ``best``'s weighted score, ``cheapest``, ``fastest``, ``first_passing``;
- ``judge``: an AI CLI's knockout over the ``best`` ranking;
- ``decisions``: what a selection sees of each candidate, and what it decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import Select, Settings
from ..config.choice import SELECT
from ..errors import ConfigError
from ..process.runner import ProcessRunner
from . import judge as judging
from . import scoring
from .decisions import Candidate, Selection
from .scoring import Cancel

__all__ = ["Candidate", "Selection", "choose"]


def choose(
    task: str,
    candidates: Sequence[Candidate],
    select: str,
    *,
    settings: Settings,
    judge: Mapping[str, Any],
    runner: ProcessRunner,
    env: Mapping[str, str],
    work_dir: Path,
    cancel: Cancel | None = None,
    once: scoring.Once | None = None,
    confined: judging.Confined | None = None,
) -> Selection:
    """The winner among ``candidates`` by ``select`` (config/choice.py's SELECT), the ranking
    and why. ``judge``: ``{"kind", "model", "timeout"}`` (select judge only); ``env``: the
    environment of the scoring command and the judge's CLI; ``work_dir``: a folder of the
    engine's for their logs and the judge's prompts; ``cancel`` set: no new command or call
    starts, a running one is stopped, and what is known decides (``best`` for the rest); ``once``:
    how a scoring command runs once across a server's restarts (scoring.measure); ``confined``:
    the judge's sandbox and caps (judge.Confined: the engine's; a judge reads workers' work)."""
    if select not in SELECT:
        raise ConfigError(f"select={select!r} is not allowed. Choose one of: {', '.join(SELECT)}", key="select")
    if select == Select.JUDGE and not judge.get("kind"):
        raise ConfigError('select: judge needs a judge, e.g. {"kind": "claude", "model": "sonnet"}', key="judge")
    measures = scoring.measure(
        candidates,
        settings=settings,
        runner=runner,
        env=env,
        work_dir=Path(work_dir),
        cancel=cancel,
        command=select in (Select.BEST, Select.JUDGE),
        once=once,
        limits=confined.limits if confined is not None else None,
    )
    ranked = scoring.rank(candidates, Select.BEST if select == Select.JUDGE else select, measures, settings.scoring.weights)
    if select != Select.JUDGE:
        return ranked
    return judging.knockout(
        task,
        candidates,
        ranked,
        judge,
        settings=settings,
        runner=runner,
        env=env,
        work_dir=Path(work_dir),
        cancel=cancel,
        confined=confined,
    )
