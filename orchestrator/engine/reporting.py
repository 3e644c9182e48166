"""A job tree's reports on disk: each level's report, each task's CANDIDATES file and, for a root,
FINAL_RESULT.md with its timeline picture; rendered from one copy of the tree's records, one
render of a tree at a time (``render_lock``), a child job's level report paced (``level_renders``).
"""

from __future__ import annotations

import logging
import threading
import time

from .. import reports
from ..gate_output import failing_gate
from ..models import JobRecord
from ..reports.analytics import analyse
from ..workspace import logs
from .context import EngineContext, EnginePart
from .pacing import Pacer
from .queries import Queries

log = logging.getLogger("orchestrator.engine")


class Reporting(EnginePart):
    """Renders a tree's reports from its records (``queries``); a broken template is a note on the
    job, never its failure."""

    def __init__(self, ctx: EngineContext, *, queries: Queries) -> None:
        self.ctx = ctx  # what every part shares (EnginePart reads it)
        self.queries = queries
        self.level_renders: Pacer[tuple[str, int]] = Pacer()  # (root id, depth) -> a child job's level report, paced

    def render_lock(self, root_id: str) -> threading.Lock:
        with self.tables.locked():
            return self.tables.render_locks.setdefault(root_id, threading.Lock())

    def render_locked(self, job: JobRecord) -> None:
        with self.render_lock(job.root_id):
            self.render_reports(job)

    def render_reports(self, job: JobRecord) -> None:
        """Level report of the job's depth; for a root, every level and FINAL_RESULT.md."""
        jobs, workers = self.queries.snapshot(job.root_id, outcomes=True)
        tails = {}  # a failed worker's log's last lines, or its failing gate's output's (FINAL_RESULT.md's Failures)
        for w in workers:
            if w.status in reports.FAILURE_STATUSES:  # the workers FINAL_RESULT.md's Failures list
                gate = failing_gate(w.gates, w.exit_reason)
                path = gate.log_path if gate is not None else w.log_path
                tails[w.key] = self.workspace.read_tail(self.workspace.job_dir(w.root_id) / path, 20)
        tdir = self.settings.templates_dir
        depths = sorted({w.depth for w in workers}) if job.is_root else [job.depth]
        try:
            # Each task's CANDIDATES file first, so the reports' links to them never dangle.
            for path, text in reports.render_candidate_reports(jobs[0], jobs, workers, templates_dir=tdir).items():
                self.workspace.write_text(self.workspace.job_dir(job.root_id) / path, text)
            now, figures = time.time(), None
            if job.is_root:  # one set of the tree's figures for its reports: each is a pass over every record
                jobs, workers = reports.tree_order(jobs, workers)
                figures = analyse(jobs, workers, now)
            # A tree of one level (every job and worker at its depth): that level's figures are the tree's.
            one_level = figures if len(depths) == 1 and all(j.depth == depths[0] for j in jobs) else None
            for depth in depths:
                text = reports.render_level_report(
                    depth,
                    jobs[0],
                    jobs,
                    workers,
                    log_tails=tails,
                    templates_dir=tdir,
                    now=now,
                    analytics=one_level,
                )
                self.workspace.write_text(self.workspace.level_report(job.root_id, depth), text)
            if job.is_root and figures is not None:  # the picture first, so the report's link to it never dangles
                # The picture streamed to its file: at 10,000 workers it is megabytes.
                svg = self.workspace.timeline_svg(job.root_id)
                self.workspace.write_text(svg, reports.timeline_svg_parts(jobs, workers, now=now, analytics=figures))
                text = reports.render_final_report(
                    jobs[0],
                    jobs,
                    workers,
                    log_tails=tails,
                    templates_dir=tdir,
                    timeline_svg=self.workspace.relative(job.root_id, svg),
                    now=now,
                    analytics=figures,
                )
                self.workspace.write_text(self.workspace.final_report(job.root_id), text)
        except Exception as exc:  # a broken custom template must not hang the job
            log.exception("report rendering failed for %s", job.id, extra=logs.context(job.id))
            with self.tables.locked():
                job.notes.append(f"report rendering failed: {exc}")
