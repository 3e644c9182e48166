"""One worker's attempts: spawn, wait with a timeout, the kill ladder, retries.

How an attempt's end is classified, and whether it is retried:

======================  ==============  ==============================================
how it ended            worker status   retried?
======================  ==============  ==============================================
exit code 0             success         no (unless the adapter says it failed)
exit code != 0          failed          yes, up to max_retries, with backoff
killed by SIGKILL       failed          no: out of memory or killed on purpose
killed by other signal  failed          yes (a crash may be transient)
our timeout             timeout         only with workers.retry_on_timeout
cancelled               cancelled       no
lost (its node died)    failed          yes, up to max_retries (distributed.executor rq)
could not start         failed          no: a missing command stays missing
adapter: not retryable  failed          no
class auth/bad_request  failed          no: a bad key or request fails the same again
class transient         failed          yes, under workers.transient_retries (not
                                        max_retries), with a longer backoff
a step fails it         failed          no (after-attempt steps: see quality/steps.py)
a step asks to retry    failed          yes, up to max_retries (or the step's own budget,
                                        e.g. gates_retry), with backoff
======================  ==============  ==============================================

Before each retry the Checkout resets the worker's directory (see checkouts/checkout.py).

"Exit code" and "signal" are the worker's true wait status, as its shim recorded it (see
process/runner.py): an exit code of 147 is an exit code, never signal 19. The failure class comes
from the adapter, which reads it from the CLI's structured output (ParsedResult.failure_class).

A transient failure (rate limit, overload, 5xx) waits 4 x retry_backoff, doubling each time,
capped at workers.transient_backoff_max, or the service's retry-after if that is longer. The
total a worker spends waiting on them is bounded by transient_retries x transient_backoff_max,
and by its tree's deadline (cancelling the tree ends a wait at once); a retry-after longer than
transient_backoff_max fails the worker at once, saying so, rather than retry too early.
"""

from __future__ import annotations

import calendar
import functools
import math
import random
import re
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .. import failpoints, protocol, states
from ..audit import record as audit_record
from ..checkouts.checkout import Changes
from ..config import Isolation
from ..errors import ConfigError, no_space
from ..gate_output import output_tail
from ..git.repository import linked_git_dir
from ..git.worker_objects import stores_of
from ..models import Attempt, EndReason, FailureClass, JobRecord, WorkerRecord, WorkerStatus
from ..network.egress import RecordEntry, read_record, record_size
from ..network.policy import SETTING
from ..network.proxy import Outcome as ProxyOutcome
from ..outcomes import Enforced
from ..process.executor import AttemptHandle
from ..process.monitor import Caps, Footprint
from ..process.runner import CommandNotFound, signal_name
from ..process.shim import Deadline
from ..quality.gates import StepPrograms
from ..quality.steps import Action, Step, StepContext, run_steps
from ..workers import costs, refusals, roles
from ..workers.adapters import reported_model
from ..workers.adapters.base import Adapter, ParsedResult, WorkerContext
from ..workers.cli_configs import check_reachable, live_endpoints
from ..workers.confinement import Confinement
from ..workers.environment import credential_by_file, provider_keys_by_file
from ..workspace.filesystem import real_path
from .context import EnginePart
from .locked_only import assert_held, locked_only
from .tables import Outcome

if TYPE_CHECKING:
    from ..workspace.layout import Workspace
    from .context import EngineContext
    from .tables import LiveWorker

# How long a process must live before its "running" record is written (see _attempt).
RUNNING_RECORD_DELAY = 0.1
# How long after the server's own timeout and kill ladder (default_timeout + kill_grace) the attempt's
# shim (or supervisor) stops it if it still runs (shim.Deadline): the backstop while no server watches,
# late enough that a live server's own handling, which records its output and reasons, comes first.
BACKSTOP_MARGIN = 2.0
# How long a remote attempt may wait queued for a node before its "running" record is written.
QUEUED_RECORD_DELAY = 1.0


# Why an attempt is followed by another: an ordinary retry (max_retries), a transient one, or
# an after-attempt step's request (which spends max_retries too).
RETRY, TRANSIENT, STEP_RETRY = "retry", "transient", "step"
NEVER_RETRIED = (FailureClass.AUTH, FailureClass.BAD_REQUEST, FailureClass.NETWORK)
TRANSIENT_BASE_FACTOR = 4.0  # transient pauses start at this many retry_backoffs


