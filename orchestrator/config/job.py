"""A job's own config: the settings a request may lower (``JobConfig``), built once at submission
(``job_config``) and carried in the job record, typed, for the job's whole life."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, Forbidden, RecursionLimit
from .choice import Candidate, Judge, Select
from .hooks import check_callback_url
from .keys import Key, StrEnum, check_value
from .quality import Gate
from .schema import SCHEMA, ApprovalMode, Isolation, MergeStrategy, OnFailure, Ownership, SandboxMode
from .settings import Settings


def job_key(section: str, name: str, ceiling: str | None = None) -> Any:
    """A JobConfig field: it defaults from the setting ``section.name`` (the server's value at
    submission; that setting's default when an old record lacks the key), and a request may raise
    it up to the setting ``section.ceiling``, when there is one."""
    default = SCHEMA[section][name].default
    if isinstance(default, (list, dict)):  # a structured setting (gates): a fresh copy per config
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"setting": (section, name), "ceiling": None})
    return field(
        default=default,
        metadata={"setting": (section, name), "ceiling": (section, ceiling) if ceiling else None},
    )


@dataclass(frozen=True)
class JobConfig:
    """The effective config of one job: settings lowered by the request's own config. On disk and
    in responses it is the dict ``to_dict`` gives; ``from_dict`` reads any record written since
    the first release (a key it lacks takes the setting's default)."""

    max_workers: int = job_key("workers", "max_workers", ceiling="max_workers_limit")
    default_timeout: float = job_key("workers", "default_timeout", ceiling="max_timeout")
    max_retries: int = job_key("workers", "max_retries")
    execution_mode: str = job_key("orchestrator", "execution_mode")
    enable_recursion: bool = job_key("recursion", "enable")
    max_recursion_depth: int = job_key("recursion", "max_depth", ceiling="max_depth_limit")
    max_children_per_worker: int = job_key("recursion", "max_children_per_worker", ceiling="max_children_per_worker")
    worker: str = job_key("orchestrator", "worker")
    planner: str = job_key("orchestrator", "planner")
    max_cost_usd: float = job_key("workers", "max_cost_usd")
    sandbox: SandboxMode = job_key("workers", "sandbox")  # the admin key's; a child job runs in its root's
    isolation: Isolation = job_key("git", "isolation")  # "auto" is resolved at submission (engine/submission.py)
    merge_strategy: MergeStrategy = job_key("git", "merge_strategy")
    resolver_kind: str = job_key("git", "resolver_kind")  # merge_strategy resolve (delivery/resolving.py)
    resolver_model: str = job_key("git", "resolver_model")
    merge_into: str = job_key("git", "merge_into")  # a root job's only; "" = none
    # Before_merge: the root stops in "waiting" before landing (delivery/approval.py). A root
    # job's only; a child job inherits it and ignores it (its merge into its parent worker's branch is not gated).
    approval: ApprovalMode = job_key("git", "approval")
    # Gates: set by config.yaml or a root job's request (admin key); a child job inherits them
    # and may not change them (GATE_KEYS: a worker credential may not set or weaken gates).
    gates: list[Gate] = job_key("tasks", "gates")
    gates_retry: int = job_key("tasks", "gates_retry")
    on_failure: OnFailure = job_key("tasks", "on_failure")
    ownership: Ownership = job_key("tasks", "ownership")
    # Candidates: each subtask run as several candidates (config/choice.py's shape), and how the
    # one merged is selected; a request (root or child) may set them.
    candidates: list[Candidate] = job_key("candidates", "candidates")
    attempts: int = job_key("candidates", "attempts")
    select: Select = job_key("candidates", "select")
    judge: Judge = job_key("candidates", "judge")
    # Webhooks: where a root job's end is POSTed, signed (webhooks/); its host must be in
    # webhooks.allowed_callback_hosts. A root job's only: a child job's is "".
    callback_url: str = job_key("webhooks", "callback_url")

    def to_dict(self) -> dict[str, Any]:
        # Scalars (a closed choice as its string), and the gates copied below.
        data = {k: v.value if isinstance(v, StrEnum) else v for k, v in self.__dict__.items()}
        data["gates"] = copy.deepcopy(self.gates)
        data["candidates"], data["judge"] = copy.deepcopy(self.candidates), dict(self.judge)
        return data

    def replace(self, **changes: Any) -> JobConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobConfig:
        return cls(**{k: _member(k, v) for k, v in data.items() if k in JOB_KEYS and v is not None})


def _member(key: str, value: Any) -> Any:
    """A record's value of a closed choice as its enum member (any other value as it is)."""
    spec = SCHEMA[JOB_KEYS[key][0]][JOB_KEYS[key][1]]
    return spec.enum(value) if spec.enum is not None and value in (spec.choices or ()) else value


# Keys a request's "config" may carry, and the setting each one defaults from.
JOB_KEYS: dict[str, tuple[str, str]] = {f.name: f.metadata["setting"] for f in dataclasses.fields(JobConfig)}
# A request may raise these only up to the named ceiling setting.
JOB_CEILINGS: dict[str, tuple[str, str]] = {
    f.name: f.metadata["ceiling"] for f in dataclasses.fields(JobConfig) if f.metadata["ceiling"]
}
# What a child job's request may not carry: the gates and what they decide are the root's (403).
GATE_KEYS = ("gates", "gates_retry", "on_failure", "ownership", "sandbox")
ACCEPTED_ONLY = ("current_depth",)  # not a setting: the job's depth as the admin caller sees it (see Submission.submit)
# A request never sets a worker's environment: that is the server owner's (workers.env).
ENV_REQUEST_KEYS = ("env", "environment", "inherit_env", "env_passthrough")


def _check_keys(requested: Mapping[str, Any], parent: JobConfig | None) -> None:
    """The keys a request may not carry: environment variables and a command (the server's), unknown
    ones, and what only a root job may set (a child's is 403: a worker may not move the user's branch,
    gate its root's landing, send the server's signed posts or weaken its root's gates)."""
    env_keys = sorted(k for k in requested if k in ENV_REQUEST_KEYS)
    if env_keys:
        raise ConfigError(
            f"config.{env_keys[0]}: a request may not set environment variables. A worker's environment "
            "is the server's to give: workers.env, workers.inherit_env and workers.env_passthrough in config.yaml.",
            keys=env_keys,
        )
    if "command" in requested:  # what the command kind runs is the server's, as a worker's environment is
        raise ConfigError(
            "config.command: a request never carries a command (it would run with the server's rights). The command "
            "kind runs orchestrator.command from config.yaml: ./orchestrator.sh config set orchestrator.command "
            '\'["my-agent", "--prompt-file", "{prompt_file}"]\', then send config.worker "command" (or set '
            "orchestrator.worker command)",
            keys=["command"],
        )
    unknown = sorted(k for k in requested if k not in JOB_KEYS and k not in ACCEPTED_ONLY)
    if unknown:
        allowed = ", ".join(sorted([*JOB_KEYS, *ACCEPTED_ONLY]))
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}. Allowed: {allowed}", keys=unknown)
    if parent is not None and requested.get("merge_into"):  # a worker may not move a branch of the user's: 403
        raise Forbidden(
            "config.merge_into is for a root job only: a child job's work merges into its parent worker's branch, "
            "and the root's result into merge_into. Leave merge_into out of a child job's config.",
            key="merge_into",
        )
    if parent is not None and "approval" in requested:  # a worker may not gate (or ungate) its root's landing: 403
        raise Forbidden(
            "config.approval is for a root job only (the admin key): a person approves the root's result before it "
            "merges; a child job's work merges into its parent worker's branch without waiting for a person. Leave approval out of a child job's config.",
            key="approval",
        )
    if parent is not None and requested.get("callback_url"):  # a worker may not send the server's signed posts
        raise Forbidden(
            "config.callback_url is for a root job only: the root job's callback tells of the whole tree's end. "
            "Leave callback_url out of a child job's config.",
            key="callback_url",
        )
    gate_keys = sorted(k for k in requested if k in GATE_KEYS)
    if parent is not None and gate_keys:
        raise Forbidden(
            f"config.{gate_keys[0]} is for a root job only (the admin key): a child job runs under its root's gates, "
            "which a worker may not set or weaken. Leave it out of a child job's config.",
            key=gate_keys[0],
        )


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
        raise ConfigError('config must be a JSON object of settings, e.g. {"max_workers": 3}')
    requested = dict(requested or {})
    _check_keys(requested, parent)
    if "current_depth" in requested:
        check_value("config", "current_depth", requested["current_depth"], Key(int, 0, "", min=0, max=1000))
    base = parent.to_dict() if parent else {k: settings.get(*src) for k, src in JOB_KEYS.items()}
    notes: list[str] = []
    values = dict(base)
    if parent is not None:  # a candidate's child job runs its subtasks once each unless it asks otherwise
        values["candidates"], values["attempts"] = [], 1
        values["callback_url"] = ""  # the root's callback tells of the tree's end
    for key, value in requested.items():
        if key in ACCEPTED_ONLY:
            continue
        spec = SCHEMA[JOB_KEYS[key][0]][JOB_KEYS[key][1]]
        value = check_value("config", key, value, spec)
        if key == "callback_url" and value:
            hooks = settings.webhooks
            value = check_callback_url(value, hooks.allowed_callback_hosts, hooks.callback_secret)
        values[key] = _apply_ceiling(settings, key, value, parent, notes)
    # The AI-to-AI loop ends here: the original spec's protocol (docs/recursion.md) has a worker POST
    # with the admin key and current_depth + 1. A worker credential's job
    # is its parent's depth + 1 whatever the body says, but a body past the limit is refused from anyone
    # (the limit the request states, else the server's default: what the OpenAPI document says).
    limit = requested["max_recursion_depth"] if "max_recursion_depth" in requested else settings.recursion.max_depth
    if requested.get("current_depth", 0) > limit:
        raise RecursionLimit(
            f"Max recursion depth reached: config.current_depth={requested['current_depth']} is past "
            f"max_recursion_depth {limit}. Do the subtask directly.",
            depth=requested["current_depth"],
            max_depth=limit,
        )
    if parent is None and values["enable_recursion"] and not settings.recursion.enable:
        raise ConfigError(
            "enable_recursion=true, but this server has recursion.enable=false in config.yaml", key="enable_recursion"
        )
    if parent and parent.enable_recursion is False and values["enable_recursion"]:
        values["enable_recursion"] = False
        notes.append("enable_recursion stays false: the parent job has recursion off")
    return JobConfig(**values), notes


# How far each planner lets an AI CLI read a request: a child job's may not go past its parent's.
PLANNER_REACH = {"heuristic": 0, "auto": 1, "ai": 2}


def _apply_ceiling(settings: Settings, key: str, value: Any, parent: JobConfig | None, notes: list[str]) -> Any:
    if key == "max_cost_usd":
        return _budget(settings, value, parent, notes)
    if key == "planner" and parent is not None and PLANNER_REACH.get(value, 0) > PLANNER_REACH.get(parent.planner, 0):
        # A worker's request asks for a planner its root's config did not allow: an AI CLI reading a
        # worker's text is the server owner's (or the admin key's) choice, not a worker's.
        notes.append(f"planner={value} lowered to {parent.planner}, the parent job's (a child job may not widen it)")
        return parent.planner
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
            key=key,
            value=value,
            limit=ceiling,
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
            raise ConfigError(
                f"config.max_cost_usd={value:g} is above this server's budget {above:g} (workers.max_cost_usd); ask for at most {above:g}"
            )
        notes.append(f"max_cost_usd={value:g} lowered to {above:g}, the parent job's budget")
        return above
    return value
