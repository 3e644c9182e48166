"""What a worker starts with: the environment an AI CLI starts from (a worker, or the AI
planner), as the server's owner chose it in ``workers.inherit_env``, ``workers.env_passthrough``
and ``workers.env``; the worker protocol's variables on top; and the prompt an AI worker reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from . import protocol
from .adapters import get_adapter
from .config import JobConfig, Settings
from .models import JobRecord, WorkerRecord
from .prompts import render_worker_prompt
from .runner import python_executable
from .workspace import Workspace

PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
SPAWN_BIN = str(Path(__file__).resolve().parent / "bin")  # holds orchestrator-spawn and orchestrator-lock


def base_env(settings: Settings) -> dict[str, str]:
    """The environment an AI CLI (a worker, or the AI planner) starts from: the server's whole
    environment (workers.inherit_env) or only the variables in workers.env_passthrough, then
    workers.env; never the server's own ORCHESTRATOR_* variables; PATH always set (the
    server's, unless workers.env sets one)."""
    w = settings.workers
    source = os.environ
    env = dict(source) if w.inherit_env else {name: source[name] for name in w.env_passthrough if name in source}
    for name in [n for n in env if n.startswith(protocol.PREFIX)]:
        del env[name]  # never leak a parent's identity or settings into a worker
    env.update(w.env)
    env.setdefault("PATH", source.get("PATH", os.defpath))
    return env


class BaseEnvs:
    """``base_env`` once per job: every worker of a job starts from a copy of the same one
    (copying ``os.environ`` per worker cost more than anything else in its environment).
    The server's environment is read when a job's first worker starts."""

    KEPT = 256  # jobs whose base is kept; past that the cache starts afresh

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._by_job: dict[str, dict[str, str]] = {}

    def get(self, job_id: str) -> dict[str, str]:
        found = self._by_job.get(job_id)
        if found is None:
            if len(self._by_job) >= self.KEPT:
                self._by_job.clear()
            found = self._by_job[job_id] = base_env(self.settings)
        return found


class Credentials(Protocol):
    """Issues a worker's scoped API key (api.auth.Credentials, when the server runs)."""

    def issue(self, root_id: str, job_id: str, worker: str) -> str: ...


def worker_env(
    settings: Settings,
    workspace: Workspace,
    rec: WorkerRecord,
    cfg: JobConfig,
    *,
    api_url: str | None,
    credentials: Credentials | None,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """The worker protocol: who it is, where it is, and how to start a child job, on top of
    the environment the server's owner chose (``base``: ``base_env``, never changed here)."""
    env = dict(base) if base is not None else base_env(settings)
    # orchestrator-spawn first, then the interpreter's folder (``python -m orchestrator spawn``).
    bin_dir = os.path.dirname(python_executable())
    env["PATH"] = os.pathsep.join((SPAWN_BIN, bin_dir, env["PATH"]))
    paths = workspace.worker_paths(rec.root_id, rec.depth, rec.name)
    env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(
        {
            protocol.JOB_ID: rec.job_id,
            protocol.ROOT_JOB_ID: rec.root_id,
            protocol.WORKER_ID: rec.name,
            protocol.DEPTH: str(rec.depth),
            protocol.MAX_RECURSION_DEPTH: str(cfg.max_recursion_depth),
            protocol.ENABLE_RECURSION: "1" if cfg.enable_recursion else "0",
            protocol.WORKER_DIR: str(paths.dir),
            protocol.PYTHON: python_executable(),
        }
    )
    if rec.port is not None:  # a worktree worker's, reserved at its checkout (bootstrap.py)
        env[protocol.PORT] = str(rec.port)
    # Its own temp folder (outside its directory, so files_created stays the worker's work).
    tmp = str(paths.tmp)
    env.update({"TMPDIR": tmp, "TMP": tmp, "TEMP": tmp})
    # The API and the worker's credential whenever the server runs: child jobs (refused with
    # enable_recursion false) and path locks (orchestrator-lock) go through them.
    if api_url:
        env[protocol.API_URL] = api_url
        if credentials is not None:
            env[protocol.API_KEY] = credentials.issue(rec.root_id, rec.job_id, rec.name)
    return env


def worker_prompt(
    workspace: Workspace,
    rec: WorkerRecord,
    job: JobRecord,
    *,
    api_url: str | None,
    template: Path | None,
    branch_prefix: str = "orchestrator/",
    preamble: str = "",
) -> str:
    """What an AI worker reads: its role's ``preamble`` (roles.preamble), its subtask, its context,
    and how (and whether) to recurse."""
    cfg = job.config
    return render_worker_prompt(
        task=rec.task,
        goal=job.goal,
        request=job.request,
        siblings=job.tasks,
        index=rec.index,
        depth=rec.depth,
        max_recursion_depth=cfg.max_recursion_depth,
        recursion_enabled=cfg.enable_recursion and api_url is not None,  # spawn needs the API
        worker_dir=str(workspace.worker_dir(rec.root_id, rec.depth, rec.name)),
        job_id=rec.job_id,
        worker_id=rec.name,
        children_left=max(0, cfg.max_children_per_worker - len(rec.child_job_ids)),
        timeout=rec.timeout or cfg.default_timeout,
        template=template,
        kind_no_spawn=get_adapter(rec.kind).no_spawn_reason,
        branch=f"{branch_prefix}{rec.root_id}/{rec.name}" if cfg.isolation == "worktree" else None,
        role=rec.role,
        preamble=preamble,
        before=_prerequisites(job, rec) if any(n.depends_on for n in job.nodes) else None,
    )


def _prerequisites(job: JobRecord, rec: WorkerRecord) -> list[int]:
    """The plan positions (1-based) of the tasks ``rec`` waits on."""
    wanted = set(rec.depends_on)
    found: dict[str, int] = {}  # a task run as candidates: its first candidate's position stands for it
    for i, node in enumerate(job.nodes, 1):
        if node.id in wanted:
            found.setdefault(node.id, i)
    return list(found.values())