def transient_delay(
    retry: int, base: float, cap: float, retry_after: float | None, rng: random.Random | None = None
) -> float | None:
    """Pause before transient retry ``retry`` (1-based): the doubling backoff (capped, with
    jitter, never above ``cap``), or the service's ``retry_after`` when that is longer; None when
    the service asks for more than ``cap`` (waiting less would only fail again)."""
    if retry_after is not None and retry_after > cap:
        return None
    delay = min(cap, backoff_delay(retry, base, cap, rng))
    return max(delay, retry_after or 0.0)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Pause before attempt ``attempt + 1``: base * 2^(attempt-1), capped, plus up to 25% jitter.
    Never less than the un-jittered backoff, so attempts are spaced at least that far apart."""
    delay = min(cap, base * (2 ** (attempt - 1)))
    return delay + (rng or random).uniform(0, 0.25 * delay)


class Attempts(EnginePart):
    """Runs worker ``live``'s attempts in the calling thread, through ``ctx.executor``; every
    timeout, backoff and timestamp is read from ``ctx.clock``. Its record is changed inside
    ``ctx.tables.locked()``."""

    def __init__(
        self,
        ctx: EngineContext,
        live: LiveWorker,
        *,
        adapter: Adapter,
        env: dict[str, str],
        prompt: str,
        on_change: Callable[[WorkerRecord, str, Callable[[], None] | None, bool], Callable[[], None]],
        worker_dir: Path,
        steps: Sequence[Step] = (),
        confinement: Confinement | None = None,
        resume_session: str | None = None,
        round_feedback: str = "",
    ) -> None:
        record, config = live.record, live.job.config
        self.record = record
        # A candidate's own timeout (the task API's cli_assignments[].timeout) replaces the job's.
        self.config = config.replace(default_timeout=record.timeout) if record.timeout else config
        self.ctx = ctx  # what every part shares (EnginePart reads it)
        self.adapter = adapter
        workspace = ctx.workspace
        self.env = env
        self.prompt = prompt
        self.tag = live.tag
        self.on_change = on_change
        self.cancel = live.cancel
        self.steps = steps
        self.job: JobRecord | None = live.job
        self.confinement = confinement  # None: unconfined (a test's engine without one)
        # How a step starts a program (StepContext.run): as a gate, in the worker's sandbox.
        self.step_programs = StepPrograms(self.settings, workspace, ctx.runner)
        self.base_prompt = prompt
        self.resume_session = resume_session  # a continue round's: the CLI session its attempts go on with
        self.round_feedback = round_feedback  # a continue round's: the user's feedback (the command kind's ``{feedback}``)
        # The changes the last attempt's steps asked for, while still current (StepContext.known_changes).
        self.known_changes: Changes | None = None
        self.step_retries: dict[str, int] = {}  # retries spent per step with a budget of its own
        self.handle: AttemptHandle | None = None
        self._overdue = False  # the attempt being waited for was past its deadline when the wait began
        self.abort_reason: str | None = None  # set by the resource monitor: a cap was breached
        # Changes to the record waiting for this thread's next ``tables.locked()`` section (run by
        # ``apply_deferred``): each section is a hand-off between every worker's thread, so an
        # attempt's end is recorded in the section that follows it (the next attempt's, the
        # steps', or the runner's that frees the slot) rather than in one of its own.
        self.deferred: list[Callable[[], None]] = []
        rec = record
        self.log_path = workspace.worker_log(rec.root_id, rec.depth, rec.name)
        self.worker_dir = worker_dir  # the Checkout's (prepared by the engine)
        self.prompt_file = workspace.prompt_path(rec.root_id, rec.depth, rec.name)
        self.footprint = Footprint((worker_dir,))  # what its disk cap counts: read again as each attempt starts
        self._git_disk: tuple[tuple[Path, ...], Path | None] | None = None  # its git dir(s) and store, once found
        # Where the current attempt's entries begin in its network record; None: it started unsandboxed
        # here, so nothing (no proxy, no connect guard) writes any for it, and its end reads none.
        self.network_start: int | None = 0
        self.log_read: refusals.LogRead | None = None  # how far its log is read for refusals (``read_refusals``)

    @locked_only
    def apply_deferred(self) -> None:
        """Make the record's changes that wait for a lock section."""
        while self.deferred:
            self.deferred.pop(0)()

    def _flush(self) -> None:
        """The deferred changes made now, in a section of their own (before a reader outside this
        thread may need them: the steps, a retry), with what the system refused the worker so far.
        Those are read here, not at each attempt's end: after the last one, the read after its
        commit (``refused``) is the one its record takes, and the log is read once."""
        refused = self.refused()
        with self.tables.locked():
            self.apply_deferred()
            self.record.refusals, self.record.refusals_total = refused.shown, refused.total
            self.record.said_refused, self.record.said_refused_total = refused.said, refused.said_total

    def abort(self, reason: str) -> None:
        """Stop the running attempt for ``reason`` (kill ladder); no retry follows."""
        if self.abort_reason is None:
            self.abort_reason = reason
            self.cancel.set()

    def run(self, resume: tuple[Attempt, AttemptHandle] | None = None, first: int = 1) -> Outcome:
        """Run the attempts; with ``resume``, first see an attempt a previous server started
        (re-adopted: running, or already ended) through, then go on as if it never stopped.
        Ordinary retries spend max_retries, transient ones workers.transient_retries. ``first``:
        the number of the first attempt (a continue round's follow the worker's earlier ones)."""
        w = self.settings.workers
        retries, transients = 0, 0  # used so far of each budget
        outcome = Outcome(WorkerStatus.CANCELLED, "cancelled before it started")
        paid: list[ParsedResult] = []  # every attempt's usage: a retried worker costs all of them
        number = first - 1
        adopted: int | None = None  # the number of the attempt re-adopted after a restart
        while True:
            if resume is not None:
                attempt, self.handle = resume
                resume = None
                self.footprint = self._footprint()  # (the store's growth before the restart is not known)
                number = adopted = attempt.number
                for earlier in self.record.attempts:  # what the old server's attempts spent
                    if earlier.number < number:
                        transients += earlier.failure_class is FailureClass.TRANSIENT
                        retries += earlier.failure_class is not FailureClass.TRANSIENT
                outcome, retry = self._wait(attempt)
            else:
                number += 1
                if self.cancel.is_set():
                    break
                outcome, retry = self._attempt(number, self.config.max_retries + 1 + transients)
            self.known_changes = None  # (a retry's attempt changed the directory)
            if outcome.parsed is not None:
                paid.append(outcome.parsed)
            own: tuple[str, int] | None = None  # a step's retry with a budget of its own: (step, budget)
            if self.steps and outcome.status is WorkerStatus.SUCCESS:
                self._flush()  # the steps see the attempt's end in the record
                outcome, retry, own = self._after_attempt(number, outcome, after_restart=number == adopted)
            if retry == TRANSIENT:
                if transients >= w.transient_retries:
                    outcome.exit_reason += f"; transient, gave up after {transients} transient retr{'y' if transients == 1 else 'ies'} (workers.transient_retries)"
                    break
                transients += 1
                retry_after = outcome.parsed.retry_after if outcome.parsed else None
                delay = transient_delay(transients, TRANSIENT_BASE_FACTOR * w.retry_backoff, w.transient_backoff_max, retry_after)
                if delay is None:  # only a retry_after the service sent is refused
                    outcome.exit_reason += (
                        f"; the service asked to wait {retry_after:g}s, longer than "
                        f"workers.transient_backoff_max={w.transient_backoff_max:g}s"
                    )
                    break
                what = f"transient retry {transients}/{w.transient_retries}"
            elif retry == STEP_RETRY and own is not None:
                name, budget = own
                used = self.step_retries.get(name, 0)
                if used >= budget:
                    outcome.exit_reason += f"; no retries left for step {name} ({budget})"
                    self._log(f"===== attempt {number} failed ({outcome.exit_reason}) =====")
                    break
                self.step_retries[name] = used + 1
                delay = backoff_delay(used + 1, w.retry_backoff, w.retry_backoff_max)
                what = f"step {name} retry {used + 1}/{budget}"
            elif retry in (RETRY, STEP_RETRY) and retries < self.config.max_retries:
                retries += 1
                delay = backoff_delay(retries, w.retry_backoff, w.retry_backoff_max)
                what = f"retry {retries}/{self.config.max_retries}"
            else:
                if retry == STEP_RETRY:
                    outcome.exit_reason += f"; no retries left (max_retries={self.config.max_retries})"
                    self._log(f"===== attempt {number} failed ({outcome.exit_reason}) =====")
                break
            self.known_changes = None  # a retry resets or goes on in the directory: asked again at the end
            self._flush()
            self.sweep()  # nothing of the failed attempt may run beside the next one
            self._log(f"===== attempt {number} failed ({outcome.exit_reason}); {what} in {delay:.2f}s =====")
            if self.clock.wait(self.cancel, delay):
                outcome = Outcome(WorkerStatus.CANCELLED, "cancelled while waiting to retry")
                break
            unready = self._reset(number + 1)
            if unready is not None:
                outcome = unready
                break
        return _charged(outcome, paid)

    def _after_attempt(
        self, number: int, outcome: Outcome, *, after_restart: bool = False
    ) -> tuple[Outcome, str | None, tuple[str, int] | None]:
        """Run the after-attempt steps on a successful attempt (see quality/steps.py): its outcome and
        retry decision as the first step that did not pass makes them, and (step, budget) when
        that step's retry spends a budget of its own. ``after_restart``: the attempt was re-adopted
        after a restart (its steps may have run, in part, before it: StepContext.after_restart)."""
        self.sweep()  # nothing the attempt left may write while the steps look at its work
        ctx = StepContext(
            record=self.record,
            directory=self.worker_dir,
            attempt=number,
            status=outcome.status,
            exit_reason=outcome.exit_reason,
            parsed=outcome.parsed,
            checkout=self.checkout,
            cancel=self.cancel,
            job=self.job,
            env=self.env,
            after_restart=after_restart,
            sandboxed=self.step_programs,
        )
        try:
            found = run_steps(self.steps, ctx)
        finally:
            self.known_changes = ctx.known_changes()
            if ctx.updates.changed:
                with self.tables.locked():
                    ctx.updates.apply(self.record)
        if found is None:
            return outcome, None, None
        name, verdict = found
        if self.cancel.is_set() and self.abort_reason is None:  # cancelled while a step ran: it stopped for that
            why = f"cancelled while step {name} ran ({verdict.reason})"
            self._log(f"===== attempt {number} {why} =====")
            return replace(outcome, status=WorkerStatus.CANCELLED, exit_reason=why), None, None
        if verdict.action is Action.RETRY:  # told in the retry line (or the give-up line) of ``run``
            why = f"step {name} asked for a retry: {verdict.reason}"
            if verdict.feedback:  # the next attempts read it, and go on from this one's work
                self._feedback(verdict.feedback)
                with self.tables.locked():
                    if self.record.attempts:
                        self.record.attempts[-1].failure_class = FailureClass.FEEDBACK
            own = None if verdict.budget is None else (name, verdict.budget)
            return replace(outcome, status=WorkerStatus.FAILED, exit_reason=why, error=verdict.reason), STEP_RETRY, own
        why = f"step {name} failed: {verdict.reason}"
        self._log(f"===== attempt {number} {why} =====")
        return replace(outcome, status=WorkerStatus.FAILED, exit_reason=why, error=verdict.reason), None, None

    def _feedback(self, text: str) -> None:
        """The prompt of the attempts after this one: the worker's own, then ``text``."""
        self.prompt = f"{self.base_prompt}\n\n{text}"
        if self.prompt_file.exists():
            self.prompt_file.write_text(self.prompt, encoding="utf-8")

    def _reset(self, number: int) -> Outcome | None:
        """The Checkout resets the worker's directory before attempt ``number``; a failed
        reset fails the worker instead of retrying on a directory in an unknown state."""
        try:
            self.checkout.reset(self.record, number)
        except Exception as exc:
            why = f"could not reset its directory before attempt {number}"
            self._log(f"===== {why}: {exc} =====")
            return Outcome(WorkerStatus.FAILED, why, error=f"{why}: {exc}")
        return None

    def refused(self) -> refusals.Refusals:
        """What the system refused the worker so far (``read_refusals``), its log read on from the
        last read (before a retry or its steps: ``_flush``): what came since is read, not the whole
        log again."""
        found, self.log_read = read_refusals(self.workspace, self.record, self.worker_dir, self.log_read)
        return found

    def sweep(self) -> None:
        """SIGKILL whatever the latest attempt left carrying the worker's tag (its leader is
        gone; a daemonised grandchild may not be)."""
        if self.handle is not None:
            self.executor.sweep(self.tag, self.handle.started_at)

    # -- one attempt ---------------------------------------------------------
    def _attempt(self, number: int, attempts: int) -> tuple[Outcome, str | None]:
        now = self.clock.time()  # one clock reading for the start line and the record: a restart reads it back
        offset = self._log(f"{attempt_marker(number).decode()}{attempts} started {_iso(now)} =====")
        ctx = self._worker_context(number)
        attempt = Attempt(number=number, started_at=now, log_offset=offset, checkpoint=self.checkout.checkpoint(self.record))
        self.footprint = self._footprint()

        def begin() -> None:  # in the section that records the attempt (``on_change``)
            assert_held(self.tables, "an attempt's begin")
            self.apply_deferred()
            self.record.attempts.append(attempt)
            states.set_worker_status(self.record, WorkerStatus.RUNNING)
            self.record.started_at = self.record.started_at or attempt.started_at
            if self.handle is not None:
                attempt.pid, attempt.pid_start = self.handle.pid, self.handle.start_id
                attempt.enforced = _enforced(self.handle)
            self.record.sandbox = sandbox.backend.value if sandbox is not None else "none"

        sandbox = None
        try:
            argv = self.adapter.build_argv(ctx)
            attempt.argv = audit_record.redacted_argv(argv, self.prompt)
            env = {**self.env, **self.adapter.extra_env(ctx), protocol.ATTEMPT: str(number)}
            exit_file = self.workspace.exit_file(self.record.root_id, self.record.depth, self.record.name, number)
            sandbox = self.confinement.spec(self.record, self.worker_dir, self.config, env) if self.confinement else None
            self.network_start = None if sandbox is None else 0
            env = credential_by_file(env, sandbox)  # no key in an environment other trees can read
            built = argv
            argv, env = provider_keys_by_file(self.adapter, argv, env, sandbox)  # nor a provider key its CLI can read from a file
            if argv is not built:  # a key's flag changed it: redacted again (the prompt hashed again, so only then)
                attempt.argv = audit_record.redacted_argv(argv, self.prompt)
            if sandbox is not None and sandbox.egress is not None:
                # Its CLI's config names a model endpoint its proxy refuses (a file a worker may have
                # changed since the job began): failed now, naming the setting, not waited on until its timeout.
                check_reachable(self.adapter.name, live_endpoints(self.adapter, env), sandbox.egress.policy())
                self.network_start = record_size(Path(sandbox.egress.record)) if sandbox.egress.record else 0
            self.checkout.before_attempt(self.record)
            self.handle = self.executor.start(
                argv,
                cwd=self.worker_dir,
                env=env,
                log_path=self.log_path,
                tag=self.tag,
                exit_file=exit_file,
                kind=self.record.kind,
                sandbox=sandbox,
                deadline=self._backstop(),
            )
        except (CommandNotFound, ConfigError, OSError, ValueError) as exc:
            self.handle = None
            with self.tables.locked():
                begin()
            return self._spawn_failed(attempt, exc), None
        failpoints.hit("after_spawn")  # running, not yet recorded: a restart must still find it
        # One lock section records the attempt with its pid (the engine's lock is contended by
        # every worker thread: each extra section cost milliseconds per worker).
        save = self.on_change(self.record, f"attempt {number} started (pid {self.handle.pid})", begin, False)
        self._recorded_if_it_lives(attempt, save)
        return self._wait(attempt)

    def _worker_context(self, number: int) -> WorkerContext:
        """What the worker's adapter builds attempt ``number``'s command line and environment from."""
        return WorkerContext(
            task=self.record.task,
            prompt=self.prompt,
            prompt_file=self.prompt_file,
            worker_dir=self.worker_dir,
            depth=self.record.depth,
            max_recursion_depth=self.config.max_recursion_depth,
            attempt=number,
            settings=self.settings,
            time_left=self.config.default_timeout,
            goal=self.record.goal,
            model=self.record.model,  # its role's (roles.apply_roles), else the job's
            allowed_tools=roles.allowed_tools(self.settings, self.record.role),
            sandboxed=self.confinement is not None and self.confinement.for_job(self.config).spec is not None,
            env=self.env,
            resume_session=self.resume_session,
            feedback=self.round_feedback,
        )

    def _recorded_if_it_lives(self, attempt: Attempt, save: Callable[[], None]) -> None:
        """The started attempt's "running" record (``save``) written once the process has lived a moment."""
        assert self.handle is not None
        # The "running" record goes to disk only if the process outlives RUNNING_RECORD_DELAY:
        # a short one's final record follows at once, which spares a durable write and, on
        # ext4 without a journal, a freed inode that every later file creation steps over.
        # A restart in between finds the attempt through its shim (alive, or its exit file),
        # exactly as for a worker spawned but not yet recorded; readers of the engine see
        # "running" at once.
        # A remote attempt is recorded so in the same way, its process's life counted from its
        # placement on its node (told at once, on disk only with the rest); one still queued
        # waits up to QUEUED_RECORD_DELAY before its "running" record is written (the queue's wait
        # under load is the same kind of moment: a restart finds it queued in Redis).
        delay = min(RUNNING_RECORD_DELAY, self.config.default_timeout)
        until = self.clock.monotonic() + delay
        queued_until = self.clock.monotonic() + min(QUEUED_RECORD_DELAY, self.config.default_timeout)
        while self.executor.wait(self.handle, max(0.0, until - self.clock.monotonic()), wake=self.cancel) is None:
            if self.cancel.is_set():
                save()
                break
            if self.handle.node is not None and self.handle.node != attempt.node:  # placed: its delay from now
                save = self._placed(attempt, write=False)
                until = self.clock.monotonic() + delay
            elif self.handle.queued and self.clock.monotonic() < queued_until:
                until = queued_until
            else:
                save()
                break

    def _backstop(self) -> Deadline:
        """The attempt's deadline for its shim (or supervisor): BACKSTOP_MARGIN after the server's own
        timeout and grace. On the machine's real clock (the one its keeper reads), not the engine's."""
        grace = self.settings.workers.kill_grace
        return Deadline(time.time() + self.config.default_timeout + grace + BACKSTOP_MARGIN, grace)

    def _spawn_failed(self, attempt: Attempt, exc: Exception) -> Outcome:
        if isinstance(exc, CommandNotFound):
            key = self.adapter.command_key or "orchestrator.worker"
            message = f"{exc.strerror}. Install it, or set {key} in config.yaml to its full path."
        elif isinstance(exc, ConfigError):
            message = exc.message
        elif no_space(exc):
            message = f"no space left on device while starting it: {exc}"
        else:
            message = f"could not start the worker command: {exc}"
        full = no_space(exc)
        try:
            self._log(f"===== attempt {attempt.number} could not start: {message} =====")
        except OSError:
            if not full:
                raise  # (on a full disk the log cannot say it either: the record does)
        with self.tables.locked():
            attempt.ended_at = self.clock.time()
            attempt.end_reason = EndReason.SPAWN_ERROR
        return Outcome(WorkerStatus.FAILED, message if full else "could not start", error=message)

    def _wait(self, attempt: Attempt) -> tuple[Outcome, str | None]:
        assert self.handle is not None
        # From the attempt's start, which for a re-adopted attempt was before this server started.
        clock = self.clock
        deadline = clock.monotonic() + self.config.default_timeout - max(0.0, clock.time() - attempt.started_at)
        # Past its deadline before this wait began: a re-adopted attempt whose deadline came while no
        # server ran (stopped, or killed and not yet started again). It is stopped at once, and said so.
        self._overdue = deadline <= clock.monotonic() and not self.handle.queued
        reason = EndReason.EXIT
        code = None
        while code is None:
            if self.handle.queued:  # a remote attempt waiting for a node: its time starts when one starts it
                deadline = clock.monotonic() + self.config.default_timeout
            elif self.handle.node != attempt.node:
                self._placed(attempt)
            remaining = deadline - clock.monotonic()
            if self.abort_reason:
                reason = EndReason.CAP
            elif self.cancel.is_set():
                reason = EndReason.CANCELLED
            elif remaining <= 0 and (code := self.executor.wait(self.handle, 0)) is None:
                reason = EndReason.TIMEOUT  # (one that ended by its deadline, but was not yet seen to, is not: _ran_past)
            if reason != EndReason.EXIT:
                # Over a cap it has nothing to save (it fails, not retried): SIGKILL at once, so a
                # writer or a grower does not go on through the grace.
                first = signal.SIGKILL if reason == EndReason.CAP else self.adapter.first_signal
                self.executor.terminate(self.handle, grace=self.settings.workers.kill_grace, first_signal=first)
                code = self.executor.wait(self.handle, None)
                break
            if code is None:
                code = self.executor.wait(self.handle, remaining, wake=self.cancel)
        if reason == EndReason.EXIT:
            hit = self._cap_at_end(code)
            if hit is not None:
                self.abort_reason, reason = hit, EndReason.CAP
            elif self._ran_past(attempt) or self.handle.deadline_stop:
                reason = EndReason.TIMEOUT  # (its shim stopped it at its deadline: no server had)
        self.executor.release(self.handle)
        # Anything still carrying the tag (a daemonised grandchild) is swept by ``sweep``:
        # before a retry, and after the last attempt once the engine has freed the slot.
        return self._classify(attempt, code, reason)

    def _ran_past(self, attempt: Attempt) -> bool:
        """Whether an attempt that ended by itself ran past its timeout, by its start (its process's,
        where that came later than the record's: a start that waited) and its exit file's time: it
        may have ended long before the server saw it (the server was stopped, or restarting), and
        when the server woke is no measure of how long it ran."""
        assert self.handle is not None
        ended, started = self.handle.ended_at, max(attempt.started_at, self.handle.started_at)
        return ended is not None and ended - started > self.config.default_timeout

    def _cap_at_end(self, code: int | None) -> str | None:
        """The cap an attempt ended at though no sample caught it: one the kernel held it at (its
        OOM killer, even on a child whose parent then exited 0; a refused fork; the file-size
        limit), or, when it failed, its log or folder at the cap (a writer refused by the file-size
        limit that exits on the error within an interval)."""
        assert self.handle is not None
        hit = self.handle.cap_hit
        if hit is None and code != 0:
            w = self.settings.workers
            hit = Caps(0, 0, w.max_log_mb, w.max_disk_mb).files_breach(self.log_path, self.footprint)
        return hit

    def _footprint(self) -> Footprint:
        """What the disk cap counts of the attempt starting now (process/monitor.Footprint): its
        folder, its TMPDIR, and in a worktree its private git dir (and its own, under Landlock) and the growth from now of its
        tree's object store. Those two are found from the worktree's ``.git``
        pointer, read once, and only in a worktree, where the sandbox shows it read-only (a plain
        folder's ``.git`` is the worker's to write: a path it chose is never walked)."""
        if not self.settings.workers.max_disk_mb:
            return self.footprint
        if self._git_disk is None:
            private, stores = None, None
            if self.config.isolation == Isolation.WORKTREE:
                store = self.workspace.tree_objects(self.record.root_id)
                private, stores = linked_git_dir(self.worker_dir), stores_of(self.worker_dir, store)
            # (and the git dir of its own a sandbox without mounts gives it: git/worker_gitdir.py)
            own_git = self.workspace.tree_git_dirs(self.record.root_id) / private.name if private is not None else None
            found = (private, own_git) if private is not None and own_git is not None else ()
            self._git_disk = (found, stores.workers if stores else None)
        rec = self.record
        own = (self.worker_dir, self.workspace.worker_tmp(rec.root_id, rec.depth, rec.name), *self._git_disk[0])
        return Footprint.start(own, self._git_disk[1])

    def _placed(self, attempt: Attempt, *, write: bool = True) -> Callable[[], None]:
        """A remote executor's node started the attempt: the record names the node (and its pid
        there). Without ``write``, the record's write is returned to be made later (``on_change``)."""
        handle = self.handle
        assert handle is not None

        def begin() -> None:  # in the section that records the placement (``on_change``)
            assert_held(self.tables, "a placement's begin")
            attempt.node, attempt.pid = handle.node, handle.pid
            attempt.started_at = max(attempt.started_at, handle.started_at)  # when it ran, not when it was queued
            self.record.node = handle.node

        return self.on_change(
            self.record, f"attempt {attempt.number} running on node {handle.node} (pid {handle.pid})", begin, write
        )

    def _classify(self, attempt: Attempt, code: int | None, reason: EndReason) -> tuple[Outcome, str | None]:
        """How the attempt ended (its line in its log), and whether another one follows."""
        rung = self.handle.kill_rung if self.handle and self.handle.kill_rung not in (None, "none") else None
        stopper = self.handle.deadline_stop if self.handle and rung is None and reason == EndReason.TIMEOUT else None
        if stopper:  # its shim (or supervisor) ran the ladder: SIGTERM, and SIGKILL if it outlived the grace
            rung = "SIGKILL" if code == -signal.SIGKILL else "SIGTERM"
        ended = (self.handle.ended_at if self.handle else None) or self.clock.time()
        enforced = _enforced(self.handle) or attempt.enforced  # a node's says so with its renewals

        network = (
            read_record(
                self.workspace.worker_paths(self.record.root_id, self.record.depth, self.record.name).network,
                self.network_start,
            )
            if self.network_start is not None
            else []
        )

        def end() -> None:  # in the next section this thread enters (``apply_deferred``)
            assert_held(self.tables, "an attempt's end")
            attempt.ended_at = ended
            attempt.enforced = enforced
            attempt.kill_rung = rung
            attempt.exit_code = code if code is not None and code >= 0 else None
            attempt.signal = -code if code is not None and code < 0 else None
            self.record.failure_class = None  # the latest attempt's; set below when the adapter names one

        self.deferred.append(end)
        duration = max(0.0, ended - attempt.started_at)
        window = max(self.settings.workers.output_chars * 4, self.adapter.result_window)
        text = self.workspace.read_from(self.log_path, attempt.log_offset, window)
        parsed = self.adapter.parse(_strip_headers(text), code, max_chars=self.settings.workers.output_chars)
        said = reported_model(parsed)
        if said:  # on the record before its commit, which credits that model (Co-authored-by)
            self.deferred.append(functools.partial(setattr, self.record, "reported_model", said))
        costs.estimate_for(parsed, self.adapter, self.settings, self.record.model)
        if reason == EndReason.TIMEOUT:
            attempt.end_reason = EndReason.TIMEOUT
            how = rung or (
                f"its own exit after {duration:.1f}s, seen later" if duration > self.config.default_timeout else "exit"
            )
            why = f"timed out after {self.config.default_timeout:g}s (ended by {how})"
            if stopper:
                why = (
                    f"timed out after {self.config.default_timeout:g}s (ended by {how} at {duration:.1f}s: its deadline "
                    f"passed while no server watched it, and {stopper} stopped it)"
                )
            elif self._overdue and rung:
                why = (
                    f"timed out after {self.config.default_timeout:g}s (ended by {how} at {duration:.1f}s: its deadline "
                    "passed while no server watched it; the server stopped it as it took the job over)"
                )
            self._log(f"===== attempt {attempt.number} {why} =====")
            # Waiting on a connection its proxy refused is no question of time: the record says which.
            advice = network_words(network) or "Raise default_timeout if the subtask needs longer"
            outcome = Outcome(WorkerStatus.TIMEOUT, why, error=f"Worker timeout: {why}. {advice}.", parsed=parsed)
            return outcome, RETRY if self.settings.workers.retry_on_timeout else None
        if reason == EndReason.CAP:
            attempt.end_reason = EndReason.CAP
            why = f"{self.abort_reason} (ended by {rung or 'exit'})"
            self._log(f"===== attempt {attempt.number} stopped: {why} =====")
            return Outcome(WorkerStatus.FAILED, why, error=f"stopped: {self.abort_reason}", parsed=parsed), None
        if self.handle is not None and self.handle.lost and reason == EndReason.EXIT:
            attempt.end_reason = EndReason.LOST
            why = f"lost: node {self.handle.node or '?'} stopped renewing its lease"
            self._log(f"===== attempt {attempt.number} {why}; a late result from it is ignored =====")
            return Outcome(WorkerStatus.FAILED, why, error=why, parsed=parsed), RETRY
        if reason == EndReason.CANCELLED:
            attempt.end_reason = EndReason.CANCELLED
            why = f"cancelled (ended by {rung or 'exit'})"
            self._log(f"===== attempt {attempt.number} {why} =====")
            return Outcome(WorkerStatus.CANCELLED, why, parsed=parsed), None
        return self._classify_exit(attempt, code, duration, parsed, network)

    def _classify_exit(
        self, attempt: Attempt, code: int | None, duration: float, parsed: ParsedResult, network: Sequence[RecordEntry] = ()
    ) -> tuple[Outcome, str | None]:
        if code is not None and code < 0:
            attempt.end_reason = EndReason.SIGNAL
            name = signal_name(-code)
            retry = -code != signal.SIGKILL
            why = f"killed by {name}" + ("" if retry else " (out of memory, or killed from outside; not retried)")
            self._log(f"===== attempt {attempt.number} {why} after {duration:.2f}s =====")
            return Outcome(WorkerStatus.FAILED, why, error=parsed.error or failure_text(why, parsed.output), parsed=parsed), (
                RETRY if retry else None
            )
        attempt.end_reason = EndReason.EXIT
        self._log(f"===== attempt {attempt.number} exited with code {code} after {duration:.2f}s =====")
        if code == 0 and parsed.ok is not False:
            return Outcome(WorkerStatus.SUCCESS, "exit code 0", parsed=parsed), None
        why = f"exit code {code}" if code != 0 else "exit code 0 but the worker reported a failure"
        error = parsed.error or failure_text(why, parsed.output)
        kind = FailureClass(parsed.failure_class) if parsed.failure_class in tuple(FailureClass) else None
        if network:
            error = f"{error}; {network_words(network)}"
            # What its CLI took for a lost connection, with no answer of a service (no HTTP status, no
            # retry-after), was its proxy's refusal (its record says so, whatever the CLI printed):
            # another try would be refused the same. A service's 429 or 503 stays transient.
            answered = parsed.retry_after is not None or _HTTP_STATUS.search(parsed.error or "") is not None
            if (
                kind in (None, FailureClass.TRANSIENT)
                and not answered
                and any(e.outcome is ProxyOutcome.REFUSED for e in network)
            ):
                kind = FailureClass.NETWORK
        if parsed.retry_after is not None and not 0 <= parsed.retry_after < math.inf:
            parsed.retry_after = None  # what a CLI printed: a record (JSON) holds no NaN or infinity
        retry_after = parsed.retry_after

        def classified() -> None:  # in the next section this thread enters, after ``end`` (``_classify``)
            assert_held(self.tables, "an attempt's classification")
            attempt.failure_class, attempt.retry_after = kind, retry_after
            self.record.failure_class = kind

        self.deferred.append(classified)
        if kind in NEVER_RETRIED:
            return Outcome(WorkerStatus.FAILED, f"{why} ({_CLASS_WORDS[kind]}: not retried)", error=error, parsed=parsed), None
        if kind is FailureClass.TRANSIENT:
            return Outcome(WorkerStatus.FAILED, f"{why} ({_CLASS_WORDS[kind]})", error=error, parsed=parsed), TRANSIENT
        return Outcome(WorkerStatus.FAILED, why, error=error, parsed=parsed), RETRY if parsed.retryable else None

    def _log(self, line: str) -> int:
        """Append a marker line to the worker log, on a line of its own (a worker's last line may
        lack its newline); returns the offset where the marker starts."""
        # One open (never through a planted link): its last byte read, the marker appended.
        return self.workspace.append_log(self.log_path, line.encode("utf-8") + b"\n", own_line=True)


