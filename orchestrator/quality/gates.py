"""Quality gates: commands that judge a worker's work before it may be merged,
closed by default.

*Across a restart* (workspace/stages.py): each gate's start and its result on an attempt's commit go in
the tree's stage ledger as they happen. A server killed during the gates re-adopts the worker's
attempt (the agent is not run again; a gate's process is never taken for it), then ``recover`` puts
the worktree back on the commit the gates judged (what the cut-off gate wrote goes), and ``run``
takes each gate that reached its verdict as it was (``restart: reused``, not run again) and runs the
one the stop cut off once more (``restart: rerun``, and a line in the worker's log and the tree's).

``GateStep`` is an after-attempt step (quality/steps.py): after a worker's successful attempt, the job's
gates (``config.gates``, config.quality's shape) that apply to it run one by one in its directory
on the commit that will be merged (``ctx.changes().commit``: a worktree commits the work first;
None in folder isolation, where the gates still run in its folder). A gate applies to a worker
when it names the worker's role in ``roles``, or names no role and the worker has none, or its
role lists no gates, or its role's ``gates`` name it; then, with ``when_changed``, only when the
worker changed (or renamed from) a path those globs match (``applicable``).

Each gate is a real process: its argv, or with ``shell: true`` its command line run as ``/bin/sh -c``
(the server owner's or the admin key's own text, never a request's: a worker credential may not
set gates), in the worker's directory or the gate's ``cwd`` under it (``gate_dir``: a link out of
the checkout is refused), with the worker's environment without its API credential, with no
colour (``COLOURLESS``) and the gate's ``env`` over it, its own session, stdin /dev/null, stdout+stderr
appended to ``logs/depth_<d>_<worker>.gate_<name>.log`` (a header line per run), bounded by its
``timeout`` and by the worker's cancel (its whole process group: SIGTERM, then SIGKILL after
``workers.kill_grace``, then every process carrying its tag), and under the workers' caps (it runs
the worker's code: Confinement.watch, held and read as a worker's are, a breach ending it at once). Each run is one entry of the
worker's ``gates``: ``{name, required, status, passed, exit_code, duration, log_path, commit,
reason, output_tail}`` (the end of its output where it did not pass: gate_output.py), ``status`` one of passed, failed (exit code > 0,
or stopped at a worker's cap: its reason ``stopped at a worker's cap: <the cap>``), no_tests (its test runner said it ran no test,
quality/testruns.py; passed instead when the gate has ``allow_no_tests``), timeout, not_started (missing
binary, or a ``cwd`` that is no folder of the checkout), crashed (killed by a signal, or the step
raised), cancelled; and ``gated_commit`` is the commit judged (set even when no gate applies). A
line per gate goes in the worker's log. Its output leaves its log only as plain text
(plaintext.plain: no colour codes or progress redraws).

*Fail closed.* A required gate that does not pass fails the worker (``gate tests failed: exit
code 1``), or, with ``gates_retry`` > 0, asks for another attempt with the gate's name, command
and output tail in the prompt (that budget, not max_retries; not for ``not_started``: the
worker cannot install the server's programs, nor for ``cancelled``). Gates after the first
required failure do not run and are not recorded (the worker's log names them). A gate that is
not required is recorded and passes whatever it says. A cancel stops the running gate (status
cancelled) and the rest; the worker ends cancelled (engine/attempts.py). Afterwards a worktree goes
back to the gated commit on its branch (``checkout -f -B``, a ``reset --hard`` that also undoes a
gate's branch switch, and ``clean -fd``, never ``-x``: what git ignores, node_modules say, stays),
so nothing a gate wrote is committed. The gates run holding the worktree's lock (checkouts/worktree.py),
so a child job's merge into it waits for them.

``merge_block`` is the other half: landing (and nesting, for a child job's workers) merges a
worker only when it says None, and then only its gated commit (``merge_commit``: a commit added
after the gates ran is not merged). ``step_block`` asks it from a later step of the same attempt,
before the engine has put ``ctx.updates`` on the record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import secrets
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from .. import failpoints, protocol
from ..checkouts.checkout import Checkout, Worktrees, touched_paths
from ..checkouts.worktree import MAX_FILES
from ..config import Settings
from ..config.quality import Gate, Role, roles_with_defaults
from ..gate_output import output_tail
from ..models import JobRecord, WorkerRecord
from ..outcomes import (
    CANCELLED,
    CRASHED,
    FAILED,
    NO_TESTS,
    NOT_STARTED,
    PASSED,
    TIMEOUT,
    AfterRestart,
    GateResult,
    GateStatus,
)
from ..planner.graph import matches
from ..process.monitor import CAPPED, HelperWatch
from ..process.plaintext import plain
from ..process.runner import CommandNotFound, ProcessHandle, ProcessRunner, Wakeup, signal_name
from ..process.sandbox import SandboxSpec
from ..workers.confinement import Confinement, environment_program, project_imports
from ..workers.roles import role_of
from ..workspace.layout import Workspace
from ..workspace.stages import Stage, StageLedger, StageState, rerun_note
from .steps import PASS, Action, Step, StepContext, StepRun, Verdict, fail, retry
from .testruns import ran_no_tests

log = logging.getLogger("orchestrator.gates")

FEEDBACK_BYTES = 4000  # of a failed gate's output, in the worker's next prompt
OUTPUT_KEY = "output"  # a gate's verdict in the stage ledger: its output's end, for that prompt
READ_BYTES = 1 << 20  # of a gate's output read for "ran no tests" (a runner's counts may be far from its end)
SHELL = "/bin/sh"
# A gate's output is read by a model, not a terminal: no colour, whatever the worker's environment
# forces (the gate's own env may still ask for it).
COLOURLESS = {"NO_COLOR": "1", "TERM": "dumb", "PY_COLORS": "0", "CLICOLOR": "0", "CARGO_TERM_COLOR": "never"}
COLOUR_FORCING = ("FORCE_COLOR", "CLICOLOR_FORCE", "PY_FORCE_COLOR")


class GateDirError(ValueError):
    """A gate's ``cwd`` is no folder inside the worker's checkout (missing, or a link out)."""


def command_text(gate: Gate) -> str:
    """A gate's command as a person reads it: its command line, or its argv joined."""
    run = gate["run"]
    return run if isinstance(run, str) else " ".join(run)


