"""Running one worker: its thread, its attempts (``execution``, through the ``Executor``),
the re-adoption of an attempt a previous server started, and the hand-over to ``settling``
once its process has ended. The engine starts ``run_worker`` on a pool thread per worker."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import failpoints
from ..checkouts.checkout import Changes, CheckoutFailed, discard, finish_checkout
from ..errors import no_space
from ..models import JobRecord, WorkerRecord, WorkerStatus
from ..process.cgroups import DISK_CAP
from ..process.executor import AttemptHandle
from ..process.monitor import Watched
from ..quality.steps import Step
from ..workers.adapters import get_adapter
from ..workers.confinement import Confinement
from ..workers.environment import WorkerPrompts
from ..workers.refusals import Refusals
from ..workspace import logs
from ..workspace.groupsync import GroupCommit
from ..workspace.layout import Workspace
from .attempts import Attempts, attempt_marker, marker_start_time, read_refusals
from .context import EngineContext, EnginePart
from .ending import Ending
from .locked_only import assert_held, locked_only
from .recovery import Recovered
from .settling import Settling
from .tables import LiveWorker, Outcome, Snapshot, write_unless_full

log = logging.getLogger("orchestrator.engine")


@dataclass
class Ended:
    """A worker whose process has ended and whose work has been read, waiting for the settling pass."""

    live: LiveWorker
    outcome: Outcome
    changes: Changes
    refused: Refusals
    early: bool  # its slot was freed before its work was read (it started no child job)
    written: bool = False  # set by the pass: its final record is on disk
    ending: JobRecord | None = None  # set by the pass: the job its end ended, for its thread to end


class WorkerThread(EnginePart):
    """Runs workers' attempts on the threads the engine gives them, on the engine's context
    (``ctx``). ``prompts`` and ``ctx.hooks.worker_env`` say what a worker starts with
    (``environment``), read when it starts (the server sets its API address after the engine
    is built); ``settling`` takes over once its process has ended, and ``ending`` once its job's
    last worker is settled."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        settling: Settling,
        ending: Ending,
        prompts: WorkerPrompts,
        steps: Sequence[Step],
        confinement: Confinement | None = None,
    ) -> None:
        self.ctx = ctx
        self.settling = settling
        self.ending = ending
        self.prompts = prompts
        self.steps = tuple(steps)
        self.confinement = confinement
        self._quiet: dict[str, float] = {}  # a silent worker's tag: its log's last write when told (tell_quiet)
        # Workers whose work has been read are settled together: the thread that finds no pass running
        # runs one for every worker waiting (one lock section, their records' syncs shared).
        self._settling: GroupCommit[Ended] = GroupCommit(self._settle)

    def watched(self) -> list[Watched]:
        """Running workers for the resource monitor."""
        with self.tables.locked():
            found = []
            for live in self.tables.executing.values():
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
                        shim_pid=handle.shim_pid,
                        pid=handle.pid,
                        footprint=execution.footprint,
                    )
                )
            return found

    def tell_quiet(self, after: float) -> None:
        """Each monitor interval: a running worker whose log has not grown for ``after`` seconds
        (workers.quiet_after; 0: never) is told once per silence, ``no output for 60 s``, as an event
        (the tree's event line, its stream, ``watch``). The log's last write is the clock."""
        if after <= 0:
            return
        with self.tables.locked():
            running = [
                (live, self.workspace.worker_log(live.record.root_id, live.record.depth, live.record.name))
                for live in self.tables.executing.values()
                if live.execution is not None and live.execution.handle is not None and not live.execution.handle.exited
            ]
        now, told = time.time(), {live.tag for live, _ in running}
        for tag in [t for t in self._quiet if t not in told]:
            del self._quiet[tag]  # ended: forgotten
        for live, log_path in running:
            try:
                written = log_path.stat().st_mtime
            except OSError:
                continue
            if now - written >= after and self._quiet.get(live.tag) != written:
                self._quiet[live.tag] = written  # once per silence: told again only after it writes
                self.announce.worker(live, f"no output for {int(now - written)} s")

    def run_worker(self, live: LiveWorker, adopted: Recovered | None = None) -> None:
        sweep: Callable[[], None] = functools.partial(self.executor.sweep, live.tag)  # (if _execute fails)
        known: Changes | None = None  # its last attempt's changes, when its steps asked for them
        deferred: list[Callable[[], None]] = []  # record changes left for the next lock section (attempts.py)
        refused: Callable[[], Refusals] = functools.partial(self._refused, live.record)  # (its log read whole)
        try:
            outcome, sweep, known, refused = self.execute(live, adopted, deferred)
        except CheckoutFailed as exc:  # before any attempt, e.g. its worktree's git.setup failed
            if exc.cancelled:
                outcome = Outcome(WorkerStatus.CANCELLED, str(exc))
            else:
                outcome = Outcome(WorkerStatus.FAILED, str(exc), error=str(exc))
        except Exception as exc:  # a bug (or a full disk) must not leave a worker "running" forever
            context = logs.context(live.record.job_id, live.record.name)
            if no_space(exc):
                why = f"no space left on device while running it ({exc})"
                log.warning("worker %s: %s", live.record.key, why, extra=context)
                outcome = Outcome(WorkerStatus.FAILED, why, error=why)
            else:
                log.exception("worker %s crashed in the engine", live.record.key, extra=context)
                outcome = Outcome(WorkerStatus.FAILED, "engine error", error=f"internal error: {exc}")
        live.cancel.close()
        rec = live.record
        # Its process has ended: the slot goes to the next worker (and its cost to the tree's
        # budget) before the tag sweep, which waits to share one /proc scan with other
        # finishing workers. A worker with child jobs does this after the sweep, in one step
        # with settling it (a child job ending in between may settle it).
        early = not rec.child_job_ids
        # From its slot freed to its worktree handed over, that worktree counts against the removal
        # backlog (checkouts/retiring.py): under load this stretch can outlast whole other workers.
        finishing = self.checkout.finishing(rec, live.job) if early else contextlib.nullcontext()
        with finishing:
            ended = self._finish(live, outcome, sweep, refused, known, deferred, early)
            if ended.ending is None and ended.written:  # on disk with its commit, its worktree may go now
                self.checkout.retire(rec, live.job)  # (its branch stays; checkouts/worktree.py)
        if ended.ending is not None:  # its job's last worker: the job ends, on this thread
            self.ending.end_job(ended.ending)
            if ended.written:
                self.checkout.retire(rec, live.job)

    def _finish(
        self,
        live: LiveWorker,
        outcome: Outcome,
        sweep: Callable[[], None],
        refused_now: Callable[[], Refusals],
        known: Changes | None,
        deferred: list[Callable[[], None]],
        early: bool,
    ) -> Ended:
        """Its slot freed (``early``), its processes swept, its work committed and its end settled."""
        rec = live.record
        with self.tables.locked():
            while deferred:  # its last attempt's end, in this same section
                deferred.pop(0)()
            self._executed(live)
            if early:
                self.process_ended(live, outcome)
                self.hooks.dispatch()
        if early:
            self.hooks.release_locks(rec)  # (outside the section: see EngineHooks.release_locks)
        sweep()  # before its files are listed and before it is reported ended
        if outcome.exit_reason.startswith(DISK_CAP):  # its excess files go, rather than onto its branch
            discard(self.checkout, rec)
            known = None
        if rec.child_job_ids:  # a child job's merge into its worktree may have come since its steps asked
            known = None
        changes = finish_checkout(self.checkout, rec, succeeded=outcome.status is WorkerStatus.SUCCESS, known=known)
        if changes.error is not None and outcome.status is WorkerStatus.SUCCESS:  # its work is not on its branch
            outcome = Outcome(WorkerStatus.FAILED, changes.error, error=changes.error, parsed=outcome.parsed)
        # Read after its commit: the orchestrator's refusals of what its sandbox left are in its record
        # now (its log read on from where a retry or its steps last read it: Attempts.refused).
        refused = refused_now()
        ended = Ended(live, outcome, changes, refused, early)
        self._settling(ended)
        return ended

    def _settle(self, batch: list[Ended]) -> None:
        """The settling pass (``_settling``): every worker whose work was read since the last pass,
        in one lock section; their final records written together (``Settling.publish_finals``),
        the snapshots of those still waiting for child jobs each alone."""
        settled: list[tuple[Ended, WorkerRecord, Snapshot]] = []
        waiting: list[tuple[Ended, Snapshot]] = []
        with self.tables.locked():
            for ended in batch:
                try:
                    self._end_in_section(ended, settled, waiting)
                except Exception:  # one worker's bug must not leave the others of its pass unsettled
                    log.exception("worker %s: settling it failed in the engine", ended.live.record.key)
            if not all(ended.early for ended in batch):
                self.hooks.dispatch()
        for ended in batch:
            if not ended.early:  # (its process ended in the section above: ``_end_in_section``)
                self.hooks.release_locks(ended.live.record)
        for ended, snapshot in waiting:
            if (full := write_unless_full([snapshot])) is not None:
                log.warning(
                    "worker %s: its record not written (on disk it runs; its exit file says how it ended): %s",
                    ended.live.record.key,
                    full,
                )
        if settled:
            written = self.settling.publish_finals([(ended.live, final, snapshot) for ended, final, snapshot in settled])
            for (ended, _, _), (on_disk, ending) in zip(settled, written, strict=True):
                ended.written, ended.ending = on_disk, ending

    @locked_only
    def _end_in_section(
        self, ended: Ended, settled: list[tuple[Ended, WorkerRecord, Snapshot]], waiting: list[tuple[Ended, Snapshot]]
    ) -> None:
        """In the settling pass: its work onto its record; settled (its final
        record to write, into ``settled``) unless it waits for a child job (its snapshot into ``waiting``)."""
        live, outcome, changes, rec = ended.live, ended.outcome, ended.changes, ended.live.record
        changes.apply_to(rec)
        rec.refusals, rec.refusals_total = ended.refused.shown, ended.refused.total
        rec.said_refused, rec.said_refused_total = ended.refused.said, ended.refused.said_total
        if ended.early and changes.error is not None and live.outcome is not None:
            live.outcome = outcome  # (its end was recorded before its work was read)
            rec.exit_reason, rec.error = outcome.exit_reason, outcome.error
        if not ended.early:
            self.process_ended(live, outcome)
        children = self.tables.live_children(live)
        if children:
            self.announce.worker(live, f"process exited; waiting for child job(s) {', '.join(children)}")
            waiting.append((ended, self.tables.worker_snapshot(live)))
        elif (final := self.settling.final_record(live)) is not None:
            settled.append((ended, *final))

    def _refused(self, rec: WorkerRecord) -> Refusals:
        """What the system refused ``rec`` (``read_refusals``, its log read whole): a worker whose
        attempts' run did not return (its checkout failed, or a bug)."""
        return read_refusals(self.workspace, rec, self.workspace.worker_dir(rec.root_id, rec.depth, rec.name))[0]

    @locked_only
    def process_ended(self, live: LiveWorker, outcome: Outcome) -> None:
        """Its process has ended with ``outcome``; it no longer counts against
        the limits, and its cost counts against the tree's budget. Its path locks go after the
        section (``EngineHooks.release_locks``)."""
        if live.phase.holds_slot:
            self.tables.slots_used -= 1
        live.exited(outcome)
        self.tables.running[live.job.id] -= 1
        self.settling.record_outcome(live, outcome)
        self.hooks.process_ended(live.record)  # its memory is free again

    def execute(
        self, live: LiveWorker, adopted: Recovered | None, deferred: list[Callable[[], None]]
    ) -> tuple[Outcome, Callable[[], None], Changes | None, Callable[[], Refusals]]:
        """Run the worker's attempts; returns the outcome, the sweep of its last attempt's leftovers,
        the changes its last attempt's steps asked for, when still current (else None), and the read
        of its refusals after its commit (``Attempts.refused``). The
        record's changes still in ``deferred`` at the end are the caller's to make inside its next
        ``tables.locked()`` section."""
        rec, job = live.record, live.job
        cfg = job.config
        adapter = get_adapter(rec.kind)
        directory = self.checkout.prepare(rec, job)  # first: a worktree job's shared block reads the repository there
        rendered = self.prompts.render(rec, job, directory) if adapter.needs_prompt(self.settings) else None
        prompt = rendered.text if rendered is not None else rec.task
        if adapter.needs_prompt_file(self.settings):
            # The prompt is an input, not state: a plain write, no fsync.
            self.workspace.prompt_path(rec.root_id, rec.depth, rec.name).write_text(prompt, encoding="utf-8")
        execution = Attempts(
            self.ctx,
            live,
            adapter=adapter,
            env=self.hooks.worker_env(rec, cfg, rendered.shared if rendered is not None else None),
            prompt=prompt,
            on_change=self.on_attempt,
            worker_dir=directory,
            steps=[step for step in self.steps if step.applies(job)],
            confinement=self.confinement,
        )
        key = (rec.root_id, rec.key)
        execution.deferred = deferred

        def register() -> None:  # in its first attempt's section, not one of its own
            assert_held(self.tables, "a worker's registration")
            if rendered is not None:  # (in the record written with its first attempt)
                rec.prompt_bytes, rec.shared_prompt_bytes = rendered.size, rendered.shared_bytes
            live.execution = execution
            self.tables.executing[key] = live

        execution.deferred.append(register)
        resume = None
        if adopted is not None and adopted.attempt is not None:
            resume = (adopted.attempt, self.adopt(live, adopted, execution.apply_deferred))
        # ``run_worker`` takes it out of ``executing`` in its next lock section, whatever happens here.
        return execution.run(resume), execution.sweep, execution.known_changes, execution.refused

    @locked_only
    def _executed(self, live: LiveWorker) -> None:
        """Its attempts are over (or never began): no longer executing."""
        live.execution = None
        self.tables.executing.pop((live.record.root_id, live.record.key), None)

    def adopt(self, live: LiveWorker, fate: Recovered, begin: Callable[[], None] | None = None) -> AttemptHandle:
        """A handle on the shim of a worker a previous server started; its record says so on disk
        (``begin``, if any, runs in the same lock section: see ``on_attempt``)."""
        attempt, rec = fate.attempt, live.record
        assert attempt is not None and (fate.pid is not None or fate.exit_file is not None)
        handle = self.executor.adopt(
            fate.pid, fate.start_id, tag=live.tag, started_at=attempt.started_at, exit_file=fate.exit_file
        )
        state = "still running" if handle.code is None else f"ended while no server ran (status {handle.code})"
        self.on_attempt(rec, f"attempt {attempt.number} re-adopted after a server restart (pid {handle.pid}): {state}", begin)
        return handle

    def on_attempt(
        self, record: WorkerRecord, message: str, begin: Callable[[], None] | None = None, write: bool = True
    ) -> Callable[[], None]:
        """An attempt started (or was re-adopted): ``begin`` (if any) puts it in the record
        inside ``tables.locked()``, and everyone is told. With ``write`` the record is on disk first;
        without, the caller gets the write to make later (see ``Attempts._attempt``), and the record
        is read for it only then, in a lock section of its own: most attempts that are not written
        (a process that ends within RUNNING_RECORD_DELAY) never pay for a copy of their record.
        Telling "running" before it is on disk is safe, unlike a final status: a restart finds
        the attempt through its shim and says "running" (or its true end) again. Returns the
        write (a no-op once made)."""
        with self.tables.locked():
            if begin is not None:
                begin()
            live = self.tables.workers[(record.root_id, record.key)]
            taken = self.tables.worker_snapshot(live) if write else None
            mark = live.versions.taken
        self.metrics.spawned(live.tag)
        made = False

        def save() -> None:
            nonlocal made
            if made:
                return
            made = True
            if (snapshot := taken) is None:  # numbered now: a newer snapshot on disk is never replaced (Snapshot.write)
                with self.tables.locked():
                    if live.versions.taken != mark:
                        # One taken since (a child job attached, a cancel) says "running" and more, and its
                        # taker writes it in its order (a child's record before the parent's that names it).
                        return
                    snapshot = self.tables.worker_snapshot(live)
            # On a full disk it runs on: a restart finds the attempt by its shim or exit file all the same.
            if (full := write_unless_full([snapshot])) is not None:
                log.warning("worker %s: its running record not written (it runs on): %s", record.key, full)
            failpoints.hit("after_record")

        if write:
            save()
        self.announce.worker(live, message)  # the event bus and the log append need no engine lock
        return save


def attempt_start(workspace: Workspace, rec: WorkerRecord, number: int) -> tuple[int, float] | None:
    """(log offset, start time) of attempt ``number`` from its start line in the worker log."""
    found = workspace.find_line_in_log(workspace.worker_log(rec.root_id, rec.depth, rec.name), attempt_marker(number))
    started = marker_start_time(found[1]) if found is not None else None
    return None if found is None or started is None else (found[0], started)
