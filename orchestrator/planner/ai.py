"""The AI planner: ask the configured AI CLI, once, to split a request into subtasks.

``plan_with_ai`` never raises for the model's or the CLI's misbehaviour: a
missing CLI, a non-zero exit, a timeout or an answer that is not a usable plan
all give the heuristic plan (``heuristic_plan``) with a note saying why.

``extract_plan`` reads the answer. It is lenient about the wrapping and strict
about the content:

- accepted: a JSON array of strings, alone or inside a ```json fence or prose
  (the first array or object that reads as a plan wins); trailing commas;
  Python-style single quotes (``['a', 'b']``, read with ``ast.literal_eval``,
  which evaluates literals only); an object wrapping the list (``{"tasks": [...]}``,
  ``{"subtasks": ...}``, ``"plan"``, ``"steps"``, ``"items"``, or an object with a
  single list); items that are objects with a ``task``/``subtask``/``title``/
  ``description``/``text``/``name`` field (title and description are joined).
- cleaned: whitespace collapsed, a leading "1." or "-" marker removed, blank
  items dropped, repeats (ignoring case, spacing and final punctuation) dropped.
- refused (PlanError): no array, 0 items, an item that is not text (a number,
  a nested list), an item over 2000 characters.
- a single item (the request does not split) is replaced by the request itself, exactly as the
  user wrote it: the model's rewording of one task is never what a worker gets.
- more than ``max_tasks`` items are merged, adjacent ones joined with "; ", into
  ``max_tasks`` subtasks as the heuristic planner does: nothing is dropped.

The prompt asks for a graph: ``{"tasks": [{"id", "task", "depends_on", "role", "owns"}]}``.
An answer whose items carry ``depends_on``, ``role``, ``owns`` or a string ``id`` is read
as one (``extract_plan``): every item is kept (no repeat is dropped: ids may point at it)
and the whole is checked by ``graph.build_nodes`` against the server's roles. A graph that
fails (a cycle, an unknown, duplicate or self id, an unknown role, a bad glob, an item
without text) is refused as a whole, naming what is wrong, and the heuristic plan is used.
A graph over ``max_tasks`` is merged in dependency order: adjacent tasks (prerequisites
first) share one worker, which keeps every dependency pointing at an earlier task.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import secrets
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from .. import protocol
from ..config import PLANNERS, Settings
from ..errors import ConfigError, InvalidGraph, OrchestratorError
from ..models import TaskNode
from ..process.cgroups import Limits
from ..process.runner import CommandNotFound, ProcessRunner, signal_name
from ..process.sandbox import SandboxSpec
from ..workers import costs
from ..workers.adapters import ADAPTERS
from ..workers.adapters.base import Adapter, WorkerContext
from ..workers.prompts import MAX_TASK_CHARS, render_planner_prompt
from .graph import auto_id, build_nodes, check_graph, topological
from .heuristic import adjacent_groups, merge_adjacent, plan_request, split_request

log = logging.getLogger("orchestrator.planner.ai")

# Worker kinds that are an AI CLI; "auto" plans with the AI only for these.
AI_KINDS = frozenset(kind for kind, adapter in ADAPTERS.items() if adapter.is_ai)
LOG_NAME = "planner.log"
PROMPT_NAME = "planner_prompt.md"
ANSWER_CHARS = 200_000  # most of the CLI's output read back as the answer
MAX_CANDIDATES = 50  # brackets tried in a prose answer before giving up
REASON_CHARS = 300

_LIST_KEYS = ("tasks", "subtasks", "plan", "steps", "items")
_TEXT_KEYS = ("task", "subtask", "description", "title", "text", "name")
_NODE_KEYS = ("id", "depends_on", "role", "owns")  # an item with any of these (a string id) is a graph's
_FENCE = re.compile(r"```[\w-]*[ \t]*\n(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r'("(?:\\.|[^"\\])*")|,\s*([\]}])')
_MARKER = re.compile(r"^(?:\d{1,3}[.)]|[-*•])\s+")


class PlanError(OrchestratorError):
    """The AI planner's answer is not a usable plan; ``reason`` says why."""

    code = "invalid_plan"
    http_status = 422

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GraphPlanError(PlanError):
    """The answer is a graph that does not hold: no other part of the answer is tried."""


