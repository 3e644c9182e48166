"""Settings: read once at the edge, validated, passed down.

Precedence: built-in defaults < ``config.yaml`` < environment
(``ORCHESTRATOR__SECTION__KEY``) < a job's own ``config``, which may lower but
never raise the server's limits. This is the only module that reads YAML or
the settings part of the environment.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import protocol
from .errors import ConfigError, RecursionLimit

ENV_PREFIX = protocol.SETTINGS_PREFIX
WORKER_KINDS = ("auto", "simulated", "command", "claude", "codex", "gemini", "aider", "ollama", "opencode")
PLANNERS = ("heuristic", "ai", "auto")


@dataclass(frozen=True)
class Key:
    """One setting: its type, default, allowed range or choices, and its comment."""

    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    refusal: str = ""  # said after "Choose one of" when a value is not a choice: what works instead
    secret: bool = False  # its values never appear in errors, `config` output or anything else


# Every setting, by section. config.template.yaml is checked against this table by the tests.
SCHEMA: dict[str, dict[str, Key]] = {
    "orchestrator": {
        "execution_mode": Key(str, "native", "native: workers run directly (Linux, macOS; on Windows run the orchestrator inside WSL)", choices=("native",),
                              refusal="wsl and windows are not supported: the orchestrator runs on Linux and macOS only (POSIX process groups "
                                      "and signals). On Windows, install and run the orchestrator inside WSL, where your CLIs live, with "
                                      "execution_mode: native."),
        "workspace_root": Key(str, "./workspace", "where job folders go, relative to this folder"),
        "worker": Key(str, "auto", "worker kind: auto (first AI CLI on PATH, else simulated), simulated, command, claude, codex, gemini, aider, ollama, opencode", choices=WORKER_KINDS),
        "planner": Key(str, "auto", "how a request is split: heuristic (offline rules), ai (ask the AI CLI), auto (ai when an AI CLI is the worker, else heuristic)", choices=PLANNERS),
        "claude_command": Key(str, "claude", "path or name of the claude CLI"),
        "codex_command": Key(str, "codex", "path or name of the codex CLI"),
        "gemini_command": Key(str, "gemini", "path or name of the gemini CLI"),
        "aider_command": Key(str, "aider", "path or name of the aider CLI"),
        "ollama_command": Key(str, "ollama", "path or name of the ollama CLI"),
        "opencode_command": Key(str, "opencode", "path or name of the opencode CLI"),
        "command": Key(list, [], "argv template for the 'command' kind; placeholders {prompt}, {prompt_file}, {worker_dir}, {task}"),
        "model": Key(str, "", "model for the AI CLI (passed as its --model/-m); empty: the CLI's default"),
        "cli_args": Key(list, [], "extra arguments appended to the AI CLI's command line"),
        "claude_permission_mode": Key(str, "acceptEdits", "claude --permission-mode for headless runs", choices=("default", "acceptEdits", "auto", "dontAsk", "bypassPermissions", "plan")),
        "claude_allowed_tools": Key(list, ["Read", "Write", "Edit", "Glob", "Grep", "Bash(orchestrator-spawn:*)", "Bash(python -m orchestrator spawn:*)", "Bash(python3 -m orchestrator spawn:*)"], "claude --allowedTools: what a worker may use without asking (orchestrator-spawn, and the older spawn forms)"),
        "claude_max_turns": Key(int, 0, "claude --max-turns (0: the CLI's default)", min=0, max=10_000),
        "ollama_model": Key(str, "llama3.2", "model for the ollama kind (ollama run MODEL)"),
        "opencode_model": Key(str, "", "provider/model for the opencode kind (-m); empty: its default"),
        "prompt_template": Key(str, None, "Jinja template file for AI worker prompts; null: the shipped one", nullable=True),
        "planner_timeout": Key(float, 120.0, "seconds the AI planner may take before the heuristic planner is used", min=1, max=3600),
        "templates_dir": Key(str, None, "folder of Jinja templates that override the shipped report templates", nullable=True),
        "max_request_chars": Key(int, 20000, "longest request accepted, in characters", min=1, max=1_000_000),
        "max_tasks": Key(int, 100, "most explicit subtasks one request may list", min=1, max=10_000),
        "retention_days": Key(float, 0.0, "the server deletes finished job trees older than this many days, at start and hourly (0: keep all; see `prune`)", min=0, max=36500),
    },
    "workers": {
        "max_workers": Key(int, 5, "default workers running at once per job", min=1, max=1024),
        "max_workers_limit": Key(int, 16, "most workers at once per job a request may ask for", min=1, max=1024),
        "global_max_workers": Key(int, 16, "most workers running at once across all jobs of this server", min=1, max=4096),
        "default_timeout": Key(float, 300.0, "seconds a worker attempt may run before the kill ladder", min=0.05, max=7 * 86400),
        "max_timeout": Key(float, 3600.0, "longest default_timeout a request may ask for, seconds", min=0.05, max=7 * 86400),
        "max_retries": Key(int, 2, "extra attempts after a failed one (exit code != 0)", min=0, max=20),
        "retry_backoff": Key(float, 1.0, "seconds before the first retry; doubles each time, plus up to 25% jitter", min=0, max=3600),
        "retry_backoff_max": Key(float, 60.0, "longest pause between attempts, seconds", min=0, max=86400),
        "transient_retries": Key(int, 5, "extra attempts after a rate limit, overload or 5xx the CLI reported; a budget of their own, not max_retries", min=0, max=100),
        "transient_backoff_max": Key(float, 120.0, "longest pause before a transient retry, seconds (pauses start at 4 x retry_backoff and double; a longer retry-after from the service fails the worker)", min=0, max=86400),
        "retry_on_timeout": Key(bool, False, "retry an attempt that timed out (off: a timeout usually repeats)"),
        "kill_grace": Key(float, 5.0, "seconds between SIGTERM and SIGKILL", min=0, max=3600),
        "output_chars": Key(int, 4000, "how much of a worker's output its record keeps as its result", min=0, max=1_000_000),
        "max_memory_mb": Key(int, 8192, "a worker's whole process tree may use this much RSS (0: no cap)", min=0, max=1 << 30),
        "max_processes": Key(int, 512, "processes a worker's tree may have at once (0: no cap)", min=0, max=1 << 22),
        "max_log_mb": Key(int, 200, "a worker's log may grow to this size; then it is stopped (0: no cap)", min=0, max=1 << 30),
        "max_disk_mb": Key(int, 4096, "a worker's folder may hold this much (0: no cap)", min=0, max=1 << 30),
        "monitor_interval": Key(float, 0.25, "seconds between resource samples of running workers", min=0.05, max=60),
        "max_cost_usd": Key(float, 0.0, "per root tree: once AI workers have reported this much cost, no new worker starts (0: no budget)", min=0, max=1_000_000),
        "env": Key(dict, {}, "environment variables every worker gets, NAME: \"value\" (values are never logged or shown)", secret=True),
        "inherit_env": Key(bool, True, "workers inherit the server's whole environment; false: only env_passthrough, env and the orchestrator's own"),
        "env_passthrough": Key(list, ["HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TERM", "SHELL"], "the server's variables a worker gets when inherit_env is false (add your CLI's API key variable)"),
    },
    "recursion": {
        "enable": Key(bool, True, "let workers start child jobs"),
        "max_depth": Key(int, 3, "default deepest depth a child job may have (root = 0)", min=0, max=32),
        "max_depth_limit": Key(int, 5, "deepest max_recursion_depth a request may ask for", min=0, max=32),
        "max_children_per_worker": Key(int, 3, "child jobs one worker may start", min=0, max=1000),
        "max_workers_per_root": Key(int, 100, "workers in one root job's whole tree", min=1, max=100_000),
        "tree_deadline": Key(float, 21600.0, "seconds a root job's whole tree may run; then it is cancelled (0: no deadline)", min=0, max=30 * 86400),
    },
    "api": {
        "host": Key(str, "127.0.0.1", "address to bind; keep 127.0.0.1 unless you know why"),
        "port": Key(int, 8000, "port to listen on (0 picks a free one)", min=0, max=65535),
        "api_key": Key(str, "", "key clients send as X-API-Key; install.sh generates one"),
        "threads": Key(int, 24, "waitress request threads (long-polls and streams hold one each)", min=2, max=512),
        "max_body_bytes": Key(int, 1_048_576, "largest request body accepted", min=1024, max=1 << 30),
        "long_poll_max": Key(float, 60.0, "longest a wait or stream request is held, seconds", min=1, max=3600),
        "allowed_hosts": Key(list, [], "Host header names accepted besides 127.0.0.1, localhost, ::1 and api.host (DNS-rebinding guard)"),
        "rate_limit_worker": Key(float, 20.0, "requests per second one worker credential may make (0: no limit)", min=0, max=1e6),
        "rate_limit_admin": Key(float, 0.0, "requests per second the admin key may make (0: no limit)", min=0, max=1e6),
        "rate_burst": Key(int, 100, "requests a credential may make at once before its rate applies", min=1, max=1_000_000),
        "rate_limit_failed_auth": Key(float, 10.0, "requests per second one address may make with a wrong key", min=0, max=1e6),
    },
    "logging": {
        "level": Key(str, "INFO", "server log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
        "enable_structured": Key(bool, False, "write the server log and each job tree's logs/orchestrator.log as JSON lines"),
        "log_dir": Key(str, "./logs", "folder for the server's own log, relative to this folder"),
    },
    "simulated": {
        "duration": Key(float, 0.3, "seconds each simulated worker takes", min=0, max=3600),
        "fail_matching": Key(str, "", "regex: simulated workers whose subtask matches it fail"),
        "fail_attempts": Key(int, 0, "every simulated worker fails its first N attempts (to show retries)", min=0, max=100),
        "recurse": Key(bool, True, "simulated workers with a compound subtask start a child job when depth allows"),
    },
}

# Keys a request's "config" may carry, and the setting each one defaults from.
JOB_KEYS: dict[str, tuple[str, str]] = {
    "max_workers": ("workers", "max_workers"),
    "default_timeout": ("workers", "default_timeout"),
    "max_retries": ("workers", "max_retries"),
    "execution_mode": ("orchestrator", "execution_mode"),
    "enable_recursion": ("recursion", "enable"),
    "max_recursion_depth": ("recursion", "max_depth"),
    "max_children_per_worker": ("recursion", "max_children_per_worker"),
    "worker": ("orchestrator", "worker"),
    "planner": ("orchestrator", "planner"),
    "max_cost_usd": ("workers", "max_cost_usd"),
}
# A request may raise these only up to the named ceiling setting.
JOB_CEILINGS: dict[str, tuple[str, str]] = {
    "max_workers": ("workers", "max_workers_limit"),
    "default_timeout": ("workers", "max_timeout"),
    "max_recursion_depth": ("recursion", "max_depth_limit"),
    "max_children_per_worker": ("recursion", "max_children_per_worker"),
}
ACCEPTED_ONLY = ("current_depth",)  # not a setting: the job's depth as the admin caller sees it (see Engine.submit)
# A request never sets a worker's environment: that is the server owner's (workers.env).
ENV_REQUEST_KEYS = ("env", "environment", "inherit_env", "env_passthrough")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Variables the orchestrator always sets itself (with ORCHESTRATOR_*): workers.env may not name them.
RESERVED_ENV = ("TMPDIR", "TMP", "TEMP")


class Section(dict):
    """A settings section: a dict whose keys also read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True, repr=False)
