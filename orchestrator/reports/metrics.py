"""Prometheus metrics of one engine, served as text at ``GET /metrics``.

Each engine owns a registry of its own (never the process-wide default), so
several engines in one process (tests, ``orchestrator run``) never collide.
Counts that follow from the engine's state (jobs by status, running workers)
and from the workspace (every job tree on disk, by its root's status) are read
at scrape time by a collector; events that leave no state behind
(a worker's duration, a spawn's latency, a refusal, cost) are recorded by
one-line hooks in the engine and the API.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from ..errors import OrchestratorError
from ..models import JobStatus

# Classic text format 0.0.4: what every Prometheus version scrapes.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
SPAWN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# A refused child job says which limit refused it in its message (the engine's wording,
# "Max recursion depth reached" being fixed by the product contract).
_RECURSION_REASONS = (
    ("max recursion depth", "depth"),
    ("max children per worker", "max_children"),
    ("max workers per root tree", "tree_workers"),
    ("has room for", "tree_workers"),
    ("recursion is disabled", "recursion_disabled"),
    ("budget", "budget"),
)
_REASON_BY_CODE = {
    "unauthorized": "auth",
    "forbidden": "forbidden",
    "rate_limited": "rate_limit",
    "payload_too_large": "body_too_large",
    "invalid_request": "validation",
    "invalid_id": "validation",
    "invalid_config": "config",
    "conflict": "conflict",
    "job_not_found": "not_found",
    "worker_not_found": "not_found",
    "unavailable": "unavailable",
    "workspace_error": "workspace",
}


def refusal_reason(error: OrchestratorError) -> str:
    """The ``reason`` label of a refused request: which limit or check said no."""
    if error.code == "recursion_limit":
        text = error.message.lower()
        return next((reason for words, reason in _RECURSION_REASONS if words in text), "recursion_limit")
    if error.code == "invalid_request" and error.message.startswith("unexpected Host header"):
        return "host"
    return _REASON_BY_CODE.get(error.code, error.code)


class WorkspaceTally:
    """Root job trees in the workspace by their root job's status, for a scrape. Each tree's
    record is re-read only when its file changed, so a scrape of a workspace of thousands of
    trees costs a directory listing and a stat per tree; trees finished under an earlier
    server, deleted or pruned ones are counted as they are on disk."""

    def __init__(self, workspace: Any) -> None:  # a Workspace: typed loosely to keep imports one-way
        self.workspace = workspace
        self._seen: dict[str, tuple[tuple[int, int], str]] = {}  # root id -> (record stamp, status)
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        with self._lock:
            seen = {}
            for root_id in self.workspace.root_ids():
                try:
                    st = os.stat(self.workspace.job_record_path(root_id))
                    stamp = (st.st_mtime_ns, st.st_size)
                    hit = self._seen.get(root_id)
                    if hit is None or hit[0] != stamp:
                        hit = (stamp, self.workspace.load_job(root_id).status.value)
                except (OSError, ValueError, OrchestratorError):
                    continue  # being created or deleted right now, or unreadable: not a tree yet
                seen[root_id] = hit
            self._seen = seen
            return dict(Tally(status for _, status in seen.values()))


class _StateCollector:
    """Gauges computed from the engine's own counters, and the workspace, when Prometheus scrapes."""

    def __init__(
        self,
        job_counts: Callable[[], Mapping[str, int]],
        counts: Callable[[], Mapping[str, int]],
        tree_counts: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._job_counts = job_counts
        self._counts = counts
        self._tree_counts = tree_counts

    def collect(self) -> Iterator[Metric]:
        yield _by_status(
            "orchestrator_jobs",
            "jobs held in this server's memory, by status (child jobs included): "
            "live trees and the newest finished ones; every tree on disk is in orchestrator_workspace_trees",
            self._job_counts(),
        )
        if self._tree_counts is not None:
            yield _by_status(
                "orchestrator_workspace_trees",
                "job trees in the workspace, by their root job's status (whichever server ran them)",
                self._tree_counts(),
            )
        counts = self._counts()
        yield GaugeMetricFamily(
            "orchestrator_workers_running", "workers whose process is running now", value=counts.get("workers_running", 0)
        )
        yield GaugeMetricFamily(
            "orchestrator_worker_slots_used",
            "global worker slots in use (workers.global_max_workers caps it)",
            value=counts.get("slots_used", 0),
        )


def _by_status(name: str, documentation: str, by_status: Mapping[str, int]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    for status in JobStatus:  # every status, zeros included, so a rate() never sees a gap
        family.add_metric([status.value], by_status.get(status.value, 0))
    return family


class Metrics:
    """The engine's metrics: a private registry plus the hooks that feed it. With ``workspace``,
    the trees on disk are counted too (``orchestrator_workspace_trees``)."""

    def __init__(
        self, job_counts: Callable[[], Mapping[str, int]], counts: Callable[[], Mapping[str, int]], workspace: Any = None
    ) -> None:
        self.registry = CollectorRegistry()
        tally = WorkspaceTally(workspace) if workspace is not None else None
        self.registry.register(_StateCollector(job_counts, counts, tally.counts if tally else None))
        ProcessCollector(registry=self.registry)  # cheap: reads /proc/self on Linux, nothing elsewhere
        self.worker_duration = Histogram(
            "orchestrator_worker_duration_seconds",
            "wall time of finished workers (first start to final status), by status",
            ["status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.spawn_latency = Histogram(
            "orchestrator_spawn_latency_seconds",
            "from a worker's dispatch to its first process being started",
            buckets=SPAWN_BUCKETS,
            registry=self.registry,
        )
        self.refusals = Counter(
            "orchestrator_refusals", "requests and trees refused, by reason", ["reason"], registry=self.registry
        )
        # Labelled by route template (never the raw path: ids would make the series unbounded).
        self.request_duration = Histogram(
            "orchestrator_http_request_duration_seconds",
            "time the app took to answer a request (a stream: until its headers), by method, route and status",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.cost = Counter(
            "orchestrator_cost_usd", "AI cost reported by workers and the AI planner, in US dollars", registry=self.registry
        )
        self._dispatched: dict[str, float] = {}  # worker tag -> monotonic time of its dispatch
        self._lock = threading.Lock()

    # -- hooks ------------------------------------------------------------------------
    def dispatched(self, tag: str) -> None:
        """A worker was handed to a thread to start; its latency clock starts."""
        with self._lock:
            self._dispatched[tag] = time.monotonic()

    def spawned(self, tag: str) -> None:
        """A worker's process started; only its first attempt counts."""
        with self._lock:
            started = self._dispatched.pop(tag, None)
        if started is not None:
            self.spawn_latency.observe(time.monotonic() - started)

    def worker_finished(self, tag: str, status: str, duration: float | None) -> None:
        """A worker reached its final status; one that never started has no duration."""
        with self._lock:
            self._dispatched.pop(tag, None)  # it may never have spawned (command not found)
        if duration is not None:
            self.worker_duration.labels(status).observe(duration)

    def answered(self, method: str, route: str, status: str, seconds: float) -> None:
        self.request_duration.labels(method, route, status).observe(seconds)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def add_cost(self, usd: float | None) -> None:
        if usd and usd > 0:
            self.cost.inc(usd)

    # -- exposition ---------------------------------------------------------------------
    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