class PlannerUsage(TypedDict, total=False):
    """What the AI planner's call reported (``AIPlan``'s fields of the same names), whatever its answer."""

    cost_usd: float | None
    tokens_in: int | None
    tokens_out: int | None


@dataclass
class AIPlan:
    """The subtasks, which planner made them ("ai" or "heuristic"), and a note for the job.
    ``cost_usd`` and the tokens are what the AI CLI's call reported, even when its answer was
    not used (the call was paid for either way); None when there was no call or no report."""

    tasks: list[str]
    planner: str
    note: str | None = None
    cost_usd: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    goal: str | None = None  # what every subtask is part of (the heuristic's; the AI's are self-contained)
    # Each task's node (planner/graph.py), beside ``tasks``; None: the tasks are independent (ids t1, t2...).
    nodes: list[TaskNode] | None = None


def heuristic_plan(request: str, max_tasks: int, note: str | None = None, *, graph: bool = True, **usage: Any) -> AIPlan:
    """The heuristic planner's plan, as an AIPlan (its goal travels in ``goal``); a "then"-chain's
    tasks get nodes ``t1``, ``t2``... each waiting on the stage before. ``graph`` False (the job
    cannot run dependencies: ``merge_strategy: manual`` in worktrees): a sequence stays one task."""
    plan = plan_request(request, max_tasks) if graph else split_request(request, max_tasks)
    nodes = None
    if plan.depends_on:
        nodes = [TaskNode(auto_id(i + 1), [auto_id(d + 1) for d in deps]) for i, deps in enumerate(plan.depends_on)]
    return AIPlan(plan.tasks, "heuristic", note, goal=plan.goal, nodes=nodes, **usage)


def choose_planner(name: str, worker_kind: str) -> str:
    """``heuristic`` or ``ai`` for the setting ``name``; ``auto`` is ``ai`` when the worker is an AI CLI."""
    if name not in PLANNERS:
        raise ConfigError(f"planner '{name}' is unknown. Choose one of: {', '.join(PLANNERS)}", key="planner")
    if name == "auto":
        return "ai" if worker_kind in AI_KINDS else "heuristic"
    return name


# -- reading an answer ----------------------------------------------------------
def extract_plan(text: str, roles: Collection[str] | None = None) -> tuple[list[str], list[TaskNode] | None]:
    """The answer's subtasks (not capped) and, when it is a graph, their checked nodes (None:
    independent tasks). ``roles``: the role names that exist (None: any). Raises PlanError."""
    text = (text or "").strip()[-ANSWER_CHARS:]  # the answer usually ends the output
    if not text:
        raise PlanError("the answer is empty")
    first_error: PlanError | None = None
    for value in _values(text):
        try:
            return _plan_from(value, roles)
        except GraphPlanError:
            raise  # a graph that does not hold: never a list found inside it instead ("depends_on": ["db"])
        except PlanError as exc:
            first_error = first_error or exc
    raise first_error or PlanError(f"the answer has no JSON array: {_excerpt(text)}")


def _plan_from(value: Any, roles: Collection[str] | None) -> tuple[list[str], list[TaskNode] | None]:
    items = _task_list(value)
    if not any(_is_node(item) for item in items):
        return _tasks_from(items), None
    texts = []
    for number, item in enumerate(items, 1):
        try:
            task = _clean(_item_text(item, number))
        except PlanError as exc:
            raise GraphPlanError(exc.reason) from None
        if not task:
            raise GraphPlanError(f"subtask {number} of the graph has no task text")
        if len(task) > MAX_TASK_CHARS:
            raise GraphPlanError(f"subtask {number} is {len(task)} characters long; the limit is {MAX_TASK_CHARS}")
        texts.append(task)
    fields = [{k: v for k, v in _lowered(item).items() if k in _NODE_KEYS} if isinstance(item, dict) else {} for item in items]
    try:
        return texts, build_nodes(fields, roles)
    except InvalidGraph as exc:
        raise GraphPlanError(f"the plan's graph is invalid: {exc.message}") from None


