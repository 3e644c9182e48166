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

Across restarts (``RunLedger``): each resolver run is appended to the tree's ``resolve/runs.jsonl``
as it starts, as it ends (with its time and cost) and as its resolution is taken (the tree), and each
conflict's final resolution too. A merge run again after a restart asks the resolver nothing for a
conflict it already resolved or refused (the same worker's commit on the same result so far, by the
same resolver); a run that ended but whose checks were cut short is not run again: its taken tree
is checked out in a new worktree of the merge (in the resolver's sandbox) and checked once more; a
run the stop cut off runs once more, saying so. Every run is in a record and, through the ledger,
counted once in the tree's cost and budget (engine/takeover.py), also when the merge that asked for
it never ended.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import failpoints
from ..config import JobConfig, Settings
from ..config.quality import Gate
from ..errors import ConfigError
from ..git import invocation, worker_objects
from ..git.invocation import GitFailed, git_bytes, run_git
from ..git.merging import Conflicted
from ..git.repository import add_detached_worktree, repo_op
from ..git.sandboxed import CheckoutGit
from ..models import JobRecord, WorkerRecord
from ..outcomes import CostBasis, GateResult, Resolution, ResolverAttempt
from ..process.monitor import CAPPED
from ..process.runner import CommandNotFound, ProcessHandle, ProcessRunner, Wakeup, signal_name
from ..quality import gates as gating
from ..selection.scoring import wait_for
from ..workers import costs
from ..workers.adapters import get_adapter
from ..workers.adapters.base import Adapter, WorkerContext
from ..workers.confinement import Confinement
from ..workers.environment import helper_env, provider_keys_by_file
from ..workers.prompts import render_resolver_prompt
from ..workers.roles import role_of
from ..workspace.filesystem import read_json_lines
from ..workspace.ids import worker_key
from ..workspace.layout import Workspace
from ..workspace.stages import rerun_note

log = logging.getLogger("orchestrator.resolving")

DIFF_BYTES = 20_000  # of each side's diff in the prompt
READ_CHARS = 200_000  # of the resolver's output read back
_MARKER = re.compile(rb"^(?:<{7}|>{7}|\|{7})(?: |\r?$)", re.M)
_SEPARATOR = re.compile(rb"^={7}\r?$", re.M)
LEDGER = "runs.jsonl"  # in the tree's resolve/ folder (RunLedger)
CUT_SHORT = "its resolution was not checked to the end: the server stopped"  # a ledger's run, until its resolution is final
_QUIET = ("-c", "core.hooksPath=/dev/null", "-c", "merge.conflictStyle=merge", "-c", "rerere.enabled=false")


def markers_left(text: bytes, sides: Sequence[bytes]) -> bool:
    """A conflict marker is left in ``text``: a ``<<<<<<<``, ``>>>>>>>`` or ``|||||||`` line, or
    more ``=======`` lines than either side had (a heading underline that was there stays)."""
    if _MARKER.search(text):
        return True
    return len(_SEPARATOR.findall(text)) > max((len(_SEPARATOR.findall(side)) for side in sides), default=0)


class RunLedger:
    """The tree's resolver runs and final resolutions, one JSON line each, appended as they happen
    (see the module docstring): what a merge run again after a restart reads back."""

    def __init__(self, workspace: Workspace, root_id: str) -> None:
        self.workspace = workspace
        self.path = workspace.job_dir(root_id) / "resolve" / LEDGER

    def entries(self) -> list[dict[str, Any]]:
        """Every whole line (a line cut short by a crash is skipped)."""
        return [e for e in read_json_lines(self.path) if isinstance(e.get("conflict"), str)]

    def cost(self) -> float | None:
        """What every run recorded here cost; None when there is no ledger (a tree from before it)."""
        if not self.path.exists():
            return None
        return sum(e["run"].get("cost_usd") or 0.0 for e in self.entries() if isinstance(e.get("run"), dict))

    def runs(self, conflict: str) -> list[ResolverAttempt]:
        fields = {f.name for f in dataclasses.fields(ResolverAttempt)}
        return [
            ResolverAttempt(**{k: v for k, v in e["run"].items() if k in fields})
            for e in self.entries()
            if e["conflict"] == conflict and isinstance(e.get("run"), dict)
        ]

    def resolution(self, conflict: str) -> Resolution | None:
        found = [e["resolution"] for e in self.entries() if e["conflict"] == conflict and isinstance(e.get("resolution"), dict)]
        return Resolution.from_dict(found[-1]) if found else None

    def started(self, conflict: str) -> set[int]:
        """The numbers of the runs that started (each says so as it starts; one with no ``run`` line
        after it was cut off by a server's stop)."""
        return {e["started"] for e in self.entries() if e["conflict"] == conflict and isinstance(e.get("started"), int)}

    def taken(self, conflict: str) -> dict[int, str]:
        """The tree each ended run's resolution was taken as (before its checks), by run number."""
        found: dict[int, str] = {}
        for e in self.entries():
            taken = e.get("taken")
            if e["conflict"] == conflict and isinstance(taken, dict) and isinstance(taken.get("tree"), str):
                found[int(taken.get("number") or 0)] = taken["tree"]
        return found

    def add(self, conflict: str, **entry: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.workspace.append_line(self.path, json.dumps({"conflict": conflict, **entry}, separators=(",", ":")))


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
        self.ledger = RunLedger(workspace, job.root_id)

    def __call__(self, at: Conflicted) -> Resolution:
        """The conflict's resolution: the one a run before a restart already settled, or a new one."""
        kind = self.config.resolver_kind or (self._kind_of(at.worker)) or self.config.worker
        label = f"{kind} ({self.config.resolver_model})" if self.config.resolver_model else kind
        conflict = f"{self.job.id} {at.worker} {at.head} {at.commit} {label}"
        settled = self.ledger.resolution(conflict)
        if settled is not None and (not settled.accepted or self._has_tree(settled.tree)):
            self._note(at.worker, f"resolution of {', '.join(settled.files)} taken from before the restart: {settled.reason}")
            return settled
        done = self._resolve(at, conflict, lambda **entry: self.ledger.add(conflict, **entry))
        if not self.cancel.is_set():  # a cancelled merge's refusal is no answer: it is asked again
            self.ledger.add(conflict, resolution=done.to_dict())
        return done

    def _kind_of(self, name: str) -> str:
        worker = self.by_name.get(name)
        return worker.kind if worker is not None else ""

    def _has_tree(self, tree: str | None) -> bool:
        return tree is not None and run_git(self.repo, "cat-file", "-e", f"{tree}^{{tree}}", check=False).returncode == 0

    def _resolve(self, at: Conflicted, conflict: str, record: Callable[..., None]) -> Resolution:
        """Runs the resolver until one resolution is accepted or the tries are spent; the ledger's
        runs of ``conflict`` before a restart count among the tries, ``record``: the ledger's
        writer. Nothing runs twice: a run whose resolution was taken but whose checks a stop cut
        off is checked again, not run again; a run the stop cut off runs once more, and says so."""
        earlier = self.ledger.runs(conflict)
        cut_off = self.ledger.started(conflict) - {a.number for a in earlier}
        taken = self.ledger.taken(conflict)
        last = earlier[-1] if earlier else None
        recheck = last if last is not None and last.refused == CUT_SHORT and last.number in taken else None
        worker = self.by_name.get(at.worker)
        kind = self.config.resolver_kind or (worker.kind if worker is not None else "") or self.config.worker
        model = self.config.resolver_model or None
        label = f"{kind} ({model})" if model else kind
        files = tuple(dict.fromkeys(c.path for c in at.conflicts))
        key = worker_key(self.job.depth, at.worker)
        home = self.workspace.job_dir(self.job.root_id) / "resolve" / key
        tree, tmp = home / "tree", home / "tmp"
        log_path = self.workspace.logs_dir(self.job.root_id) / f"{key}.resolve.log"
        attempts: list[ResolverAttempt] = [a for a in earlier if a is not recheck]  # (judged again below)
        ran_gates: tuple[GateResult, ...] = ()
        refused = next((a.refused for a in reversed(earlier) if a.refused != CUT_SHORT), "")
        try:
            adapter = get_adapter(kind)
        except ConfigError as exc:
            return Resolution(at.worker, files, label, False, f"the resolver could not start: {exc.message}")
        try:
            first = recheck.number if recheck is not None else len(earlier) + 1
            for number in range(first, self.settings.git.resolver_retries + 2):
                again = recheck is not None and number == recheck.number  # its checks only: no new run, no cost
                why = None if again else self.budget()
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
                if again and recheck is not None:
                    attempt, problem = (recheck.exit_code, recheck.seconds, recheck.cost_usd, recheck.cost_basis), ""
                    self._restart_note(at.worker, f"the checks of resolver attempt {number}", "the resolver is not run again")
                    self._git(tree, tmp).run("read-tree", "-u", "--reset", taken[number])  # its resolution, as taken
                else:
                    if number in cut_off:
                        self._restart_note(at.worker, f"resolver attempt {number}")
                    attempt, problem = self._run_recorded(
                        at, files, refused, number, record, adapter, model, (home, tree, tmp, log_path)
                    )
                resolved, problem, gated = self._checked(at, (tree, tmp), files, number, problem, None if again else record)
                ran_gates = gated if gated is not None else ran_gates
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
        if not refused:  # its tries were all spent on runs before a restart, whose checks were cut short
            refused = f"no resolver attempt left: {len(earlier)} run(s) before the restart used git.resolver_retries"
        return Resolution(at.worker, files, label, False, refused, tuple(attempts), ran_gates)

    def _checked(
        self,
        at: Conflicted,
        place: tuple[Path, Path],
        files: Sequence[str],
        number: int,
        problem: str,
        record: Callable[..., None] | None,
    ) -> tuple[str | None, str, tuple[GateResult, ...] | None]:
        """A run's resolution taken from its worktree and gated: (its tree, why it is refused ("": it
        is not), the gates that ran or None). ``record`` (none when its checks run again after a
        restart) keeps the taken tree in the ledger first. Fails closed: one that cannot be read is refused."""
        tree, tmp = place
        resolved, ran_gates = None, None
        try:
            if not problem:
                resolved, problem = self._take(tree, at, files)
            if resolved is not None and record is not None:
                record(taken={"number": number, "tree": resolved})  # what a restart during its checks checks
            if not problem and resolved is not None:
                ran_gates, problem = self._gate(at, tree, tmp, resolved, number)
        except (GitFailed, OSError) as exc:
            log.warning("job %s: a resolution could not be checked", self.job.id, exc_info=True)
            problem = f"the resolution could not be checked: {exc}"
        return resolved, problem, ran_gates

    # -- the worktree -------------------------------------------------------------------------
    def _prepare(self, tree: Path, tmp: Path, at: Conflicted) -> None:
        """A worktree of the result so far with the worker's commit being merged into it."""
        self._remove(tree)
        tree.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        add_detached_worktree(self.repo, tree, at.head)
        git = self._git(tree, tmp)
        git.run("reset", "--hard", "-q")  # its files are the workers': checked out in the sandbox too
        # In the resolver's sandbox: the merge checks out the workers' files, and a filter or driver of
        # the user's that resolves a name from the folder it runs in would run a worker's code. With the
        # pinned identity (git/sandboxed.py), as a merge needs one even when it commits nothing.
        done = git.run(*_QUIET, "merge", "--no-commit", "--no-ff", "-q", at.commit, check=False)
        if done.returncode not in (0, 1):
            raise GitFailed(["merge", "--no-commit", at.commit], done.returncode, invocation.text(done.stderr))

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
        return helper_env(self.settings, tmp, self.workspace, self.job.root_id)

    def _run_recorded(
        self,
        at: Conflicted,
        files: Sequence[str],
        refused: str,
        number: int,
        record: Callable[..., None],
        adapter: Adapter,
        model: str | None,
        where: tuple[Path, Path, Path, Path],
    ) -> tuple[tuple[int | None, float, float | None, CostBasis | None], str]:
        """One resolver run (``_run``) with its prompt written (told why the last was refused), in the
        ledger as started and as it ended, before its checks: a restart during them keeps it, and its cost."""
        home, log_path = where[0], where[3]
        record(started=number)
        prompt = self._prompt(at, files, refused)
        (home / f"prompt_{number}.md").write_text(prompt, encoding="utf-8")
        attempt, problem = self._run(adapter, model, number, prompt, files, where)
        record(run=ResolverAttempt(number, *attempt, refused=problem or CUT_SHORT, log_path=self._rel(log_path)).to_dict())
        return attempt, problem

    def _run(
        self,
        adapter: Adapter,
        model: str | None,
        number: int,
        prompt: str,
        files: Sequence[str],
        where: tuple[Path, Path, Path, Path],
    ) -> tuple[tuple[int | None, float, float | None, CostBasis | None], str]:
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
        try:
            # (Its provider key in a file of its TMPDIR where its CLI reads one and /proc is shared.)
            argv, env = provider_keys_by_file(adapter, adapter.build_argv(ctx), {**env, **adapter.extra_env(ctx)}, sandbox)
            tag = f"{self.job.root_id}.resolve-{secrets.token_hex(6)}"
            handle = self.runner.spawn(
                argv,
                cwd=tree,
                env=env,
                log_path=log_path,
                tag=tag,
                sandbox=sandbox,
                limits=self.confinement.limits(),  # a worker's caps: it runs on workers' work
            )
            failpoints.hit("resolver_running")  # the chaos tests' stop in the middle of a resolver's run
        except CommandNotFound as exc:
            return (None, 0.0, None, None), f"the resolver's CLI was not found: {exc.strerror}"
        except (ConfigError, OSError, ValueError) as exc:
            return (None, 0.0, None, None), f"the resolver could not start: {getattr(exc, 'message', exc)}"
        try:
            code, why = wait_for(self.runner, handle, timeout, self.cancel, self.confinement.watch(tree, tmp))
            self.runner.terminate(handle, grace=self.settings.workers.kill_grace, first_signal=adapter.first_signal)
            self.runner.sweep(handle.tag, handle.started_at)  # nothing it started outlives it
        finally:
            self.runner.release(handle)
        return self._ended(adapter, model, number, handle, code, why, (log_path, offset))

    def _ended(
        self,
        adapter: Adapter,
        model: str | None,
        number: int,
        handle: ProcessHandle,
        code: int | None,
        why: str,
        log_at: tuple[Path, int],
    ) -> tuple[tuple[int | None, float, float | None, CostBasis | None], str]:
        """An ended resolver run read from its log (from ``log_at``'s offset): its time, its cost
        (counted toward the tree's budget), and why it failed ("": it did not)."""
        log_path, offset = log_at
        # Its own time, by its recorded start and its exit file's (a sandboxed run's), as a worker's (engine/attempts.py)
        seconds = round(max(0.0, (handle.ended_at or time.time()) - handle.started_at), 3)
        text = self.workspace.read_from(log_path, offset, READ_CHARS)
        parsed = adapter.parse(text, code, max_chars=READ_CHARS)
        costs.estimate_for(parsed, adapter, self.settings, model)
        self.on_cost(parsed.cost_usd)
        basis = parsed.cost_basis or (costs.CostBasis.REPORTED if parsed.cost_usd is not None else None)
        ran = (code, seconds, parsed.cost_usd, basis)
        self.workspace.append_line(log_path, f"===== resolver attempt {number} ended: {why or f'exit code {code}'} =====")
        if code is None and why.startswith(CAPPED):  # over a worker's cap (ended there, or found at it once ended)
            return ran, f"the resolver was {why}"
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
        store = self.confinement.workspace.tree_objects(self.job.root_id)
        refused = worker_objects.take(tree, self.repo, store).refused  # the resolver's objects and the tree, checked
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
        todo: dict[str, Gate] = {}
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
                stop_point="resolve_gate_running",
                watch=self.confinement.watch(tree, tmp),  # the merged tree holds workers' work: their caps
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

    def _restart_note(self, worker: str, what: str, more: str = "") -> None:
        """A part of the resolution a server's stop cut off runs once more: said in the worker's log
        and the tree's."""
        said = rerun_note(what) + (f"; {more}" if more else "")
        self._note(worker, said)
        self.workspace.log_event(self.job.root_id, f"job {self.job.id}: {said}")

    def _note(self, worker: str, line: str) -> None:
        with self._notes:
            path = self.workspace.worker_log(self.job.root_id, self.job.depth, worker)
            self.workspace.append_line(path, f"[orchestrator] {line}")

    _notes = threading.Lock()