_CLASS_WORDS = {
    FailureClass.AUTH: "authentication failed",
    FailureClass.BAD_REQUEST: "the service refused the request",
    FailureClass.TRANSIENT: "rate limit or overload",
    FailureClass.NETWORK: "its sandbox's proxy refused a connection",
}


_HTTP_STATUS = re.compile(
    r"\b(?:status(?: code)?:?|HTTP/\d(?:\.\d)?|APIError)\s*[1-5]\d\d\b|\b[1-5]\d\d (?:[A-Z][a-z]+ ?)+", re.I
)


def network_words(entries: Sequence[RecordEntry]) -> str:
    """What an attempt's network record says, for its error: each host refused (and why), each
    allowed host not reached, and the setting that opens a host."""
    refused = _distinct(e for e in entries if e.outcome is ProxyOutcome.REFUSED)
    unreached = _distinct(e for e in entries if e.outcome is ProxyOutcome.UNREACHABLE)
    said = []
    if refused:
        listed = "; ".join(f"{e.authority} ({e.reason})" for e in refused)
        said.append(
            f"the sandbox's proxy refused it {listed}. If the worker needs it, add it to {SETTING} in config.yaml "
            "(or set workers.sandbox_network: host)"
        )
    if unreached:
        said.append("; ".join(f"allowed host {e.authority} could not be reached: {e.reason}" for e in unreached))
    return ". ".join(said)


