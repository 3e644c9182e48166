"""Prompts for AI workers and the AI planner, rendered from Jinja templates (pure: no writes).

The templates ship beside the report templates (``reports/templates/worker.md.j2``,
``shared_context.md.j2`` and ``planner.md.j2``) and render in the same Jinja environment:
StrictUndefined, no autoescape (Markdown, not HTML).

A worker's prompt is its job's **shared context block** (``render_shared_context``: the request,
the repository summary, the sibling list, the conventions and what every worker is expected to
do; the same bytes for every worker of the job, written once by workers/sharedcontext.py), then the
parts that are its own (its subtask, its prerequisites, its role's preamble, a candidate's
context, its folder, whether it may start child jobs). The shipped ``worker.md.j2`` puts
``shared_context`` first, so a service's prompt cache can reuse it across the job's workers.

A user's worker template (config ``orchestrator.prompt_template``, a file) replaces the shipped
one and renders the whole prompt; it gets these variables (a template written before the block
existed keeps working and renders what it did; one that puts ``{{ shared_context }}`` first gets
the prompt cache's reuse, and the worker its ``ORCHESTRATOR_SHARED_CONTEXT``):

=====================  =====================================================
task                   this worker's subtask, verbatim
goal                   what the job's subtasks are all part of (planner's), or None
request                the job's whole request
siblings, index        every subtask of the job in order, and this one's 1-based position
others                 the other subtasks (at most ``MAX_SIBLINGS`` of them)
hidden_siblings        how many other subtasks ``others`` leaves out
depth, max_depth       this worker's depth (root job = 0) and the job's max_recursion_depth
recursion_enabled      whether the job allows child jobs at all
children_left          child jobs this worker may still start
can_spawn              recursion on, depth < max_depth and children_left > 0
no_spawn_reason        why not, as a clause ("" when can_spawn)
spawn_command          the one-line command that starts a child job
spawn_timeout_ms       the shell-tool timeout (ms) to give that command: the worker's own timeout
min_subtasks,          how many subtasks one child job should have (the one rule, also in
max_subtasks           README_FOR_AI.md)
worker_dir, job_id, worker_id
branch                 the worker's git branch when its folder is a worktree (else None): the prompt then says
                       that a child job's work is merged into that checkout before spawn returns
role, preamble         the task's role (tasks.roles) and its preamble, shown first; None and "" without a role
shared_context         the job's shared context block (text ending in a newline): the shipped template's first bytes
task_id                this subtask's id in the job's plan (``t2``, or the explicit task's own)
before, before_ids     the subtasks a graph task waits on, done before it: their texts, and their ids
graph                  whether the job is a task graph (not every other subtask runs beside this one)
context                a candidate's ``context`` object (TaskNode.context), or None
=====================  =====================================================
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from jinja2 import FileSystemLoader, TemplateError

from ..errors import ConfigError
from ..reports import ENV

if TYPE_CHECKING:
    from ..config import Settings

WORKER_TEMPLATE = "worker.md.j2"
SHARED_TEMPLATE = "shared_context.md.j2"
RESOLVER_TEMPLATE = "resolver.md.j2"
PLANNER_TEMPLATE = "planner.md.j2"
# ``orchestrator-spawn`` (orchestrator/bin, first on every worker's PATH) is one command every
# CLI's shell tool runs alike; claude's default --allowedTools names it.
SPAWN_COMMAND = 'orchestrator-spawn --wait "subtask A" "subtask B" "subtask C"'
MIN_SUBTASKS, MAX_SUBTASKS = 2, 7  # explicit subtasks per child job: the prompt's and README_FOR_AI's rule
MAX_SIBLINGS = 20  # other subtasks listed in a prompt; a long list costs every worker tokens
MAX_LISTED = MAX_SIBLINGS + 1  # subtasks the shared block lists (a worker's own and 20 others)
SIBLING_CHARS = 300  # each is context only, so it is shortened past this
MAX_TASK_CHARS = 2000  # longest subtask the AI planner may propose


@dataclass(frozen=True)
class PromptFacts:
    """What one AI worker's prompt says. ``siblings`` is every subtask of the job (this one
    included) and ``index`` this subtask's 1-based position in it; ``task_ids`` their ids
    (default ``t1``, ``t2``...). ``timeout``: the worker's seconds per attempt, the shell-tool
    timeout its spawn call needs. ``kind_no_spawn``: why its kind can never start a child job ("":
    it can). ``role``/``preamble``: the task's role and what it tells the worker first. ``before``:
    the 1-based positions of the subtasks it waits on (a task graph's prerequisites; None: the job
    is no graph). ``context``: a candidate's own context object (the user's JSON)."""

    task: str
    request: str
    siblings: list[str]
    index: int
    depth: int
    max_recursion_depth: int
    recursion_enabled: bool
    worker_dir: str
    job_id: str
    worker_id: str
    children_left: int
    goal: str | None = None
    timeout: float | None = None
    kind_no_spawn: str = ""
    branch: str | None = None
    role: str | None = None
    preamble: str = ""
    before: list[int] | None = None
    task_ids: Sequence[str] | None = None
    context: dict[str, Any] | None = None


def render_worker_prompt(facts: PromptFacts, *, template: Path | None = None, shared: SharedText | None = None) -> str:
    """The prompt of one AI worker. ``template``: a user's template file instead of the shipped
    one; ConfigError if it is missing or broken. ``shared``: the job's shared context block
    (workers/sharedcontext.py); without it one is rendered from ``facts`` (no repository summary,
    no conventions), so the prompt is whole."""
    task, goal, request, siblings, index, depth = facts.task, facts.goal, facts.request, facts.siblings, facts.index, facts.depth
    before, branch, context = facts.before, facts.branch, facts.context
    if siblings and not 1 <= index <= len(siblings):
        raise ValueError(f"index {index} is outside the job's {len(siblings)} subtask(s)")
    ids = list(facts.task_ids) if facts.task_ids is not None else [f"t{n}" for n in range(1, len(siblings) + 1)]
    own_id = ids[index - 1] if siblings else None
    done = set(before or ())
    before_ids = list(dict.fromkeys(ids[n - 1] for n in sorted(done) if 1 <= n <= len(ids) and ids[n - 1] != own_id))
    prior = [_shorten(text) for number, text in enumerate(siblings, 1) if number in done]
    others = [
        _shorten(text)
        for number, text in enumerate(siblings, 1)
        if number not in done and ids[number - 1] != own_id  # a candidate's fellow candidates are its own task
    ]
    # A worker kind without a shell tool (aider) can never run the spawn command: its reason first.
    reason = facts.kind_no_spawn or _no_spawn_reason(
        facts.recursion_enabled, depth, facts.max_recursion_depth, facts.children_left
    )
    if shared is None:
        shared = SharedText(
            render_shared_context(
                job_id=facts.job_id,
                request=request,
                goal=goal,
                tasks=[{"id": i, "text": t, "after": []} for i, t in zip(ids, siblings)],
                depth=depth,
                worktree=branch is not None,
                spawn=not reason,
                graph=before is not None,
            ),
            spawn=not reason,
        )
    elif not reason and not shared.spawn:  # the block tells no worker of the job how (none of its kinds could)
        reason = "this job's workers start no child jobs"
    values = {
        "shared_context": shared.text,
        "task": task,
        "task_id": own_id,
        "listed": len(set(ids)) > 1 and own_id in ids[: _listed_upto(ids)],
        # A one-task job's long request is not repeated under "# Your subtask" (it is the block's);
        # a short one is, so the subtask line always says what to do.
        "whole": task == request and len(task) > SIBLING_CHARS,
        "context": context,
        "context_json": json.dumps(context, indent=2, ensure_ascii=False, sort_keys=True) if context else "",
        "goal": goal,
        "request": request,
        "siblings": list(siblings),
        "index": index,
        "others": others[:MAX_SIBLINGS],
        "hidden_siblings": max(0, len(others) - MAX_SIBLINGS),
        "before": prior[:MAX_SIBLINGS],
        "before_ids": before_ids,
        "graph": before is not None,  # the job is a task graph: not every other subtask runs beside this one
        "depth": depth,
        "max_depth": facts.max_recursion_depth,
        "recursion_enabled": facts.recursion_enabled,
        "children_left": facts.children_left,
        "can_spawn": not reason,
        "no_spawn_reason": reason,
        "spawn_command": SPAWN_COMMAND,
        "spawn_timeout_ms": spawn_timeout_ms(facts.timeout),
        "min_subtasks": MIN_SUBTASKS,
        "max_subtasks": MAX_SUBTASKS,
        "worker_dir": facts.worker_dir,
        "job_id": facts.job_id,
        "worker_id": facts.worker_id,
        "branch": branch,
        "role": facts.role,
        "preamble": facts.preamble.strip(),
    }
    return _render(WORKER_TEMPLATE, template, values)


class PlanTask(TypedDict):
    """One task of a job's plan as the shared context block lists it."""

    id: str
    text: str
    after: list[str]  # the ids of the tasks it waits on