def _is_node(item: Any) -> bool:
    fields = _lowered(item) if isinstance(item, dict) else {}
    return isinstance(fields.get("id"), str) or any(fields.get(key) for key in _NODE_KEYS[1:])


def _lowered(item: dict[Any, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in item.items()}


def _clean(text: str) -> str:
    """A subtask's text: whitespace collapsed, a leading "1." or "-" marker removed."""
    return _MARKER.sub("", " ".join(text.split()))


def merge_graph(texts: list[str], nodes: list[TaskNode], max_tasks: int) -> tuple[list[str], list[TaskNode]]:
    """At most ``max_tasks`` tasks: in dependency order (prerequisites first), adjacent tasks are
    joined with "; " into one, which keeps the first one's id, the union of the others' owns and
    prerequisites outside the group, and their role when they share it. Nothing is dropped, and
    every dependency still points at an earlier task: no cycle."""
    index = {node.id: i for i, node in enumerate(nodes)}
    groups = adjacent_groups([index[task_id] for task_id in topological(nodes)], max_tasks)
    group_of = {nodes[i].id: g for g, members in enumerate(groups) for i in members}
    merged_texts, merged = [], []
    for g, members in enumerate(groups):
        parts = [nodes[i] for i in members]
        deps = [groups[group_of[d]][0] for node in parts for d in node.depends_on if group_of[d] != g]
        roles = {node.role for node in parts}
        merged_texts.append("; ".join(texts[i] for i in members))
        merged.append(
            TaskNode(
                parts[0].id,
                list(dict.fromkeys(nodes[i].id for i in deps)),
                roles.pop() if len(roles) == 1 else None,
                list(dict.fromkeys(glob for node in parts for glob in node.owns)),
            )
        )
    check_graph(merged)
    return merged_texts, merged


def _values(text: str) -> Iterator[Any]:
    """Decoded JSON (or Python literal) values in the answer, most likely first."""
    chunks = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for chunk in chunks:
        value = _load(chunk.strip())
        if value is not None:
            yield value
        yield from _bracketed(chunk)


def _bracketed(text: str) -> Iterator[Any]:
    """Values of balanced [...] / {...} spans, outermost first, left to right."""
    pos, tried = 0, 0
    while tried < MAX_CANDIDATES:
        starts = [i for i in (text.find("[", pos), text.find("{", pos)) if i >= 0]
        if not starts:
            return
        start = min(starts)
        end = _closing(text, start)
        tried += 1
        value = _load(text[start:end]) if end else None
        if end and value is not None:
            yield value
            pos = end
        else:
            pos = start + 1


def _closing(text: str, start: int) -> int | None:
    """The index just past the bracket that closes the one at ``start`` (strings skipped)."""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _load(snippet: str) -> Any:
    if not snippet or snippet[0] not in "[{":
        return None
    for attempt in (json.loads, _json_without_trailing_commas, ast.literal_eval):
        try:
            return attempt(snippet)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


def _json_without_trailing_commas(snippet: str) -> Any:
    return json.loads(_TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), snippet))


def _tasks_from(items: Sequence[Any]) -> list[str]:
    tasks: list[str] = []
    seen: set[str] = set()
    for number, item in enumerate(items, 1):
        task = _clean(_item_text(item, number))
        if not task:
            continue
        if len(task) > MAX_TASK_CHARS:
            raise PlanError(f"subtask {number} is {len(task)} characters long; the limit is {MAX_TASK_CHARS}")
        key = task.rstrip(".;:!,").casefold()
        if key not in seen:
            seen.add(key)
            tasks.append(task)
    if not tasks:
        raise PlanError("the plan has no subtasks (an empty list)")
    return tasks


