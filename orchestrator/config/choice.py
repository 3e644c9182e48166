"""The shapes of the best-of-N settings: candidates (the same subtask run several times, on several
worker kinds) and the judge that may pick among them, each checked once (config.yaml's
``candidates`` section, a request's config, an explicit task's ``candidates``) into plain
JSON-able values with an error that names the field and what is allowed.

A candidate is ``{"kind", "model", "timeout", "context"}``: a worker kind (``"claude"`` alone is
short for ``{"kind": "claude"}``), its model (None: the job's), its attempt timeout in seconds
(None: the job's ``default_timeout``) and a JSON object shown in its prompt (the task API's
``cli_assignments[].context``, api/tasks_routes.py; None: nothing). A judge is ``{"kind", "model", "timeout"}``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from ..errors import ConfigError
from .keys import StrEnum
from .plugins import AUTO_KIND


class Select(StrEnum):
    """``candidates.select``: how a subtask's winner is chosen among its candidates (selection/)."""

    BEST = "best"  # weighted score
    CHEAPEST = "cheapest"
    FASTEST = "fastest"
    FIRST_PASSING = "first_passing"  # cancel the rest once one passes
    JUDGE = "judge"  # an AI compares them two at a time


SELECT = tuple(member.value for member in Select)


CANDIDATE_KEYS = ("kind", "model", "timeout", "context")
JUDGE_KEYS = ("kind", "model", "timeout")
MAX_CANDIDATES = 16  # per subtask: the same prompt on more than this is a mistake, not a plan
TIMEOUT = (0.05, 7 * 86400.0)  # seconds, inclusive (workers.default_timeout's range)
MAX_CONTEXT_BYTES = 16_384  # a candidate's context object, as JSON
CANDIDATE_EXAMPLE = '["claude", {"kind": "codex", "model": "o3", "timeout": 600}]'


class Candidate(TypedDict):
    """A candidate as a job's config stores it (``CandidateSpec.to_dict``)."""

    kind: str | None
    model: str | None
    timeout: float | None
    context: dict[str, Any] | None  # a JSON object: the caller's, shown in the prompt as it is


class Judge(TypedDict, total=False):
    """A judge as ``parse_judge`` checks it: every key, or none ({}: no judge)."""

    kind: str
    model: str | None
    timeout: float | None


@dataclass(frozen=True, slots=True)
class CandidateSpec:
    """One candidate of a subtask (see the module docstring). Its dict (``to_dict``) is the shape
    stored in a job's config and a task node's ``candidates``. ``kind`` None: the task's own
    (``config.attempts: N``)."""

    kind: str | None = None
    model: str | None = None
    timeout: float | None = None
    context: dict[str, Any] | None = None

    def to_dict(self) -> Candidate:
        return {"kind": self.kind, "model": self.model, "timeout": self.timeout, "context": self.context}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateSpec:
        return cls(kind=data.get("kind"), model=data.get("model"), timeout=data.get("timeout"), context=data.get("context"))


def parse_candidates(value: object, where: str = "candidates", kinds: Collection[str] | None = None) -> list[Candidate]:
    """A list of candidates, each normalised to ``{"kind", "model", "timeout", "context"}``; []
    when left out (one worker per subtask). ``kinds``: the worker kinds that exist (None: any)."""
    return [spec.to_dict() for spec in parse_candidate_specs(value, where, kinds)]


def parse_candidate_specs(value: object, where: str = "candidates", kinds: Collection[str] | None = None) -> list[CandidateSpec]:
    """``parse_candidates`` as CandidateSpecs (a task node's own candidates)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_CANDIDATES:
        raise ConfigError(
            f"{where} must be a list of at most {MAX_CANDIDATES} worker kinds or candidate objects, e.g. {CANDIDATE_EXAMPLE}",
            key=where,
        )
    return [parse_candidate(item, f"{where}[{i}]", kinds) for i, item in enumerate(value)]


def parse_candidate(value: object, where: str, kinds: Collection[str] | None = None) -> CandidateSpec:
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a worker kind or an object such as {CANDIDATE_EXAMPLE}", key=where)
    unknown = sorted(str(k) for k in value if k not in CANDIDATE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}. Allowed: {', '.join(CANDIDATE_KEYS)}", key=where)
    context = value.get("context")
    if context is not None:
        if not isinstance(context, Mapping):
            raise ConfigError(f"{where}.context must be a JSON object (or left out)", key=f"{where}.context")
        try:
            size = len(json.dumps(context, ensure_ascii=False))
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}.context must be plain JSON (strings, numbers, lists, objects)", key=f"{where}.context"
            ) from None
        if size > MAX_CONTEXT_BYTES:
            raise ConfigError(f"{where}.context is {size} bytes of JSON; at most {MAX_CONTEXT_BYTES}", key=f"{where}.context")
        context = dict(context) or None
    return CandidateSpec(
        kind=_kind(value.get("kind"), f"{where}.kind", kinds),
        model=_model(value.get("model"), f"{where}.model"),
        timeout=_timeout(value.get("timeout"), f"{where}.timeout"),
        context=context,
    )


def parse_judge(value: object, where: str = "judge", kinds: Collection[str] | None = None) -> Judge:
    """``{"kind", "model", "timeout"}`` of the AI kind that judges candidates two at a time; {}
    when left out (``select: judge`` then needs one: checked at submission)."""
    if value is None or value == {}:
        return {}
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where} must be an object such as {{"kind": "claude", "model": "sonnet"}}', key=where)
    unknown = sorted(str(k) for k in value if k not in JUDGE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}. Allowed: {', '.join(JUDGE_KEYS)}", key=where)
    return {
        "kind": _kind(value.get("kind"), f"{where}.kind", kinds),
        "model": _model(value.get("model"), f"{where}.model"),
        "timeout": _timeout(value.get("timeout"), f"{where}.timeout"),
    }


def _kind(value: object, where: str, kinds: Collection[str] | None) -> str:
    usable = [k for k in kinds or () if k != AUTO_KIND]
    if not isinstance(value, str) or not value or (kinds is not None and value not in usable):
        listed = f" Available kinds: {', '.join(usable)}" if kinds is not None else ""
        raise ConfigError(f"{where}={str(value)[:60]!r} is not a worker kind this server can run.{listed}", key=where)
    return value


def _model(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 200 or any(c.isspace() or c == "\0" for c in value):
        raise ConfigError(f'{where} must be a model name without spaces, e.g. "sonnet" (or left out)', key=where)
    return value


def _timeout(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not TIMEOUT[0] <= value <= TIMEOUT[1]:
        raise ConfigError(f"{where} must be seconds between {TIMEOUT[0]:g} and {TIMEOUT[1]:g} (or left out)", key=where)
    return float(value)
