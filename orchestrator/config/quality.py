"""The shapes of issue 13's settings: quality gates, roles and path globs, each checked once
(config.yaml's ``tasks`` section and a request's config) into plain JSON-able values with an
error that names the field and what is allowed.

A gate is ``{"name", "run": [argv], "required", "timeout", "roles", "when_changed"}``; a role is
``{"preamble", "worker", "model", "allowed_tools", "gates"}`` (``DEFAULT_ROLES`` ship six).
Globs (``owns``, ``when_changed``) are repository-relative: ``src/api/**``; never absolute and
never climbing out (``..``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

GATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
ROLE_NAME = GATE_NAME
ON_FAILURE = ("skip", "continue", "stop")
OWNERSHIP = ("enforce", "strict", "warn")
GATE_TIMEOUT = (1.0, 86400.0)  # seconds, inclusive
DEFAULT_GATE_TIMEOUT = 600.0
GATE_KEYS = ("name", "run", "required", "timeout", "roles", "when_changed")
ROLE_KEYS = ("preamble", "worker", "model", "allowed_tools", "gates")
MAX_GLOBS = 100


def check_glob(value: object, where: str) -> str:
    """A repository-relative path glob (``src/api/**``): not absolute, no ``..`` part, no NUL."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f'{where} must be a path glob inside the repository, e.g. "src/api/**"', key=where)
    text = value.strip().replace("\\", "/")
    parts = text.split("/")
    if text.startswith("/") or re.match(r"[A-Za-z]:", text) or text.startswith("~") or ".." in parts or "\0" in text:
        raise ConfigError(
            f"{where}={value[:200]!r} escapes the repository: give a path relative to the repository's top, "
            'without ".." or a leading "/" (e.g. "src/api/**")',
            key=where,
        )
    return "/".join(p for p in parts if p not in ("", ".")) or "**"


def check_globs(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_GLOBS:
        raise ConfigError(f'{where} must be a list of at most {MAX_GLOBS} path globs, e.g. ["src/api/**"]', key=where)
    return [check_glob(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _names(value: object, where: str, pattern: re.Pattern[str] = GATE_NAME) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and pattern.match(v) for v in value):
        raise ConfigError(f'{where} must be a list of names (letters, digits, "_", "-", "."), e.g. ["backend"]', key=where)
    return list(value)


def parse_gate(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            f'{where} must be an object such as {{"name": "tests", "run": ["pytest", "-q"], "required": true, "timeout": 600}}',
            key=where,
        )
    unknown = sorted(str(k) for k in value if k not in GATE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}. Allowed: {', '.join(GATE_KEYS)}", key=where)
    name = value.get("name")
    if not isinstance(name, str) or not GATE_NAME.match(name):
        raise ConfigError(
            f'{where}.name must be a name of letters, digits, "_", "-" or "." (at most 64), e.g. "tests"', key=f"{where}.name"
        )
    run = value.get("run")
    if not isinstance(run, list) or not run or not all(isinstance(a, str) and "\0" not in a for a in run) or not run[0]:
        raise ConfigError(
            f'{where}.run must be a command as a non-empty list of strings (argv, no shell), e.g. ["pytest", "-q"]',
            key=f"{where}.run",
        )
    required = value.get("required", True)
    if not isinstance(required, bool):
        raise ConfigError(f"{where}.required must be true or false", key=f"{where}.required")
    timeout = value.get("timeout", DEFAULT_GATE_TIMEOUT)
    low, high = GATE_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not low <= timeout <= high:
        raise ConfigError(f"{where}.timeout must be a number of seconds from {low:g} to {high:g}", key=f"{where}.timeout")
    return {
        "name": name,
        "run": list(run),
        "required": required,
        "timeout": float(timeout),
        "roles": _names(value.get("roles"), f"{where}.roles", ROLE_NAME),
        "when_changed": check_globs(value.get("when_changed"), f"{where}.when_changed"),
    }


def parse_gates(value: object, where: str = "gates") -> list[dict[str, Any]]:
    """A list of gates, each checked; names unique."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f'{where} must be a list of gates, e.g. [{{"name": "tests", "run": ["pytest", "-q"]}}]', key=where)
    gates = [parse_gate(g, f"{where}[{i}]") for i, g in enumerate(value)]
    seen: set[str] = set()
    for i, gate in enumerate(gates):
        if gate["name"] in seen:
            raise ConfigError(f"{where}[{i}].name {gate['name']!r} is used twice: gate names must be unique", key=where)
        seen.add(gate["name"])
    return gates


def parse_role(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where} must be an object such as {{"preamble": "You are ...", "gates": ["tests"]}}', key=where)
    unknown = sorted(str(k) for k in value if k not in ROLE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}. Allowed: {', '.join(ROLE_KEYS)}", key=where)
    role: dict[str, Any] = {}
    for key in ("preamble", "worker", "model"):
        text = value.get(key, "")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise ConfigError(f"{where}.{key} must be a string", key=f"{where}.{key}")
        role[key] = text
    tools = value.get("allowed_tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise ConfigError(f'{where}.allowed_tools must be a list of strings, e.g. ["Read", "Edit"]', key=f"{where}.allowed_tools")
    role["allowed_tools"] = list(tools)
    role["gates"] = _names(value.get("gates"), f"{where}.gates")
    return role


def parse_roles(value: object, where: str = "roles") -> dict[str, dict[str, Any]]:
    """Roles by name, each checked (the shipped defaults are merged in by ``roles_with_defaults``)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where} must be a mapping of role names to roles, e.g. {{backend: {{preamble: "..."}}}}', key=where)
    roles = {}
    for name, role in value.items():
        if not isinstance(name, str) or not ROLE_NAME.match(name):
            raise ConfigError(f'{where}: {str(name)[:60]!r} is not a role name (letters, digits, "_", "-", ".")', key=where)
        roles[name] = parse_role(role, f"{where}.{name}")
    return roles


def _role(preamble: str, gates: list[str] | None = None) -> dict[str, Any]:
    return {"preamble": preamble, "worker": "", "model": "", "allowed_tools": [], "gates": list(gates or [])}


# The shipped roles: a preamble each; no kind, model or tools of their own (the job's apply), and
# the gates named here apply to the role's workers when the job defines gates of those names.
DEFAULT_ROLES: dict[str, dict[str, Any]] = {
    "frontend": _role(
        "You are the frontend engineer: user-facing code (UI components, pages, styles, client-side state). "
        "Keep to the files your task owns, follow the project's existing UI conventions, and keep it accessible.",
        ["lint", "typecheck", "tests"],
    ),
    "backend": _role(
        "You are the backend engineer: server-side code (APIs, data models, business logic, persistence). "
        "Validate inputs, handle errors explicitly, and keep interfaces stable for the tasks that depend on yours.",
        ["lint", "typecheck", "tests"],
    ),
    "testing": _role(
        "You are the test engineer: write and fix automated tests for the behaviour the task names. "
        "Tests must fail without the behaviour and pass with it; no test that asserts nothing.",
        ["tests"],
    ),
    "docs": _role(
        "You are the technical writer: documentation (README, guides, docstrings, examples). "
        "Document what the code does today, with commands a reader can run.",
        ["docs"],
    ),
    "infrastructure": _role(
        "You are the infrastructure engineer: build, packaging, CI, deployment and configuration files. "
        "Keep changes reproducible and never put secrets in files.",
        ["lint", "security"],
    ),
    "integration": _role(
        "You are the integration engineer: make the other tasks' merged work fit together (wiring, "
        "end-to-end paths, shared interfaces) and make the whole test suite pass.",
        ["lint", "typecheck", "tests", "security"],
    ),
}


def roles_with_defaults(configured: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The shipped roles, each replaced by a configured role of the same name, plus new ones."""
    return {**DEFAULT_ROLES, **{name: dict(role) for name, role in configured.items()}}
