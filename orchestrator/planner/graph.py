"""Plans as graphs, as pure functions: a request's ``tasks`` (plain strings
and ``{"id", "task", "depends_on", "role", "owns", "candidates"}`` objects) checked into subtask texts and
``TaskNode``s; cycles, unknown, duplicate and self ids refused (``InvalidGraph``, a 422 naming
the cycle or the id); tasks whose ``owns`` overlap ordered by an added dependency; and the path
globs of ``owns`` and ``when_changed`` matched against paths.

Globs are repository-relative, ``/``-separated: ``*`` and ``?`` stay within one path part,
``**`` spans any number of parts, and a glob without a wildcard names a file or a whole folder
(``docs`` owns ``docs/a.md``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from ..config.choice import parse_candidate_specs
from ..config.quality import GATE_NAME, check_globs
from ..config.schema import WORKER_KINDS
from ..errors import ConfigError, InvalidGraph
from ..models import TaskNode

TASK_KEYS = ("id", "task", "depends_on", "role", "owns", "candidates")
ID_RE = GATE_NAME  # letters, digits, "_", "-", "." (at most 64), starting with a letter or digit
EXAMPLE = '{"id": "api", "task": "Build the API", "depends_on": ["db"], "role": "backend", "owns": ["src/api/**"]}'


def auto_id(index: int) -> str:
    """The id of the ``index``-th task (1-based) when it has none: ``t1``, ``t2``, ..."""
    return f"t{index}"


def independent(count: int) -> list[TaskNode]:
    """The nodes of ``count`` plain tasks: ids ``t1``, ``t2``..., no dependencies."""
    return [TaskNode(auto_id(i + 1)) for i in range(count)]


def check_tasks(
    tasks: object, max_tasks: int, max_chars: int, roles: Collection[str] | None = None
) -> tuple[list[str], list[TaskNode]] | None:
    """Explicit subtasks (whitespace collapsed) and their nodes; None when left out (the planner
    splits the request). ``roles``: the role names that exist (None: any name is taken)."""
    if tasks is None:
        return None
    if not isinstance(tasks, list) or not tasks:
        raise InvalidGraph("tasks must be a non-empty list of strings (one subtask each) or task objects such as " + EXAMPLE)
    if len(tasks) > max_tasks:
        raise InvalidGraph(f"{len(tasks)} tasks given; at most {max_tasks} are accepted (orchestrator.max_tasks)")
    texts: list[str] = []
    raw: list[dict[str, Any]] = []
    for i, item in enumerate(tasks):
        where = f"tasks[{i}]"
        if isinstance(item, str) and item.strip():
            item = {"task": item}
        if not isinstance(item, dict):
            raise InvalidGraph(f"{where} must be a non-empty string or an object such as {EXAMPLE}", field=where)
        unknown = sorted(str(k) for k in item if k not in TASK_KEYS)
        if unknown:
            raise InvalidGraph(f"{where}: unknown key(s) {', '.join(unknown)}. Allowed: {', '.join(TASK_KEYS)}", field=where)
        text = item.get("task")
        if not isinstance(text, str) or not text.strip():
            raise InvalidGraph(f"{where}.task must be a non-empty string: what the worker is to do", field=f"{where}.task")
        if len(text) > max_chars:
            raise InvalidGraph(f"{where} is longer than orchestrator.max_request_chars ({max_chars})", field=f"{where}.task")
        texts.append(" ".join(text.split()))
        raw.append(item)
    nodes = build_nodes(raw, roles)
    return texts, nodes


def build_nodes(items: Sequence[dict[str, Any]], roles: Collection[str] | None = None) -> list[TaskNode]:
    """Nodes from task objects (their ``task`` text is the caller's); checked as a whole graph."""
    nodes: list[TaskNode] = []
    for i, item in enumerate(items):
        where = f"tasks[{i}]"
        task_id = item.get("id")
        if task_id is None:
            task_id = auto_id(i + 1)
        elif not isinstance(task_id, str) or not ID_RE.match(task_id):
            raise InvalidGraph(
                f'{where}.id={str(task_id)[:80]!r} is not a task id: letters, digits, "_", "-" or "." (at most 64), '
                'starting with a letter or digit, e.g. "api"',
                field=f"{where}.id",
            )
        deps = item.get("depends_on")
        if deps is None:
            deps = []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise InvalidGraph(f'{where}.depends_on must be a list of task ids, e.g. ["db"]', field=f"{where}.depends_on")
        role = item.get("role")
        if role is not None:
            if not isinstance(role, str) or (roles is not None and role not in roles):
                known = ", ".join(sorted(roles or ()))
                raise InvalidGraph(
                    f"{where}.role={str(role)[:80]!r} is not a role of this server. Roles: {known} "
                    "(add one under tasks.roles in config.yaml)",
                    field=f"{where}.role",
                )
        try:
            owns = check_globs(item.get("owns"), f"{where}.owns")
        except ConfigError as exc:
            raise InvalidGraph(exc.message, field=f"{where}.owns") from None
        try:
            candidates = parse_candidate_specs(item.get("candidates"), f"{where}.candidates", WORKER_KINDS)
        except ConfigError as exc:
            raise InvalidGraph(exc.message, field=f"{where}.candidates") from None
        nodes.append(TaskNode(id=task_id, depends_on=list(dict.fromkeys(deps)), role=role, owns=owns, candidates=candidates))
    check_graph(nodes)
    return nodes


def check_graph(nodes: Sequence[TaskNode]) -> None:
    """Duplicate ids, unknown or self dependencies and cycles: each an ``InvalidGraph`` naming it."""
    index: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.id in index:
            raise InvalidGraph(
                f"tasks[{i}].id {node.id!r} is used twice (also tasks[{index[node.id]}]; a task without an id is "
                f"t<position>): give each task its own id",
                field=f"tasks[{i}].id",
                id=node.id,
            )
        index[node.id] = i
    for i, node in enumerate(nodes):
        for dep in node.depends_on:
            if dep == node.id:
                raise InvalidGraph(
                    f"tasks[{i}] ({node.id!r}) depends on itself: remove {dep!r} from its depends_on",
                    field=f"tasks[{i}].depends_on",
                    id=dep,
                )
            if dep not in index:
                raise InvalidGraph(
                    f"tasks[{i}] ({node.id!r}) depends on {dep!r}, which is no task's id. Ids: {', '.join(index)}",
                    field=f"tasks[{i}].depends_on",
                    id=dep,
                )
    cycle = find_cycle(nodes)
    if cycle:
        raise InvalidGraph(
            f"the tasks' dependencies form a cycle: {' -> '.join(cycle)}; no task of it could ever start. "
            "Remove one of these dependencies",
            field="tasks",
            cycle=cycle,
        )


def find_cycle(nodes: Sequence[TaskNode]) -> list[str] | None:
    """A dependency cycle as ids, its first id repeated at the end (a -> b -> a), or None."""
    deps = {n.id: n.depends_on for n in nodes}
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    for start in deps:
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterable[str]]] = [(start, iter(deps[start]))]
        state[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in deps:
                    continue
                if state.get(child) == 1:
                    return path[path.index(child) :] + [child]
                if not state.get(child):
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(deps[child])))
                    break
            else:
                stack.pop()
                path.pop()
                state[node] = 2
    return None