def _distinct(entries: Iterable[RecordEntry]) -> list[RecordEntry]:
    """One entry per host and port (its latest), at most five."""
    found: dict[str, RecordEntry] = {}
    for entry in entries:
        found[entry.authority] = entry
    return list(found.values())[:5]


def read_refusals(
    workspace: Workspace, record: WorkerRecord, directory: Path, since: refusals.LogRead | None = None
) -> tuple[refusals.Refusals, refusals.LogRead]:
    """What the system refused ``record`` over all its attempts so far: first its records the worker
    cannot write (the orchestrator's, its proxy's), then its whole log (what its CLI printed; never
    an ``[orchestrator]`` line, which the worker could have printed); a "Permission denied" inside
    ``directory`` (its checkout) or its TMPDIR is no refusal of the sandbox. The log is read on from
    ``since`` (an earlier read's, returned with the refusals): read once, not again at each end.
    The records are read whole each time (the orchestrator appends to them after an attempt's end)."""
    paths = workspace.worker_paths(record.root_id, record.depth, record.name)
    found = refusals.Refusals()
    refusals.add_recorded(found, paths.refusals)
    refusals.add_network(found, read_record(paths.network))
    own: tuple[Path, ...] = ()
    if since is None:
        # (its checkout by its real path too: outside the workspace, the workspace's folder a link to it: workspace/checkout_place.py)
        real = real_path(directory)
        own = (directory, paths.tmp) if real == str(directory) else (directory, Path(real), paths.tmp)
    said, progress = refusals.scan_more(paths.log, own, since)
    found.said, found.said_total = said.said, said.said_total  # (the log's words: kept apart from the records')
    return found, progress