def _task_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        lowered = {str(k).lower(): v for k, v in value.items()}
        for key in _LIST_KEYS:
            if isinstance(lowered.get(key), list):
                return lowered[key]
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
        raise PlanError(f"the answer is a JSON object without a list of tasks (keys: {', '.join(map(str, value))[:100]})")
    raise PlanError(f"the answer is a JSON {type(value).__name__}, not a list of subtasks")


def _item_text(item: Any, number: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        fields = {str(k).lower(): v for k, v in item.items() if isinstance(v, str) and v.strip()}
        if "task" not in fields and "subtask" not in fields and "title" in fields and "description" in fields:
            return f"{fields['title']}: {fields['description']}"
        for key in _TEXT_KEYS:
            if key in fields:
                return fields[key]
        raise PlanError(f"subtask {number} is an object without a task, title or description field")
    kind = "null" if item is None else type(item).__name__
    raise PlanError(f"subtask {number} is a {kind}, not a string")


def _excerpt(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "…")


# -- running the AI CLI -----------------------------------------------------------
def plan_with_ai(
    request: str,
    max_tasks: int,
    *,
    settings: Settings,
    adapter: Adapter,
    runner: ProcessRunner,
    work_dir: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    tag: str | None = None,
    template: Path | None = None,
    roles: Collection[str] | None = None,
    graph: bool = True,
    sandbox: SandboxSpec | None = None,
    limits: Limits | None = None,
) -> AIPlan:
    """Plan ``request`` with the AI CLI behind ``adapter``, run once in ``work_dir`` (an empty
    scratch folder, which keeps ``planner.log``), with no tool: it reads its prompt and answers.
    Falls back to the heuristic plan, with a note, on any failure.
    ``env``: the CLI's environment (never an ORCHESTRATOR_* variable: it starts no job);
    ``sandbox`` and ``limits``: where and under which caps it runs (a child job's request is a
    worker's text: engine/submission.py confines it as that worker);
    ``tag``: the runner tag of its process tree; ``template``: a planner prompt file;
    ``roles``: the role names a task may take (``roles.role_table``; None: any, none offered);
    ``graph`` False: the job cannot run dependencies (``merge_strategy: manual`` in worktrees), so
    the answer's are dropped, with a note, and a fallback plan has none either."""
    if max_tasks <= 1:
        return heuristic_plan(request, max_tasks)
    # A kind that reads no prompt is not asked (one whose program is not set is: its error says what to set).
    if not adapter.needs_prompt(settings) and adapter.configured_program(settings) != "":
        why = f"the {adapter.name} worker reads no prompt, so it cannot plan; set orchestrator.worker to an AI CLI"
        return _fallback(request, max_tasks, why, graph=graph)
    usage: PlannerUsage = {}  # filled by _ask as soon as the CLI's output is parsed
    try:
        prompt = render_planner_prompt(request, max_tasks, template=template, roles=sorted(roles or ()))
        confined = (sandbox, limits)
        answer = _ask(request, prompt, settings, adapter, runner, Path(work_dir), timeout, env, tag, usage, confined)
        tasks, nodes = extract_plan(answer, roles)
        if len(tasks) == 1:
            # The request does not split: the worker gets the user's sentence as written, never
            # the model's paraphrase of it (a prefix dropped, ", with a test" become "; with a test").
            tasks = [request.strip()]
        notes = []
        if nodes is not None and not graph and any(n.depends_on for n in nodes):
            nodes = [TaskNode(n.id, [], n.role, n.owns) for n in nodes]
            notes.append("the AI planner's dependencies were dropped: merge_strategy manual merges no task's work for another")
        if len(tasks) > max_tasks:
            how = "adjacent ones in dependency order" if nodes else "adjacent ones"
            notes.insert(0, f"the AI planner proposed {len(tasks)} subtasks; {how} were merged into {max_tasks} (max_workers)")
            tasks, nodes = merge_graph(tasks, nodes, max_tasks) if nodes else (merge_adjacent(tasks, max_tasks), None)
        return AIPlan(tasks, "ai", "; ".join(notes) or None, nodes=nodes, **usage)
    except PlanError as exc:
        return _fallback(request, max_tasks, exc.reason, usage, graph=graph)
    except Exception as exc:  # a bug or an OS error here must not fail the job: plan without the AI
        log.exception("AI planner crashed")
        return _fallback(request, max_tasks, f"{type(exc).__name__}: {exc}", usage, graph=graph)


def _ask(
    request: str,
    prompt: str,
    settings: Settings,
    adapter: Adapter,
    runner: ProcessRunner,
    work_dir: Path,
    timeout: float,
    env: Mapping[str, str] | None,
    tag: str | None,
    usage: PlannerUsage,
    confined: tuple[SandboxSpec | None, Limits | None] = (None, None),
) -> str:
    """Run the CLI once on ``prompt`` and return its answer text; PlanError for every expected
    failure. ``usage`` gets the cost and tokens the CLI reported, whatever its answer.
    ``confined``: its sandbox and caps."""
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / LOG_NAME
    log_path.unlink(missing_ok=True)  # one answer per log: the runner appends
    base = _base_env(env)
    ctx = WorkerContext(
        task=request,
        prompt=prompt,
        prompt_file=work_dir / PROMPT_NAME,
        worker_dir=work_dir,
        depth=0,
        max_recursion_depth=0,
        attempt=1,
        settings=settings,
        time_left=timeout,
        allowed_tools=(),  # no tool at all: a planner reads its prompt and answers (workers/adapters/base.py)
        sandboxed=confined[0] is not None,
        env=base,
    )
    if adapter.needs_prompt_file(settings):
        ctx.prompt_file.write_text(prompt, encoding="utf-8")
    tag = tag or f"planner.{secrets.token_hex(6)}"
    try:
        argv = adapter.build_argv(ctx)
        handle = runner.spawn(
            argv,
            cwd=work_dir,
            env={**base, **adapter.extra_env(ctx)},
            log_path=log_path,
            tag=tag,
            sandbox=confined[0],
            limits=confined[1],
        )
    except ConfigError as exc:
        raise PlanError(exc.message) from None
    except CommandNotFound as exc:
        key = adapter.command_key or "orchestrator.worker"
        raise PlanError(f"{exc.strerror}. Install it, or set {key} in config.yaml to its full path") from None
    except (OSError, ValueError) as exc:
        raise PlanError(f"could not start the AI CLI: {exc}") from None
    try:
        code = runner.wait(handle, timeout)
        if code is None:
            raise PlanError(f"no answer within {timeout:g}s (orchestrator.planner_timeout)")
    finally:
        # Ends the CLI if it still runs, and sweeps anything it left behind either way.
        runner.terminate(handle, grace=settings.workers.kill_grace, first_signal=adapter.first_signal)
        runner.release(handle)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    parsed = adapter.parse(text, code, max_chars=ANSWER_CHARS)
    costs.estimate_for(parsed, adapter, settings, ctx.model)
    usage.update({"cost_usd": parsed.cost_usd, "tokens_in": parsed.tokens_in, "tokens_out": parsed.tokens_out})
    if code != 0:
        how = f"was killed by {signal_name(-code)}" if code < 0 else f"exited with code {code}"
        detail = parsed.error or _last_line(parsed.output)
        raise PlanError(f"the AI CLI {how}" + (f": {detail}" if detail else ""))
    if parsed.ok is False:
        raise PlanError(f"the AI CLI reported a failure: {parsed.error or _last_line(parsed.output)}")
    return parsed.output


def _base_env(env: Mapping[str, str] | None) -> dict[str, str]:
    # Never hand the planner a worker identity or an API key: it must not start jobs.
    return {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith(protocol.PREFIX)}


def _fallback(request: str, max_tasks: int, reason: str, usage: PlannerUsage | None = None, *, graph: bool = True) -> AIPlan:
    reason = " ".join(reason.split())
    if len(reason) > REASON_CHARS:
        reason = reason[: REASON_CHARS - 1] + "…"
    log.warning("AI planner failed: %s; using the heuristic planner", reason)
    note = f"AI planner failed: {reason}; used the heuristic planner"
    return heuristic_plan(request, max_tasks, note, graph=graph, **(usage or {}))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
