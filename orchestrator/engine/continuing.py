"""Continuing a finished worker: ``continue JOB WORKER "feedback"`` (POST /jobs/{id}/workers/{worker}/continue).

A round runs the worker's CLI again in its own checkout and on its own branch (its worktree is made
again from the branch when it was retired). A CLI that can resume its conversation (its adapter
``resumes``: claude's ``--resume ID`` with the ``session_id`` its last result reported, codex's
``exec resume ID`` with its ``thread_id``) gets the
feedback alone; any other gets its task's prompt, the previous round's outcome and the feedback. The
round's attempts follow the worker's earlier ones (retries and gates as in its first run); its work
is committed on the branch and, when its gates pass, squashed onto the result branch as one new
commit (``landing.land_round``), ``merge_into`` and the pull request following it.

The rules, decided here:

- Only a root job whose whole tree has ended (completed, partial, failed or cancelled; not waiting
  for approval), in worktree isolation, and a worker of that root job that ran (not skipped) and
  whose branch exists. A child job's worker merges into its parent worker's branch, so it is not
  continued on its own: the root job's worker is (409 / 422 say so).
- One round at a time per tree (409 while one runs); ``merge``, ``publish`` and ``delete`` of the job
  wait for it (409).
- The job keeps the status it ended with until a round lands work in its result; then it reads what
  is now true (``_status_now``: its workers' outcome, partial while the merge still leaves one out;
  only upward, ``states.AFTER_ROUND``), and the worker leaves the merge's ``left_out``;
  the worker is ``running`` during the round, then the round's status. The round is in
  ``WorkerRecord.rounds`` (status, feedback, resumed session, cost, commits) and a note on the job.
- A kind must carry the feedback to its worker (``Adapter.continue_refusal``): a ``command`` whose
  template has no ``{feedback}``, ``{prompt}`` or ``{prompt_file}`` would run the same line again, so
  it is refused (422) before a round is recorded, naming the template to set.
- The round's commits (the worker's, the result's) say ``continue: <the feedback's first line>``;
  its time is its own (``Round.duration``), and the worker's ``duration`` leaves out the time it stood
  finished before the round (``Round.previous_ended_at``).
- Costs: the round's cost is added to the worker's ``cost_usd`` (so to the job's) and told per round;
  a job whose ``max_cost_usd`` is spent is not continued (409).
- The tree is read from its records on disk during a round (the engine lets go of it first).
- Back to the worker (DESIGN §15, ``send_back``): a root job that ended with workers left out for
  breaking the merged result (``left_out`` entries with a ``combination``, delivery/landing.py) sends
  each back on its own, one after the other, for up to ``gates_retry`` rounds (0: none is): its branch
  and checkout brought up to the result first (``_bring_up``: git on objects, then the checkout in its
  sandbox), the feedback why the merged tree failed, what the others changed and the gate's output.
  Its round lands as any round (``land_round``, gated with the rest). A kind that cannot take
  feedback (``Adapter.feedback_refusal``) is left out at once; rounds spent, its ``left_out`` reason
  says so. The job has not ended while these rounds run (engine/ending.py holds it: ``running`` on
  disk, a marker in its tree's state): it ends once they are over (``done``), with what is then true,
  and is published then. Its rounds are ``Round.sent_back``: they count against ``gates_retry``
  across restarts (a round the server's shutdown cancelled does not); a server started later sends
  the rest back (``Takeover``), a round its stop cut off ending failed (``_lost``). ``cancel JOB``
  stops the round and sends no one else back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .. import states
from ..checkouts.checkout import Changes, CheckoutFailed, finish_checkout
from ..config import Isolation, MergeStrategy
from ..delivery import landing
from ..errors import ConfigError, Conflict, OrchestratorError, ValidationError, WorkerNotFound
from ..git import conflicts as conflict_text
from ..git.commits import Source
from ..git.invocation import run_git
from ..git.job_refs import is_ancestor, job_prefix, update_ref
from ..git.merging import pick
from ..git.repository import check_ref
from ..models import JobRecord, JobStatus, Round, WorkerRecord, WorkerStatus
from ..quality.steps import Step
from ..workers.adapters import get_adapter
from ..workers.adapters.base import session_of
from ..workers.confinement import Confinement
from ..workers.environment import WorkerPrompts
from ..workspace.ids import validate_job_id, validate_worker_name
from .attempts import Attempts
from .context import EngineContext
from .ending import outcome_now
from .resolvers import driver_factory
from .tables import LiveWorker, Outcome, new_tag

log = logging.getLogger("orchestrator.engine")

FEEDBACK_MAX_CHARS = 20_000  # a message to an agent, not a document: a bigger one goes in a file of the repository


def check_feedback(value: object) -> str:
    """The feedback as a round's prompt takes it: a non-empty string of text (400 otherwise)."""
    if not isinstance(value, str):
        raise ValidationError(f"feedback must be a string, not {type(value).__name__}", key="feedback")
    text = value.strip()
    if not text:
        raise ValidationError(
            'feedback is empty: say what the worker should do next, e.g. "good, now also handle the empty case"',
            key="feedback",
        )
    if len(text) > FEEDBACK_MAX_CHARS:
        raise ValidationError(
            f"feedback is {len(text)} characters, more than {FEEDBACK_MAX_CHARS}: shorten it, "
            "or commit the details to the repository and point at them",
            key="feedback",
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"feedback is not valid text (a lone surrogate at {exc.start}): send it as UTF-8", key="feedback"
        ) from exc
    return text


