"""``orchestrator prune``: the one-line clean-up of the workspace and the host repository's
``orchestrator/`` branches and worktrees (the rules are retention/pruning.py's and retention/lifetime.py's).

A dry run by default: it lists the job trees it would delete, the worktrees it would remove and
the branches and bytes that would go, and changes nothing. ``--yes`` does it:

- job trees that ended ``--older-than`` ago go whole (their worktrees and worker branches too;
  result branches stay), through the server when one answers (it refuses a tree it still runs),
  else from the workspace (prune.delete_offline);
- the worktrees of other finished jobs whose lifetime is over (retention/lifetime.py: their result is in
  the branch the user named, or ``git.keep_worktrees_days`` passed) go, their branches stay;
- git's entries of this workspace's worktrees whose folders are gone are dropped
  (retiring.prune_stale), so ``git worktree list`` shows none left behind;
- with ``--results``, the result branches of finished jobs and of trees deleted before go
  (retention/results.py: one merged nowhere else is listed with a warning that its work is only there);
- each tree's sandboxed object store goes with its tree (git/worker_objects.py); the folder sandboxes show the
  repository's store at (``.git/orchestrator-host-objects``) and the store all trees shared before stores were
  per tree (``.git/orchestrator-objects``) go once no job uses them.

A running tree is never touched, nor a ref outside the branch prefix, nor the host's checkout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..config import load_settings


def cmd_prune(args: argparse.Namespace) -> int:
    from ..checkouts.retiring import drop_workers_store, prune_stale
    from ..retention import lifetime
    from ..retention.pruning import candidates, delete_offline, parse_age, parse_statuses
    from ..retention.results import delete as delete_results
    from ..workspace import checkout_place as place
    from ..workspace.layout import Workspace
    from .scripts import server_client

    statuses = parse_statuses(args.status)
    older_than = None if args.older_than is None else parse_age(args.older_than)
    settings = load_settings(args.config)
    workspace = Workspace(settings.workspace_root)
    repo = lifetime.host_repo(settings, workspace)
    now = time.time()
    trees = candidates(workspace, older_than, statuses) if older_than is not None else []
    holds = {c.root_id: lifetime.held(repo, settings, workspace, c.root_id) if repo else lifetime.Held() for c in trees}
    due = lifetime.due(repo, settings, workspace, now, frozenset(holds)) if repo else []
    due = [r for r in due if r.status in statuses]
    worktrees = sum(len(h.worktrees) for h in holds.values()) + sum(len(r.held.worktrees) for r in due)
    branches = sum(len(h.worker_branches) for h in holds.values())
    size = sum(c.size for c in trees) + sum(r.held.bytes for r in due)
    if trees:
        print(f"job trees to delete (finished more than {args.older_than} ago), result branches kept:")
    for c in trees:
        h = holds[c.root_id]
        print(
            f"  {c.root_id}  {c.status:<9}  ended {_age(now - c.ended_at)} ago  {_mb(c.size)}  "
            f"{len(h.worktrees)} worktree(s), {len(h.worker_branches)} worker branch(es)"
        )
    if due:
        print("worktrees to remove (their jobs and branches stay):")
    for r in due:
        print(f"  {r.root_id}  {r.status:<9}  {len(r.held.worktrees)} worktree(s), {_mb(r.held.bytes)}: {r.reason}")
    total = f"{len(trees)} job tree(s), {worktrees} worktree(s), {branches} branch(es), {_mb(size)}"
    print(f"in all: {total}" if trees or due else f"nothing to delete: {total}.")
    if older_than is None:
        waiting = [i for i in workspace.root_ids() if lifetime.has_worktrees(workspace, i) and i not in {r.root_id for r in due}]
        if waiting:
            print(
                f"{len(waiting)} other job tree(s) keep their worktrees (running, or their lifetime is not over: "
                f"{lifetime.KEEP_KEY} is {settings.git.keep_worktrees_days:g}); --older-than AGE deletes finished ones (0s: all)"
            )
    results = _list_results(repo, settings, workspace, statuses) if args.results else []
    store = _list_store(repo, settings, workspace, frozenset(c.root_id for c in trees))
    if not (trees or due or results or store):
        return 0
    if not args.yes:
        print("dry run: nothing deleted. Run again with --yes to delete them.")
        return 0
    client = server_client(settings) if trees else None
    kept = 0
    for c in trees:
        why = _delete_via_server(client, c.root_id) if client else delete_offline(workspace, c.root_id, settings)
        kept += bool(why)
        print(f"kept {c.root_id}: {why}" if why else f"deleted {c.root_id}")
    if repo is not None:
        for r in due:
            removed = lifetime.release(repo, settings, workspace, r.root_id, r.reason)
            print(f"removed {len(removed)} worktree(s) of {r.root_id}")
        stale = prune_stale(repo, workspace.root, place.workspace_folder(settings, workspace.root))
        if stale:
            print(f"dropped {len(stale)} stale worktree entr{'y' if len(stale) == 1 else 'ies'} of this workspace")
    if trees:
        where = f"through the server at {client.api_url}" if client else "from the workspace (no server answered)"
        print(f"deleted {len(trees) - kept} job tree(s) {where}; kept {kept}.")
    if repo is not None and results:
        for line in delete_results(repo, results):
            print(line)
    if repo is not None and store is not None and drop_workers_store(repo, settings, workspace):
        print(f"removed the workers' object store {store} (no job uses it)")
    return 0 if not kept else 1


def _list_results(repo: Path | None, settings: Any, workspace: Any, statuses: tuple[str, ...]) -> list[Any]:
    """``--results``: the result branches that would go, printed, with the ones kept and why."""
    from ..retention.results import finished_results

    if repo is None:
        print("--results: no git repository holds this workspace's jobs: no result branch to delete")
        return []
    results, kept = finished_results(repo, settings, workspace, statuses)
    if results:
        print("result branches to delete (their jobs ended, or their trees were deleted):")
    for branch in results:
        print(f"  {branch.line()}")
    if kept:
        print("result branches kept:")
    for why in kept:
        print(f"  {why}")
    if not results:
        print("no result branch to delete")
    return results


def _list_store(repo: Path | None, settings: Any, workspace: Any, leaving: frozenset[str]) -> Path | None:
    """The workers' object store, printed, when it goes with this prune (no job will use it)."""
    from ..checkouts.retiring import store_in_use, workers_store

    store = workers_store(repo) if repo is not None else None
    if repo is None or store is None or store_in_use(repo, settings, workspace, leaving) is not None:
        return None
    print(f"the workers' object store to remove (no job uses it): {store}")
    return store


def _delete_via_server(client: Any, root_id: str) -> str | None:
    from ..errors import AuthenticationError, JobNotFound, OrchestratorError

    try:
        client.delete(root_id)
    except JobNotFound:
        return None  # gone meanwhile
    except AuthenticationError:
        return (
            f"the server at {client.api_url} refuses this folder's api.api_key: is it another folder's server? "
            "Stop it, or prune with this folder's server"
        )
    except OrchestratorError as exc:  # 409 for a tree the server still runs (or finishes)
        return exc.message
    return None


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def _age(seconds: float) -> str:
    for unit, span in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.1f}{unit}"
    return f"{seconds:.0f}s"