class Settings:
    """Validated settings; sections read as ``settings.workers.max_workers``. Its repr masks
    secrets (see ``public_dict``), so a traceback or a debug line never shows them."""

    base_dir: Path
    sections: dict[str, Section]
    source: str = "defaults"  # which files and variables were applied, for `config show`

    def __getattr__(self, name: str) -> Section:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    @property
    def workspace_root(self) -> Path:
        return _resolve(self.base_dir, self.sections["orchestrator"]["workspace_root"])

    @property
    def log_dir(self) -> Path:
        return _resolve(self.base_dir, self.sections["logging"]["log_dir"])

    @property
    def templates_dir(self) -> Path | None:
        value = self.sections["orchestrator"]["templates_dir"]
        return None if not value else _resolve(self.base_dir, value)

    def get(self, section: str, key: str) -> Any:
        return self.sections[section][key]

    def replace(self, **changes: Mapping[str, Any]) -> Settings:
        """A copy with some keys changed (``replace(workers={"max_workers": 2})``), validated."""
        merged = {name: dict(values) for name, values in self.sections.items()}
        _merge(merged, {k: dict(v) for k, v in changes.items()}, "replace()")
        return _build(self.base_dir, merged, f"{self.source} + overrides")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dict(values) for name, values in self.sections.items()}

    def __repr__(self) -> str:
        return f"Settings(base_dir={str(self.base_dir)!r}, source={self.source!r}, sections={self.public_dict()!r})"

    def public_dict(self) -> dict[str, dict[str, Any]]:
        """``to_dict`` with secrets masked: what may be printed or sent."""
        data = self.to_dict()
        if data["api"]["api_key"]:
            data["api"]["api_key"] = "(set)"
        for section, keys in SCHEMA.items():
            for name, spec in keys.items():
                if spec.secret and isinstance(data[section][name], dict):
                    data[section][name] = {k: "(set)" for k in data[section][name]}
        return data


