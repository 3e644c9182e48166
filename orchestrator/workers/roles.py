"""Roles: a task's ``role`` names a prompt preamble, an optional worker kind and
model, allowed tools, and the gates that apply to its workers. The shipped six
(config.quality.DEFAULT_ROLES) are merged with ``tasks.roles`` from config.yaml.

What each part does, and when it is decided:

- ``preamble``: the first paragraph of the worker's prompt (``preamble``), at each render.
- ``worker`` and ``model``: decided once, at submission (``apply_roles``), onto the task's node
  (TaskNode.kind, .model) and from there the worker's record (WorkerRecord.kind, .model); a
  restart keeps them. A role's kind must be installed (422 otherwise).
- ``allowed_tools``: a claude worker's ``--allowedTools`` instead of
  ``orchestrator.claude_allowed_tools`` (``allowed_tools``), at each attempt. Other kinds take no
  tool list from the orchestrator.
- ``gates``: read by the gates step (which gates apply to a role's workers).
"""

from __future__ import annotations

import os
import re

from ..config import AUTO_KIND, ExecutorKind, JobConfig, Settings
from ..config.quality import Role, roles_with_defaults
from ..errors import InvalidGraph
from ..models import TaskNode
from ..process.runner import CommandNotFound, resolve_command
from .adapters import get_adapter, resolve_kind
from .environment import SPAWN_BIN, base_env

# The orchestrator's own helpers in a claude tool list (orchestrator-spawn and its older
# ``python -m orchestrator spawn`` forms, orchestrator-lock): a role's list keeps them.
HELPER_RULE = re.compile(r"Bash\((orchestrator-|python3? -m orchestrator )")


def role_table(settings: Settings) -> dict[str, Role]:
    """Every role this server knows, by name."""
    return roles_with_defaults(settings.tasks.roles)


def role_of(settings: Settings, name: str | None) -> Role | None:
    """The role named ``name`` (a copy), or None without a name or for a name this server lacks."""
    return role_table(settings).get(name) if name else None


def preamble(settings: Settings, name: str | None) -> str:
    """The text a worker of role ``name`` reads first ("" without a role, or for a role that is gone)."""
    role = role_of(settings, name)
    return str(role["preamble"]).strip() if role else ""


def allowed_tools(settings: Settings, name: str | None) -> tuple[str, ...] | None:
    """A claude worker's tool list when its role lists tools: the role's, plus the helper rules of
    ``orchestrator.claude_allowed_tools`` (spawn, lock), so a worker of the role can still start
    child jobs. None: no role tools, the job's list applies. A server owner who took the spawn
    rules out of claude_allowed_tools does not get them back through a role."""
    role = role_of(settings, name)
    if not role or not role["allowed_tools"]:
        return None
    tools = list(dict.fromkeys(role["allowed_tools"]))
    tools += [t for t in settings.orchestrator.claude_allowed_tools if HELPER_RULE.match(t) and t not in tools]
    return tuple(tools)


def apply_roles(settings: Settings, cfg: JobConfig, nodes: list[TaskNode], inherited: str | None = None) -> list[str]:
    """At submission, once the job's nodes are built: each node of a role gets what its worker
    runs (``kind``, ``model``). ``inherited``: a child job's parent worker's role, taken by the
    tasks that name none (a backend worker's subtasks are backend work, run the same way).
    Returns notes for the job. InvalidGraph (422) for a role that does not exist or whose worker
    kind is not installed here. ``cfg.worker``: the job's resolved kind."""
    if inherited is None and all(node.role is None for node in nodes):
        return []
    table = role_table(settings)
    notes: list[str] = []
    if inherited is not None and inherited in table and any(node.role is None for node in nodes):
        notes.append(f"tasks without a role take role {inherited} of the worker that started this job")
        for node in nodes:
            node.role = node.role or inherited
    chosen: dict[str, tuple[str | None, str | None]] = {}  # each role decided once per job
    for i, node in enumerate(nodes):
        if node.role is None:
            continue
        where = f"tasks[{i}].role"
        role = table.get(node.role)
        if role is None:
            raise InvalidGraph(
                f"{where}={node.role[:80]!r} is not a role of this server. Roles: {', '.join(sorted(table))} "
                "(add one under tasks.roles in config.yaml)",
                field=where,
            )
        if node.role not in chosen:
            chosen[node.role] = _runs(settings, cfg, node.role, role, where, notes)
        node.kind, node.model = chosen[node.role]
    return notes


def _runs(
    settings: Settings, cfg: JobConfig, name: str, role: Role, where: str, notes: list[str]
) -> tuple[str | None, str | None]:
    """The kind (None: the job's) and model (None: orchestrator.model) of a role's workers."""
    kind = None
    if role["worker"]:
        kind, why = resolve_kind(role["worker"], settings)
        if role["worker"] == AUTO_KIND:
            notes.append(f"role {name}: {why}")
        missing = worker_kind_missing(settings, kind)
        if missing:
            raise InvalidGraph(
                f"{where}={name!r}: the role's worker kind {kind} (tasks.roles.{name}.worker) is not installed here: "
                f"{missing}. Install it, or change or remove the role's worker in config.yaml",
                field=where,
            )
    model = role["model"] or None
    if model is None and kind is not None and kind != cfg.worker and settings.orchestrator.model:
        # orchestrator.model names a model of the job's CLI; another CLI would refuse it.
        model = ""
        notes.append(
            f"role {name}: its workers run {kind} with {kind}'s default model (orchestrator.model is for "
            f"{cfg.worker}); set tasks.roles.{name}.model to choose one"
        )
    return kind, model


def worker_kind_missing(settings: Settings, kind: str) -> str:
    """Why this server cannot run workers of ``kind`` ("" when it can). Under ``distributed.executor:
    rq`` workers run on nodes, which check their own PATH (cluster/node.py); a kind no live node runs
    is refused when its attempt starts (cluster/executor.py), naming the command that starts one."""
    return "" if settings.distributed.executor == ExecutorKind.RQ else not_installed(settings, kind)


def not_installed(settings: Settings, kind: str) -> str:
    """Why ``kind`` cannot start here ("" when it can): its program is not on the workers' PATH."""
    adapter = get_adapter(kind)
    program = adapter.configured_program(settings)
    if program is None:
        return ""  # nothing to find on PATH: the kind runs this package's own Python
    if not program:
        return adapter.unset_program()
    key = adapter.command_key
    if os.sep in program and not os.path.isabs(program):
        return ""  # relative to the worker's folder: found (or not) where it runs
    try:  # the workers' PATH: the orchestrator's helpers (orchestrator-python...) first
        resolve_command(program, os.pathsep.join((SPAWN_BIN, base_env(settings)["PATH"])))
    except CommandNotFound:
        return f"{program!r} ({key}) is not on the workers' PATH"
    return ""
