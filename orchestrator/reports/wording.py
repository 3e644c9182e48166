"""The words every surface uses for the same fact (status table, ``watch``, the quick-start summary,
FINAL_RESULT.md, the job's notes): one function each, so no two surfaces say it differently."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..outcomes import PublishRecord


def file_counts(files_changed: Sequence[Mapping[str, Any]] | None, files_created: Sequence[str]) -> str:
    """A worker's files as ``+2 ~3 -1`` (added, modified, deleted; a rename counts as modified);
    ``0`` for none. Folder isolation knows only the files it made (``files_created``)."""
    if not files_changed:
        return f"+{len(files_created)}" if files_created else "0"
    added = sum(1 for f in files_changed if f.get("change") == "added")
    deleted = sum(1 for f in files_changed if f.get("change") == "deleted")
    modified = len(files_changed) - added - deleted
    parts = [f"{sign}{n}" for sign, n in (("+", added), ("~", modified), ("-", deleted)) if n]
    return " ".join(parts) or "0"


def pull_request_text(publish: PublishRecord | Mapping[str, Any] | None) -> str | None:
    """Where a root's result was published: its pull request's URL, or why pushing or opening it
    failed; None when the job was never published (``git.push`` unset, or not landed yet). The
    job's record, or its dict as a status document carries it (``watch`` reads that one)."""
    if isinstance(publish, PublishRecord):
        publish = publish.to_dict()
    if not publish:
        return None
    pr = publish.get("pull_request") or {}
    if publish.get("error"):
        return f"not published: {publish['error']}"
    if pr:
        return f"{pr.get('url') or '#' + str(pr.get('number'))} ({pr.get('action')}, into {pr.get('base')})"
    if publish.get("pushed"):
        return f"none opened; branch {publish.get('branch')} pushed to {publish.get('remote')}"
    return None


def checks_text(checks: Mapping[str, Any] | None) -> str | None:
    """The watch of a root's pull request's checks in one line (engine/pr_checks.py): its state, the
    rounds a failed check sent back to workers and their cost, and why it ended; None: not watched."""
    if not checks:
        return None
    rounds = checks.get("rounds") or []
    cost = checks.get("cost_usd")
    parts = [f"{checks.get('state')} on {str(checks.get('commit') or '')[:12]}"]
    parts.append(f"{len(rounds)} of {checks.get('max_rounds')} rounds" + (f" (${cost:,.4f})" if cost is not None else ""))
    parts += [
        f"round {r.get('number')}: {', '.join(r.get('failed') or [])} -> {r.get('worker')} {r.get('state')}" for r in rounds
    ]
    if checks.get("reason"):
        parts.append(str(checks["reason"]))
    return "; ".join(parts)


def approval_lines(job_id: str) -> list[str]:
    """What a job waiting for approval waits for, and the two commands that end the wait."""
    return [
        "waiting for approval: nothing is merged until someone decides",
        f"           approve: ./orchestrator.sh approve {job_id}",
        f"           reject:  ./orchestrator.sh reject {job_id} --reason '...'",
    ]
