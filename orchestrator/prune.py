"""Deleting old job trees: ``orchestrator prune`` and the server's retention.

One rule decides whether a tree may go (``refusal``): it is a root job's tree and every job
in it has ended. ``DELETE /api/v1/jobs/{id}`` (``Engine.delete``), this command and the
server's retention (``orchestrator.retention_days``) all apply it, so a running tree is
never touched:

- with the server up, ``prune --yes`` deletes through ``DELETE /api/v1/jobs/{id}``, so the
  server judges each tree by what it holds in memory (a tree it still runs or finishes is
  refused with 409 and kept);
- with the server down, the records on disk are judged by the same rule, and a tree that
  still has live worker processes (a server killed mid-job leaves them running, to be
  re-adopted at its next start) is kept too.

A dry run (the default) lists what would go and deletes nothing.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple

from .errors import AuthenticationError, Conflict, JobNotFound, OrchestratorError, ValidationError
from .models import JobRecord, JobStatus

log = logging.getLogger("orchestrator.prune")

if TYPE_CHECKING:
    from pathlib import Path

FINISHED = tuple(s.value for s in JobStatus if s.terminal)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
RETENTION_INTERVAL = 3600.0  # seconds between two retention passes of a running server


class Candidate(NamedTuple):
    """A finished root tree old enough to delete."""

    root_id: str
    status: str
    ended_at: float  # when its root job ended (its folder's time when the record lacks one)
    size: int  # bytes on disk


def refusal(job: JobRecord, tree_jobs: Iterable[JobRecord]) -> str | None:
    """Why the tree of ``job`` may not be deleted, or None when it may: only a root job's tree
    whose jobs (``tree_jobs``: the server's live view, or the records on disk) have all ended."""
    if not job.is_root:
        return f"job {job.id} is a child job; delete its root job {job.root_id} (the whole tree lives in one folder)"
    running = [j for j in tree_jobs if not j.status.terminal]
    if running:
        return (f"job {job.id} is still running ({len(running)} job(s) of its tree not finished); "
                f"cancel it first (POST /api/v1/jobs/{job.id}/cancel)")
    return None


def jobs_on_disk(workspace: Any, job: JobRecord) -> list[JobRecord]:
    """The records of ``job``'s tree, for ``refusal``; a tree whose records cannot all be read
    is judged by the one already read (a finished root ends after its whole tree)."""
    if not job.is_root:
        return [job]
    try:
        return workspace.load_tree(job.root_id)[0] or [job]
    except (OSError, ValueError, OrchestratorError):
        return [job]


def parse_age(text: str) -> float:
    """``"7d"`` -> seconds. Units: s, m, h, d, w; parts add up (``"1d12h"``)."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned or not re.fullmatch(f"(?:{_DURATION.pattern})+", cleaned):
        raise ValidationError(f"--older-than {text!r} is not an age: give a number and a unit "
                              "(s, m, h, d or w), e.g. 30m, 12h, 7d, 2w or 1d12h")
    return sum(float(n) * UNITS[unit] for n, unit in _DURATION.findall(cleaned))


def parse_statuses(text: str | None) -> tuple[str, ...]:
    """``"completed,failed"`` -> the statuses; default: every finished one."""
    if text is None:
        return FINISHED
    wanted = tuple(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    bad = [s for s in wanted if s not in FINISHED]
    if not wanted or bad:
        what = f"{', '.join(bad)} is not a finished status" if bad else "no status given"
        raise ValidationError(f"--status: {what}; choose from {', '.join(FINISHED)} (running trees are never pruned)")
    return wanted


def candidates(workspace: Any, older_than: float, statuses: Iterable[str], now: float | None = None) -> list[Candidate]:
    """Root trees in ``workspace`` whose root job ended (with one of ``statuses``) at least
    ``older_than`` seconds ago, oldest first. Only the root record is read; the rule is
    applied again, to the whole tree, when a tree is deleted."""
    now = time.time() if now is None else now
    wanted = set(statuses)
    found = []
    for root_id in workspace.root_ids():
        try:
            job = workspace.load_job(root_id)
            ended = job.ended_at or workspace.job_dir(root_id).stat().st_mtime
        except (OSError, ValueError, OrchestratorError):
            continue  # being created or deleted, or unreadable: never guess
        if job.status.value in wanted and now - ended >= older_than:
            found.append(Candidate(root_id, job.status.value, ended, _size(workspace.job_dir(root_id))))
    return sorted(found, key=lambda c: c.ended_at)


def delete_offline(workspace: Any, root_id: str) -> str | None:
    """With no server: delete the tree unless ``refusal`` (on its records) or a live process
    of it says no. Returns why it was kept, or None when deleted."""
    from .runner import find_shims  # psutil / the process table: only this path needs it

    try:
        root = workspace.load_job(root_id)
    except (OSError, ValueError, OrchestratorError) as exc:
        return f"its record cannot be read ({exc or type(exc).__name__})"
    reason = refusal(root, jobs_on_disk(workspace, root))
    if reason:
        return reason
    shims = find_shims(f"{root_id}.")
    if shims:
        return (f"{len(shims)} worker process(es) of it still run (pid {', '.join(str(s.pid) for s in shims[:5])}); "
                "start the server to take them over")
    workspace.remove_job_tree(root_id)
    return None


def prune_engine(engine: Any, older_than: float, statuses: Iterable[str] = FINISHED) -> list[str]:
    """Inside a server: delete old finished trees through ``Engine.delete`` (its rule, its
    lock). Returns the deleted root ids; refused ones are logged and kept."""
    deleted = []
    for c in candidates(engine.workspace, older_than, statuses):
        try:
            engine.delete(c.root_id)
        except (Conflict, JobNotFound) as exc:
            log.info("retention kept job tree %s: %s", c.root_id, exc.message)
            continue
        deleted.append(c.root_id)
    return deleted


def start_retention(engine: Any, settings: Any) -> threading.Event | None:
    """With ``orchestrator.retention_days`` > 0: prune at start, then every RETENTION_INTERVAL
    seconds, on a daemon thread. Set the returned event to stop it."""
    days = settings.orchestrator.retention_days
    if not days:
        return None
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                gone = prune_engine(engine, days * UNITS["d"])
                if gone:
                    log.info("retention: deleted %d job tree(s) finished more than %g day(s) ago (orchestrator.retention_days): %s",
                             len(gone), days, ", ".join(gone))
            except Exception:  # a bad pass must not end retention for the server's lifetime
                log.exception("retention pass failed")
            if stop.wait(RETENTION_INTERVAL):
                return

    threading.Thread(target=loop, name="retention", daemon=True).start()
    return stop


# -- the command (its arguments are declared in cli.py, which imports this module only to run it) --
def cmd_prune(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .workspace import Workspace

    older_than, statuses = parse_age(args.older_than), parse_statuses(args.status)
    settings = load_settings(args.config)
    workspace = Workspace(settings.workspace_root)
    found = candidates(workspace, older_than, statuses)
    now = time.time()
    which = f"job tree(s) in {workspace.root} finished ({', '.join(statuses)}) more than {args.older_than} ago"
    if not found:
        print(f"nothing to delete: 0 {which}.")
        return 0
    print(f"{len(found)} {which}, {_mb(sum(c.size for c in found))} in all:")
    for c in found:
        print(f"  {c.root_id}  {c.status:<9}  ended {_age(now - c.ended_at)} ago  {_mb(c.size)}")
    if not args.yes:
        print("dry run: nothing deleted. Run again with --yes to delete them.")
        return 0
    client = _server_client(settings)
    kept = 0
    for c in found:
        why = _delete_via_server(client, c.root_id) if client else delete_offline(workspace, c.root_id)
        if why:
            kept += 1
            print(f"kept {c.root_id}: {why}")
        else:
            print(f"deleted {c.root_id}")
    where = f"through the server at {client.api_url}" if client else "from the workspace (no server answered)"
    print(f"deleted {len(found) - kept} job tree(s) {where}; kept {kept}.")
    return 0 if not kept else 1


def _server_client(settings: Any) -> Any:
    """A client of this folder's server when one answers, else None."""
    from .api.client import OrchestratorClient
    from .scripts import folder_url, local_url
    from .server import health_instance

    # This folder's own server (verified through its record); else whatever answers on the
    # configured address, which must then accept this folder's key (see _delete_via_server).
    url = folder_url(settings) or local_url(settings)
    return OrchestratorClient(api_url=url, api_key=settings.api.api_key) if health_instance(url, 1.0) else None


def _delete_via_server(client: Any, root_id: str) -> str | None:
    try:
        client.delete(root_id)
    except JobNotFound:
        return None  # gone meanwhile
    except AuthenticationError:
        return (f"the server at {client.api_url} refuses this folder's api.api_key: is it another folder's server? "
                "Stop it, or prune with this folder's server")
    except OrchestratorError as exc:  # 409 for a tree the server still runs (or finishes)
        return exc.message
    return None


def _size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def _age(seconds: float) -> str:
    for unit, span in (("w", UNITS["w"]), ("d", UNITS["d"]), ("h", UNITS["h"]), ("m", UNITS["m"])):
        if seconds >= span:
            return f"{seconds / span:.1f}{unit}"
    return f"{seconds:.0f}s"
