"""After-attempt steps: what judges a worker's work before it is reported done.

An ordered list of steps (engine/after_attempt.py: file ownership, the quality gates, the merge into a
graph job's integration branch) runs in the worker's thread after an attempt, before the
worker's slot is freed and its status told.

*Which attempts.* Steps judge finished work, so they run only after an attempt that
succeeded (exit code 0, the adapter agreeing), including one re-adopted after a restart. A
failed, timed-out, cancelled or unstartable attempt is judged by the retry table in
``execution`` alone; what it left in the worker's directory is the Checkout's to keep or reset
before the retry. Before the steps run, anything the attempt left running (a daemonised
grandchild) is swept, so nothing writes to the directory while they look at it.

*After a restart.* An attempt re-adopted after a server's restart is judged by its steps (its
``StepContext.after_restart`` is set): each step's ``recover`` first undoes what a run of it the stop
cut off left in the directory, then the steps run; one that keeps its verdicts across a restart
(quality/gates.py) takes those it had reached instead of running again.

*Verdicts.* Steps run in order until one does not pass; the ones after it do not run (a merge
never follows a failed gate).

======================  ===============================================================
a step returns          the worker
======================  ===============================================================
``PASS``                the next step runs; after the last one the attempt's success stands
``fail(reason)``        fails now, no retry: exit_reason ``step <name> failed: <reason>``,
                        error ``<reason>``, and a line in the worker log
``retry(reason)``       a retry like a failed attempt's: it spends max_retries, with the
                        same backoff and log line (``attempt N failed (step <name> asked for
                        a retry: <reason>); retry i/n in ...``) and the Checkout's reset
                        first; past max_retries it fails, saying the step asked for a retry.
                        ``budget=N``: the step's own N retries instead of max_retries.
                        ``feedback``: added to the prompt of the attempts after it (a failed
                        gate's output), and the attempt's work is kept for them (its failure
                        class is ``feedback``: the Checkout does not reset it away)
raises, or returns      fails closed, never reported a success: ``step <name> failed:
something else          raised <Error>: <message>`` (the traceback goes to the server log)
======================  ===============================================================

*A step from outside the package* (docs/plugins.md: an installed ``orchestrator.steps`` entry point, or
``tasks.steps``' dotted path) is code in the server looking at worker data: it reads the directory
and the record, and starts a program only through ``ctx.run`` (``SandboxedRun``), which runs it as a
gate runs, in the worker's sandbox under the worker's caps, never with ``subprocess``. What it finds
it says with ``ctx.updates.found`` (the worker's ``findings``, by step).

Steps are not bounded by the worker's timeout (its attempt has ended): a step bounds its own
work and should stop when ``ctx.cancel`` is set. A step reads the worker record, never
changes it (the engine's lock guards it): what it has to record goes in ``ctx.updates`` (a
``StepUpdates``: the few fields a step may change), set on the record under the lock once the
steps have run, whatever their verdict (gate results, the gated commit, trespassing paths, the
integration merge).
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..checkouts.checkout import Changes, Checkout
from ..config.keys import StrEnum
from ..models import JobRecord, WorkerRecord, WorkerStatus
from ..outcomes import GateResult, GateStatus, IntegrationRecord
from ..process.runner import Wakeup
from ..workers.adapters.base import ParsedResult

log = logging.getLogger("orchestrator.steps")
FINDING_CHARS = 4000  # what a worker's record keeps of one step's findings


class Action(StrEnum):
    """What a step's verdict does with the attempt."""

    PASS = "pass"  # the next step runs; after the last one the attempt's success stands
    FAIL = "fail"  # the worker fails
    RETRY = "retry"  # another attempt, within a budget


@dataclass(frozen=True)
class Verdict:
    """A step's judgement: pass, fail the worker, or ask for another attempt."""

    action: Action
    reason: str = ""
    feedback: str = ""  # retry: added to the next attempts' prompt
    budget: int | None = None  # retry: the step's own budget of retries (None: max_retries)


PASS = Verdict(Action.PASS)


def fail(reason: str) -> Verdict:
    return Verdict(Action.FAIL, reason)


def retry(reason: str, *, feedback: str = "", budget: int | None = None) -> Verdict:
    return Verdict(Action.RETRY, reason, feedback, budget)


@dataclass
class StepUpdates:
    """What the steps of one attempt record on its worker: a field a step did not set (None) keeps
    the record's value. Named fields, not a dict of any: a step can change only these, and
    ``apply`` is the one place they reach the record (under the engine's lock)."""

    # The gates ran: their results, in order (filled in as each one ends) and the commit they
    # judged (None: no commit, a folder worker's), set together.
    gates: list[GateResult] | None = None
    gated_commit: str | None = None
    trespass: list[str] | None = None  # ownership: the paths outside what it owns ([]: clears the last attempt's)
    integrated: IntegrationRecord | None = None  # its merge into its graph job's integration branch
    findings: dict[str, str] | None = None  # what steps found, by step name (a plugin step's record)

    def gated(self, commit: str | None, results: list[GateResult]) -> None:
        self.gated_commit, self.gates = commit, results

    def found(self, step: str, text: str) -> None:
        """Record what step ``step`` found on this attempt (the worker's ``findings[step]``, capped)."""
        self.findings = {**(self.findings or {}), step: text[:FINDING_CHARS]}

    @property
    def changed(self) -> bool:
        return self.gates is not None or self.trespass is not None or self.integrated is not None or self.findings is not None

    def apply(self, record: WorkerRecord) -> None:
        """Set what the steps found on ``record`` (the engine's, under its lock; or a copy, to see
        the record as it will be)."""
        if self.gates is not None:
            record.gated_commit, record.gates = self.gated_commit, self.gates
        if self.trespass is not None:
            record.trespass = self.trespass
        if self.integrated is not None:
            record.integrated = self.integrated
        if self.findings is not None:
            record.findings = {**record.findings, **self.findings}