def gate_dir(directory: Path, cwd: str) -> Path:
    """The folder a gate runs in: ``cwd`` (config.quality checked it is relative, without "..")
    under ``directory``, resolved, so a link the worker made that points out of its checkout is
    refused (GateDirError) rather than followed."""
    top = directory.resolve()
    target = (top / cwd).resolve() if cwd else top
    if not target.is_relative_to(top):
        raise GateDirError(f"its cwd {cwd!r} leads out of the worker's checkout (a symbolic link to {target}); refused")
    if not target.is_dir():
        raise GateDirError(f"its cwd {cwd!r} is not a folder in the worker's checkout")
    return directory / cwd if cwd else directory  # the path a sandbox binds, not the resolved one


def gate_argv(gate: Gate) -> list[str]:
    """What runs: ``/bin/sh -c`` and its command line, or its argv (a relative program such as
    ``./check.sh`` or ``.venv/bin/python`` is the runner's to find in the gate's folder, as the
    worker's sandbox shows it: process/runner.py ``resolve_command``)."""
    if gate.get("shell"):
        return [SHELL, "-c", cast(str, gate["run"])]  # with shell, one command line (config.quality)
    return list(gate["run"])


def gate_env(worker_env: Mapping[str, str], gate: Gate) -> dict[str, str]:
    """The worker's environment without its API credential (a gate never holds it) or colour
    forcing, ``COLOURLESS``, then the gate's own ``env``."""
    env = {k: v for k, v in worker_env.items() if k not in (protocol.API_KEY, protocol.API_KEY_FILE) and k not in COLOUR_FORCING}
    return {**env, **COLOURLESS, **(gate.get("env") or {})}