@dataclass(frozen=True)
class JobConfig:
    """The effective config of one job: settings lowered by the request's own config."""

    max_workers: int
    default_timeout: float
    max_retries: int
    execution_mode: str
    enable_recursion: bool
    max_recursion_depth: int
    max_children_per_worker: int
    worker: str
    planner: str
    max_cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


TEMPLATE_HEADER = """\
# orchestrator settings: every key, its default and what it does.
# Copy to config.yaml and change what you need (install.sh does the copy and sets api.api_key).
# Precedence: these defaults < config.yaml < environment (ORCHESTRATOR__SECTION__KEY=value)
# < a job's own "config" (which may lower, never raise, the limits below).
# Generated from orchestrator/config.py (SCHEMA): python -m orchestrator config --template
"""


def render_template() -> str:
    """config.template.yaml, from SCHEMA: every key with its default and its comment."""
    import json

    lines = [TEMPLATE_HEADER]
    for section, keys in SCHEMA.items():
        lines.append(f"{section}:")
        for name, spec in keys.items():
            value = spec.default
            shown = ("null" if value is None else "true" if value is True else "false" if value is False
                     else json.dumps(value) if isinstance(value, (str, list, dict)) else repr(value))
            if spec.choices:
                allowed = f" ({' | '.join(spec.choices)})"
            elif spec.min is not None:
                allowed = f" [{spec.min:g}..{spec.max:g}]"
            else:
                allowed = ""
            lines.append(f"  {name}: {shown}  # {spec.help}{allowed}")
        lines.append("")
    return "\n".join(lines)


