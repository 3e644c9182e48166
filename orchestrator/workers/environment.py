"""What a worker starts with: the environment an AI CLI starts from (a worker, or the AI
planner), as the server's owner chose it in ``workers.inherit_env``, ``workers.env_passthrough``
and ``workers.env``; the worker protocol's variables on top; and the prompt an AI worker reads
(its job's shared context block first: workers/sharedcontext.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import protocol
from ..config import Isolation, JobConfig, Settings
from ..config.schema import DEFAULT_TOKEN_ENV, PullRequestForge
from ..models import JobRecord, TaskNode, WorkerRecord
from ..process.interpreter import python_executable
from ..process.sandbox import Backend, SandboxSpec
from ..workspace.layout import Workspace
from .adapters import get_adapter
from .adapters.base import Adapter
from .caches import ENV_READ, cache_env
from .prompts import PromptFacts, SharedText, check_template, prompt_template_path, render_worker_prompt
from .sharedcontext import SharedContexts

SPAWN_BIN = str(Path(__file__).resolve().parent.parent / "bin")  # holds orchestrator-spawn and orchestrator-lock


# The host's agents and buses, each a door to a process outside any sandbox: ssh-agent (signs in to
# the forge as the user), gpg-agent, the session and system buses (systemd's user manager runs any
# command), the keyring, the Docker daemon (root), the user's display. Never inherited: a worker gets
# one only when workers.env_passthrough names it.
HOST_DOORS = (
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GPG_AGENT_INFO",
    "DBUS_SESSION_BUS_ADDRESS",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "DBUS_STARTER_ADDRESS",
    "DBUS_STARTER_BUS_TYPE",
    "GNOME_KEYRING_CONTROL",
    "DOCKER_HOST",
    "XDG_RUNTIME_DIR",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
)


def base_env(settings: Settings) -> dict[str, str]:
    """The environment an AI CLI (a worker, or the AI planner) starts from: the server's whole
    environment (workers.inherit_env) or only the variables in workers.env_passthrough, then
    workers.env; never the server's own ORCHESTRATOR_* variables, nor the host's agents and buses
    (HOST_DOORS) unless env_passthrough names them; PATH always set (the server's, unless
    workers.env sets one)."""
    w = settings.workers
    source = os.environ
    env = dict(source) if w.inherit_env else {name: source[name] for name in w.env_passthrough if name in source}
    for name in [n for n in env if n.startswith(protocol.PREFIX)]:
        del env[name]  # never leak a parent's identity or settings into a worker
    for name in HOST_DOORS:
        if name not in w.env_passthrough:
            env.pop(name, None)
    forge = settings.git.pull_request
    if forge != PullRequestForge.NONE:  # the pull request's token is the server's, not a worker's to read or log
        token = settings.git.forge_token_env or DEFAULT_TOKEN_ENV.get(forge, "")
        if token not in w.env_passthrough:
            env.pop(token, None)
    env.update(w.env)
    env.setdefault("PATH", source.get("PATH", os.defpath))
    return env


def add_helpers(env: dict[str, str]) -> None:
    """The orchestrator's commands (orchestrator-spawn, orchestrator-lock) first on ``env``'s PATH,
    and the interpreter they run on in ORCHESTRATOR_PYTHON. Nothing else of the orchestrator's:
    ``python``, ``pip`` and PYTHONPATH in a worker or a gate stay the user's (their project's
    tests must not run on the orchestrator's venv)."""
    env["PATH"] = os.pathsep.join((SPAWN_BIN, env["PATH"]))
    env[protocol.PYTHON] = python_executable()


