"""Running one worker: its thread, its attempts (``execution``, through the ``Executor``),
the re-adoption of an attempt a previous server started, and the hand-over to ``finishing``
once its process has ended. The engine starts ``run_worker`` on a pool thread per worker."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import failpoints
from ..checkouts.checkout import Checkout, CheckoutFailed, discard, finish_checkout
from ..clock import Clock
from ..config import JobConfig, Settings
from ..models import JobRecord, WorkerRecord, WorkerStatus
from ..process.cgroups import DISK_CAP
from ..process.executor import AttemptHandle, Executor
from ..process.monitor import Watched
from ..quality.steps import Step
from ..reports.metrics import Metrics
from ..workers.adapters import get_adapter
from ..workers.confinement import Confinement
from ..workers.environment import WorkerPrompt
from ..workspace import logs
from ..workspace.layout import Workspace
from .announce import Announcer
from .attempts import Outcome, WorkerExecution, attempt_marker, marker_start_time
from .finishing import Finishing
from .recovery import Recovered
from .tables import LiveWorker, Tables

log = logging.getLogger("orchestrator.engine")


class WorkerRunner:
    """Runs workers' attempts on the threads the engine gives them; shares the engine's
    tables and lock. ``prompt`` and ``env`` say what a worker starts with (``environment``),
    read when it starts (the server sets its API address after the engine is built)."""

    def __init__(
        self,
        *,
        settings: Settings,
        workspace: Workspace,
        executor: Executor,
        clock: Clock,
        tables: Tables,
        lock: threading.RLock,
        announce: Announcer,
        finishing: Finishing,
        metrics: Metrics,
        checkout: Checkout,
        steps: Sequence[Step],
        dispatch: Callable[[], None],
        prompt: Callable[[WorkerRecord, JobRecord, Path], WorkerPrompt],
        env: Callable[[WorkerRecord, JobConfig, Path | None], dict[str, str]],
        confinement: Confinement | None = None,
    ) -> None:
        self.settings = settings
        self.workspace = workspace
        self.executor = executor
        self.clock = clock
        self.tables = tables
        self._lock = lock
        self.announce = announce
        self.finishing = finishing
        self.metrics = metrics
        self.checkout = checkout
        self.steps = tuple(steps)
        self.dispatch = dispatch
        self.prompt = prompt
        self.env = env
        self.confinement = confinement
        # Set by the engine: told under its lock when a worker's process has ended (its path
        # locks die with it: quality/locks.py).
        self.on_process_end: Callable[[WorkerRecord], object] | None = None

    def watched(self) -> list[Watched]:
        """Running workers for the resource monitor."""
        with self._lock:
            found = []
            for live in self.tables.workers.values():
                execution = live.execution
                handle = execution.handle if execution else None
                if execution is None or handle is None or handle.exited:
                    continue
                rec = live.record
                found.append(
                    Watched(
                        key=rec.key,
                        tag=live.tag,
                        started_at=handle.started_at,
                        log_path=self.workspace.worker_log(rec.root_id, rec.depth, rec.name),
                        worker_dir=self.workspace.worker_dir(rec.root_id, rec.depth, rec.name),
                        abort=execution.abort,
                        shim_pid=handle.pid if handle.exit_file is not None else None,
                    )
                )
            return found

    def run_worker(self, live: LiveWorker, adopted: Recovered | None = None) -> None:
        sweep: Callable[[], None] = functools.partial(self.executor.sweep, live.tag)  # (if _execute fails)
        try:
            outcome, sweep = self.execute(live, adopted)
        except CheckoutFailed as exc:  # before any attempt, e.g. its worktree's git.setup failed
            if exc.cancelled:
                outcome = Outcome(WorkerStatus.CANCELLED, str(exc))
            else:
                outcome = Outcome(WorkerStatus.FAILED, str(exc), error=str(exc))
        except Exception as exc:  # a bug must not leave a worker "running" forever
            log.exception(
                "worker %s crashed in the engine", live.record.key, extra=logs.context(live.record.job_id, live.record.name)
            )
            outcome = Outcome(WorkerStatus.FAILED, "engine error", error=f"internal error: {exc}")
        live.cancel.close()
        rec = live.record
        # Its process has ended: the slot goes to the next worker (and its cost to the tree's
        # budget) before the tag sweep, which waits to share one /proc scan with other
        # finishing workers. A worker with child jobs does this after the sweep, in one step
        # with settling it (a child job ending in between may settle it).
        early = not rec.child_job_ids
        if early:
            with self._lock:
                self.process_ended(live, outcome)
                self.dispatch()
        sweep()  # before its files are listed and before it is reported ended
        if outcome.exit_reason.startswith(DISK_CAP):  # its excess files go, rather than onto its branch
            discard(self.checkout, rec)
        changes = finish_checkout(self.checkout, rec, succeeded=outcome.status is WorkerStatus.SUCCESS)
        with self._lock:
            changes.apply_to(rec)
            if not early:
                self.process_ended(live, outcome)
            waiting = self.tables.live_children(live)
            if waiting:
                self.announce.worker(live, f"process exited; waiting for child job(s) {', '.join(waiting)}")
                snapshot = self.tables.worker_snapshot(live)
            else:  # settled in this same lock section (each one is a hand-off between 16 threads)
                settled = self.finishing.final_record(live)
            if not early:
                self.dispatch()
        if waiting:
            snapshot.write()
        elif settled is not None:
            self.finishing.publish_final(live, *settled)  # writes the record once, with its final status

    def process_ended(self, live: LiveWorker, outcome: Outcome) -> None:
        """Under the lock: its process has ended with ``outcome``; it no longer counts against
        the limits, and its cost counts against the tree's budget."""
        if live.phase.holds_slot:
            self.tables.slots_used -= 1
        live.exited(outcome)
        self.tables.running[live.job.id] -= 1
        self.finishing.record_outcome(live, outcome)
        if self.on_process_end is not None:
            self.on_process_end(live.record)

    def execute(self, live: LiveWorker, adopted: Recovered | None = None) -> tuple[Outcome, Callable[[], None]]:
        """Run the worker's attempts; returns the outcome and the sweep of its last attempt's leftovers."""
        rec, job = live.record, live.job
        cfg = job.config
        adapter = get_adapter(rec.kind)
        directory = self.checkout.prepare(rec, job)  # first: a worktree job's shared block reads the repository there
        rendered = self.prompt(rec, job, directory) if adapter.needs_prompt(self.settings) else None
        prompt = rendered.text if rendered is not None else rec.task
        if rendered is not None:
            with self._lock:  # the record is written with its first attempt
                rec.prompt_bytes, rec.shared_prompt_bytes = rendered.size, rendered.shared_bytes
        if adapter.needs_prompt_file(self.settings):
            # The prompt is an input, not state: a plain write, no fsync.
            self.workspace.prompt_path(rec.root_id, rec.depth, rec.name).write_text(prompt, encoding="utf-8")
        execution = WorkerExecution(
            record=rec,
            config=cfg,
            settings=self.settings,
            adapter=adapter,
            executor=self.executor,
            workspace=self.workspace,
            env=self.env(rec, cfg, rendered.shared if rendered is not None else None),
            prompt=prompt,
            tag=live.tag,
            lock=self._lock,
            on_change=self.on_attempt,
            cancel=live.cancel,
            clock=self.clock,
            checkout=self.checkout,
            worker_dir=directory,
            steps=[step for step in self.steps if step.applies(job)],
            job=job,
            confinement=self.confinement,
        )
        live.execution = execution
        resume = None
        if adopted is not None and adopted.attempt is not None:
            resume = (adopted.attempt, self.adopt(live, adopted))
        try:
            return execution.run(resume), execution.sweep
        finally:
            live.execution = None

    def adopt(self, live: LiveWorker, fate: Recovered) -> AttemptHandle:
        """A handle on the shim of a worker a previous server started; its record says so on disk."""
        attempt, rec = fate.attempt, live.record
        assert attempt is not None and (fate.pid is not None or fate.exit_file is not None)
        handle = self.executor.adopt(
            fate.pid, fate.start_id, tag=live.tag, started_at=attempt.started_at, exit_file=fate.exit_file
        )
        state = "still running" if handle.code is None else f"ended while no server ran (status {handle.code})"
        self.on_attempt(rec, f"attempt {attempt.number} re-adopted after a server restart (pid {handle.pid}): {state}")
        return handle

    def attempt_start(self, rec: WorkerRecord, number: int) -> tuple[int, float] | None:
        """(log offset, start time) of attempt ``number`` from its start line in the worker log."""
        found = self.workspace.find_line_in_log(
            self.workspace.worker_log(rec.root_id, rec.depth, rec.name), attempt_marker(number)
        )
        started = marker_start_time(found[1]) if found is not None else None
        return None if found is None or started is None else (found[0], started)

    def on_attempt(
        self, record: WorkerRecord, message: str, begin: Callable[[], None] | None = None, write: bool = True
    ) -> Callable[[], None]:
        """An attempt started (or was re-adopted): ``begin`` (if any) puts it in the record
        under the lock, and everyone is told. With ``write`` the record is on disk first;
        without, the caller gets the write to make later (see ``WorkerExecution._attempt``).
        Telling "running" before it is on disk is safe, unlike a final status: a restart finds
        the attempt through its shim and says "running" (or its true end) again. Returns the
        write (a no-op on disk once made)."""
        with self._lock:
            if begin is not None:
                begin()
            live = self.tables.workers[(record.root_id, record.key)]
            snapshot = self.tables.worker_snapshot(live)
        self.metrics.spawned(live.tag)

        def save() -> None:
            snapshot.write()
            failpoints.hit("after_record")

        if write:
            save()
        self.announce.worker(live, message)  # the event bus and the log append need no engine lock
        return save
