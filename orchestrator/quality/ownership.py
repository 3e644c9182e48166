"""File ownership: the after-attempt step that holds a worker to the paths its
task owns, when the job's tasks declare ``owns``.

The worker's changed paths (``files_changed``: each path, and for a rename also the path it
came from, since moving a file away edits its old place too; in folder isolation, which has no
diff, the files it created) are matched (``graph.matches``) against its own task's globs and the
other tasks' of the job. ``ownership`` (``tasks.ownership``, or a root request's config) says
what is a trespass:

=========  ==================================================================================
enforce    a path another task owns and this one does not (the default)
strict     a path outside its own globs; a task without ``owns`` cannot be held to nothing,
           so under strict it is held like under enforce: only others' owned paths count
warn       as enforce, recorded (``trespass``, a line in the worker's log), never blocking
=========  ==================================================================================

A trespass under enforce or strict fails the worker (no retry: redoing the same task would
touch the same files), its reason naming the paths and their owners, so its work is never
merged. A job whose tasks own nothing is not looked at (PASS, nothing recorded).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from ..checkouts.checkout import Changes, touched_paths
from ..config import Ownership, Settings
from ..models import JobRecord, TaskNode
from ..planner.graph import matches
from ..workspace.layout import Workspace
from .steps import PASS, Step, StepContext, Verdict, fail

SHOWN = 10  # paths named in a verdict; the rest are counted ("and 3 more")


def changed_paths(changes: Changes) -> list[str]:
    """Every repository path the worker's diff touches: a rename's source as well as its target."""
    if not changes.files_changed and changes.branch is None:  # folder isolation: what it created
        return sorted(set(changes.files_created))
    return sorted(set(touched_paths(changes.files_changed)))


def owners_of(path: str, nodes: Iterable[TaskNode], but: str | None) -> list[str]:
    """The ids of the tasks (other than ``but``) whose ``owns`` cover ``path``."""
    return [n.id for n in nodes if n.id != but and n.owns and matches(path, n.owns)]


def trespasses(
    paths: Iterable[str], task_id: str | None, own: Sequence[str], nodes: Sequence[TaskNode], mode: Ownership
) -> dict[str, list[str]]:
    """The paths the task may not touch under ``mode`` (enforce, strict or warn), each with the
    other tasks that own it (empty: a path outside its own globs that no task owns, strict only)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        if own and matches(path, own):
            continue
        owners = owners_of(path, nodes, task_id)
        if owners or (mode == Ownership.STRICT and own):
            found[path] = owners
    return found


def describe(found: dict[str, list[str]], own: Sequence[str], mode: Ownership) -> str:
    """``touched paths owned by other tasks: src/ui/a.js (task ui), ...`` (at most SHOWN paths)."""
    items = []
    for path in sorted(found)[:SHOWN]:
        owners = found[path]
        if owners:
            items.append(f"{path} ({'task' if len(owners) == 1 else 'tasks'} {', '.join(owners)})")
        else:
            items.append(f"{path} (no task's)")
    if len(found) > SHOWN:
        items.append(f"and {len(found) - SHOWN} more")
    if mode == Ownership.STRICT and own:
        head = f"touched paths outside its owns ({', '.join(own)})"
    else:
        head = "touched paths owned by other tasks"
    return f"{head}: {', '.join(items)}"


OWNS_REMEMBERED = 64  # jobs whose answer to ``OwnershipStep.applies`` is kept


class OwnershipStep(Step):
    """Blocks (or, under ``warn``, records) a diff that trespasses on other tasks' paths."""

    name = "ownership"

    def __init__(self, settings: Settings, workspace: Workspace | None = None) -> None:
        self.workspace = workspace or Workspace(settings.workspace_root)  # the engine's, where its worker logs are
        # job id -> (the job's list of nodes as last asked, whether a node owns paths): asked once
        # per worker, and walking a 10,000-task job's nodes for each of its workers was quadratic.
        # A job's nodes are set once, at its submission; a copy of the job (a new list) is walked again.
        self._owns: dict[str, tuple[list[TaskNode], bool]] = {}
        self._lock = threading.Lock()

    def applies(self, job: JobRecord) -> bool:
        with self._lock:  # (asked by every worker's thread)
            known = self._owns.get(job.id)
            if known is not None and known[0] is job.nodes:
                return known[1]
            owns = any(n.owns for n in job.nodes)
            if len(self._owns) >= OWNS_REMEMBERED:
                del self._owns[next(iter(self._owns))]  # the oldest job asked about
            self._owns[job.id] = (job.nodes, owns)
            return owns

    def run(self, ctx: StepContext) -> Verdict:
        job = ctx.job
        if job is None or not self.applies(job):
            return PASS
        mode = job.config.ownership
        rec = ctx.record
        found = trespasses(changed_paths(ctx.changes()), rec.task_id, rec.owns, job.nodes, mode)
        ctx.updates.trespass = sorted(found)  # set again each attempt: an empty list clears the last one's
        if not found:
            return PASS
        reason = describe(found, rec.owns, mode)
        if mode == Ownership.WARN:  # a blocking verdict is logged by the engine with its reason
            log = self.workspace.worker_log(rec.root_id, rec.depth, rec.name)
            self.workspace.append_log(log, f"\n===== ownership (warn, not blocking): {reason} =====\n".encode())
            return PASS
        return fail(reason)
