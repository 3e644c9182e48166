"""Task history you can query: an index of every job, worker (task) and progress event, in SQLite
(a file in the workspace, the default) or PostgreSQL (``database.url``), fed by the engine's
events and rebuilt from the workspace, which stays the source of truth (job_index.py says how
staleness is seen). ``GET /api/v1/jobs`` lists through it; so does the tasks facade.

Modules:

- ``store``: the tables, and the SQL differences between the two backends;
- ``rows``: records to rows, rows to the API's dicts (pure);
- ``job_index``: ``JobIndex``: the sink, its writer thread, the sync with the workspace, the queries.
"""

from __future__ import annotations

from ..config import Settings
from ..workspace.layout import Workspace
from .job_index import Announcing, IndexUnavailable, JobIndex
from .store import open_store

__all__ = ["IndexUnavailable", "JobIndex", "attach", "open_index"]


def open_index(settings: Settings, workspace: Workspace) -> JobIndex:
    """The index of ``workspace`` in the database ``settings.database.url`` names (empty: the
    SQLite file ``<workspace>/.index/jobs.sqlite3``). Builds itself in the background."""
    return JobIndex(open_store(settings.database.url, workspace.root), workspace)


def attach(settings: Settings, workspace: Workspace, announce: Announcing) -> JobIndex:
    """The engine's index (``engine.index``), told of every event it announces; closed by its shutdown."""
    index = open_index(settings, workspace)
    announce.sinks.append(index)
    return index