def applicable(
    gates: Sequence[Gate],
    role_name: str | None,
    role: Role | None,
    files_changed: Sequence[Mapping[str, str]],
) -> list[Gate]:
    """The gates (in order) that apply to a worker of role ``role_name`` (``role``: its entry in
    the role table, None when it has none) whose diff is ``files_changed`` (see the module
    docstring). A list cut at worktree.MAX_FILES may hide a matching path: every
    ``when_changed`` then applies (closed, not open)."""
    wanted = list(role.get("gates") or []) if role else []
    paths = touched_paths(files_changed)
    cut = len(files_changed) >= MAX_FILES
    found = []
    for gate in gates:
        if gate.get("roles"):
            applies = role_name is not None and role_name in gate["roles"]
        else:
            applies = not wanted or gate["name"] in wanted
        if applies and gate.get("when_changed") and not cut:
            applies = any(matches(p, gate["when_changed"]) for p in paths)
        if applies:
            found.append(gate.copy())
    return found


def gate_log(workspace: Workspace, record: WorkerRecord, name: str) -> Path:
    """``logs/depth_<d>_<worker>.gate_<name>.log``, beside the worker's log."""
    log = workspace.worker_log(record.root_id, record.depth, record.name)
    return log.with_name(f"{log.stem}.gate_{name}.log")


def merge_block(record: WorkerRecord, job: JobRecord, settings: Settings | None = None) -> str | None:
    """Why this worker's work may not be merged, or None. Not ok: blocked. When the job has
    gates: blocked unless its gates ran (a gated commit), every required gate recorded passed on
    that commit, and every required gate that applies to it (its role from ``settings``'s role
    table, the shipped roles without one; its recorded diff) is recorded."""
    if not record.status.ok:
        return f"it ended {record.status.value}" + (f": {record.error[:200]}" if record.error else "")
    if record.candidate is not None and not record.selected:  # only its task's winner is merged (engine/choosing.py)
        chosen = job.selections.get(record.task_id or "")
        winner = chosen.winner if chosen is not None else None
        return f"a candidate not selected (task {record.task_id}'s winner: {winner or 'not chosen yet'})"
    if not job.config.gates:
        return None
    if record.gated_commit is None:
        return "its gates never ran (no gated commit)"
    recorded = {g.name: g for g in record.gates}
    for entry in record.gates:
        if entry.required and not entry.passed:
            return f"required gate {entry.name} did not pass: {entry.reason or entry.status}"
        if entry.commit != record.gated_commit:
            return f"gate {entry.name} judged commit {str(entry.commit)[:12]}, not the gated commit"
    if settings is not None:
        role = role_of(settings, record.role)
    else:
        role = roles_with_defaults({}).get(record.role) if record.role else None
    for gate in applicable(job.config.gates, record.role, role, record.files_changed):
        if gate["required"] and gate["name"] not in recorded:
            return f"required gate {gate['name']} never ran"
    return None


def step_block(ctx: StepContext, settings: Settings | None = None) -> str | None:
    """``merge_block`` from a later step of the same attempt (an integration merge), before the
    engine sets ``ctx.updates`` on the record: the record as it will be (the attempt succeeded,
    the gates' results, the changes). Without its job: blocked (closed, not open)."""
    if ctx.job is None:
        return "its job is unknown"
    view = dataclasses.replace(ctx.record, status=ctx.status, files_changed=list(ctx.changes().files_changed))
    if ctx.updates.gates is not None:
        view.gated_commit, view.gates = ctx.updates.gated_commit, ctx.updates.gates
    return merge_block(view, ctx.job, settings)


def gates_key(record: WorkerRecord, attempt: int) -> str:
    """The ledger's key (workspace/stages.py) for one run of a worker's gates on an attempt."""
    return f"gates {record.key} attempt {attempt}"


def merge_commit(record: WorkerRecord) -> str | None:
    """The commit of a worker's that may be merged: the one its gates judged, else its tip."""
    return record.gated_commit or record.commit