@dataclass(frozen=True)
class SharedText:
    """A job's shared context block as its workers' prompts carry it: the ``text`` (every byte
    of it, the shipped prompt's head) and whether it tells how to start child jobs (``spawn``:
    a worker may then be told it may, in its own part)."""

    text: str
    spawn: bool


def render_shared_context(
    *,
    job_id: str,
    request: str,
    goal: str | None,
    tasks: Sequence[PlanTask],
    depth: int,
    worktree: bool,
    spawn: bool,
    graph: bool,
    repository: str | None = None,
    conventions: Sequence[tuple[str, str]] = (),
) -> str:
    """A job's shared context block: nothing in it may depend on which worker reads it.
    ``tasks``: one ``{"id", "text", "after": [ids]}`` per task of the plan (a task's candidates
    are one task), in plan order; ``spawn``: some worker of the job may start child jobs (the
    how-to is then here, once); ``repository``: the summary (workers/sharedcontext.py); ``conventions``:
    (file name, text) pairs, each already capped. Always ends with a newline."""
    unique: list[PlanTask] = []
    seen: set[str] = set()
    for t in tasks:
        if t["id"] not in seen:
            seen.add(t["id"])
            unique.append({"id": t["id"], "text": _shorten(t["text"]), "after": list(t.get("after") or ())})
    values = {
        "job_id": job_id,
        "request": request,
        "goal": goal,
        "tasks": unique[:MAX_LISTED],
        "hidden": max(0, len(unique) - MAX_LISTED),
        "depth": depth,
        "worktree": worktree,
        "spawn": spawn,
        "graph": graph,
        "repository": repository,
        "conventions": list(conventions),
        "spawn_command": SPAWN_COMMAND,
        "min_subtasks": MIN_SUBTASKS,
        "max_subtasks": MAX_SUBTASKS,
    }
    text = ENV.get_template(SHARED_TEMPLATE).render(**values)
    return text if text.endswith("\n") else text + "\n"