def has_dependencies(nodes: Sequence[TaskNode]) -> bool:
    return any(n.depends_on for n in nodes)


def ancestors(nodes: Sequence[TaskNode]) -> dict[str, set[str]]:
    """Every task's transitive prerequisites."""
    deps = {n.id: n.depends_on for n in nodes}

    @functools.cache
    def above(task_id: str) -> frozenset[str]:
        found: set[str] = set()
        for dep in deps.get(task_id, ()):
            found.add(dep)
            found |= above(dep)
        return frozenset(found)

    order = topological(nodes)  # prerequisites first: the cache fills without deep recursion
    return {task_id: set(above(task_id)) for task_id in order}


def topological(nodes: Sequence[TaskNode]) -> list[str]:
    """Ids with every task after its prerequisites, plan order among the free ones (a valid graph)."""
    remaining = {n.id: set(n.depends_on) for n in nodes}
    order: list[str] = []
    while remaining:
        free = [i for i, deps in remaining.items() if not deps]
        if not free:
            raise InvalidGraph("the tasks' dependencies form a cycle", field="tasks")
        for task_id in free:
            del remaining[task_id]
            order.append(task_id)
        for deps in remaining.values():
            deps.difference_update(free)
    return order


def dependents(nodes: Sequence[TaskNode], task_id: str) -> list[str]:
    """Every task that waits, directly or through others, on ``task_id`` (plan order)."""
    above = ancestors(nodes)
    return list(dict.fromkeys(n.id for n in nodes if task_id in above[n.id]))