class GateStep(Step):
    """Runs the job's quality gates on a worker's work (see the module docstring)."""

    name = "gates"

    def __init__(self, settings: Settings, workspace: Workspace, runner: ProcessRunner | None = None) -> None:
        self.settings = settings
        self.workspace = workspace
        self.runner = runner or ProcessRunner()
        self.confinement = Confinement(settings, workspace)  # a gate runs the worker's code: in its sandbox

    def applies(self, job: JobRecord) -> bool:
        return bool(job.config.gates)  # a job without gates pays nothing after its attempts

    def run(self, ctx: StepContext) -> Verdict:
        gates = list(ctx.job.config.gates) if ctx.job is not None else []
        record = ctx.record
        results: list[GateResult] = []
        verdict = PASS
        ledger = StageLedger(self.workspace, record.root_id)
        with self._holding(ctx) as worktree:
            changes = ctx.changes()  # a worktree commits the work first
            commit = changes.commit
            if worktree is not None and commit is not None:  # its tip now (a child job's merge since a step asked)
                commit = worktree.tip(record)
            ctx.updates.gated(commit, results)
            todo = applicable(gates, record.role, role_of(self.settings, record.role), changes.files_changed)
            if not todo:
                return PASS
            ctx.touched = True  # its gates run in the worker's directory from here
            whole = gates_key(record, ctx.attempt)
            ledger.started(whole, commit=commit)  # what ``recover`` goes back to, if the server stops now
            try:
                for index, gate in enumerate(todo):
                    result, output = self._gate_once(ctx, ledger, gate, commit)
                    results.append(result)
                    verdict = self._judge(ctx, gate, result, output, [g["name"] for g in todo[index + 1 :]])
                    if verdict.action is not Action.PASS:
                        break
            finally:
                if worktree is not None and commit is not None and changes.branch:
                    worktree.restore(record, commit)
            ledger.reached(whole, {"commit": commit, "action": verdict.action.value})
        return verdict

    def recover(self, ctx: StepContext) -> None:
        """A run of the gates that a server's stop cut off left the worktree as the gate had it
        (its files, perhaps a commit or a branch switch): back to the commit they judged, before
        any step asks for the worker's changes, so nothing a gate wrote is committed as its work."""
        record = ctx.record
        stage = StageLedger(self.workspace, record.root_id).look(gates_key(record, ctx.attempt))
        commit = stage.started.get("commit") if stage.state is StageState.CUT_OFF else None
        if not isinstance(commit, str):
            return
        with self._holding(ctx) as worktree:
            if worktree is None or worktree.tip(record) != commit:
                return  # its branch moved on since (or no worktree): nothing of the gates' to undo
            worktree.restore(record, commit)
        self._note(record, f"the gates' run on commit {commit[:12]} was cut off by the server's stop: back to that commit")

    def _gate_once(self, ctx: StepContext, ledger: StageLedger, gate: Gate, commit: str | None) -> tuple[GateResult, str]:
        """One gate's result on ``commit``: its verdict from before a restart when it reached one
        (not run again), else its run now, recorded in the ledger as it starts and as it ends (one
        cut off by a stop runs once more, and says so)."""
        record, name = ctx.record, gate["name"]
        key = f"gate {record.key} attempt {ctx.attempt} {commit or 'folder'} {name}"
        before = ledger.look(key) if ctx.after_restart else Stage(key)  # (no stop, no earlier run to look for)
        if before.state is StageState.DONE and before.verdict is not None:
            kept = dataclasses.replace(GateResult.from_dict(before.verdict), restart=AfterRestart.REUSED)
            return kept, str(before.verdict.get(OUTPUT_KEY) or "")
        ledger.started(key)
        if before.rerun:
            said = rerun_note(f"gate {name}")
            self._note(record, said)
            self.workspace.log_event(record.root_id, f"{record.key}: {said}")
        try:
            result, output = self._run_gate(ctx, gate, commit)
        except Exception as exc:  # fail closed, and say which gate
            log.exception("gate %s of worker %s raised", name, record.key)
            result, output = _crashed(self.workspace, record, gate, commit, exc), ""
        if before.rerun:
            result = dataclasses.replace(result, restart=AfterRestart.RERUN)
        if result.status != CANCELLED:  # a cancel is no verdict on the work
            ledger.reached(key, {**result.to_dict(), OUTPUT_KEY: output[-FEEDBACK_BYTES:]})
        return result, output

    # -- one gate ---------------------------------------------------------------------------------
    def _run_gate(self, ctx: StepContext, gate: Gate, commit: str | None) -> tuple[GateResult, str]:
        """One gate's run on the worker's checkout, in its sandbox: its record entry and its output."""
        place = in_checkout(
            ctx,
            self.confinement,
            self.workspace,
            gate,
            tag=f"gate-{gate['name']}",
            heading=f"attempt {ctx.attempt}, commit {commit or 'none: folder'}",
            commit=commit,
            cancelled="the worker was cancelled while the gate ran",
        )
        return run_gate(self.runner, self.workspace, self.settings, gate, place)

    def _judge(self, ctx: StepContext, gate: Gate, result: GateResult, output: str, rest: list[str]) -> Verdict:
        """The worker's log line for one gate, and what its result means for the worker."""
        name, status, reason = result.name, result.status, result.reason
        what = f"gate {name} {status} in {result.duration:.1f}s" + (f" ({reason})" if reason else "")
        if result.restart is AfterRestart.REUSED:
            what += "; its verdict from before the server's restart, not run again"
        if status == PASSED:
            self._note(ctx.record, what)
            return PASS
        if status != CANCELLED and not result.required:
            self._note(ctx.record, f"{what}; it is not required, so the worker goes on")
            return PASS
        why = (
            f"gate {name} {reason}" if status == NO_TESTS else f"gate {name} {'failed' if status == FAILED else status}: {reason}"
        )
        skipped = f"; gate(s) {', '.join(rest)} not run" if rest else ""
        self._note(ctx.record, f"{what}; the worker's work may not be merged{skipped}")
        budget = ctx.job.config.gates_retry if ctx.job is not None else 0
        if budget > 0 and status not in (NOT_STARTED, CANCELLED):
            return retry(why, feedback=feedback(gate, result, output), budget=budget)
        return fail(why)

    # -- the worktree -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _holding(self, ctx: StepContext) -> Iterator[Worktrees | None]:
        """The worker's worktree checkout, locked for the gates' run (a child job's merge into it
        waits: the gates judge one commit and the restore cannot undo a merge), or None."""
        checkout: Checkout = ctx.checkout
        worktree = checkout.worktrees_for(ctx.job)
        if worktree is None or not (ctx.directory / ".git").exists():
            yield None
            return
        with worktree.holding(ctx.record):
            yield worktree

    def _note(self, record: WorkerRecord, line: str) -> None:
        self.workspace.append_line(self.workspace.worker_log(record.root_id, record.depth, record.name), f"[orchestrator] {line}")