GATE_OUTPUT_CHARS = 6_000  # of each result gate's log, in a breaker's feedback


def combination_feedback(why: str, changes: str, output: str) -> str:
    """A breaker's round's feedback: why its work was left out of the result, what the other workers
    changed (now in its checkout), and the failing gate's output; within ``FEEDBACK_MAX_CHARS``."""
    head = (
        f"Your work was left out of the job's result: {why}.\n"
        "Your checkout now holds the job's result (the other workers' work) merged with yours; "
        "change your work so that the gates pass on the two together, without undoing theirs."
    )
    parts = [head]
    if changes:
        parts.append("What the other workers changed (git diff --stat of the result against the base):\n" + changes)
    if output:
        parts.append("The gate's output on the merged result (its tail):\n" + output)
    text = "\n\n".join(parts)
    return text if len(text) <= FEEDBACK_MAX_CHARS else text[: FEEDBACK_MAX_CHARS - 40] + "\n[... the rest cut off]"


def _left_out_entry(job: JobRecord, worker: str) -> dict[str, str] | None:
    """The merge's ``left_out`` entry of ``worker`` as a combination's breaker (None: not, or no longer)."""
    merge = job.merge
    found = [w for w in merge.left_out if w.get("worker") == worker] if merge is not None else []
    return found[0] if found and found[0].get("combination") is not None else None


def continuation_prompt(prompt: str, record: WorkerRecord, feedback: str) -> str:
    """A round's prompt for a CLI that cannot resume its session: its task's prompt, what its last
    round did, and the feedback."""
    last = record.status.value  # its previous round's (this round has not started yet)
    lines = [
        prompt,
        "",
        "## Your previous attempt",
        f"You already worked on this task in this checkout; your work is committed on this branch. It ended: {last}"
        + (f" ({record.exit_reason})" if record.exit_reason else ""),
    ]
    if record.output:
        lines += ["What you reported:", record.output.strip()[-4000:]]
    if record.diffstat:
        lines += [f"What you changed: {record.diffstat}"]
    lines += ["", "## Feedback on it (do this now, building on your previous work)", feedback]
    return "\n".join(lines)


