"""How a merge conflict is worded, once, for every surface that tells of one: the job's note and
log lines, a child job's merge summary, FINAL_RESULT.md, the status document, the timeline, the
command line (``conflicts``, ``merge``) and the spawn helper's Markdown.

A conflict is git/merging.py's ``FileConflict`` or its JSON shape (``{"path", "workers", "hunks",
"kind", "resolved_by", "predicted", "refused"}``, as a merge record holds it); what a resolver worker
made of one (merge_strategy resolve) is outcomes.py's ``Resolution`` or its JSON shape. This module imports nothing:
the spawn helper renders a child's merge with it, and its start-up counts (cli/spawn.py).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's import costs the spawn helper's start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

NAMED = 5  # conflicting files a note names before "and N more"
RESOLVER = "resolver"  # resolved_by of a conflict a resolver worker resolved (merge_strategy resolve)
STOPPED = "merging stopped at a conflict"  # an auto merge: the branches after the first conflict were skipped


def _get(conflict: Any, key: str, default: Any = None) -> Any:
    if isinstance(conflict, dict):
        return conflict.get(key, default)
    return getattr(conflict, key, default)


def where(conflict: Any) -> str:
    """``app.py (worker_1, worker_2)``: the file and the workers whose changes meet there."""
    return f"{_get(conflict, 'path')} ({', '.join(_get(conflict, 'workers', ()))})"


def outcome(conflict: Any) -> str:
    """What became of a conflicting file: resolved (theirs), predicted only, or where merging stopped."""
    resolved_by = _get(conflict, "resolved_by")
    if resolved_by == RESOLVER:
        return "resolved by a resolver worker"
    if resolved_by:
        return f"resolved by taking {resolved_by}'s side"
    if _get(conflict, "refused"):
        return "not merged (the resolver's resolution was refused)"
    if _get(conflict, "predicted"):
        return "would conflict (not merged)"
    return "not merged (merging stopped here)"


def describe(conflict: Any) -> str:
    """One conflict as one line: ``conflict in app.py (worker_1, worker_2, 1 hunk(s)): <outcome>``;
    its kind is named when it is not a plain content conflict (add/add, modify/delete, ...)."""
    kind = _get(conflict, "kind") or "content"
    hunks = f"{_get(conflict, 'hunks', 0)} hunk(s)" + ("" if kind == "content" else f", {kind}")
    workers = ", ".join(_get(conflict, "workers", ()))
    return f"conflict in {_get(conflict, 'path')} ({workers}, {hunks}): {outcome(conflict)}"


def resolution(resolved: Any) -> str:
    """What a resolver worker made of a conflict (``records.Resolution`` or its JSON shape), with
    why: ``the conflict of worker_2 in app.py was resolved by claude in attempt 1``, or
    ``worker_2 was left out: its conflict in app.py was not resolved (conflict markers are left in: app.py)``."""
    worker, files, reason = _get(resolved, "worker"), ", ".join(_get(resolved, "files", ())), _get(resolved, "reason")
    if _get(resolved, "accepted"):
        return f"the conflict of {worker} in {files} was {reason}"
    return f"{worker} was left out: its conflict in {files} was not resolved ({reason})"


def listed(conflicts: Sequence[Any], limit: int = NAMED) -> str:
    """Several conflicts in a note: ``a.py (w1, w2); b.py (w2, w3); and 3 more``."""
    shown = [where(c) for c in conflicts[:limit]]
    more = len(conflicts) - limit
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def side_won(conflicts: Sequence[Any]) -> str:
    """Under theirs: ``the later worker's side won in: a.py (w1, w2)``."""
    return "the later worker's side won in: " + listed(conflicts)


def counted(count: int) -> str:
    """``3 conflicting file(s)``: a merge's conflicts as a number."""
    return f"{count} conflicting file(s)"