@dataclass(frozen=True)
class GatePlace:
    """Where and how one gate runs: a worker's checkout (``GateStep``) or a resolved merge's
    worktree (delivery/resolving.py)."""

    root_id: str
    directory: Path  # the checkout the gate judges (its ``cwd`` is under it)
    env: Mapping[str, str]  # gate_env's
    sandbox: SandboxSpec | None
    log_path: Path
    tag: str
    heading: str  # the log header's "(...)": which attempt, which commit
    commit: str | None  # what the gate judges, as recorded
    cancel: Wakeup
    cancelled: str  # the reason recorded when ``cancel`` stops it
    stop_point: str = "gate_running"  # the chaos tests' failpoint in the middle of it (``<stop_point>.<name>``)
    watch: HelperWatch | None = None  # the workers' caps it runs under (Confinement.watch; None: none)


def in_checkout(
    ctx: StepContext,
    confinement: Confinement,
    workspace: Workspace,
    gate: Gate,
    *,
    tag: str,
    heading: str,
    commit: str | None,
    cancelled: str,
    stop_point: str = "gate_running",
) -> GatePlace:
    """Where a program judging a worker's checkout runs (a gate, a step's program): in that checkout,
    in the worker's sandbox under its caps, with the gate's environment, its log ``gate_<name>``."""
    record = ctx.record
    env = gate_env(ctx.env, gate)
    return GatePlace(
        root_id=record.root_id,
        directory=ctx.directory,
        env=env,
        sandbox=confinement.spec(record, ctx.directory, ctx.job.config if ctx.job else None, env),
        watch=confinement.watch(*gate_folders(ctx.directory, env)),
        log_path=gate_log(workspace, record, gate["name"]),
        tag=f"{record.root_id}.{record.key}.{tag}-{secrets.token_hex(4)}",
        heading=heading,
        commit=commit,
        cancel=ctx.cancel,
        cancelled=cancelled,
        stop_point=stop_point,
    )