def _listed_upto(ids: Sequence[str]) -> int:
    """How many plan positions the shared block's list covers (its first MAX_LISTED task ids)."""
    seen: set[str] = set()
    for position, task_id in enumerate(ids):
        seen.add(task_id)
        if len(seen) > MAX_LISTED:
            return position
    return len(ids)


def spawn_timeout_ms(timeout: float | None) -> int:
    """The timeout (ms) a worker's shell tool should give ``orchestrator-spawn --wait``: the
    worker's own attempt timeout (a child job cannot usefully outlive it), at least 10 minutes
    when unknown. CLIs cut a shell command off after their default limit (claude: 2 minutes),
    and a child job of AI workers takes minutes."""
    return int(max(timeout, 1.0) * 1000) if timeout else 600_000


def render_planner_prompt(request: str, max_tasks: int, *, template: Path | None = None, roles: Sequence[str] = ()) -> str:
    """The AI planner's prompt: answer with only a JSON object, a graph of 1..max_tasks subtasks
    (``{"tasks": [{"id", "task", "depends_on", "role", "owns"}]}``); ``roles``: the names offered."""
    context = {"request": request, "max_tasks": max_tasks, "max_chars": MAX_TASK_CHARS, "roles": list(roles)}
    return _render(PLANNER_TEMPLATE, template, context)


def render_resolver_prompt(
    worker: str,
    task: str,
    others: Sequence[tuple[str, str]],
    files: Sequence[str],
    diffs: tuple[str, str],
    refused: str = "",
) -> str:
    """A resolver worker's prompt (delivery/resolving.py): both sides' subtasks (``others``: (name,
    task) of the workers already in the result), the conflicting files, both sides' diffs of them
    against the merge base (the result's, the worker's), and why its last attempt was refused."""
    context = {
        "worker": worker,
        "task": task,
        "others": [{"name": n, "task": t} for n, t in others],
        "files": list(files),
        "ours_diff": diffs[0],
        "theirs_diff": diffs[1],
        "refused": refused,
    }
    return _render(RESOLVER_TEMPLATE, None, context)


def prompt_template_path(settings: Settings) -> Path | None:
    """``orchestrator.prompt_template`` as an absolute path (relative to the config's folder), or None."""
    value = settings.orchestrator.prompt_template
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path(settings.base_dir) / path).resolve()


def check_template(path: Path) -> None:
    """Load (compile) a user's template now, so a broken one is reported at startup."""
    _user_template(path)


def _render(name: str, user_file: Path | None, context: dict[str, Any]) -> str:
    if user_file is None:
        return ENV.get_template(name).render(**context)
    template = _user_template(user_file)
    try:
        return template.render(**context)
    except TemplateError as exc:
        raise ConfigError(f"prompt template {user_file}: {_describe(exc)}", path=str(user_file)) from None


def _user_template(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"prompt template not found: {path} (orchestrator.prompt_template). "
            "Fix the path, or set it to null to use the shipped template.",
            path=str(path),
        )
    # An overlay shares the environment's settings and filters; Jinja reloads the file when it changes.
    env = _OVERLAYS.get(path.parent)
    if env is None:
        env = _OVERLAYS.setdefault(path.parent, ENV.overlay(loader=FileSystemLoader(str(path.parent))))
    try:
        return env.get_template(path.name)
    except (TemplateError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"prompt template {path}: {_describe(exc)}", path=str(path)) from None


_OVERLAYS: dict[Path, Any] = {}


def _describe(exc: Exception) -> str:
    line = getattr(exc, "lineno", None)
    text = getattr(exc, "message", None) or str(exc)
    return f"line {line}: {text}" if line else f"{type(exc).__name__}: {text}"


def _no_spawn_reason(enabled: bool, depth: int, max_recursion_depth: int, children_left: int) -> str:
    if not enabled:
        return "recursion is disabled for this job"
    if depth >= max_recursion_depth:
        return f"you are at the maximum depth ({max_recursion_depth})"
    if children_left <= 0:
        return "this worker may start no more child jobs"
    return ""


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SIBLING_CHARS else text[: SIBLING_CHARS - 1] + "…"
