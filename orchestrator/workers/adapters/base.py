"""What every worker kind provides: an argv list for a subtask, and a parser for what it printed."""

from __future__ import annotations

import os
import pwd
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config.plugins import KindSettings, kind_key
from ...outcomes import CostBasis

if TYPE_CHECKING:
    from ...config import Settings


@dataclass(frozen=True)
class WorkerContext:
    """Everything an adapter may use to build a command. Paths are absolute."""

    task: str
    prompt: str  # the full text given to the worker (for AI kinds, the rendered prompt)
    prompt_file: Path
    worker_dir: Path
    depth: int
    max_recursion_depth: int  # the job's; ORCHESTRATOR_MAX_DEPTH to the worker
    attempt: int
    settings: Settings
    # Seconds this attempt may still run (its timeout, less what a re-adopted attempt already
    # used): what a CLI's own shell-tool limit must cover so a long ``spawn --wait`` returns.
    time_left: float | None = None
    goal: str | None = None  # what the subtask is part of (the job's goal), if the planner found one
    # The worker's own model and tool list, from its role (workers/roles.py): None leaves the job's
    # (orchestrator.model, orchestrator.claude_allowed_tools); model "" is the CLI's own default.
    # An empty tuple: no tool at all (the AI planner, a judge: they read their prompt and answer);
    # each adapter turns it into its CLI's flags (claude ``--tools ""``, codex a read-only sandbox...).
    model: str | None = None
    allowed_tools: tuple[str, ...] | None = None
    sandboxed: bool = False  # it runs in the orchestrator's sandbox (process/sandbox.py), which a CLI's own may not nest in
    # The environment the command starts with, before ``extra_env`` (workers.inherit_env,
    # env_passthrough and env applied; the protocol's variables): the only environment an adapter
    # reads. The server's own (os.environ) is not the worker's: a variable set in workers.env only
    # must count, one the server has but the worker does not must not.
    env: Mapping[str, str] = field(default_factory=dict)
    # A continue round's (engine/continuing.py): the CLI session to go on with, when the adapter
    # ``resumes`` one; ``prompt`` is then the user's feedback alone.
    resume_session: str | None = None
    # A continue round's feedback, as the user wrote it ("" in a worker's first run): the command
    # kind's ``{feedback}``; every other kind reads it in ``prompt``.
    feedback: str = ""


class PathUse(str, Enum):
    """What a CLI keeps in a folder one of its settings names."""

    TMP = "tmp"  # scratch files: in a sandbox, the worker's own TMPDIR stands in for it
    CONFIG = "config"  # its settings, sessions and credentials
    CACHE = "cache"
    DATA = "data"
    STATE = "state"


@dataclass(frozen=True)
class PathSetting:
    """A folder a CLI writes, as its documentation names it: the environment ``variable`` that sets
    it (None: a fixed place), what it holds, where it is when the variable is unset (``default``
    under the worker's home; None: the CLI keeps nothing of its own there then), and the CLI's own
    subfolder inside it (``$XDG_DATA_HOME/opencode``). ``file``: the variable names a file, whose
    folder is the one written. A sandbox opens each such folder (workers/confinement.py): a tmp one
    is the worker's TMPDIR in the sandbox, the others a private overlay of the real folder."""

    variable: str | None
    use: PathUse
    default: str | None = None
    sub: str = ""
    file: bool = False

    def folder(self, env: Mapping[str, str]) -> Path | None:
        """The folder for a worker whose environment is ``env``, or None. A relative value is left
        out: it resolves in the worker's own directory, which it may write anyway."""
        value = env.get(self.variable) if self.variable else None
        if value:
            path = Path(value)
            if not path.is_absolute():
                return None
            path = path.parent if self.file else path
        elif self.default is None:
            return None
        else:
            path = home_of(env) / self.default
        return path / self.sub if self.sub else path


def home_of(env: Mapping[str, str]) -> Path:
    """The worker's home folder, as its CLI will find it: its HOME, else its user's entry in the
    password database (what a CLI falls back to), never the server's HOME."""
    return Path(env.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir)


@dataclass(frozen=True)
class ConfigEndpoint:
    """A model endpoint a CLI's own config file names: its ``url`` and where (``source``: which
    provider in which file), for the proxy's policy and for a refusal's words."""

    url: str
    source: str