def gate_folders(directory: Path, env: Mapping[str, str]) -> tuple[Path, ...]:
    """What a gate's disk cap counts: the checkout it runs in and its TMPDIR (the worker's, from the
    environment the orchestrator made for it), as the worker's own cap counts them."""
    tmp = env.get("TMPDIR")
    return (directory, Path(tmp)) if tmp and Path(tmp) != directory else (directory,)


def run_gate(
    runner: ProcessRunner, workspace: Workspace, settings: Settings, gate: Gate, place: GatePlace
) -> tuple[GateResult, str]:
    """One gate's run at ``place``: its record entry and its output, plain (no colour codes)."""
    name, timeout, path = gate["name"], float(gate["timeout"]), place.log_path
    path.parent.mkdir(parents=True, exist_ok=True)
    where = f", in {gate['cwd']}" if gate.get("cwd") else ""
    header = f"===== gate {name}: {command_text(gate)} ({place.heading}{where}) =====\n"
    offset = workspace.append_log(path, header.encode("utf-8")) + len(header.encode("utf-8"))
    started = time.monotonic()
    status, code, reason = CRASHED, None, ""
    program = SHELL if gate.get("shell") else gate["run"][0]
    try:
        cwd = gate_dir(place.directory, gate.get("cwd") or "")
        argv = environment_program(gate_argv(gate), place.directory, cwd, settings, place.sandbox)
        limits = place.watch.limits if place.watch is not None else None
        env = project_imports(place.env, place.directory, place.sandbox, settings, argv[0])  # no view: the worker's code first
        handle = runner.spawn(argv, cwd=cwd, env=env, log_path=path, tag=place.tag, sandbox=place.sandbox, limits=limits)
        failpoints.hit(f"{place.stop_point}.{name}")  # the chaos tests' stop in the middle of a gate
    except GateDirError as exc:
        status, reason = NOT_STARTED, str(exc)
    except CommandNotFound as exc:
        status, reason = NOT_STARTED, exc.reason(program)
    except OSError as exc:
        status, reason = NOT_STARTED, f"{program!r} could not start: {exc.strerror or exc}"
    except Exception as exc:  # fail closed: recorded as crashed
        reason = f"raised {type(exc).__name__}: {exc}"
    else:
        status, code, reason = _wait(runner, settings, handle, timeout, started, place)
    output = plain(workspace.read_from(path, offset, READ_BYTES))
    if status in (PASSED, FAILED) and not reason.startswith(CAPPED):
        size = READ_BYTES + 1  # unknown: as if too long to read whole
        with contextlib.suppress(OSError):
            size = path.stat().st_size - offset
        status, reason = _tests_ran(gate, status, code, reason, output, size)
    result = GateResult(
        name=name,
        required=bool(gate["required"]),
        status=status,
        passed=status == PASSED,
        exit_code=code,
        duration=round(time.monotonic() - started, 3),
        log_path=workspace.relative(place.root_id, path),
        commit=place.commit,
        reason=reason,
        output_tail=None if status == PASSED else output_tail(output),
    )
    workspace.append_line(path, f"===== gate {name} {status}" + (f": {reason}" if reason else "") + " =====")
    return result, output


def _wait(
    runner: ProcessRunner, settings: Settings, handle: ProcessHandle, timeout: float, started: float, place: GatePlace
) -> tuple[GateStatus, int | None, str]:
    grace = settings.workers.kill_grace
    watch = place.watch
    try:
        while True:
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                runner.terminate(handle, grace=grace)
                return TIMEOUT, None, f"timed out after {timeout:g}s; its process group was killed"
            if watch is not None:
                code, breach = watch.wait(runner, handle, left, wake=place.cancel)
                if breach:  # over a worker's cap: ended at once, as a worker is (it has nothing to save)
                    runner.terminate(handle, grace=0, first_signal=signal.SIGKILL)
                    return FAILED, None, f"{CAPPED}: {breach}"
            else:
                code = runner.wait(handle, left, wake=place.cancel)
            if code is not None:
                break
            if place.cancel.is_set():
                runner.terminate(handle, grace=grace)
                return CANCELLED, None, place.cancelled
        runner.sweep(handle.tag, handle.started_at)  # nothing a gate started outlives it
        breach = watch.ended(handle) if watch is not None else None
        if breach:  # the kernel held it at a cap (it may have gone on and even exited 0), or its files are
            return FAILED, code, f"{CAPPED}: {breach}" + (f"; exit code {code}" if code else "")
        if code == 0:
            return PASSED, 0, ""
        if code > 0:
            return FAILED, code, f"exit code {code}"
        return CRASHED, code, f"killed by signal {signal_name(-code)}"
    finally:
        runner.release(handle)