def default_base_dir() -> Path:
    """The orchestrator folder: the one holding the package, unless told otherwise."""
    env = os.environ.get(protocol.HOME)
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent


def load_settings(
    config_path: Path | str | None = None,
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Defaults, then ``config.yaml`` (or ``config_path``), then the environment, then overrides."""
    base = Path(base_dir).resolve() if base_dir else default_base_dir()
    environ = os.environ if environ is None else environ
    merged: dict[str, dict[str, Any]] = {name: {} for name in SCHEMA}
    sources = ["defaults"]
    path = Path(config_path) if config_path else _default_config_path(base, environ)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}. Copy config.template.yaml to config.yaml, or drop --config.")
        _merge(merged, _read_yaml(path), str(path))
        sources.append(str(path))
    env_values = _from_environ(environ)
    if env_values:
        _merge(merged, env_values, "environment")
        sources.append("environment")
    if overrides:
        _merge(merged, {k: dict(v) for k, v in overrides.items()}, "overrides")
        sources.append("overrides")
    return _build(base, merged, " < ".join(sources))


def job_config(
    settings: Settings,
    requested: Mapping[str, Any] | None,
    parent: JobConfig | None = None,
) -> tuple[JobConfig, list[str]]:
    """The effective config of a new job, and notes on values that were lowered.

    A root job may ask for any value up to the server's ceiling (above it is an
    error). A child job inherits its parent's config, and a value above the
    parent's is lowered to it with a note: limits only ever shrink down a tree.
    """
    if requested is not None and not isinstance(requested, Mapping):
        raise ConfigError("config must be a JSON object of settings, e.g. {\"max_workers\": 3}")
    requested = dict(requested or {})
    env_keys = sorted(k for k in requested if k in ENV_REQUEST_KEYS)
    if env_keys:
        raise ConfigError(
            f"config.{env_keys[0]}: a request may not set environment variables. A worker's environment "
            "is the server's to give: workers.env, workers.inherit_env and workers.env_passthrough in config.yaml.",
            keys=env_keys,
        )
    unknown = sorted(k for k in requested if k not in JOB_KEYS and k not in ACCEPTED_ONLY)
    if unknown:
        allowed = ", ".join(sorted([*JOB_KEYS, *ACCEPTED_ONLY]))
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}. Allowed: {allowed}", keys=unknown)
    if "current_depth" in requested:
        _check_value("config", "current_depth", requested["current_depth"], Key(int, 0, "", min=0, max=1000))
    base = parent.to_dict() if parent else {k: settings.get(*src) for k, src in JOB_KEYS.items()}
    notes: list[str] = []
    values = dict(base)
    for key, value in requested.items():
        if key in ACCEPTED_ONLY:
            continue
        spec = SCHEMA[JOB_KEYS[key][0]][JOB_KEYS[key][1]]
        value = _check_value("config", key, value, spec)
        values[key] = _apply_ceiling(settings, key, value, parent, notes)
    # The seed's AI-to-AI loop (admin key, current_depth + 1) ends here. A worker credential's job
    # is its parent's depth + 1 whatever the body says, but a body past the limit is refused from anyone
    # (the limit the request states, else the server's default: what the OpenAPI document says).
    limit = requested["max_recursion_depth"] if "max_recursion_depth" in requested else settings.recursion.max_depth
    if requested.get("current_depth", 0) > limit:
        raise RecursionLimit(
            f"Max recursion depth reached: config.current_depth={requested['current_depth']} is past "
            f"max_recursion_depth {limit}. Do the subtask directly.",
            depth=requested["current_depth"], max_depth=limit,
        )
    if parent is None and values["enable_recursion"] and not settings.recursion.enable:
        raise ConfigError("enable_recursion=true, but this server has recursion.enable=false in config.yaml", key="enable_recursion")
    if parent and parent.enable_recursion is False and values["enable_recursion"]:
        values["enable_recursion"] = False
        notes.append("enable_recursion stays false: the parent job has recursion off")
    return JobConfig(**values), notes


def _apply_ceiling(settings: Settings, key: str, value: Any, parent: JobConfig | None, notes: list[str]) -> Any:
    if key == "max_cost_usd":
        return _budget(settings, value, parent, notes)
    if key not in JOB_CEILINGS:
        return value
    # Above the server's limit is refused for every job (as the OpenAPI document says), child or root;
    # only a value within it but above the parent's is lowered.
    section, name = JOB_CEILINGS[key]
    ceiling = settings.get(section, name)
    if value > ceiling:
        raise ConfigError(
            f"config.{key}={value} is above this server's limit {ceiling}. "
            f"Ask for at most {ceiling}, or raise {section}.{name} in config.yaml.",
            key=key, value=value, limit=ceiling,
        )
    if parent is not None and value > getattr(parent, key):
        ceiling = getattr(parent, key)
        notes.append(f"{key}={value} lowered to {ceiling}, the parent job's value (limits only shrink down a tree)")
        return ceiling
    return value


def _budget(settings: Settings, value: float, parent: JobConfig | None, notes: list[str]) -> float:
    """A cost budget (0 = none) can be set or lowered, never lifted past the one above it."""
    above = parent.max_cost_usd if parent is not None else settings.workers.max_cost_usd
    if above and (value == 0 or value > above):
        if parent is None:
            raise ConfigError(f"config.max_cost_usd={value:g} is above this server's budget {above:g} (workers.max_cost_usd); ask for at most {above:g}")
        notes.append(f"max_cost_usd={value:g} lowered to {above:g}, the parent job's budget")
        return above
    return value


def _default_config_path(base: Path, environ: Mapping[str, str]) -> Path | None:
    if environ.get(protocol.CONFIG):
        return Path(environ[protocol.CONFIG])
    candidate = base / "config.yaml"
    return candidate if candidate.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of sections (orchestrator:, workers:, ...), not {type(data).__name__}")
    return data


def _from_environ(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``ORCHESTRATOR__WORKERS__MAX_WORKERS=4`` -> {"workers": {"max_workers": 4}}."""
    found: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if len(parts) != 2:
            raise ConfigError(f"environment variable {name}: expected {ENV_PREFIX}SECTION__KEY, e.g. {ENV_PREFIX}WORKERS__MAX_WORKERS=4")
        section, key = parts
        spec = _env_spec(name, section, key)
        value = _parse_env(raw, spec)
        try:
            _check_value(section, key, value, spec)
        except ConfigError as exc:  # name the variable the user typed, not only the key it maps to
            raise ConfigError(f"environment variable {name}: {exc.message}", **exc.details, variable=name) from None
        found.setdefault(section, {})[key] = value
    return found