@dataclass(frozen=True)
class StepRun:
    """A program a step ran through ``StepContext.run``: how it ended and what it printed (its log
    is the worker's ``logs/...gate_step-<name>.log``)."""

    status: GateStatus  # as a gate's: passed, failed, timeout, not_started, crashed, cancelled
    exit_code: int | None
    output: str  # plain text, the start of what it printed
    reason: str  # why it did not pass ("" when it did)

    @property
    def ok(self) -> bool:
        return self.status is GateStatus.PASSED


class SandboxedRun(Protocol):
    """Starts a step's program as a gate: in the worker's sandbox, its caps, its environment without
    its API credential, bounded by ``timeout`` and the worker's cancel (quality/gates.py's ``StepPrograms``)."""

    def __call__(self, ctx: StepContext, step: str, argv: Sequence[str], timeout: float) -> StepRun: ...


@dataclass
class StepContext:
    """What a step sees of the attempt it judges."""

    record: WorkerRecord
    directory: Path  # the worker's directory (the Checkout's)
    attempt: int  # the attempt's number
    status: WorkerStatus  # how the attempt ended (SUCCESS: see "Which attempts")
    exit_reason: str
    parsed: ParsedResult | None  # its output, cost and tokens as the adapter read them
    checkout: Checkout
    cancel: Wakeup  # set when the worker is cancelled: a long step stops
    job: JobRecord | None = None  # the worker's job (its config: gates, ownership; its graph's nodes)
    env: dict[str, str] = field(default_factory=dict)  # the worker's environment
    updates: StepUpdates = field(default_factory=StepUpdates)  # set on the record after the steps
    # A step ran processes in ``directory`` after ``changes`` was asked (a gate): what it found may
    # be out of date, so the engine asks the Checkout again after the last attempt.
    touched: bool = False
    # The attempt was re-adopted after a server's restart: a step's run it cut off may have left
    # work half done (``Step.recover``), and a step's verdict from before it may be on disk.
    after_restart: bool = False
    # How a step starts a program: in the worker's sandbox (set by the engine; None: a step may start none).
    sandboxed: SandboxedRun | None = None
    step: str = ""  # the step running now (run_steps sets it): its programs' log is named for it
    _changes: Changes | None = field(default=None, init=False, repr=False)

    def run(self, argv: Sequence[str], *, timeout: float = 120.0) -> StepRun:
        """Run ``argv`` (a list, no shell) in the worker's directory inside its sandbox, as a gate
        runs: the one way a step starts a program. Its files may change the directory: the changes
        are asked again after the steps."""
        if self.sandboxed is None:
            raise RuntimeError(f"step {self.step}: no sandboxed runner was given to this step's context")
        if not argv or not all(isinstance(part, str) for part in argv):
            raise ValueError(f"step {self.step}: run() takes a non-empty list of strings, not {argv!r}")
        self.touched = True
        return self.sandboxed(self, self.step, list(argv), timeout)

    def changes(self) -> Changes:
        """The Checkout's changes, asked once per attempt, only by a step that needs them (a
        worktree commits the worker's work first: ``changes().commit`` is what a gate judges)."""
        if self._changes is None:
            self._changes = self.checkout.changes(self.record)
        return self._changes

    def known_changes(self) -> Changes | None:
        """The changes asked for by a step, when still what the directory holds (no step ran
        anything there since); None otherwise. ``finish_checkout`` takes them instead of asking
        the Checkout a second time for the same attempt (engine/worker_thread.py)."""
        return None if self.touched else self._changes


class Step(ABC):
    """One after-attempt step; ``name`` shows in the worker's exit_reason and log."""

    name: str = "step"

    def applies(self, job: JobRecord) -> bool:
        """Whether this step runs for ``job``'s workers at all (asked once per worker): a job
        no step applies to pays nothing after its attempts."""
        return True

    @abstractmethod
    def run(self, ctx: StepContext) -> Verdict:
        """Judge the attempt: ``PASS``, ``fail(reason)`` or ``retry(reason)``."""

    def recover(self, ctx: StepContext) -> None:
        """Before any step runs on an attempt re-adopted after a restart (``ctx.after_restart``):
        undo what a run of this step that the stop cut off left in the worker's directory (a
        gate's files), so no step takes it for the worker's work. Most steps leave nothing."""
        return None


def run_steps(steps: Sequence[Step], ctx: StepContext) -> tuple[str, Verdict] | None:
    """Run ``steps`` in order; the first one that does not pass and its verdict, or None when
    all passed. A step that raises or returns something other than a Verdict fails closed.
    After a restart, each step first recovers (``Step.recover``) before any of them runs."""
    if ctx.after_restart:
        for step in steps:
            try:
                step.recover(ctx)
            except Exception:  # the steps then judge the directory as it is (fail closed, as ever)
                log.exception("after-attempt step %s could not recover for worker %s", step.name, ctx.record.key)
    for step in steps:
        name = getattr(step, "name", "") or type(step).__name__
        ctx.step = name
        try:
            verdict = step.run(ctx)
        except Exception as exc:  # fail closed: a broken step never lets a worker through
            log.exception("after-attempt step %s raised for worker %s", name, ctx.record.key)
            verdict = fail(f"raised {type(exc).__name__}: {exc}")
        if not isinstance(verdict, Verdict) or verdict.action not in tuple(Action):
            verdict = fail(f"returned {verdict!r}, not PASS, fail(reason) or retry(reason)")
        verdict = dataclasses.replace(verdict, action=Action(verdict.action))  # a step's own Verdict("pass") too
        if verdict.action is not Action.PASS:
            return name, verdict
    return None