def _crashed(workspace: Workspace, record: WorkerRecord, gate: Gate, commit: str | None, exc: Exception) -> GateResult:
    return GateResult(
        name=gate["name"],
        required=bool(gate["required"]),
        status=CRASHED,
        passed=False,
        exit_code=None,
        duration=0.0,
        log_path=workspace.relative(record.root_id, gate_log(workspace, record, gate["name"])),
        commit=commit,
        reason=f"raised {type(exc).__name__}: {str(exc)[:300]}",
    )


def _tests_ran(gate: Gate, status: GateStatus, code: int | None, reason: str, output: str, size: int) -> tuple[GateStatus, str]:
    """A gate that ended 0, or with its runner's "nothing to run" code, after its runner said it
    ran no test: no_tests (closed), or passed with ``allow_no_tests``; the reason says so. An
    output past READ_BYTES is not read for it (a runner that wrote that much ran something)."""
    found = ran_no_tests(output) if size <= READ_BYTES else None
    if found is None or (code or 0) not in found.codes:
        return status, reason
    said = found.text + (f", exit code {code}" if code else "")
    if gate.get("allow_no_tests"):
        return PASSED, f"ran no tests ({said}); allowed by allow_no_tests"
    return NO_TESTS, f"ran no tests ({said}); set allow_no_tests: true on the gate if that is expected"


def feedback(gate: Gate, result: GateResult, output: str) -> str:
    """What the worker's next attempt reads: which gate, its command, why, and its output's tail
    (plain: plaintext.plain, as ``_run_gate`` gives it)."""
    tail = plain(output[-FEEDBACK_BYTES:]).strip() or "(no output)"
    where = f" (in {gate['cwd']})" if gate.get("cwd") else ""
    return (
        f'[orchestrator] Your work did not pass the required quality gate "{gate["name"]}" ({result.reason}).\n'
        f"Its command, run in your directory{where} on your committed work: {command_text(gate)}\n"
        f"The end of its output:\n{tail}\n"
        "Fix what it reports; your work so far is kept in your directory."
    )


class StepPrograms:
    """``StepContext.run`` (quality/steps.py ``SandboxedRun``): a step's program run exactly as a
    gate is (``run_gate``), in the worker's sandbox under its caps, its environment without its API
    credential, bounded by its timeout and the worker's cancel; its log is ``gate_step-<name>``."""

    def __init__(self, settings: Settings, workspace: Workspace, runner: ProcessRunner | None = None) -> None:
        self.settings = settings
        self.workspace = workspace
        self.runner = runner or ProcessRunner()

    @functools.cached_property
    def confinement(self) -> Confinement:
        """The worker's sandbox, as a gate's (made when a step first runs a program)."""
        return Confinement(self.settings, self.workspace)

    def __call__(self, ctx: StepContext, step: str, argv: Sequence[str], timeout: float) -> StepRun:
        # allow_no_tests: a step's program is no test runner, what it prints is not read for "ran no tests".
        gate: Gate = {
            "name": f"step-{step}",
            "run": list(argv),
            "required": True,
            "timeout": float(timeout),
            "allow_no_tests": True,
        }
        place = in_checkout(
            ctx,
            self.confinement,
            self.workspace,
            gate,
            tag=f"step-{step}",
            heading=f"step {step}, attempt {ctx.attempt}",
            commit=None,
            cancelled="the worker was cancelled while the step's program ran",
            stop_point="step_running",
        )
        result, output = run_gate(self.runner, self.workspace, self.settings, gate, place)
        return StepRun(GateStatus(result.status), result.exit_code, output, "" if result.passed else result.reason)