def _env_spec(name: str, section: str, key: str) -> Key:
    """The setting an ``ORCHESTRATOR__SECTION__KEY`` variable names; a typo is reported by the variable's name."""
    if section not in SCHEMA:
        raise ConfigError(
            f"environment variable {name}: unknown section '{section}'. Known sections: {', '.join(SCHEMA)} "
            f"(e.g. {ENV_PREFIX}WORKERS__MAX_WORKERS)", key=section, variable=name,
        )
    if key not in SCHEMA[section]:
        known = ", ".join(f"{ENV_PREFIX}{section.upper()}__{k.upper()}" for k in SCHEMA[section])
        raise ConfigError(
            f"environment variable {name}: unknown key '{section}.{key}'. Known variables for {section}: {known}",
            key=f"{section}.{key}", variable=name,
        )
    return SCHEMA[section][key]


def _parse_env(raw: str, spec: Key | None) -> Any:
    """Text stays text for string settings; numbers, booleans and lists are parsed."""
    if spec is None or spec.type is str:
        return None if spec is not None and spec.nullable and raw.strip().lower() in ("", "null", "~") else raw
    if spec.type is float:
        try:
            return float(raw)
        except ValueError:
            return raw
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw


def _merge(merged: dict[str, dict[str, Any]], data: Mapping[str, Any], origin: str) -> None:
    for section, values in data.items():
        if section not in SCHEMA:
            raise ConfigError(f"{origin}: unknown section '{section}'. Known sections: {', '.join(SCHEMA)}", key=section)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: section '{section}' must be a mapping of keys, not {type(values).__name__}")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise ConfigError(
                    f"{origin}: unknown key '{section}.{key}'. Known keys in {section}: {', '.join(SCHEMA[section])}",
                    key=f"{section}.{key}",
                )
            merged[section][key] = value


