"""After the pull request: its checks are watched, and a failed check goes back to a worker.

Once a root job's result is pushed and its pull request opened or updated (delivery/publishing.py),
with ``git.check_rounds`` above 0, the job's ``checks`` record says ``watching`` that commit and a
marker file ``checks_watched/<root id>`` in the workspace says so too: a server started later reads
the markers and goes on watching (the job's record is the truth; the marker is its index). Every
``git.checks_poll_interval`` seconds the checks of the watched commit are read from the forge
(delivery/pr_checks.py):

- all passed: ``passed``; the job's result branch is final.
- a review comment on a line of the pull request, by one of the repository's writers, not read
  before, while a round is left: a continue round of the worker whose commit ``git blame`` names
  for that line (delivery/pr_review.py), with the comment's text quoted as its feedback; the
  comment's id is kept in the job's ``checks.answered`` (a restarted server does not send it
  again), also when its line is no worker's (a note says so). Read before the checks, one per reading.
- one failed and a round is left: a continue round (engine/continuing.py) of one worker, with the
  failed checks' names and log tails as its feedback. Which worker, decided here: the workers whose
  changed files a failing check's name or log names; when none is named and the result holds
  several workers' work, the breaker bisection finds by pushing candidates of subsets of their work
  for the forge's CI to judge (delivery/pr_bisection.py, at most ``git.check_bisect_max``; the
  candidates it pushed are counted in the round); else (no bisection, or it stopped) every worker
  that changed something, in turn (round k goes to the k-th, cycling). One worker per round, since a tree runs
  one continue round at a time; its round lands on the result branch, which is pushed again, and
  the new commit is watched from then on. A round that lands nothing leaves the commit as it was,
  and the next failure reading sends the next round to the next worker in turn.
- failed with no round left (or no worker that can take feedback): ``failed``, saying which check.
- none reported at all past ``git.checks_appear_within`` from the push: ``none`` (the forge runs no
  CI on the repository: nothing to wait an hour for).
- unfinished past ``git.checks_timeout`` from the push: ``timed_out``.
- the forge answering what cannot be read (404, 500, no JSON, another shape) ``MAX_FAILED_READS``
  times in a row: ``error`` with the last answer; one good reading resets the count.

Each change is on the job's record (status JSON, check-status, watch, FINAL_RESULT.md, RECORD.json
when the round lands), a note and an event (webhooks). The token is never in any of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..config import PullRequestForge, Settings
from ..delivery import forge, pr_bisection, pr_review, pull_requests
from ..delivery import pr_checks as forge_checks
from ..delivery.bisection import reason_of as bisection_reason
from ..delivery.landing import repository
from ..delivery.pr_checks import WATCHED_DIR, ReadingState, marker
from ..errors import OrchestratorError
from ..git.invocation import run_git
from ..models import JobRecord, WorkerRecord, WorkerStatus
from ..outcomes import CheckRound, ChecksRecord, ChecksState
from ..workers.adapters import get_adapter
from .context import EngineContext
from .continuing import FEEDBACK_MAX_CHARS, Continuing

log = logging.getLogger("orchestrator.engine")

MAX_FAILED_READS = 5  # forge answers in a row that cannot be read before the watch stops (bounded)


def feedback_of(reading: forge_checks.ChecksReading, commit: str, number: int, of: int) -> str:
    """What a worker is told of the failed checks: their names and the end of their logs."""
    lines = [
        f"The pull request's checks failed on commit {commit[:12]} (check round {number} of {of}).",
        "Fix your change so that they pass; their logs end:",
    ]
    for check in reading.failed:
        lines += ["", f"## check {check.name}", check.log_tail]
    text = "\n".join(lines)
    return text if len(text) <= FEEDBACK_MAX_CHARS else text[: FEEDBACK_MAX_CHARS - 1] + "…"


def comment_feedback(comment: pr_review.ReviewComment, number: int, of: int) -> str:
    """What a worker is told of a review comment on a line of its: where, by whom, and its text,
    quoted (a reviewer's words: data for the worker to weigh, never a command the orchestrator runs)."""
    at = f" of commit {comment.commit[:12]}" if comment.commit else ""
    lines = [
        f"A review comment on the pull request (check round {number} of {of}), on line {comment.line} of "
        f"{comment.path}{at}, where git blame names your change; by {comment.author or 'a reviewer'}.",
        "Address it in your change if it is right; its text, quoted:",
        "",
        *("> " + line for line in comment.body.splitlines()),
    ]
    text = "\n".join(lines)
    return text if len(text) <= FEEDBACK_MAX_CHARS else text[: FEEDBACK_MAX_CHARS - 1] + "…"


def able(workers: list[WorkerRecord], settings: Settings) -> list[WorkerRecord]:
    """The workers that changed something and whose kind can take feedback."""
    return [w for w in workers if w.files_changed and not get_adapter(w.kind).continue_refusal(settings)]


def suspects(
    reading: forge_checks.ChecksReading, workers: list[WorkerRecord], settings: Settings
) -> tuple[list[WorkerRecord], str]:
    """The workers a failure may go back to, and why: those whose changed files the failing checks
    name, else every worker that changed something; only kinds that can take feedback."""
    found = able(workers, settings)
    said = "\n".join(f"{c.name}\n{c.log_tail}" for c in reading.failed)
    named = [w for w in found if any(f.get("path") and f["path"] in said for f in w.files_changed)]
    if named:
        return named, NAMED
    return found, IN_TURN


NAMED = "the failing check names its files"
EACH = "each worker in turn"
IN_TURN = f"no failing check names a worker's files: {EACH}"


@dataclass(frozen=True)
class Bisected:
    """What a bisection across the workers found: the breakers in merge order (None: no search, or
    it stopped: each worker in turn), the candidates it pushed, and why, in words."""

    breakers: list[str] | None
    pushes: int
    why: str


class ChecksWatch:
    """Watches the checks of the roots whose marker is in the workspace, on one thread; ``release``
    lets the engine's memory go of a tree (read and written on disk from then on), ``ended`` says
    whether a root's whole tree has ended, ``after`` publishes a changed record (reports, event)."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        continuing: Continuing,
        release: Callable[[str], None],
        ended: Callable[[JobRecord], bool],
        render: Callable[[JobRecord], object],
        environ: Mapping[str, str],
    ) -> None:
        self.ctx = ctx
        self._continuing = continuing
        self._release = release
        self._ended = ended
        self._render = render
        self._environ = environ
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Watch from now on (a restarted server: the markers left by the one before)."""
        if self.ctx.settings.git.check_rounds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="pr-checks", daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def watched(self) -> list[str]:
        folder = self.ctx.workspace.root / WATCHED_DIR
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def _loop(self) -> None:
        while not self.ctx.closing.wait(self.ctx.settings.git.checks_poll_interval):
            for root_id in self.watched():
                if self.ctx.closing.is_set():
                    return
                try:
                    self.poll(root_id)
                except Exception:  # a bug or a full disk: said, and tried again at the next reading
                    log.exception("watching the pull request checks of job %s failed", root_id)

    # -- one reading ---------------------------------------------------------------------------
    def poll(self, root_id: str) -> None:
        ws = self.ctx.workspace
        if self._continuing.busy(root_id):
            return  # its round runs: its end is read at the next reading
        try:
            job = ws.load_job(root_id)
        except (OrchestratorError, OSError, ValueError):
            marker(ws, root_id).unlink(missing_ok=True)  # the job was deleted
            return
        if not self._ended(job):
            return
        checks = job.checks
        if checks is None or checks.final:
            marker(ws, root_id).unlink(missing_ok=True)
            return
        self._release(root_id)
        job = ws.load_job(root_id)  # as it is on disk, once no one else holds it
        checks = job.checks
        assert checks is not None
        self._round_ended(job, checks)
        publish = job.publish
        pr = publish.pull_request if publish is not None else None
        g = self.ctx.settings.git
        token = self._environ.get(pull_requests.token_env(self.ctx.settings), "")
        if pr is None or g.pull_request == PullRequestForge.NONE:
            return self._end(job, checks, ChecksState.ERROR, "no pull request to watch (git.pull_request)")
        try:
            project = pull_requests.project_of(self.ctx.settings, token)
            reading = pull_requests.forge_of(g.pull_request).checks(project, checks.commit, pr.number)
        except forge.ForgeError as exc:
            checks.failed_reads += 1
            why = (str(exc).replace(token, "***") if token else str(exc))[:500]
            if checks.failed_reads >= MAX_FAILED_READS:
                return self._end(
                    job,
                    checks,
                    ChecksState.ERROR,
                    f"the forge's answers could not be read {checks.failed_reads} times in a row: {why}",
                )
            self._save(job, f"pr checks: reading {checks.failed_reads} of at most {MAX_FAILED_READS} failed: {why}")
            return
        checks.failed_reads = 0
        if pr.number is not None and len(checks.rounds) < checks.max_rounds and self._review(job, checks, project, pr.number):
            return  # a review comment's round was started (or noted): the checks are read at the next reading
        now = self.ctx.clock.time()
        if reading.state == ReadingState.PASSED:
            after = f" after {len(checks.rounds)} round(s)" if checks.rounds else ""
            return self._end(job, checks, ChecksState.PASSED, f"all {reading.total} checks of {checks.commit[:12]} passed{after}")
        if reading.state == ReadingState.PENDING:
            return self._still_pending(job, checks, reading, now)
        self._failed(job, checks, reading, project, now)

    def _still_pending(self, job: JobRecord, checks: ChecksRecord, reading: forge_checks.ChecksReading, now: float) -> None:
        """Checks not all finished: ended when none was reported in time, or they ran past the timeout."""
        g = self.ctx.settings.git
        if reading.total == 0 and now - checks.since > g.checks_appear_within:
            return self._end(
                job,
                checks,
                ChecksState.NONE,
                f"no check was reported {g.checks_appear_within:g}s after the push (git.checks_appear_within): "
                "the forge runs none on this commit",
            )
        if now - checks.since > g.checks_timeout:
            waiting = ", ".join(reading.pending) or "no check was reported"
            return self._end(
                job,
                checks,
                ChecksState.TIMED_OUT,
                f"checks not finished {g.checks_timeout:g}s after the push (git.checks_timeout): {waiting}",
            )
        return None

    def _failed(
        self, job: JobRecord, checks: ChecksRecord, reading: forge_checks.ChecksReading, project: forge.ForgeProject, now: float
    ) -> None:
        """A check failed: a round goes to the worker that broke it (bisected when the suspects take
        turns), or the watch ends when no round is left or no worker can take feedback."""
        ws, root_id = self.ctx.workspace, job.root_id
        names = [c.name for c in reading.failed]
        if len(checks.rounds) >= checks.max_rounds:
            return self._end(
                job,
                checks,
                ChecksState.FAILED,
                f"check {', '.join(names)} failed on {checks.commit[:12]}; no round left ({len(checks.rounds)} of {checks.max_rounds}, git.check_rounds)",
            )
        _, workers = ws.load_tree(root_id)
        mine = [w for w in workers if w.job_id == job.id and w.name in job.worker_names]
        found, why = suspects(reading, mine, self.ctx.settings)
        candidates, in_turn = 0, True
        if why == IN_TURN and len(found) > 0:
            bisected = self._bisect(job, checks, workers, project, reading)
            if bisected is None:
                return  # the server is stopping: the next one reads the failure again
            candidates, why = bisected.pushes, bisected.why
            if bisected.breakers is not None:
                in_turn = False
                found = [w for w in found if w.name in bisected.breakers]
                if not found:
                    return self._end(
                        job, checks, ChecksState.FAILED, f"check {', '.join(names)} failed; {why}, which cannot take feedback"
                    )
        if not found:
            return self._end(
                job,
                checks,
                ChecksState.FAILED,
                f"check {', '.join(names)} failed; no worker that changed something can take feedback",
            )
        worker = found[len(checks.rounds) % len(found)] if in_turn else found[0]  # a breaker found: the first
        number = len(checks.rounds) + 1
        checks.rounds.append(CheckRound(number, checks.commit, names, worker.name, why, now, candidates=candidates))
        self._start_round(
            job,
            worker.name,
            f"pr checks: {', '.join(names)} failed on {checks.commit[:12]}; round {number} of {checks.max_rounds} goes to {worker.name} ({why})",
            feedback_of(reading, checks.commit, number, checks.max_rounds),
        )

    def _start_round(self, job: JobRecord, worker: str, note: str, feedback: str) -> None:
        """The round just appended to the job's checks saved, then its worker continued with ``feedback``."""
        self._save(job, note)
        number = len(job.checks.rounds) if job.checks is not None else 0
        try:
            self._continuing.start(job, worker, feedback)
        except OrchestratorError as exc:
            job = self.ctx.workspace.load_job(job.root_id)
            assert job.checks is not None
            job.checks.rounds[-1].state, job.checks.rounds[-1].ended_at = "not started", self.ctx.clock.time()
            self._end(job, job.checks, ChecksState.FAILED, f"round {number} could not start: {exc}")

    # -- a failure no log explains: bisection across the workers -----------------------------------
    def _bisect(
        self,
        job: JobRecord,
        checks: ChecksRecord,
        workers: list[WorkerRecord],
        project: forge.ForgeProject,
        reading: forge_checks.ChecksReading,
    ) -> Bisected | None:
        """The breakers of a failure whose log names no worker's files, found by pushing candidates
        (delivery/pr_bisection.py) when the result holds several workers' work; None: the server
        is stopping (nothing recorded: the next one reads the failure again)."""
        merge = job.merge
        mine = {w.name: w for w in workers if w.job_id == job.id}
        names = [n for n in (merge.merged if merge is not None else ()) if n in mine and mine[n].files_changed]
        g = self.ctx.settings.git
        if len(names) < 2 or g.check_bisect_max <= 0:
            return Bisected(None, 0, IN_TURN)
        failed = ", ".join(c.name for c in reading.failed)
        self._save(job, f"pr checks: {failed} failed on {checks.commit[:12]}; bisecting across {', '.join(names)}")
        search = pr_bisection.Search(
            self.ctx.settings,
            self.ctx.workspace,
            job,
            workers,
            project,
            wait=self.ctx.closing.wait,
            clock=self.ctx.clock.time,
        )
        try:
            found = search.run(names, f"{failed} failed")
        except pr_bisection.Stopped as exc:
            if exc.closing:
                return None
            return Bisected(None, len(search.pushed), f"bisection stopped after {len(search.pushed)} candidate(s): {exc}; {EACH}")
        except (OrchestratorError, OSError) as exc:
            return Bisected(None, len(search.pushed), f"bisection stopped after {len(search.pushed)} candidate(s): {exc}; {EACH}")
        if not found.breakers:
            return Bisected(None, found.pushes, f"bisection found no set of workers that fails; {EACH}")
        said = "; ".join(bisection_reason(b) for b in found.breakers)
        why = f"bisection across {len(names)} workers in {found.pushes} candidate pushes: {said}"
        return Bisected([b.worker for b in found.breakers], found.pushes, why)

    # -- review comments on lines ------------------------------------------------------------------
    def _review(self, job: JobRecord, checks: ChecksRecord, project: forge.ForgeProject, number: int) -> bool:
        """The first review comment on a line not read before: a round to the worker ``git blame`` names
        for its line (delivery/pr_review.py), or a note why none. True when one was taken."""
        try:
            comments = pull_requests.forge_of(project.forge).review_comments(project, number)
        except forge.ForgeError as exc:
            token = project.token
            why = (str(exc).replace(token, "***") if token else str(exc))[:300]
            log.warning("job %s: the pull request's review comments could not be read: %s", job.id, why)
            return False  # the checks go on being watched; the comments are read again next time
        comment = next((c for c in comments if c.id not in checks.answered), None)
        if comment is None:
            return False
        checks.answered.append(comment.id)
        where = f"{comment.path}:{comment.line}"
        _, workers = self.ctx.workspace.load_tree(job.root_id)
        mine = {w.name: w for w in able([w for w in workers if w.job_id == job.id], self.ctx.settings)}
        at = comment.commit if comment.commit and self._has(comment.commit) else checks.commit
        try:
            name = pr_review.blamed_worker(repository(self.ctx.settings, self.ctx.workspace), at, comment.path, comment.line)
        except (OrchestratorError, OSError) as exc:
            name, at = None, f"{at} ({exc})"
        if name is None or name not in mine:
            whose = f"{name}'s, which cannot take feedback" if name else "no worker's"
            self._save(job, f"pr checks: review comment {comment.id} on {where} is on a line of {whose} (git blame): not sent")
            return True
        round_number = len(checks.rounds) + 1
        label = f"review comment {comment.id} on {where}"
        why = f"git blame names its commit for {where}"
        checks.rounds.append(
            CheckRound(round_number, checks.commit, [label], name, why, self.ctx.clock.time(), comment=comment.id)
        )
        self._start_round(
            job,
            name,
            f"pr checks: {label} by {comment.author or 'a reviewer'}; round {round_number} of {checks.max_rounds} goes to {name} ({why})",
            comment_feedback(comment, round_number, checks.max_rounds),
        )
        return True

    def _has(self, commit: str) -> bool:
        try:
            repo = repository(self.ctx.settings, self.ctx.workspace)
        except OrchestratorError:
            return False
        return run_git(repo, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode == 0

    def _round_ended(self, job: JobRecord, checks: ChecksRecord) -> None:
        """A check round whose continue round has ended: its state and cost from the worker's record."""
        last = checks.rounds[-1] if checks.rounds else None
        if last is None or last.state != WorkerStatus.RUNNING:
            return
        rec = self.ctx.workspace.load_worker(job.root_id, job.depth, last.worker)
        done = rec.rounds[-1] if rec.rounds else None
        if done is None or done.started_at < last.started_at:
            last.state = "not started"
        elif done.state == WorkerStatus.RUNNING:
            last.state = "lost: the server stopped during the round"
        else:
            last.state, last.cost_usd = done.state, done.cost_usd
        last.ended_at = done.ended_at if done is not None and done.ended_at else self.ctx.clock.time()
        self._save(
            job,
            f"pr checks: round {last.number} ({last.worker}) ended {last.state}"
            + (f"; pushed {last.pushed[:12]}" if last.pushed else "; nothing pushed"),
        )

    def _end(self, job: JobRecord, checks: ChecksRecord, state: ChecksState, reason: str) -> None:
        checks.state, checks.reason = state.value, reason
        self._save(job, f"pr checks {state.value}: {reason}")
        marker(self.ctx.workspace, job.root_id).unlink(missing_ok=True)

    def _save(self, job: JobRecord, note: str) -> None:
        job.notes.append(note)
        self.ctx.workspace.save_job(job)
        self._render(job)  # RECORD.json and FINAL_RESULT.md say it too
        self.ctx.announce.job(job, note)
        self.ctx.announce.line(job, note)