def _enforced(handle: AttemptHandle | None) -> Enforced | None:
    return handle.enforced if handle is not None else None


def _charged(outcome: Outcome, paid: list[ParsedResult]) -> Outcome:
    """The outcome with the cost and tokens of every attempt this run made, not only the last
    one's (a transient retry loop pays for each try)."""
    if not paid or (len(paid) == 1 and outcome.parsed is paid[0]):
        return outcome
    if outcome.parsed is None:
        outcome.parsed = ParsedResult(output="")
    for name in ("cost_usd", "tokens_in", "tokens_out", "tokens_cache_read"):
        values = [getattr(p, name) for p in paid if getattr(p, name) is not None]
        setattr(outcome.parsed, name, sum(values) if values else None)
    # The sum is an estimate if any part is; a try whose cost is unknown leaves the sum a lower bound.
    if any(p.cost_basis == costs.CostBasis.ESTIMATED for p in paid):
        outcome.parsed.cost_basis = costs.CostBasis.ESTIMATED
    outcome.parsed.cost_note = next((p.cost_note for p in paid if p.cost_note), None)
    return outcome


def _strip_headers(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("===== attempt "))


def failure_text(why: str, output: str) -> str:
    """A failed worker's ``error`` when its CLI named none (a command, a crash): how it ended and the
    end of what it printed (gate_output's bound: its last 20 lines, at most 2,000 characters), so the
    reason is in the record, not only in its log."""
    tail = output_tail(output)
    return f"{why}; the end of its output:\n{tail}" if tail else why


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


_MARKER_START = re.compile(rb"===== attempt (\d+)/\d+ started (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{3})?Z =====")


def attempt_marker(number: int) -> bytes:
    """How attempt ``number``'s start line in a worker log begins (see ``_attempt``)."""
    return f"===== attempt {number}/".encode()


def marker_start_time(line: bytes) -> float | None:
    """When the attempt whose start line this is began (for a restart rebuilding an attempt
    the old server did not record), or None if it is not a start line."""
    found = _MARKER_START.match(line)
    if found is None:
        return None
    whole = calendar.timegm(time.strptime(found.group(2).decode(), "%Y-%m-%dT%H:%M:%S"))
    return whole + (float(found.group(3)) if found.group(3) else 0.0)