def unique_nodes(nodes: Sequence[TaskNode]) -> list[TaskNode]:
    """One node per task id: a task run as candidates has a node per candidate, all
    with its id and dependencies; its first stands for it."""
    seen: set[str] = set()
    found = []
    for node in nodes:
        if node.id not in seen:
            seen.add(node.id)
            found.append(node)
    return found


def serialize_overlaps(nodes: list[TaskNode]) -> list[str]:
    """Two tasks that could run at once (neither waits on the other) and whose ``owns`` overlap
    would edit the same files: the later one in plan order is made to wait on the earlier one.
    Changes ``nodes``; returns a note per added dependency (for the job's notes)."""
    notes = []
    above = ancestors(nodes)  # again only after a dependency is added
    for j, later in enumerate(nodes):
        if not later.owns:
            continue
        for earlier in nodes[:j]:
            if not earlier.owns:
                continue
            if earlier.id in above[later.id] or later.id in above[earlier.id]:
                continue
            shared = overlapping(earlier.owns, later.owns)
            if shared:
                later.depends_on.append(earlier.id)
                above = ancestors(nodes)
                notes.append(
                    f"task {later.id} now waits on task {earlier.id}: both own {shared[0]} "
                    "(tasks whose owns overlap run one after the other, so they cannot conflict)"
                )
    return notes


# -- globs ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _glob_re(glob: str) -> re.Pattern[str]:
    if not any(c in glob for c in "*?["):  # a file, or a folder and everything in it
        return re.compile(re.escape(glob) + r"(/.*)?\Z", re.S)
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append(r"(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(r".*")
            i += 2
        elif glob[i] == "*":
            out.append(r"[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append(r"[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def matches(path: str, globs: Iterable[str]) -> bool:
    """Does the repository-relative ``path`` fall under any of ``globs``?"""
    return any(_glob_re(g).match(path) for g in globs)


def overlapping(a: Sequence[str], b: Sequence[str]) -> list[str]:
    """The globs of ``a`` that could match a path some glob of ``b`` also matches (conservative:
    two wildcard parts are taken to meet)."""
    return [g for g in a if any(_meet(g.split("/"), h.split("/"), not _wild(g), not _wild(h)) for h in b)]


def _wild(part: str) -> bool:
    return any(c in part for c in "*?[")


def _part_meets(p: str, q: str) -> bool:
    if p == q or (_wild(p) and _wild(q)):
        return True
    if _wild(p):
        return bool(_glob_re(p).match(q))
    if _wild(q):
        return bool(_glob_re(q).match(p))
    return False


def _meet(p: list[str], q: list[str], p_plain: bool, q_plain: bool) -> bool:
    """Could some path match both part lists? A plain glob (no wildcard) also owns all below it."""
    if not p and not q:
        return True
    if not p:
        return p_plain or all(x == "**" for x in q)
    if not q:
        return q_plain or all(x == "**" for x in p)
    if p[0] == "**" or q[0] == "**":
        return True
    return _part_meets(p[0], q[0]) and _meet(p[1:], q[1:], p_plain, q_plain)