class Continuing:
    """Starts and runs continue rounds on the engine's context. ``release`` lets the engine's memory
    go of a tree at rest (it is read from disk from then on); ``steps`` are the after-attempt steps
    (gates); ``env`` and ``prompts`` say what the worker starts with, as for its first run."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        release: Callable[[str], None],
        steps: Sequence[Step],
        prompts: WorkerPrompts,
        confinement: Confinement | None,
        after: Callable[[JobRecord, bool], None],
    ) -> None:
        self.ctx = ctx
        self._release = release
        self._steps = steps
        self._prompts = prompts
        self._confinement = confinement
        self._after = after
        self._busy: set[str] = set()  # root ids with a round running
        self._guard = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="continue")
        self.futures: dict[str, Future[None]] = {}
        self._live: dict[str, LiveWorker] = {}  # root id -> the worker its round runs (cancelled at shutdown)
        self._closing = False  # at shutdown: no breaker is sent back again
        self._held: dict[str, threading.Event] = {}  # root id -> set by ``cancel``: its breakers' rounds stop

    def cancel(self, root_id: str) -> bool:
        """``cancel JOB`` of a job whose continue round runs: the round is stopped (kill ladder) and ends
        cancelled, the result unchanged. False: no round of it runs here."""
        with self._guard:
            live = self._live.get(root_id)
            held = self._held.get(root_id)
        if held is not None:
            held.set()
        if live is not None:
            live.cancel.set()
        return live is not None or held is not None

    def busy(self, root_id: str) -> bool:
        with self._guard:
            return root_id in self._busy

    def start(self, job: JobRecord, worker: str, feedback: object) -> dict[str, object]:
        """Check the request, then start the round on a thread of its own: the round's record."""
        text = check_feedback(feedback)
        validate_job_id(job.id)
        validate_worker_name(worker)
        if not job.is_root:
            raise ConfigError(
                f"job {job.id} is a child job: its workers' work merges into the branch of the worker that started it; "
                f"continue that worker of the root job {job.root_id} instead",
                key="job_id",
            )
        if job.config.isolation != Isolation.WORKTREE:
            raise Conflict(f"job {job.id} ran in folder isolation: only a worker with a branch of its own can be continued")
        if job.status is JobStatus.WAITING:
            raise Conflict(f"job {job.id} is waiting for approval: approve or reject it before continuing a worker")
        ws = self.ctx.workspace
        with self._guard:
            if job.root_id in self._busy:
                raise Conflict(f"job {job.id} already has a continue round running: wait for it to end, then continue again")
            self._busy.add(job.root_id)
        try:
            self._release(job.root_id)  # the round changes its records on disk
            job = ws.load_job(job.id)
            try:
                rec = ws.load_worker(job.root_id, job.depth, worker)
            except (OrchestratorError, OSError, ValueError) as exc:
                names = ", ".join(job.worker_names) or "none"
                raise WorkerNotFound(f"job {job.id} has no worker {worker!r} (its workers: {names})") from exc
            self._lost(job, rec)
            self._check(job, rec)
            shown = self._begin(rec, text).to_dict()
            self.futures[job.root_id] = self._pool.submit(self._run, job, rec, text)
        except BaseException:
            with self._guard:
                self._busy.discard(job.root_id)
            raise
        how = "resuming its session" if shown["resumed_session"] else "with a prompt holding its previous outcome"
        self.ctx.announce.line(job, f"worker {rec.name}: continue round {shown['number']} started ({how})", rec.name)
        return {"job_id": job.id, "worker": rec.name, "round": shown}

    def _begin(self, rec: WorkerRecord, feedback: str, *, sent_back: bool = False) -> Round:
        """The round recorded on the worker (on disk) before it runs."""
        rec.rounds.append(
            Round(
                number=len(rec.rounds) + 2,
                feedback=feedback,
                started_at=self.ctx.clock.time(),
                first_attempt=len(rec.attempts) + 1,
                resumed_session=rec.session_id if get_adapter(rec.kind).resumes else None,
                previous_ended_at=rec.ended_at,
                sent_back=sent_back,
            )
        )
        self.ctx.workspace.save_worker(rec)
        return rec.rounds[-1]

    # -- back to the worker: a breaker of the merged result (DESIGN §15) ------------------------------
    def breakers(self, job: JobRecord) -> list[str]:
        """The workers a root job sends back before it ends: those its landing left out for breaking
        the merged result (``left_out`` entries with a ``combination``). None when ``gates_retry`` is 0
        (left out, as the landing said)."""
        merge = job.merge
        if not job.is_root or merge is None or job.config.gates_retry < 1:
            return []
        return [str(w["worker"]) for w in merge.left_out if w.get("combination") is not None]

    def send_back(self, job: JobRecord, done: Callable[[str], None]) -> None:
        """Send the job's breakers back (``breakers``), each on its own, one after the other on a
        thread of the pool, for at most ``gates_retry`` rounds (``_back_to_worker``); then the job ends
        (``done(job id)``). At shutdown nothing is started and ``done`` is not called: the job stays
        held on disk, and the next server sends the rest back."""
        with self._guard:
            if self._closing:
                return
            taken = job.root_id in self._busy
            if not taken:
                self._busy.add(job.root_id)
                self._held[job.root_id] = threading.Event()
        if taken:  # a round of an unended root cannot run: nothing to wait for
            done(job.id)
            return
        try:
            self.futures[job.root_id] = self._pool.submit(self._send_back, job, self.breakers(job), done)
        except BaseException:
            with self._guard:
                self._busy.discard(job.root_id)
                self._held.pop(job.root_id, None)
            raise

    def _send_back(self, job: JobRecord, breakers: list[str], done: Callable[[str], None]) -> None:
        stop = self._held[job.root_id]
        try:
            self._release(job.root_id)  # the rounds change its records on disk
            for name in breakers:
                if stop.is_set() or self._closing:
                    break
                try:
                    self._back_to_worker(job, name, stop)
                except Exception:  # a bug or a full disk: said in the log; the job keeps what its records say
                    log.exception("sending worker %s of job %s back failed", name, job.id)
        finally:
            with self._guard:
                self._busy.discard(job.root_id)
                self._live.pop(job.root_id, None)
                self._held.pop(job.root_id, None)
                closing = self._closing
            if not closing:  # at shutdown the job stays held: the next server sends the rest back
                try:
                    if stop.is_set():
                        said = self.ctx.workspace.load_job(job.id)
                        said.notes.append("cancel requested: no more workers sent back; the job ends with what landed")
                        self.ctx.workspace.save_job(said)
                    done(job.id)
                except Exception:  # said in the log; a restart ends it from its marker
                    log.exception("ending job %s after its workers sent back failed", job.id)

    def _back_to_worker(self, job: JobRecord, name: str, stop: threading.Event) -> None:
        """Up to ``gates_retry`` rounds of the breaker ``name``, each with why the merged result failed
        and what the others changed, its checkout first brought up to the result (``_bring_up``); its
        work lands through ``landing.land_round``, gated with the rest. A kind that cannot take
        feedback is left out at once; rounds spent, it stays left out, its entry saying how many. The
        rounds spent are read from its record: a restarted server goes on where the last stopped."""
        ws = self.ctx.workspace
        rounds = job.config.gates_retry
        while True:
            job = ws.load_job(job.id)
            entry = _left_out_entry(job, name)
            if entry is None or job.merge is None:
                return  # its work landed
            rec = ws.load_worker(job.root_id, job.depth, name)
            self._lost(job, rec)  # a round the last server's stop cut off
            spent = sum(1 for r in rec.rounds if r.sent_back and r.state != WorkerStatus.CANCELLED.value)
            refused = get_adapter(rec.kind).feedback_refusal(self.ctx.settings)
            if refused or spent >= rounds:
                if refused:
                    job.notes.append(
                        f"left out: {name} ({entry['reason']}); not sent back: its kind cannot take feedback ({refused})"
                    )
                else:
                    entry["reason"] += f"; not fixed by {spent} round(s) sent back"
                    job.notes.append(f"left out: {name} ({entry['reason']})")
                ws.save_job(job)
                self._after(job, False)
                self.ctx.announce.line(job, f"worker {name}: left out ({entry['reason']})", name)
                return
            if stop.is_set() or self._closing or not rec.branch or not rec.status.terminal:
                return
            feedback = combination_feedback(self._why_now(rec, entry), self._result_changes(job), self._gate_output(job))
            job.notes.append(f"worker {name} sent back ({spent + 1} of {rounds} rounds): {entry['reason']}")
            ws.save_job(job)
            number = self._begin(rec, feedback, sent_back=True).number
            self.ctx.announce.line(job, f"worker {name}: continue round {number} started (sent back: it broke the result)", name)
            self._guarded_round(job, rec, feedback, bring_up=True)

    @staticmethod
    def _why_now(rec: WorkerRecord, entry: Mapping[str, Any]) -> str:
        """Why the breaker's work is out of the result: its last round's note, else the landing's reason."""
        last = rec.rounds[-1] if rec.rounds else None
        if last is not None and last.merge_note and last.merge_note.startswith("not merged: "):
            return last.merge_note.removeprefix("not merged: ")
        return f"it {entry['reason']}"

    def _result_changes(self, job: JobRecord) -> str:
        """What the result holds that its base did not (the other workers' work): ``git diff --stat``."""
        merge = job.merge
        if merge is None or not merge.base or not merge.result_commit:
            return ""
        repo = landing.repository(self.ctx.settings, self.ctx.workspace)
        done = run_git(repo, "diff", "--no-ext-diff", "--no-textconv", "--stat", merge.base, merge.result_commit, check=False)
        return done.stdout.strip()[-4000:]

    def _gate_output(self, job: JobRecord) -> str:
        """The tail of the merged result's gate logs (delivery/result_gate.py): the failing run is last."""
        logs = sorted(self.ctx.workspace.logs_dir(job.root_id).glob(f"{job.id}.result_gate_*.log"))
        return "\n".join(p.read_text(encoding="utf-8", errors="replace")[-GATE_OUTPUT_CHARS:] for p in logs)

    def _bring_up(self, job: JobRecord, rec: WorkerRecord) -> str:
        """The breaker's branch and checkout brought up to the job's result: what the result holds
        since its base squashed onto the branch (``merging.pick``, by the orchestrator's git on
        objects), the checkout following it in the worker's sandbox (``Worktrees.bring_in``). ""
        when done (or nothing to bring), else why not."""
        wt, merge = self.ctx.checkout.worktrees(), job.merge
        if wt is None or merge is None or not merge.result_commit or not merge.base or not rec.branch:
            return ""
        prefix = self.ctx.settings.git.branch_prefix
        ref = check_ref(wt.branch(rec))
        with wt.holding(rec):
            tip = wt.tip(rec)
            if is_ancestor(wt.repo, merge.result_commit, tip):
                return ""
            subject = f"The job's result brought in (what the other workers changed), commit {merge.result_commit[:12]}"
            source = Source(rec.name, merge.result_ref or ref, merge.result_commit, subject, None)
            runner = driver_factory(self.ctx)
            done = pick(
                wt.repo,
                ref,
                merge.base,
                source,
                MergeStrategy.AUTO,
                prefix=prefix,
                root_id=job.root_id,
                drivers=runner(job) if runner is not None else None,
            )
            if not done.merged:
                return f"the job's result could not be brought into its branch: it conflicts in: {conflict_text.listed(done.conflicts)}"
            if not done.added or done.commit is None:
                return ""
            problem = wt.bring_in(rec, tip, done.commit)
            if problem:
                update_ref(wt.repo, ref, tip, done.commit, under=job_prefix(prefix, job.root_id))
                return f"the job's result could not be brought into its checkout: {problem}"
        ws = self.ctx.workspace
        ws.append_line(
            ws.worker_log(rec.root_id, rec.depth, rec.name),
            f"[orchestrator] the job's result brought into {wt.branch(rec)} as commit {done.commit[:12]}",
        )
        return ""

    def _lost(self, job: JobRecord, rec: WorkerRecord) -> None:
        """A round its record says runs, though none runs here: the server stopped during it. Whatever
        it left running is ended, and the round ends failed, saying so (its work stays on the branch)."""
        last = rec.rounds[-1] if rec.rounds else None
        if last is None or last.state != WorkerStatus.RUNNING:
            return
        self.ctx.executor.sweep_prefix(f"{job.root_id}.")
        last.state, last.ended_at = WorkerStatus.FAILED.value, self.ctx.clock.time()
        last.exit_reason = last.merge_note = "lost: the server stopped during the round; the result is unchanged"
        if rec.status is WorkerStatus.RUNNING:
            states.set_worker_status(rec, WorkerStatus.FAILED)
        self.ctx.workspace.save_worker(rec)

    def _check(self, job: JobRecord, rec: WorkerRecord) -> None:
        if rec.status is WorkerStatus.SKIPPED or not rec.attempts:
            raise Conflict(f"worker {rec.name} of job {job.id} never ran ({rec.status.value}): submit a new job instead")
        if not rec.status.terminal:
            raise Conflict(f"worker {rec.name} of job {job.id} is {rec.status.value}: continue it once it has ended")
        if not rec.branch:
            raise Conflict(f"worker {rec.name} of job {job.id} has no branch to go on from")
        refused = get_adapter(rec.kind).continue_refusal(self.ctx.settings)
        if refused:
            raise ConfigError(
                f"worker {rec.name} of job {job.id} ({rec.kind}) cannot be continued: {refused}", key="orchestrator.command"
            )
        if not landing.branch_exists(self.ctx.settings, self.ctx.workspace, rec.branch):
            raise Conflict(
                f"worker {rec.name}'s branch {rec.branch} is no longer in the repository (deleted): "
                "there is no work to go on from; submit a new job"
            )
        limit = job.config.max_cost_usd
        if limit:
            _, workers = self.ctx.workspace.load_tree(job.root_id)
            spent = sum(w.cost_usd or 0.0 for w in workers)
            if spent >= limit:
                raise Conflict(
                    f"job {job.id} has spent ${spent:.2f} of its max_cost_usd ${limit:.2f}: a round would cost more; "
                    "submit a new job with a budget of its own"
                )

    # -- the round, on its own thread ------------------------------------------------------------
    def _run(self, job: JobRecord, rec: WorkerRecord, feedback: str) -> None:
        try:
            self._guarded_round(job, rec, feedback)
        finally:
            with self._guard:
                self._busy.discard(job.root_id)
                self._live.pop(job.root_id, None)

    def _guarded_round(self, job: JobRecord, rec: WorkerRecord, feedback: str, *, bring_up: bool = False) -> None:
        """A round, its failure in the engine said on the round (never "running" forever)."""
        try:
            self._round(job, rec, feedback, bring_up=bring_up)
        except Exception as exc:  # a bug or a full disk: the round ends failed, said, never "running" forever
            log.exception("continue round of worker %s of job %s failed in the engine", rec.name, job.id)
            with self.ctx.tables.locked():
                last = rec.rounds[-1]
                if last.ended_at is None:
                    last.state, last.ended_at = WorkerStatus.FAILED.value, self.ctx.clock.time()
                    last.exit_reason = f"internal error: {exc}"
                    if rec.status is WorkerStatus.RUNNING:
                        states.set_worker_status(rec, WorkerStatus.FAILED)
            self.ctx.workspace.save_worker(rec)

    def _round(self, job: JobRecord, rec: WorkerRecord, feedback: str, *, bring_up: bool = False) -> None:
        ctx, ws = self.ctx, self.ctx.workspace
        round_ = rec.rounds[-1]
        before = {
            "gates": list(rec.gates),
            "gated_commit": rec.gated_commit,
            "cost": rec.cost_usd,
            "merged_at": rec.gated_commit or rec.commit,  # what the result holds of it (a failed round restores it)
        }
        live = LiveWorker(record=rec, job=job, tag=new_tag(job.root_id, rec.key))
        with self._guard:
            self._live[job.root_id] = live
        adapter = get_adapter(rec.kind)
        try:
            directory = ctx.checkout.prepare(rec, job)  # its worktree again, from its branch, when it was retired
            problem = self._bring_up(job, rec) if bring_up else ""
        except (CheckoutFailed, OrchestratorError, OSError) as exc:
            self._end(job, rec, Outcome(WorkerStatus.FAILED, str(exc), error=str(exc)), before, None)
            return
        if problem:
            self._end(job, rec, Outcome(WorkerStatus.FAILED, problem, error=problem), before, None)
            return
        rendered = self._prompts.render(rec, job, directory) if adapter.needs_prompt(ctx.settings) else None
        if round_.resumed_session:
            prompt = feedback
        else:
            prompt = continuation_prompt(rendered.text if rendered is not None else rec.task, rec, feedback)
        if adapter.needs_prompt_file(ctx.settings):
            ws.prompt_path(rec.root_id, rec.depth, rec.name).write_text(prompt, encoding="utf-8")
        env = ctx.hooks.worker_env(rec, job.config, rendered.shared if rendered is not None else None)
        ws.append_line(
            ws.worker_log(rec.root_id, rec.depth, rec.name),
            f"===== continue round {round_.number}: {'resuming session ' + round_.resumed_session if round_.resumed_session else 'a new session with the previous outcome'} =====",
        )
        execution = Attempts(
            ctx,
            live,
            adapter=adapter,
            env=env,
            prompt=prompt,
            on_change=self._on_change(job, live),
            worker_dir=directory,
            steps=[step for step in self._steps if step.applies(job)],
            confinement=self._confinement,
            resume_session=round_.resumed_session,
            round_feedback=feedback,
        )
        outcome = execution.run(None, first=round_.first_attempt)
        with ctx.tables.locked():
            execution.apply_deferred()
        execution.sweep()
        self._end(
            job,
            rec,
            outcome,
            before,
            finish_checkout(ctx.checkout, rec, succeeded=outcome.status is WorkerStatus.SUCCESS, known=execution.known_changes),
        )

    def _on_change(self, job: JobRecord, live: LiveWorker) -> Callable[..., Callable[[], None]]:
        """``Attempts``'s ``on_change``: the record (on disk, as the tree is not held) and an event."""
        ws = self.ctx.workspace

        def changed(
            record: WorkerRecord, message: str, begin: Callable[[], None] | None = None, write: bool = True
        ) -> Callable[[], None]:
            with self.ctx.tables.locked():
                if begin is not None:
                    begin()
                copy = record.copy()

            def save() -> None:
                ws.save_worker(copy)

            if write:
                save()
            self.ctx.announce.line(job, f"worker {record.name}: {message}", record.name)
            return save

        return changed

    def _end(self, job: JobRecord, rec: WorkerRecord, outcome: Outcome, before: dict[str, Any], changes: Changes | None) -> None:
        """The round's end: its record, its work onto the result when it passed its gates, the job's note."""
        ctx, ws = self.ctx, self.ctx.workspace
        round_ = rec.rounds[-1]
        if changes is not None and changes.error is not None and outcome.status is WorkerStatus.SUCCESS:
            outcome = Outcome(WorkerStatus.FAILED, changes.error, error=changes.error, parsed=outcome.parsed)
        parsed = outcome.parsed
        cost = parsed.cost_usd if parsed is not None else None
        with ctx.tables.locked():
            if changes is not None:
                changes.apply_to(rec)
            rec.exit_reason, rec.error = outcome.exit_reason, outcome.error
            if parsed is not None:
                rec.output = parsed.output
                rec.session_id = session_of(parsed.extra) or rec.session_id
            if cost is not None:
                rec.cost_usd = (before["cost"] or 0.0) + cost
            if rec.status is not WorkerStatus.RUNNING:  # never started (its checkout failed)
                states.set_worker_status(rec, WorkerStatus.RUNNING)
            states.set_worker_status(rec, outcome.status)
            round_.state, round_.ended_at = outcome.status.value, ctx.clock.time()
            rec.ended_at = round_.ended_at
            round_.exit_reason, round_.cost_usd, round_.commit = outcome.exit_reason, cost, rec.commit
            passed = outcome.status is WorkerStatus.SUCCESS
            if not passed:  # what is merged stays what its gates passed before
                rec.gates, rec.gated_commit = before["gates"], before["gated_commit"]
            ctx.add_cost(job.root_id, cost)
        merge = None
        if passed:
            commit = rec.gated_commit or rec.commit
            if commit is None:
                note = "not merged: the round committed nothing"
            else:
                try:
                    merge, note = landing.land_round(
                        job,
                        rec,
                        commit,
                        before["merged_at"],
                        settings=ctx.settings,
                        workspace=ws,
                        now=ctx.clock.time(),
                        drivers=driver_factory(ctx),
                    )
                except (OrchestratorError, OSError) as exc:
                    note = f"not merged: {exc}"
        else:
            note = f"not merged: the round {outcome.status.value} ({outcome.exit_reason}); the result is unchanged"
        now_true = self._status_now(job, rec, merge.left_out) if merge is not None else None
        with ctx.tables.locked():
            round_.merge_note = note
            if merge is not None:
                round_.result_commit = merge.result_commit
                job.merge = merge
            job.notes.append(f"worker {rec.name} round {round_.number}: {round_.state}; {note}")
            if now_true is not None and now_true is not job.status and states.set_job_status_after_round(job, now_true):
                job.notes.append(f"job {now_true.value}: worker {rec.name}'s round {round_.number} landed its work")
        ws.save_worker(rec)
        ws.save_job(job)
        with self._guard:  # a job held for its breakers' rounds is recorded and published once, as it ends
            held = job.root_id in self._held
        self._after(job, merge is not None and not held)  # the reports; merged: RECORD.json, the push and pull request
        if merge is not None:
            ws.save_job(job)  # its record's digest and its publish record
        ctx.announce.line(job, f"worker {rec.name}: continue round {round_.number} {round_.state}; {note}", rec.name)
        ctx.checkout.retire(rec, job)

    def _status_now(self, job: JobRecord, rec: WorkerRecord, left_out: Sequence[Mapping[str, str]]) -> JobStatus | None:
        """What the job reads once the round's work landed: its workers' outcome (``ending.outcome_now``),
        the round's worker as it is now; partial while the merge still leaves a worker out. None:
        only better than its status is taken (a round never makes a job read worse)."""
        _, workers = self.ctx.workspace.load_tree(job.root_id)
        found = outcome_now(job, [*(w for w in workers if w.key != rec.key), rec], left_out)
        return found if found in states.AFTER_ROUND.get(job.status, frozenset()) else None

    def close(self, timeout: float) -> None:
        """At shutdown: running rounds are cancelled (kill ladder) and waited for."""
        with self._guard:
            self._closing = True
            for live in self._live.values():
                live.cancel.set()
        for future in list(self.futures.values()):
            try:
                future.result(timeout)
            except Exception:  # said in the log by _run
                pass
        self._pool.shutdown(wait=False)