@dataclass(frozen=True)
class ModelUsage:
    """One model's tokens in an attempt, as its CLI reported them (input includes cache reads)."""

    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cache_read: int = 0
    requests: int | None = None  # its API requests, where reported: a price tier applies per request


@dataclass
class ParsedResult:
    """What an adapter read from a finished attempt's output."""

    output: str
    ok: bool | None = None  # None: trust the exit code; False: failed even if it exited 0
    error: str | None = None
    cost_usd: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cache_read: int | None = None  # prompt-cache reads the model API reported
    # Where ``cost_usd`` comes from: None while the adapter read
    # it from the CLI's own report; CostBasis.ESTIMATED when computed from a price table.
    cost_basis: CostBasis | None = None
    cost_note: str | None = None  # why the cost is unknown ("cost unknown (model X)"); set: no estimate is made
    # The models the CLI's output named with their own counts (gemini's per-model stats), for a cost
    # estimate per model; empty: the totals above belong to the worker's configured model.
    usage_by_model: list[ModelUsage] = field(default_factory=list)
    model: str | None = None  # the model the CLI said it ran (None: it did not say)
    retryable: bool = True  # False for failures a retry cannot fix (bad credentials)
    # Why it failed, from the CLI's structured output: one of "auth",
    # "bad_request" or "transient", or None (unknown).
    # "auth" and "bad_request" are never retried; "transient" (rate limit, overload, 5xx) is
    # retried under its own budget (workers.transient_retries), not max_retries.
    failure_class: str | None = None
    retry_after: float | None = None  # seconds the service asked to wait, when the CLI reports it
    extra: dict[str, Any] = field(default_factory=dict)


# A URL in a CLI option that names a base URL (``-c model_providers.m.base_url="http://..."``,
# ``--openai-api-base=http://...``): the model endpoint a worker's own options point its CLI at.
_URL = re.compile(r"(?:https?|wss?)://[^\s\"'`,;]+")
_BASE_WORDS = re.compile(r"base[_-]?url|api[_-]base|baseURL|endpoint|host", re.I)

# What a model's name loses in a trailer's ``Name (model) <email>``: what would end or break it.
_NOT_IN_A_NAME = re.compile(r"[<>()\x00-\x1f]")


# The Anthropic Messages API's error types, when no HTTP status is known (the claude CLI's
# api_error_type, the SDK's error body): the failure class each means.
ANTHROPIC_ERROR_CLASSES = {
    "authentication_error": "auth",
    "permission_error": "auth",
    "invalid_request_error": "bad_request",
    "not_found_error": "bad_request",
    "request_too_large": "bad_request",
    "rate_limit_error": "transient",
    "overloaded_error": "transient",
    "api_error": "transient",
    "timeout_error": "transient",
    "api_connection_error": "transient",
}


def class_of_http_status(status: int | None) -> str | None:
    """The failure class of a model API's HTTP status (as CLIs report it), or None."""
    if status in (401, 403, 407):
        return "auth"
    if status in (400, 404, 405, 413, 422):
        return "bad_request"
    if status in (408, 409, 425, 429, 500, 502, 503, 504, 529):
        return "transient"
    return None


@dataclass(frozen=True)
class Advice:
    """What ``doctor`` suggests for a kind's own settings: ``orchestrator`` keys it would set, and a
    note with its fix for what it leaves to the user."""

    settings: dict[str, str | list[str]] = field(default_factory=dict)
    note: str = ""
    fix: str = ""