def _build(base: Path, merged: Mapping[str, Mapping[str, Any]], source: str) -> Settings:
    sections: dict[str, Section] = {}
    for name, keys in SCHEMA.items():
        given = merged.get(name, {})
        sections[name] = Section(
            {key: _check_value(name, key, given[key], spec) if key in given else _copy(spec.default) for key, spec in keys.items()}
        )
    if sections["workers"]["max_workers"] > sections["workers"]["max_workers_limit"]:
        sections["workers"]["max_workers_limit"] = sections["workers"]["max_workers"]
    if sections["recursion"]["max_depth"] > sections["recursion"]["max_depth_limit"]:
        sections["recursion"]["max_depth_limit"] = sections["recursion"]["max_depth"]
    if sections["workers"]["default_timeout"] > sections["workers"]["max_timeout"]:
        sections["workers"]["max_timeout"] = sections["workers"]["default_timeout"]
    return Settings(base_dir=base, sections=sections, source=source)


def _check_value(section: str, key: str, value: Any, spec: Key) -> Any:
    """Coerce what is safe to coerce (int -> float) and refuse the rest, naming the key."""
    where = f"{section}.{key}"
    if value is None and spec.nullable:
        return None
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.type is dict:
        return _check_env(where, value)
    if spec.type is list and isinstance(value, list):
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise ConfigError(f"{where}: expected a list of strings; item {bad[0]!r} is not a string (quote it)", key=where)
        return list(value)
    if not isinstance(value, spec.type) or (spec.type is not bool and isinstance(value, bool)):
        raise ConfigError(
            f"{where}={value!r} has the wrong type: expected {_type_name(spec)}",
            key=where, value=_jsonable(value), expected=_type_name(spec),
        )
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{where}={value!r} is not allowed. Choose one of: {', '.join(spec.choices)}"
                          + (f". {spec.refusal}" if spec.refusal else ""), key=where, value=value)
    # a key with bounds is an int or float one, checked just above
    if isinstance(value, (int, float)) and (spec.min is not None and value < spec.min or spec.max is not None and value > spec.max):
        raise ConfigError(f"{where}={value!r} is out of range: allowed {spec.min:g} to {spec.max:g}", key=where, value=value)
    if isinstance(value, float) and value != value:  # NaN
        raise ConfigError(f"{where} is NaN: give a number", key=where)
    return value


def _check_env(where: str, value: Any) -> dict[str, str]:
    """A mapping of environment variables. Errors name the variable, never its value."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of variable names to values, e.g. {{MY_VAR: \"value\"}}", key=where)
    for name, text in value.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ConfigError(f"{where}: {str(name)[:60]!r} is not a variable name (letters, digits and _; not starting with a digit)", key=where)
        if name.upper().startswith(protocol.PREFIX) or name in RESERVED_ENV:
            raise ConfigError(f"{where}.{name}: the orchestrator sets this variable itself for every worker; choose another name", key=f"{where}.{name}")
        if not isinstance(text, str):
            raise ConfigError(f"{where}.{name}: the value must be a string (quote it in config.yaml)", key=f"{where}.{name}")
        if "\0" in text:
            raise ConfigError(f"{where}.{name}: the value contains a NUL character, which no environment can hold", key=f"{where}.{name}")
    return dict(value)


def _type_name(spec: Key) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", list: "a list of strings",
             dict: "a mapping of names to strings"}
    text = names[spec.type]
    if spec.min is not None:
        text += f" from {spec.min:g} to {spec.max:g}"
    return text + (" or null" if spec.nullable else "")


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
