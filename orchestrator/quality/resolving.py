"""``merge_strategy: resolve``: a worker resolves a merge conflict, and the merged tree is gated again.

The merge goes as ``auto`` (git/merging.py) until a worker's commit conflicts with the result so
far; then ``ConflictResolver`` is asked. It makes a worktree of the result so far (detached, under
``job_<root>/resolve/<worker key>/tree``), starts ``git merge --no-commit`` of the worker's commit
there (the user's hooks off), and runs the resolver: an AI CLI (``git.resolver_kind``, default the
conflicting worker's kind; ``resolver_model``) or any ``command``, with a prompt that gives both
sides' subtasks, their diffs of the conflicting files against the base and the files
(workers/prompts.render_resolver_prompt). It runs like a worker: in the worker sandbox
(workers/confinement.py: it writes only that worktree, its git data and its own TMPDIR), its
output appended to ``logs/<worker key>.resolve.log``, bounded by ``resolver_timeout``, its
processes carrying the tree's tag (a cancel or a restart finds them), never an ORCHESTRATOR_*
variable (it cannot start jobs), its cost counted toward the tree's cost and budget (an estimate
where its CLI reports none: workers/costs.py); it is not started once the tree's budget is spent.

What the worktree holds when it exits is the resolution (``git add -A`` then ``write-tree``, so a
commit of its own counts no more than its files). It is refused when the CLI failed or timed out,
when a conflict marker is left in a conflicting file (a line starting ``<<<<<<< ``, ``>>>>>>> ``,
``||||||| ``, or more ``=======`` lines than either side had), or when a required gate that applied
to either side's workers does not pass on it, run in that worktree in the same sandbox
(gates.run_gate; log ``logs/<worker key>.resolve.gate_<name>.log``). A refused attempt is followed
by another, from the merge again and told why (``resolver_retries``); the last refusal leaves the
worker's branch out of the result, as ``auto`` would, with the reason. Each conflict's
``records.Resolution`` (files, resolver, attempts with cost, gates, accepted or why not) goes in
the merge's record. The worktree is removed afterwards; prompts stay beside it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import protocol
from ..config import JobConfig, Settings
from ..errors import ConfigError
from ..git import gitcmd, worker_objects
from ..git.gitcmd import GitFailed, git_bytes, run_git
from ..git.gitwork import repo_op
from ..git.merging import Conflicted
from ..git.sandboxed import CheckoutGit
from ..models import JobRecord, WorkerRecord
from ..process.runner import CommandNotFound, ProcessRunner, Wakeup, signal_name
from ..records import GateResult, Resolution, ResolverAttempt
from ..selection.scoring import wait_for
from ..workers import costs
from ..workers.adapters import get_adapter
from ..workers.adapters.base import Adapter, WorkerContext
from ..workers.confinement import Confinement
from ..workers.environment import base_env
from ..workers.prompts import render_resolver_prompt
from ..workers.roles import role_of
from ..workspace.ids import worker_key
from ..workspace.layout import Workspace
from . import gates as gating

log = logging.getLogger("orchestrator.resolving")

DIFF_BYTES = 20_000  # of each side's diff in the prompt
READ_CHARS = 200_000  # of the resolver's output read back
_MARKER = re.compile(rb"^(?:<{7}|>{7}|\|{7})(?: |\r?$)", re.M)
_SEPARATOR = re.compile(rb"^={7}\r?$", re.M)
_QUIET = ("-c", "core.hooksPath=/dev/null", "-c", "merge.conflictStyle=merge", "-c", "rerere.enabled=false")


def markers_left(text: bytes, sides: Sequence[bytes]) -> bool:
    """A conflict marker is left in ``text``: a ``<<<<<<<``, ``>>>>>>>`` or ``|||||||`` line, or
    more ``=======`` lines than either side had (a heading underline that was there stays)."""
    if _MARKER.search(text):
        return True
    return len(_SEPARATOR.findall(text)) > max((len(_SEPARATOR.findall(side)) for side in sides), default=0)


class ConflictResolver:
    """``git.merging.Resolver`` for one merge of ``job``'s workers (see the module docstring).
    ``budget``: why the tree may spend no more (None: it may); ``on_cost``: each attempt's cost."""

    def __init__(
        self,
        *,
        settings: Settings,
        workspace: Workspace,
        runner: ProcessRunner,
        confinement: Confinement,
        repo: Path,
        job: JobRecord,
        workers: Sequence[WorkerRecord],
        base: str,
        budget: Callable[[], str | None] = lambda: None,
        on_cost: Callable[[float | None], None] = lambda usd: None,
        cancel: Wakeup | None = None,
    ) -> None:
        self.settings = settings
        self.workspace = workspace
        self.runner = runner
        self.confinement = confinement
        self.repo = repo
        self.job = job
        self.config: JobConfig = job.config
        self.by_name = {w.name: w for w in workers if w.job_id == job.id}
        self.base = base
        self.budget = budget
        self.on_cost = on_cost
        self.cancel = cancel or Wakeup()

    def __call__(self, at: Conflicted) -> Resolution:
        worker = self.by_name.get(at.worker)
        kind = self.config.resolver_kind or (worker.kind if worker is not None else "") or self.config.worker
        model = self.config.resolver_model or None
        label = f"{kind} ({model})" if model else kind
        files = tuple(dict.fromkeys(c.path for c in at.conflicts))
        key = worker_key(self.job.depth, at.worker)
        home = self.workspace.job_dir(self.job.root_id) / "resolve" / key
        tree, tmp = home / "tree", home / "tmp"
        log_path = self.workspace.logs_dir(self.job.root_id) / f"{key}.resolve.log"
        attempts: list[ResolverAttempt] = []
        ran_gates: tuple[GateResult, ...] = ()
        refused = ""
        try:
            adapter = get_adapter(kind)
        except ConfigError as exc:
            return Resolution(at.worker, files, label, False, f"the resolver could not start: {exc.message}")
        try:
            for number in range(1, self.settings.git.resolver_retries + 2):
                why = self.budget()
                if why:
                    refused = f"no resolver attempt {number}: {why}"
                    break
                if self.cancel.is_set():
                    refused = f"no resolver attempt {number}: the merge was cancelled"
                    break
                try:
                    self._prepare(tree, tmp, at)
                except (GitFailed, OSError) as exc:  # the merge is left out, never the landing failed
                    log.warning("job %s: the resolver's worktree could not be made", self.job.id, exc_info=True)
                    refused = f"the merge could not be set up for the resolver: {exc}"
                    break
                prompt = self._prompt(at, files, refused)
                (home / f"prompt_{number}.md").write_text(prompt, encoding="utf-8")
                attempt, problem = self._run(adapter, model, number, prompt, files, (home, tree, tmp, log_path))
                resolved = None
                try:
                    if not problem:
                        resolved, problem = self._take(tree, at, files)
                    if not problem and resolved is not None:
                        ran_gates, problem = self._gate(at, tree, tmp, resolved, number)
                except (GitFailed, OSError) as exc:  # fail closed: a resolution that cannot be read is refused
                    log.warning("job %s: a resolution could not be checked", self.job.id, exc_info=True)
                    problem = f"the resolution could not be checked: {exc}"
                attempts.append(ResolverAttempt(number, *attempt, refused=problem, log_path=self._rel(log_path)))
                self._note(at.worker, f"resolver attempt {number} ({label}) on {', '.join(files)}: {problem or 'accepted'}")
                if not problem:
                    shown = f"; gates passed: {', '.join(g.name for g in ran_gates)}" if ran_gates else ""
                    return Resolution(
                        at.worker,
                        files,
                        label,
                        True,
                        f"resolved by {label} in attempt {number}{shown}",
                        tuple(attempts),
                        ran_gates,
                        resolved,
                    )
                refused = problem
        finally:
            self._remove(tree)
            shutil.rmtree(tmp, ignore_errors=True)
        return Resolution(at.worker, files, label, False, refused, tuple(attempts), ran_gates)

    # -- the worktree -------------------------------------------------------------------------
    def _prepare(self, tree: Path, tmp: Path, at: Conflicted) -> None:
        """A worktree of the result so far with the worker's commit being merged into it."""
        self._remove(tree)
        tree.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # --force: an earlier attempt's entry whose folder is gone (its removal failed) is replaced
        # rather than refused; the path is the orchestrator's own.
        repo_op(
            self.repo,
            self.repo,
            *_QUIET,
            "worktree",
            "add",
            "-q",
            "--no-checkout",
            "--force",
            "--detach",
            "--",
            str(tree),
            at.head,
        )
        git = self._git(tree, tmp)
        git.run("reset", "--hard", "-q")  # its files are the workers': checked out in the sandbox too
        # In the resolver's sandbox: the merge checks out the workers' files, and a filter or driver of
        # the user's that resolves a name from the folder it runs in would run a worker's code. With the
        # pinned identity (git/sandboxed.py), as a merge needs one even when it commits nothing.
        done = git.run(*_QUIET, "merge", "--no-commit", "--no-ff", "-q", at.commit, check=False)
        if done.returncode not in (0, 1):
            raise GitFailed(["merge", "--no-commit", at.commit], done.returncode, gitcmd.text(done.stderr))

    def _git(self, tree: Path, tmp: Path) -> CheckoutGit:
        """Git on the resolver's worktree, in the sandbox the resolver runs in."""
        return CheckoutGit(tree, self.confinement.spec_at(self.job.root_id, None, tree, tmp, self.config))

    def _remove(self, tree: Path) -> None:
        if tree.exists():
            try:
                repo_op(self.repo, self.repo, "worktree", "remove", "--force", "--force", "--", str(tree))
            except GitFailed:
                log.warning("could not remove the resolver's worktree %s", tree, exc_info=True)
        # Never ``git worktree prune``: it would drop the admin entry of a worktree of the user's
        # whose folder is away (an unmounted drive); a left entry is git's to expire.
        shutil.rmtree(tree, ignore_errors=True)

    # -- the resolver ------------------------------------------------------------------------
    def _prompt(self, at: Conflicted, files: Sequence[str], refused: str) -> str:
        worker = self.by_name.get(at.worker)
        involved = dict.fromkeys(w for c in at.conflicts for w in c.workers if w != at.worker)
        others = [(name, self.by_name[name].task if name in self.by_name else "") for name in involved]
        diffs = (self._diff(at.head, files), self._diff(at.commit, files))
        return render_resolver_prompt(at.worker, worker.task if worker else "", others, files, diffs, refused)

    def _diff(self, commit: str, files: Sequence[str]) -> str:
        try:
            text = run_git(
                self.repo, "diff", "--no-color", "--no-ext-diff", "--no-textconv", self.base, commit, "--", *files
            ).stdout
        except GitFailed as exc:
            return f"(no diff: {exc})"
        return text if len(text) <= DIFF_BYTES else text[:DIFF_BYTES] + f"\n... ({len(text) - DIFF_BYTES} more characters)"

    def _env(self, tmp: Path) -> dict[str, str]:
        env = {k: v for k, v in base_env(self.settings).items() if not k.startswith(protocol.PREFIX)}
        env.update({"TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)})
        return env

    def _run(
        self,
        adapter: Adapter,
        model: str | None,
        number: int,
        prompt: str,
        files: Sequence[str],
        where: tuple[Path, Path, Path, Path],
    ) -> tuple[tuple[int | None, float, float | None, str | None], str]:
        """One resolver run: (exit code, seconds, cost, cost basis) and why it failed ("": it did not).
        ``where``: its folder (prompts), the worktree, its TMPDIR and its log."""
        home, tree, tmp, log_path = where
        timeout = self.settings.git.resolver_timeout
        settings = self.settings
        if adapter.name == "command" and settings.git.resolver_command:  # a resolver command of its own
            settings = dataclasses.replace(
                settings, orchestrator=dataclasses.replace(settings.orchestrator, command=list(settings.git.resolver_command))
            )
        env = self._env(tmp)
        prompt_file = home / f"prompt_{number}.md"  # the workspace is hidden in the sandbox but for this
        sandbox = self.confinement.spec_at(self.job.root_id, adapter.name, tree, tmp, self.config, env, readable=(prompt_file,))
        ctx = WorkerContext(
            task=f"Resolve the merge conflict in: {', '.join(files)}",
            prompt=prompt,
            prompt_file=prompt_file,
            worker_dir=tree,
            depth=self.job.depth,
            max_recursion_depth=0,
            attempt=number,
            settings=settings,
            time_left=timeout,
            model=model,
            sandboxed=sandbox is not None,
            env=env,
        )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        header = f"===== resolver attempt {number} ({adapter.name}) in {tree} =====\n".encode()
        offset = self.workspace.append_log(log_path, header) + len(header)
        started = time.monotonic()
        try:
            argv = adapter.build_argv(ctx)
            tag = f"{self.job.root_id}.resolve-{secrets.token_hex(6)}"
            handle = self.runner.spawn(
                argv, cwd=tree, env={**env, **adapter.extra_env(ctx)}, log_path=log_path, tag=tag, sandbox=sandbox
            )
        except CommandNotFound as exc:
            return (None, 0.0, None, None), f"the resolver's CLI was not found: {exc.strerror}"
        except (ConfigError, OSError, ValueError) as exc:
            return (None, 0.0, None, None), f"the resolver could not start: {getattr(exc, 'message', exc)}"
        try:
            code, why = wait_for(self.runner, handle, timeout, self.cancel)
            self.runner.terminate(handle, grace=self.settings.workers.kill_grace, first_signal=adapter.first_signal)
            self.runner.sweep(handle.tag, handle.started_at)  # nothing it started outlives it
        finally:
            self.runner.release(handle)
        seconds = round(time.monotonic() - started, 3)
        text = self.workspace.read_from(log_path, offset, READ_CHARS)
        parsed = adapter.parse(text, code, max_chars=READ_CHARS)
        costs.estimate_for(parsed, adapter, self.settings, model)
        self.on_cost(parsed.cost_usd)
        basis = parsed.cost_basis or (costs.CostBasis.REPORTED.value if parsed.cost_usd is not None else None)
        ran = (code, seconds, parsed.cost_usd, basis)
        self.workspace.append_line(log_path, f"===== resolver attempt {number} ended: {why or f'exit code {code}'} =====")
        if code is None:  # timed out, or the engine is shutting down
            return ran, f"the resolver did not finish: {why.replace('the selection', 'the merge')}"
        if code != 0 or parsed.ok is False:
            how = (
                f"was killed by {signal_name(-code)}"
                if code < 0
                else f"exited with code {code}"
                if code
                else "reported a failure"
            )
            return ran, f"the resolver {how}: {(parsed.error or parsed.output)[-200:].strip()}"
        return ran, ""

    def _take(self, tree: Path, at: Conflicted, files: Sequence[str]) -> tuple[str | None, str]:
        """The worktree's files as a tree, and why it is refused ("": it is not). What the resolver's
        git wrote in its sandbox's object store is checked into the repository's first."""
        git = self._git(tree, tree.parent / "tmp")
        git.run(*_QUIET, "add", "-A", "--", ".")
        resolved = git.text("write-tree").strip()
        refused = worker_objects.take(tree, self.repo).refused  # the resolver's objects and the tree, checked
        if refused:
            return None, f"an object its sandbox wrote was not taken into the repository: {refused[0]}"
        left = []
        for path in files:
            found = run_git(self.repo, "cat-file", "-e", f"{resolved}:{path}", check=False)
            if found.returncode != 0:
                continue  # the resolution removed it (a modify/delete conflict's answer)
            text = git_bytes(self.repo, "cat-file", "blob", f"{resolved}:{path}")
            sides = [self._blob(c, path) for c in (at.head, at.commit)]
            if markers_left(text, sides):
                left.append(path)
        if left:
            return None, f"conflict markers are left in: {', '.join(left)}"
        return resolved, ""

    def _blob(self, commit: str, path: str) -> bytes:
        try:
            return git_bytes(self.repo, "cat-file", "blob", f"{commit}:{path}")
        except GitFailed:
            return b""

    # -- the gates -----------------------------------------------------------------------------
    def _gate(self, at: Conflicted, tree: Path, tmp: Path, resolved: str, number: int) -> tuple[tuple[GateResult, ...], str]:
        """The required gates that applied to either side's workers, on the merged tree, one by
        one until one does not pass: their results and why the resolution is refused ("": passed)."""
        todo: dict[str, dict[str, Any]] = {}
        for name in dict.fromkeys([at.worker, *(w for c in at.conflicts for w in c.workers)]):
            record = self.by_name.get(name)
            if record is None:
                continue
            for gate in gating.applicable(
                self.config.gates, record.role, role_of(self.settings, record.role), record.files_changed
            ):
                if gate.get("required"):
                    todo.setdefault(gate["name"], gate)
        results: list[GateResult] = []
        key = worker_key(self.job.depth, at.worker)
        for gate in todo.values():
            env = gating.gate_env(self._env(tmp), gate)
            place = gating.GatePlace(
                root_id=self.job.root_id,
                directory=tree,
                env=env,
                sandbox=self.confinement.spec_at(self.job.root_id, None, tree, tmp, self.config, env),
                log_path=self.workspace.logs_dir(self.job.root_id) / f"{key}.resolve.gate_{gate['name']}.log",
                tag=f"{self.job.root_id}.resolve-gate-{secrets.token_hex(4)}",
                heading=f"resolution attempt {number} of {at.worker}'s conflict, tree {resolved[:12]}",
                commit=None,
                cancel=self.cancel,
                cancelled="the merge was cancelled while the gate ran",
            )
            try:
                result, output = gating.run_gate(self.runner, self.workspace, self.settings, gate, place)
            except Exception as exc:  # fail closed
                log.exception("gate %s on a resolution raised", gate["name"])
                return (*results,), f"gate {gate['name']} raised {type(exc).__name__}: {exc}"
            results.append(result)
            if not result.passed:
                tail = " ".join(output[-300:].split())
                return (*results,), f"gate {result.name} {result.status} on the merged tree: {result.reason}; {tail}".strip()
        return (*results,), ""

    def _rel(self, path: Path) -> str:
        return self.workspace.relative(self.job.root_id, path)

    def _note(self, worker: str, line: str) -> None:
        with self._notes:
            path = self.workspace.worker_log(self.job.root_id, self.job.depth, worker)
            self.workspace.append_line(path, f"[orchestrator] {line}")

    _notes = threading.Lock()