class Adapter:
    """A worker kind. Builds an argv and parses output; never spawns anything."""

    name = "base"
    command_key: str | None = None  # the setting holding the CLI's path, e.g. "orchestrator.claude_command"
    # A plugin kind's program, started unless ``workers.kinds.<name>.command`` names another (its
    # ``command_key`` is then that setting); "" for the shipped kinds, whose key is their own.
    default_program = ""
    first_signal = signal.SIGTERM  # the first rung of the kill ladder
    is_ai = False
    rounded_cost = False  # its CLI's cost figure is rounded (aider's cents): a price table's estimate is finer
    result_window = 64 * 1024  # bytes at the end of an attempt's log that parse() is given
    # Whether build_argv goes on with ``WorkerContext.resume_session`` (the CLI's recorded
    # conversation) in a continue round; otherwise the round's prompt carries the previous outcome.
    resumes = False
    # Why this kind can never run the spawn command (no shell tool), as a clause for the prompt's
    # "You cannot start child jobs: ..."; "" when it can.
    no_spawn_reason = ""
    # Who a commit of this kind's work credits in its ``Co-authored-by:`` trailer (git/commits.py): the
    # CLI's name and a no-reply address of its maker, as the CLI's own commits have them where it
    # has a habit (Claude Code, aider, opencode). "" for a kind that is no AI.
    co_author_name = ""
    co_author_email = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.default_program and cls.command_key is None:  # a plugin kind's program is set in one place
            cls.command_key = kind_key(cls.name)

    def kind_settings(self, settings: Settings) -> KindSettings:
        """Its ``workers.kinds.<name>`` (a plugin kind's settings; every key empty when not given)."""
        found = settings.workers.kinds.get(self.name)
        return found if found is not None else {"adapter": "", "command": "", "args": [], "options": {}}

    def configured_program(self, settings: Settings) -> str | None:
        """The program its workers start as configured (``command_key``'s value), which must be on the
        workers' PATH: "" when it is not set, None when there is nothing to look for (a kind that
        runs this package's own Python)."""
        if self.command_key is None:
            return None
        if self.default_program:
            return self.kind_settings(settings)["command"] or self.default_program
        section, _, key = self.command_key.partition(".")
        return str(settings.get(section, key) or "")

    def unset_program(self) -> str:
        """Why its workers cannot start while ``configured_program`` is "": what to set."""
        return f"the {self.name} kind needs {self.command_key} in config.yaml"

    def program_fix(self) -> str:
        """How to make its missing program available, as a refused job says it."""
        return (
            f"install {self.name} (./orchestrator.sh doctor --worker {self.name} says how), set {self.command_key} "
            "to its path, or choose another kind with config.worker or orchestrator.worker"
        )

    def advice(self, settings: Settings, sandboxed: bool) -> Advice:
        """The settings of its own a ready CLI still needs (``doctor``); ``sandboxed``: its workers run in the sandbox."""
        return Advice()

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        raise NotImplementedError

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        """By default the result is the tail of what the command printed."""
        return ParsedResult(output=tail_chars(text, max_chars))

    def extra_env(self, ctx: WorkerContext) -> dict[str, str]:
        return {}

    # The provider-key variables its CLI can read from a file instead (key_from_file): where other
    # processes read a worker's environment (workers/environment.py's provider_keys_by_file).
    keys_by_file: tuple[str, ...] = ()

    def key_from_file(self, argv: list[str], variable: str, path: str) -> list[str] | None:
        """``argv`` made to read ``variable``'s value from the file at ``path`` rather than from the
        environment, as a new list (``argv`` itself unchanged: the attempt's record redacts the new
        one), or None where it cannot (the variable then stays in the environment)."""
        return None

    def readable(self, line: str) -> str | None:
        """``line`` of this kind's log as a person reads it (``logs``; None: nothing to show). By
        default as written: only a CLI that streams JSON events has another form (transcript.py)."""
        return line

    # The folders its CLI writes, by the settings its documentation names (tmp, config, cache, data):
    # what a sandbox must open for it (state_dirs, tmp_dirs). Declared once per kind, read from here.
    path_settings: tuple[PathSetting, ...] = ()

    def state_dirs(self, settings: Settings, env: Mapping[str, str]) -> list[Path]:
        """Where the CLI keeps state of its own besides its cwd and TMPDIR (sessions, caches, its
        config file), which a sandboxed worker may write; ``env`` is the worker's environment."""
        return self._folders(env, lambda use: use is not PathUse.TMP)

    def tmp_dirs(self, env: Mapping[str, str]) -> list[Path]:
        """The scratch folders its settings name in ``env`` (CLAUDE_CODE_TMPDIR): in a sandbox each
        is the worker's own TMPDIR, at the path the CLI was given (a CLI that cannot write its
        temporary folder may hang without a word: Claude Code does)."""
        return self._folders(env, lambda use: use is PathUse.TMP)

    def _folders(self, env: Mapping[str, str], wanted: Callable[[PathUse], bool]) -> list[Path]:
        found: list[Path] = []
        for setting in self.path_settings:
            folder = setting.folder(env) if wanted(setting.use) else None
            if folder is not None and folder not in found:
                found.append(folder)
        return found

    # With workers.sandbox_network: allow, what its CLI reaches through the proxy besides the user's
    # workers.sandbox_allow: the hosts of its model API and sign-in as its documentation names them
    # (``network_hosts``, sandbox_allow's patterns), and the model endpoint its own settings name
    # (``model_urls``: a loopback mock or a company gateway is allowed, private address or not).
    network_hosts: tuple[str, ...] = ()
    base_url_variables: tuple[str, ...] = ()  # the environment variables that move its model API

    def model_urls(self, settings: Settings, env: Mapping[str, str]) -> list[str]:
        """The model API URLs this worker's settings name (``base_url_variables`` in its
        environment, a base URL in ``orchestrator.cli_args``), for the proxy's policy."""
        found = [env[name] for name in self.base_url_variables if env.get(name)]
        try:
            args = settings.get("orchestrator", "cli_args") or []
        except (KeyError, AttributeError):
            args = []
        found += [url for arg in args for url in _URL.findall(str(arg)) if _BASE_WORDS.search(str(arg))]
        return found

    def config_files(self, env: Mapping[str, str]) -> list[Path]:
        """The config files of its CLI that may name a model endpoint, where a worker with
        environment ``env`` reads them (workers/cli_configs.py snapshots them at the server's start)."""
        return []

    def config_endpoints(self, texts: Mapping[Path, str]) -> list[ConfigEndpoint]:
        """The model endpoints ``texts`` (a text per file of ``config_files``) name. Only ever read
        from a snapshot taken before any worker ran to open a host; a file as it is now (a folder
        workers write) may only refuse a job (workers/cli_configs.py)."""
        return []

    def state_files(self, settings: Settings, env: Mapping[str, str]) -> list[Path]:
        """Single files the CLI rewrites outside those folders (claude's ``~/.claude.json``): a
        sandboxed worker may write them in place where they exist; they are never made."""
        return []

    def model_for(self, settings: Settings, model: str | None) -> str:
        """The model this kind runs for a worker whose role names ``model`` (None: none), or ""
        when that is the CLI's own default (unknown here)."""
        return ""

    def co_author(self, settings: Settings, model: str | None, reported: str | None = None) -> str | None:
        """The ``Co-authored-by:`` value for this kind's work, its model named where known
        (``Claude Code (claude-sonnet-4) <noreply@anthropic.com>``): the one the CLI reported it ran
        (``reported``), else the one it was asked for (its CLI's default is unknown here); None for
        a kind that is no AI: ``command`` runs whatever the user set, ``simulated`` never pretends to be one."""
        if not self.co_author_name:
            return None
        chosen = _NOT_IN_A_NAME.sub("", reported or self.model_for(settings, model)).strip()
        return f"{self.co_author_name}{f' ({chosen})' if chosen else ''} <{self.co_author_email}>"

    def continue_refusal(self, settings: Settings) -> str | None:
        """Why a continue round of this kind's worker would not reach the worker with the user's
        feedback (the round is refused, saying how to fix it), or None: it does (every AI kind reads
        it in its prompt or its resumed session)."""
        return None

    def feedback_refusal(self, settings: Settings) -> str | None:
        """Why a round sent back on its own (a breaker of the merged result, engine/continuing.py)
        would not reach a worker that can act on its feedback, or None: it would. A kind that cannot
        continue cannot take it; the simulated worker runs the same script whatever it is told."""
        return self.continue_refusal(settings)

    def needs_prompt(self, settings: Settings) -> bool:
        """Whether the command reads the rendered prompt at all (else it is not rendered)."""
        return True

    def needs_prompt_file(self, settings: Settings) -> bool:
        """Whether the command reads the prompt from ``state/prompts/`` (written only then)."""
        return True


def tail_chars(text: str, max_chars: int) -> str:
    text = text.strip()
    if max_chars <= 0:
        return ""
    return text if len(text) <= max_chars else "…" + text[-max_chars:]


# A CLI's conversation id as the orchestrator accepts it: it is printed by the worker's CLI (data) and
# becomes an argument (``--resume ID``), so never an option, a path or anything longer than an id.
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def session_of(extra: Mapping[str, Any]) -> str | None:
    """The session id a CLI reported (``ParsedResult.extra``: claude's ``session_id``, codex's
    ``thread_id``), if it is one."""
    found = extra.get("session_id") or extra.get("thread_id")
    return found if isinstance(found, str) and _SESSION_ID.fullmatch(found) else None
