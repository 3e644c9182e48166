"""Admission and limits, as pure functions: what a request may be, how deep and wide a tree
may grow, what its budget allows, and how many workers may start now.

No engine, no lock, no I/O: the engine reads its state under its lock and asks these; each
refusal is the error a client sees (``ValidationError`` for a malformed request,
``RecursionLimit`` for a tree at one of its limits), saying what is wrong and how to go on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import RecursionLimit, ValidationError
from ..models import JobRecord, JobStatus

EXAMPLE_REQUEST = '"Build a REST API with auth and tests"'


# -- the request's shape ---------------------------------------------------------------
def check_request(request: object, max_chars: int) -> str:
    """The request text, stripped; refused when not a non-empty string of at most ``max_chars``."""
    if not isinstance(request, str):
        raise ValidationError(f"request must be a string describing the work, e.g. {EXAMPLE_REQUEST}")
    text = request.strip()
    if not text:
        raise ValidationError(f"request is empty: describe the work to do, e.g. {EXAMPLE_REQUEST}")
    if len(text) > max_chars:
        raise ValidationError(
            f"request is {len(text)} characters; the limit is {max_chars} (orchestrator.max_request_chars). Shorten it or split it into jobs."
        )
    return text


def check_config(config: object) -> dict[str, Any] | None:
    """A job's config as sent: a JSON object, or left out."""
    if config is not None and not isinstance(config, dict):
        raise ValidationError('config must be a JSON object, e.g. {"max_workers": 3}')
    return config


# -- depth and fan-out ---------------------------------------------------------------------
def admitted_depth(config: dict[str, Any] | None) -> int:
    """A job submitted with the admin key is a root, at depth 0, unless its body says it is
    deeper: the original spec's AI-to-AI protocol (docs/recursion.md) POSTs with the admin key and ``current_depth + 1``,
    and job_config refuses a current_depth past the limit, so that loop ends. The body can
    only raise the depth (a worker credential's job is its parent's depth + 1, whatever it says)."""
    return int((config or {}).get("current_depth") or 0)


def check_recursion_enabled(enabled: bool, job_id: str) -> None:
    if not enabled:
        raise RecursionLimit(f"recursion is disabled for job {job_id} (enable_recursion=false); do the subtask directly")


def check_depth(parent_depth: int, max_depth: int, where: str) -> None:
    """A child job of ``where`` (a worker at ``parent_depth``) would be one level deeper."""
    depth = parent_depth + 1
    if depth > max_depth:
        raise RecursionLimit(
            f"Max recursion depth reached: {where} is at depth {parent_depth} and this tree's "
            f"max_recursion_depth is {max_depth}. Do the subtask directly, or submit the "
            "root job with a higher max_recursion_depth.",
            depth=depth,
            max_depth=max_depth,
        )


def check_fan_out(started: int, max_children: int, where: str) -> None:
    """``where`` already started ``started`` child jobs; one more may start below the cap."""
    if started >= max_children:
        raise RecursionLimit(
            f"Max children per worker reached: {where} already started {started} "
            f"child job(s) (max_children_per_worker={max_children}). Do the rest directly.",
        )


# -- tree size -------------------------------------------------------------------------------
def check_root_plan(planned: int, max_per_root: int) -> None:
    """A root job's plan fits recursion.max_workers_per_root."""
    if planned > max_per_root:
        raise ValidationError(
            f"{planned} tasks exceed recursion.max_workers_per_root={max_per_root}; give at most {max_per_root}"
        )


def tree_room(root_id: str, used: int, max_per_root: int, planned: int, explicit: bool) -> int | None:
    """How many workers a child job's plan must be merged into to fit its tree, which already
    has ``used`` workers; None when the plan of ``planned`` fits as it is. Refused when the tree
    is full, or when the plan is explicit (tasks are never merged)."""
    room = max_per_root - used
    if room <= 0:
        raise RecursionLimit(
            f"Max workers per root tree reached: tree {root_id} already has {used} workers "
            f"(recursion.max_workers_per_root={max_per_root}). Do the subtask directly."
        )
    if planned <= room:
        return None
    if explicit:
        raise RecursionLimit(
            f"{planned} tasks asked for, but tree {root_id} has room for {room} more worker(s) (recursion.max_workers_per_root={max_per_root})"
        )
    return room


def merged_note(room: int, max_per_root: int) -> str:
    return f"plan merged into {room} subtask(s): the tree is near recursion.max_workers_per_root={max_per_root}"


# -- budget --------------------------------------------------------------------------------
def budget_spent(spent: float, max_cost: float) -> bool:
    """Whether a tree that spent ``spent`` has reached its budget (0: no budget)."""
    return max_cost > 0 and spent >= max_cost


def budget_note(spent: float, max_cost: float) -> str:
    """Why a worker is skipped once the budget is spent (a child job's refusal says it too)."""
    return f"skipped: the tree's AI cost ${spent:.4f} reached its budget max_cost_usd=${max_cost:.4f}"


def check_budget(spent: float, max_cost: float) -> None:
    if budget_spent(spent, max_cost):
        raise RecursionLimit(f"{budget_note(spent, max_cost).replace('skipped: ', 'no child job: ')}. Do the rest directly.")


# -- dispatch ---------------------------------------------------------------------------------
def startable(pending: int, job_running: int, job_max: int, slots_used: int, global_max: int) -> int:
    """How many of a job's ``pending`` workers may start now: within its max_workers (it runs
    ``job_running``) and the server's workers.global_max_workers (``slots_used`` are taken)."""
    return max(0, min(pending, job_max - job_running, global_max - slots_used))


# -- deadlines -------------------------------------------------------------------------------
def late_trees(
    jobs: Iterable[JobRecord], ending: dict[str, tuple[JobStatus, float]], now: float, deadline: float
) -> list[JobRecord]:
    """The root jobs still running at ``now`` that started more than ``deadline`` seconds before
    (recursion.tree_deadline), and are not already being cancelled or finished."""
    return [
        j
        for j in jobs
        if j.is_root and not j.status.at_rest and not j.cancel_requested and j.id not in ending and now - j.created_at > deadline
    ]


def deadline_note(deadline: float) -> str:
    return f"cancelled: the tree ran past its deadline of {deadline:g}s (recursion.tree_deadline)"
