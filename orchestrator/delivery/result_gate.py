"""The gates on a merged result: a result branch moves only to a tree on which every required gate
that applied to the work in it passed (DESIGN §15, the not-rocket-science rule).

Each worker's gates passed on its own work (quality/gates.py); two such works can still merge,
without a textual conflict, into a tree that fails them (one renames a function, the other adds a
caller of the old name). So landing (delivery/landing.py) writes the merge of the batch as a
candidate first (``MergeRequest(move=False)``: commits written, no ref moved), and ``ResultGate``
judges its tree: the required gates that applied to any worker in it (``applicable``, by each
worker's role and diff, in the job's order), one by one until one does not pass. A failing batch
is searched for its breakers (delivery/bisection.py); the result ref then moves once, to the
candidate of the workers that passed together.

Where a gate runs: a detached worktree of the candidate under ``job_<root>/result_gate/tree``,
added without a checkout by the orchestrator's git and filled by git inside the sandbox (the files
are the workers': a filter or driver of the user's that resolves a name in that folder runs on
them only there), and removed at the end. The next candidate of the same search reuses it, so
only the files that differ are written (a 1,000-file checkout costs seconds on a slow disk):
the orchestrator's git moves its detached HEAD from the repository (``worktrees/<id>/HEAD``: git
in the sandbox cannot, the HEAD file is bound read-only there and git renames over it; under
Landlock git there has a git dir of its own, whose HEAD each sandbox's start writes from that one:
git/worker_gitdir.py), the index
git wrote before the last gate ran is put back (a gate can rewrite the index, and a forged stat
entry would keep its edit of a tracked file), and git in the sandbox cleans and resets the tree:
``clean -ffdx`` (untracked and ignored files, nested repositories), ``reset --hard``, then
``status --ignored`` must show nothing. Anything else (the pointer files changed, a leftover
that will not go) makes the checkout again from nothing. The gates run there as a worker's do (gates.run_gate): the job's
sandbox and network (a job's workers share one config, so the tightest caps and the intersection of
their networks are the job's own), under the workers' caps, with the worker environment without
its credential or ORCHESTRATOR_* variables, a TMPDIR of its own; output in
``logs/<job id>.result_gate_<name>.log``.

Across a restart: each candidate tree's verdict goes in the tree's stage ledger
(workspace/stages.py, key ``result gate <job id> <tree>``) as it is reached, so a landing run again
after a kill -9 takes it as it was (the same workers give the same commits, so the same trees)
and only the run the stop cut off runs once more, saying so.

A candidate of one worker whose tree is the tree its own gates passed on is not run again.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import failpoints
from ..config import Settings
from ..config.quality import Gate
from ..git.invocation import GitFailed, run_git
from ..git.repository import add_detached_worktree, linked_git_dir, repo_op
from ..git.sandboxed import CheckoutGit
from ..models import JobRecord, WorkerRecord
from ..outcomes import PASSED, GateStatus
from ..process.runner import ProcessRunner, Wakeup
from ..quality import gates as gating
from ..workers.confinement import Confinement
from ..workers.environment import helper_env
from ..workers.roles import role_of
from ..workspace.filesystem import atomic_write
from ..workspace.layout import Workspace
from ..workspace.stages import StageLedger, StageState, rerun_note
from .bisection import Trial

log = logging.getLogger("orchestrator.result_gate")

_QUIET = ("-c", "core.hooksPath=/dev/null")
# A line that says why, best first: an exception's (``ImportError: ...``), then a runner's failure line.
_WHY_LINES = (re.compile(r"^\s*[\w.]+(?:Error|Exception)\b:.*$", re.M), re.compile(r"^\s*(?:FAIL|FAILED|error|Error)\b.*$", re.M))


def why_failed(name: str, status: GateStatus, reason: str, output: str) -> str:
    """``tests failed: ImportError: cannot import name 'total' ...``: the gate, and the line of
    its output that says why (its last exception line, else its last failure line, else its last
    line), else its reason."""
    lines = next((found for pattern in _WHY_LINES if (found := pattern.findall(output))), [])
    said = lines[-1].strip() if lines else next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
    said = said[:300]
    if status == GateStatus.FAILED:
        return f"{name} failed: {said or reason}"
    return f"{name} {status}: {reason}" + (f"; {said}" if said else "")


@dataclass(frozen=True)
class _Held:
    """The worktree's checkout as git left it in the sandbox before a gate ran: its private git dir,
    its pointer files, and its index (bytes and modification time)."""

    private: Path
    pins: dict[str, bytes | None]
    index: bytes
    mtime_ns: int


# What git there follows to find its repository (bound read-only under bubblewrap, not under Landlock).
_PINNED = ("commondir", "gitdir", "config.worktree")


def _pins(tree: Path, private: Path) -> dict[str, bytes | None]:
    """The worktree's ``.git`` pointer and its git dir's :data:`_PINNED` files, read without following a
    link (a link or a folder reads as a marker of its own, None as absent)."""
    return {str(path): _read_plain(path) for path in (tree / ".git", *(private / name for name in _PINNED))}


def _read_plain(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return b"\0not a plain file"
    try:
        return os.read(fd, 1 << 16) if stat.S_ISREG(os.fstat(fd).st_mode) else b"\0not a plain file"
    finally:
        os.close(fd)


def _index_of(private: Path) -> tuple[bytes, int]:
    """The index git just wrote in the sandbox (no gate ran since), and its modification time."""
    fd = os.open(private / "index", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read(), os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)


class ResultGate:
    """Judges candidate trees of one job's merge (see the module docstring); ``close`` removes
    its worktree."""

    def __init__(
        self,
        *,
        settings: Settings,
        workspace: Workspace,
        repo: Path,
        job: JobRecord,
        workers: Sequence[WorkerRecord],
        runner: ProcessRunner | None = None,
    ) -> None:
        self.settings = settings
        self.workspace = workspace
        self.repo = repo
        self.job = job
        self.by_name = {w.name: w for w in workers if w.job_id == job.id}
        self.runner = runner or ProcessRunner()
        self.confinement = Confinement(settings, workspace)
        self.ledger = StageLedger(workspace, job.root_id)
        home = workspace.job_dir(job.root_id) / "result_gate"
        self.tree, self.tmp = home / "tree", home / "tmp"
        self.runs = 0  # gate runs made here (not those taken from the ledger)
        self._held: _Held | None = None  # the checkout the next candidate may reuse

    # -- which gates ------------------------------------------------------------------------------
    def gates_for(self, subset: Sequence[str]) -> list[Gate]:
        """The required gates that applied to any worker of ``subset``, in the job's order."""
        wanted: set[str] = set()
        for name in subset:
            record = self.by_name.get(name)
            if record is None:
                continue
            role = role_of(self.settings, record.role)
            for gate in gating.applicable(self.job.config.gates, record.role, role, record.files_changed):
                if gate.get("required"):
                    wanted.add(gate["name"])
        return [g for g in self.job.config.gates if g["name"] in wanted]

    def applies(self, subset: Sequence[str]) -> bool:
        return bool(self.gates_for(subset))

    # -- one candidate ----------------------------------------------------------------------------
    def judge(self, subset: Sequence[str], commit: str | None, before: int = 0) -> Trial:
        """The verdict on the candidate ``commit`` (the merge of ``subset``; None: nothing merged,
        the result as it was, which passes). ``before``: how many times this set was judged in
        this search (its re-run is a stage of its own)."""
        todo = self.gates_for(subset)
        if commit is None or not todo:
            return Trial(True)
        tree = run_git(self.repo, "rev-parse", f"{commit}^{{tree}}").stdout.strip()
        if len(subset) == 1 and self._own_tree(subset[0]) == tree:
            return Trial(True)  # that worker's own gates passed on this very tree
        key = f"result gate {self.job.id} {tree}" + (f" run {before + 1}" if before else "")
        stage = self.ledger.begin(key, commit=commit, workers=list(subset))
        if stage.state is StageState.DONE and stage.verdict is not None:
            return Trial(bool(stage.verdict.get("passed")), str(stage.verdict.get("reason") or ""))
        if stage.rerun:
            self.workspace.log_event(self.job.root_id, f"job {self.job.id}: {rerun_note(f'the result gate on tree {tree[:12]}')}")
        verdict = self._run(todo, subset, commit)
        self.ledger.reached(key, {"passed": verdict.passed, "reason": verdict.reason, "workers": list(subset)})
        failpoints.hit("result_gate_verdict")  # the chaos tests' stop between two candidates' gates
        return verdict

    def _own_tree(self, worker: str) -> str | None:
        record = self.by_name.get(worker)
        commit = record.gated_commit if record is not None else None  # (a tip no gate judged is no verdict)
        if commit is None:
            return None
        done = run_git(self.repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{tree}}", check=False)
        return done.stdout.strip() or None

    def _run(self, todo: list[Gate], subset: Sequence[str], commit: str) -> Trial:
        try:
            self._check_out(commit)
        except (GitFailed, OSError) as exc:  # fail closed: a tree that cannot be checked out does not pass
            log.warning("job %s: the candidate %s could not be checked out", self.job.id, commit, exc_info=True)
            return Trial(False, f"its merged tree could not be checked out for the gates: {exc}")
        for gate in todo:
            env = gating.gate_env(self._env(), gate)
            place = gating.GatePlace(
                root_id=self.job.root_id,
                directory=self.tree,
                env=env,
                sandbox=self.confinement.spec_at(self.job.root_id, None, self.tree, self.tmp, self.job.config, env),
                log_path=self.workspace.logs_dir(self.job.root_id) / f"{self.job.id}.result_gate_{gate['name']}.log",
                tag=f"{self.job.root_id}.result-gate-{secrets.token_hex(4)}",
                heading=f"the merge of {', '.join(subset)}, commit {commit[:12]}",
                commit=commit,
                cancel=Wakeup(),
                cancelled="the merge was cancelled while the gate ran",
                stop_point="result_gate_running",
                watch=self.confinement.watch(self.tree, self.tmp),  # the merged tree holds workers' work: their caps
            )
            self.runs += 1
            try:
                result, output = gating.run_gate(self.runner, self.workspace, self.settings, gate, place)
            except Exception as exc:  # fail closed
                log.exception("gate %s on a merged result raised", gate["name"])
                return Trial(False, f"{gate['name']} raised {type(exc).__name__}: {exc}")
            if result.status != PASSED:
                return Trial(False, why_failed(result.name, result.status, result.reason, output))
        return Trial(True)

    # -- the worktree -----------------------------------------------------------------------------
    def _check_out(self, commit: str) -> None:
        """The candidate's files in the worktree, written by git in the sandbox: the previous
        candidate's checkout moved to this one where there is one (:meth:`_move_to`), else a new
        worktree (:meth:`_fresh`)."""
        if self._held is not None:
            try:
                self._move_to(commit)
                return
            except (GitFailed, OSError) as exc:
                log.info("job %s: the result gate's checkout is made again: %s", self.job.id, exc)
        self._fresh(commit)

    def _fresh(self, commit: str) -> None:
        """A new worktree, its HEAD set as it is added by the orchestrator's git (which never reads
        what a gate may have written there), its files checked out by git in the sandbox."""
        self.close()
        self.tree.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        add_detached_worktree(self.repo, self.tree, commit)
        private = linked_git_dir(self.tree)  # read before anything ran there
        if private is None:
            raise OSError(f"{self.tree} is not a worktree after git added it")
        pins = _pins(self.tree, private)
        self._git().run(*_QUIET, "reset", "--hard", "-q")  # its files are the workers': checked out in the sandbox
        self._held = _Held(private, pins, *_index_of(private))

    def _move_to(self, commit: str) -> None:
        """The worktree of the last candidate made this candidate's: nothing a gate left there kept
        (see the module docstring). Raises (GitFailed, OSError) where it cannot be sure of that."""
        held, self._held = self._held, None  # (until it is done: a failure leaves nothing to reuse)
        assert held is not None
        if _pins(self.tree, held.private) != held.pins:
            raise OSError("its .git pointer or its git dir's commondir, gitdir or config.worktree changed")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=False)  # (FileExistsError: what a gate left in its TMPDIR will not go)
        index = held.private / "index"
        atomic_write(index, held.index, durable=False)  # renamed over: a link a gate put there is replaced
        os.utime(index, ns=(held.mtime_ns, held.mtime_ns), follow_symlinks=False)  # git's racy-entry check needs it
        git = self._git()
        git.run(*_QUIET, "clean", "-ffdxq")  # untracked and ignored files, nested repositories
        head = held.private / "HEAD"
        if head.is_symlink():
            head.unlink()
        run_git(
            self.repo,
            "update-ref",
            "--no-deref",
            "-m",
            "orchestrator: the next candidate",
            f"worktrees/{held.private.name}/HEAD",
            commit,
        )
        git = self._git()  # (under Landlock its git dir of its own takes the HEAD moved: git/worker_gitdir.py)
        git.run(*_QUIET, "reset", "--hard", "-q")
        left = git.run(*_QUIET, "status", "--porcelain", "--ignored", "--untracked-files=all", "-z")
        if left.stdout or left.stderr.strip():
            raise OSError(f"it still differs from the candidate after its clean: {(left.stdout or left.stderr)[:200]!r}")
        self._held = _Held(held.private, held.pins, *_index_of(held.private))

    def _git(self) -> CheckoutGit:
        return CheckoutGit(self.tree, self.confinement.spec_at(self.job.root_id, None, self.tree, self.tmp, self.job.config))

    def _env(self) -> dict[str, str]:
        return helper_env(self.settings, self.tmp, self.workspace, self.job.root_id)

    def close(self) -> None:
        """The worktree removed (never ``git worktree prune``: see delivery/resolving.py)."""
        self._held = None
        if self.tree.exists():
            try:
                repo_op(self.repo, self.repo, "worktree", "remove", "--force", "--force", "--", str(self.tree))
            except GitFailed:
                log.warning("could not remove the result gate's worktree %s", self.tree, exc_info=True)
        shutil.rmtree(self.tree, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