def helper_env(settings: Settings, tmp: Path, workspace: Workspace | None = None, root_id: str = "") -> dict[str, str]:
    """The environment of a program run on workers' files in their sandbox (a gate on a merged result,
    a resolver, a trusted merge driver): ``base_env`` with no ORCHESTRATOR_* variable, ``tmp`` its
    TMPDIR, and given a ``workspace``, ``root_id``'s tree's package caches."""
    env = {k: v for k, v in base_env(settings).items() if not k.startswith(protocol.PREFIX)}
    env.update({"TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)})
    if workspace is not None:
        add_caches(env, settings, workspace, root_id)
    return env


def add_caches(env: dict[str, str], settings: Settings, workspace: Workspace, root_id: str) -> None:
    """Its tree's private package caches on ``env`` (workers/caches.py): npm, yarn, pip, uv, Go and
    cargo write there, never in the user's own caches (read-only in the sandbox). Worked out once
    per tree and the values they depend on (the user's Go settings file is read then, not for
    every worker)."""
    shared = tuple(settings.base_dir / Path(p).expanduser() for p in settings.workers.sandbox_writable)
    folder = workspace.tree_caches(root_id)
    key = (str(folder), shared, tuple(sorted((k, v) for k, v in env.items() if k in ENV_READ or k.startswith("GO"))))
    found = _CACHE_ENVS.get(key)
    if found is None:
        if len(_CACHE_ENVS) >= 256:
            _CACHE_ENVS.clear()
        found = _CACHE_ENVS[key] = cache_env(folder, env, shared=shared)
    env.update(found)


_CACHE_ENVS: dict[tuple[object, ...], dict[str, str]] = {}  # add_caches: per tree and the values cache_env reads


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
    shared: Path | None = None,
) -> dict[str, str]:
    """The worker protocol: who it is, where it is, and how to start a child job, on top of
    the environment the server's owner chose (``base``: ``base_env``, never changed here).
    ``shared``: its job's shared context block, when its prompt starts with exactly that file's text."""
    env = dict(base) if base is not None else base_env(settings)
    add_helpers(env)
    paths = workspace.worker_paths(rec.root_id, rec.depth, rec.name)
    env.update(
        {
            protocol.JOB_ID: rec.job_id,
            protocol.ROOT_JOB_ID: rec.root_id,
            protocol.WORKER_ID: rec.name,
            protocol.DEPTH: str(rec.depth),
            protocol.MAX_RECURSION_DEPTH: str(cfg.max_recursion_depth),
            protocol.ENABLE_RECURSION: "1" if cfg.enable_recursion else "0",
            protocol.WORKER_DIR: str(paths.dir),
        }
    )
    if shared is not None:  # a kind that talks to a model API marks these first bytes for its prompt cache
        env[protocol.SHARED_CONTEXT] = str(shared)
    if rec.port is not None:  # a worktree worker's, reserved at its checkout (checkouts/bootstrap.py)
        env[protocol.PORT] = str(rec.port)
    # Its own temp folder (outside its directory, so files_created stays the worker's work).
    tmp = str(paths.tmp)
    env.update({"TMPDIR": tmp, "TMP": tmp, "TEMP": tmp})
    add_caches(env, settings, workspace, rec.root_id)
    # The API and the worker's credential whenever the server runs: child jobs (refused with
    # enable_recursion false) and path locks (orchestrator-lock) go through them.
    if api_url:
        env[protocol.API_URL] = api_url
        if credentials is not None:
            env[protocol.API_KEY] = credentials.issue(rec.root_id, rec.job_id, rec.name)
    return env


KEY_FILE = ".orchestrator-api-key"  # in the worker's TMPDIR: its credential where /proc is shared


def environ_shared(sandbox: SandboxSpec | None) -> bool:
    """Whether other trees' workers can read this one's ``/proc/PID/environ``: a sandbox without a
    PID namespace (Landlock, Seatbelt), in which a process of another tree (as root: any) reads the
    environment of every other. Not under bubblewrap (its PID namespace shows no other tree) nor
    unconfined (any process of the user may read any file of the user's anyway)."""
    return sandbox is not None and sandbox.backend is not Backend.BUBBLEWRAP


def _private_file(folder: str, name: str, value: str) -> str:
    """``value`` in ``folder/name``, 0600, made afresh (a name the worker planted, a link among
    them, is removed, never followed): its path."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(value + "\n")
    return path


def credential_by_file(env: dict[str, str], sandbox: SandboxSpec | None) -> dict[str, str]:
    """``env`` with the worker's credential moved to a file only it can read where other processes
    can read its environment (:func:`environ_shared`). The file is in its TMPDIR, which its sandbox
    lets no other worker's read; ``ORCHESTRATOR_API_KEY_FILE`` names it (the spawn and lock helpers
    and the client read it: api/calls.py's worker_key)."""
    key, tmp = env.get(protocol.API_KEY), env.get("TMPDIR")
    if not environ_shared(sandbox) or not key or not tmp:
        return env
    moved = {k: v for k, v in env.items() if k != protocol.API_KEY}
    moved[protocol.API_KEY_FILE] = _private_file(tmp, KEY_FILE, key)
    return moved


def provider_keys_by_file(
    adapter: Adapter, argv: list[str], env: dict[str, str], sandbox: SandboxSpec | None
) -> tuple[list[str], dict[str, str]]:
    """(argv, env) with each provider key the worker's CLI can read from a file (its adapter's
    ``keys_by_file``: claude's apiKeyHelper, the anthropic worker's --api-key-file) moved out of its
    environment into a file only it can read, where other processes can read that environment
    (:func:`environ_shared`); the others stay (docs/sandbox.md names which CLIs cannot)."""
    tmp = env.get("TMPDIR")
    if not environ_shared(sandbox) or not tmp:
        return argv, env
    for variable in adapter.keys_by_file:
        value = env.get(variable)
        if not value:
            continue
        path = _private_file(tmp, f".orchestrator-{variable.lower().replace('_', '-')}", value)
        changed = adapter.key_from_file(argv, variable, path)
        if changed is None:
            os.unlink(path)
            continue
        argv, env = changed, {k: v for k, v in env.items() if k != variable}
    return argv, env


@dataclass(frozen=True)
class WorkerPrompt:
    """A worker's rendered prompt: its ``text``, and its job's shared block (``shared``, an
    absolute path) when the text starts with exactly that file's text (``shared_bytes`` of it)."""

    text: str
    shared: Path | None = None
    shared_bytes: int = 0

    @property
    def size(self) -> int:
        """The prompt's bytes (UTF-8), as WorkerRecord.prompt_bytes records them."""
        return len(self.text.encode("utf-8"))

    @classmethod
    def of(cls, text: str, shared: Path, block: str) -> WorkerPrompt:
        """``text`` measured against its job's ``block`` (at ``shared``): a user template that
        does not start with the block gets no shared bytes, and no ``ORCHESTRATOR_SHARED_CONTEXT``."""
        if not text.startswith(block):
            return cls(text)
        return cls(text, shared, len(block.encode("utf-8")))


class WorkerPrompts:
    """The engine's prompts: each AI worker's, its job's shared block first (written at the job's
    first worker), with this server's template (checked now: a broken one fails at start, not in
    every worker) and API address (``api_url``: read when a worker starts; the server sets it).
    ``preamble``: a role's preamble by its name (roles.preamble, which imports this module)."""

    def __init__(
        self,
        settings: Settings,
        workspace: Workspace,
        api_url: Callable[[], str | None],
        preamble: Callable[[Settings, str | None], str],
    ) -> None:
        self.settings = settings
        self.workspace = workspace
        self.api_url = api_url
        self.preamble = preamble
        self.shared = SharedContexts(workspace, settings)
        self.template = prompt_template_path(settings)
        if self.template is not None:
            check_template(self.template)

    def render(self, rec: WorkerRecord, job: JobRecord, directory: Path | None = None) -> WorkerPrompt:
        """``rec``'s prompt, measured against its job's block. ``directory``: its checkout, where
        a worktree job's repository is read for the block (when this is the job's first worker)."""
        api_url = self.api_url()
        block = self.shared.block(job, spawn=job_spawns(job, api_url), directory=directory)
        text = worker_prompt(
            self.workspace,
            rec,
            job,
            api_url=api_url,
            template=self.template,
            branch_prefix=self.settings.git.branch_prefix,
            preamble=self.preamble(self.settings, rec.role),
            shared=block.shared,
        )
        return WorkerPrompt.of(text, block.path, block.shared.text)


def worker_prompt(
    workspace: Workspace,
    rec: WorkerRecord,
    job: JobRecord,
    *,
    api_url: str | None,
    template: Path | None,
    branch_prefix: str = "orchestrator/",
    preamble: str = "",
    shared: SharedText | None = None,
) -> str:
    """What an AI worker reads: its job's ``shared`` context block (workers/sharedcontext.py; without one,
    a block is rendered from the job's record alone), then its role's ``preamble``
    (roles.preamble), its subtask, its context, and how (and whether) to recurse."""
    cfg = job.config
    node = node_of(job, rec)
    facts = PromptFacts(
        task=rec.task,
        goal=job.goal,
        request=job.request,
        siblings=job.tasks,
        index=rec.index,
        depth=rec.depth,
        max_recursion_depth=cfg.max_recursion_depth,
        recursion_enabled=cfg.enable_recursion and api_url is not None,  # spawn needs the API
        # (where its checkout lives: outside the workspace, the workspace's folder a link to it: workspace/checkout_place.py)
        worker_dir=os.path.realpath(workspace.worker_dir(rec.root_id, rec.depth, rec.name)),
        job_id=rec.job_id,
        worker_id=rec.name,
        children_left=max(0, cfg.max_children_per_worker - len(rec.child_job_ids)),
        timeout=rec.timeout or cfg.default_timeout,  # a candidate's own, else the job's
        kind_no_spawn=get_adapter(rec.kind).no_spawn_reason,
        branch=f"{branch_prefix}{rec.root_id}/{rec.name}" if cfg.isolation == Isolation.WORKTREE else None,
        role=rec.role,
        preamble=preamble,
        before=_prerequisites(job, rec) if any(n.depends_on for n in job.nodes) else None,
        task_ids=[n.id for n in job.nodes] if len(job.nodes) == len(job.tasks) else None,
        context=_context(node),
    )
    return render_worker_prompt(facts, template=template, shared=shared)


def job_spawns(job: JobRecord, api_url: str | None) -> bool:
    """Whether any worker of ``job`` may start child jobs (its shared block then tells how):
    recursion on with the API up, a depth below the job's maximum, children allowed, and some
    kind among its workers' with a shell tool (an aider-only job is told nothing of it)."""
    cfg = job.config
    if not (cfg.enable_recursion and api_url is not None) or job.depth >= cfg.max_recursion_depth:
        return False
    if cfg.max_children_per_worker <= 0:
        return False
    kinds = {node.kind or cfg.worker for node in job.nodes} or {cfg.worker}
    return any(not get_adapter(kind).no_spawn_reason for kind in kinds)


def node_of(job: JobRecord, rec: WorkerRecord) -> TaskNode | None:
    """The plan node of ``rec`` (its plan position's; a candidate's own after expansion)."""
    if len(job.nodes) != len(job.tasks) or not 1 <= rec.index <= len(job.nodes):
        return None
    return job.nodes[rec.index - 1]


def _context(node: TaskNode | None) -> dict[str, Any] | None:
    return dict(node.context) if node is not None and node.context else None


def _prerequisites(job: JobRecord, rec: WorkerRecord) -> list[int]:
    """The plan positions (1-based) of the tasks ``rec`` waits on."""
    wanted = set(rec.depends_on)
    found: dict[str, int] = {}  # a task run as candidates: its first candidate's position stands for it
    for i, node in enumerate(job.nodes, 1):
        if node.id in wanted:
            found.setdefault(node.id, i)
    return list(found.values())
