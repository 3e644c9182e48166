"""Planners: split a request into subtasks and the goal they share.

Only the heuristic is imported here, so ``import orchestrator.planner`` stays light.

Modules:

- ``heuristic``: offline rules, standard library only (the simulated worker imports it at start-up);
- ``ai``: ask the configured AI CLI once; it falls back to the heuristic;
- ``graph``: a plan's tasks as a graph, checked: ids, cycles, overlapping ``owns``, path globs (pure).
"""

from .heuristic import MAX_TASK_CHARS, Plan, is_compound, merge_adjacent, plan_request, split_request

__all__ = ["MAX_TASK_CHARS", "Plan", "is_compound", "merge_adjacent", "plan_request", "split_request"]
