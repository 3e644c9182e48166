"""The shapes of the task-graph settings: quality gates, roles and path globs, each checked once
(config.yaml's ``tasks`` section and a request's config) into plain JSON-able values with an
error that names the field and what is allowed.

A gate is ``{"name", "run": [argv] (or one command line with ``shell: true``), "shell", "env",
"cwd", "allow_no_tests", "required", "timeout", "roles", "when_changed"}``; a role is
``{"preamble", "worker", "model", "allowed_tools", "gates"}`` (``DEFAULT_ROLES`` ship six).
Globs (``owns``, ``when_changed``) are repository-relative: ``src/api/**``; never absolute and
never climbing out (``..``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, Literal, TypedDict

from ..errors import ConfigError
from ..protocol import PREFIX

GATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
ROLE_NAME = GATE_NAME
GATE_TIMEOUT = (1.0, 86400.0)  # seconds, inclusive
DEFAULT_GATE_TIMEOUT = 600.0
GATE_KEYS = ("name", "run", "shell", "env", "cwd", "allow_no_tests", "required", "timeout", "roles", "when_changed")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
MAX_GATE_ENV = 64  # variables per gate
MAX_ENV_VALUE = 8192  # characters
RESERVED_ENV = PREFIX + "_"  # the orchestrator's own protocol variables (the worker's API key among them)
ROLE_KEYS = ("preamble", "worker", "model", "allowed_tools", "gates")
MAX_GLOBS = 100

# A quality gate's JSON schema in the API's document (this module's checks below say the same); an env value may be a number (its text).
ENV_VALUE = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
GATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "run"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
        "run": {"anyOf": [{"type": "array", "minItems": 1, "items": {"type": "string"}}, {"type": "string", "minLength": 1}]},
        "shell": {"type": "boolean"},
        "env": {"type": "object", "nullable": True, "maxProperties": MAX_GATE_ENV, "additionalProperties": ENV_VALUE},
        "cwd": {"type": "string", "nullable": True},
        "allow_no_tests": {"type": "boolean"},
        "required": {"type": "boolean"},
        "timeout": {"type": "number", "minimum": 1, "maximum": 86400},
        "roles": {"type": "array", "nullable": True, "items": {"type": "string"}},
        "when_changed": {"type": "array", "nullable": True, "items": {"type": "string"}},
    },
    "anyOf": [  # an argv, or (shell: true) one command line
        {"properties": {"run": {"type": "array"}, "shell": {"enum": [False]}}},
        {"required": ["shell"], "properties": {"run": {"type": "string"}, "shell": {"enum": [True]}}},
    ],
}


class _GateKeys(TypedDict):
    """The keys every gate record has had since gates came (``Gate``)."""

    name: str
    run: str | list[str]  # an argv; with ``shell``, one command line
    required: bool
    timeout: float


class Gate(_GateKeys, total=False):
    """One quality gate as ``parse_gate`` checks it: every key filled. A job's config stores it
    as it is (``JobConfig.gates``); a record written before a key came lacks it, so these are
    read with ``.get``."""

    shell: bool
    env: dict[str, str]
    cwd: str  # relative to the worker's checkout; "" its top
    allow_no_tests: bool
    roles: list[str]
    when_changed: list[str]  # repository-relative globs


class Role(TypedDict):
    """One role as ``parse_role`` checks it: every key filled ("" and [] for none)."""

    preamble: str
    worker: str  # a worker kind; "": the job's
    model: str  # "": the job's
    allowed_tools: list[str]
    gates: list[str]  # names of the job's gates that apply to the role's workers; []: all


def relative_path(text: str) -> str | None:
    """``text`` as a clean relative path (``./a//b/`` -> ``a/b``; "" for the top), or None when it
    leaves its folder: absolute, ``~``, a drive letter, a ``..`` part, or a NUL."""
    text = text.replace("\\", "/")
    parts = text.split("/")
    if text.startswith(("/", "~")) or re.match(r"[A-Za-z]:", text) or ".." in parts or "\0" in text:
        return None
    return "/".join(p for p in parts if p not in ("", "."))


def check_glob(value: object, where: str) -> str:
    """A repository-relative path glob (``src/api/**``): not absolute, no ``..`` part, no NUL."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f'{where} must be a path glob inside the repository, e.g. "src/api/**"', key=where)
    clean = relative_path(value.strip())
    if clean is None:
        raise ConfigError(
            f"{where}={value[:200]!r} escapes the repository: give a path relative to the repository's top, "
            'without ".." or a leading "/" (e.g. "src/api/**")',
            key=where,
        )
    return clean or "**"


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


def parse_gate(value: object, where: str) -> Gate:
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
    shell = value.get("shell", False)
    if not isinstance(shell, bool):
        raise ConfigError(f"{where}.shell must be true or false", key=f"{where}.shell")
    run = _run(value.get("run"), shell, f"{where}.run")
    required, allow_no_tests = value.get("required", True), value.get("allow_no_tests", False)
    for key, flag in (("required", required), ("allow_no_tests", allow_no_tests)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{where}.{key} must be true or false", key=f"{where}.{key}")
    timeout = value.get("timeout", DEFAULT_GATE_TIMEOUT)
    low, high = GATE_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not low <= timeout <= high:
        raise ConfigError(f"{where}.timeout must be a number of seconds from {low:g} to {high:g}", key=f"{where}.timeout")
    return {
        "name": name,
        "run": run,
        "shell": shell,
        "env": _env(value.get("env"), f"{where}.env"),
        "cwd": _cwd(value.get("cwd"), f"{where}.cwd"),
        "allow_no_tests": allow_no_tests,
        "required": required,
        "timeout": float(timeout),
        "roles": _names(value.get("roles"), f"{where}.roles", ROLE_NAME),
        "when_changed": check_globs(value.get("when_changed"), f"{where}.when_changed"),
    }


def _run(run: object, shell: bool, where: str) -> str | list[str]:
    """An argv list; with ``shell``, one command line for /bin/sh (the server owner's or the admin
    key's own configuration: a request from a worker credential may not set gates, config/job.py)."""
    if shell:
        if not isinstance(run, str) or not run.strip() or "\0" in run:
            raise ConfigError(
                f'{where} must be one command line (a string) with shell: true, e.g. "PYTHONPATH=src pytest -q && ruff check ."',
                key=where,
            )
        return run
    if not isinstance(run, list) or not run or not all(isinstance(a, str) and "\0" not in a for a in run) or not run[0]:
        hint = f"; to run {run[:200]!r} through /bin/sh, add shell: true" if isinstance(run, str) and run.strip() else ""
        raise ConfigError(
            f'{where} must be a command as a non-empty list of strings (argv, no shell), e.g. ["pytest", "-q"]{hint}',
            key=where,
        )
    return list(run)


def _env(value: object, where: str) -> dict[str, str]:
    """Variables a gate's command gets over the worker's environment, e.g. ``{PYTHONPATH: src}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_GATE_ENV:
        raise ConfigError(f"{where} must be a mapping of at most {MAX_GATE_ENV} variables, e.g. {{PYTHONPATH: src}}", key=where)
    env = {}
    for name, text in value.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ConfigError(
                f'{where}: {str(name)[:60]!r} is not a variable name (a letter or "_", then letters, digits, "_")', key=where
            )
        if name.upper().startswith(RESERVED_ENV):
            raise ConfigError(
                f"{where}.{name}: variables named {RESERVED_ENV}* are the orchestrator's own", key=f"{where}.{name}"
            )
        if isinstance(text, int) and not isinstance(text, bool):
            text = str(text)
        if not isinstance(text, str) or "\0" in text or len(text) > MAX_ENV_VALUE:
            raise ConfigError(
                f'{where}.{name} must be a string of at most {MAX_ENV_VALUE} characters (quote it in YAML: "1")',
                key=f"{where}.{name}",
            )
        env[name] = text
    return env


def _cwd(value: object, where: str) -> str:
    """The folder a gate runs in, relative to the worker's checkout ("" its top). Where a link
    inside the checkout points is checked when the gate runs (gates.gate_dir)."""
    if value is None:
        return ""
    clean = relative_path(value) if isinstance(value, str) else None
    if clean is None:
        raise ConfigError(
            f"{where}={str(value)[:200]!r} is not a folder inside the worker's checkout: give a path relative to "
            'its top, without ".." or a leading "/" (e.g. "backend")',
            key=where,
        )
    return clean


def parse_gates(value: object, where: str = "gates") -> list[Gate]:
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


MAX_PREAMBLE = 4000  # characters: a preamble is read by every worker of the role, at every attempt
MODEL_NAME = re.compile(r"[^\s-][^\x00-\x1f\x7f]{0,199}\Z")  # one argv element after --model: one line, no leading "-"


def parse_role(value: object, where: str, base: Role | None = None, kinds: Collection[str] | None = None) -> Role:
    """One role, every key filled: those given, checked, over ``base`` (the shipped role of the
    same name, else an empty one). ``kinds``: the worker kinds a role may name (None: any)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where} must be an object such as {{"preamble": "You are ...", "gates": ["tests"]}}', key=where)
    unknown = sorted(str(k) for k in value if k not in ROLE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}. Allowed: {', '.join(ROLE_KEYS)}", key=where)
    role = (base or _role("")).copy()
    texts: tuple[Literal["preamble", "worker", "model"], ...] = ("preamble", "worker", "model")
    for key in texts:
        if key not in value:
            continue
        text = "" if value[key] is None else value[key]
        if not isinstance(text, str):
            raise ConfigError(f"{where}.{key} must be a string", key=f"{where}.{key}")
        role[key] = text.strip()
    if len(role["preamble"]) > MAX_PREAMBLE:
        raise ConfigError(
            f"{where}.preamble is longer than {MAX_PREAMBLE} characters: keep it to a paragraph", key=f"{where}.preamble"
        )
    if role["worker"] and kinds is not None and role["worker"] not in kinds:
        raise ConfigError(
            f"{where}.worker={role['worker'][:60]!r} is not a worker kind. Kinds: {', '.join(kinds)} (or leave it out: the job's kind)",
            key=f"{where}.worker",
        )
    if role["model"] and not MODEL_NAME.match(role["model"]):
        raise ConfigError(
            f'{where}.model={role["model"][:60]!r} is not a model name (one line, at most 200 characters, not starting with "-"), e.g. "claude-sonnet-4-5"',
            key=f"{where}.model",
        )
    if "allowed_tools" in value:
        tools = value["allowed_tools"] or []
        if not isinstance(tools, list) or not all(isinstance(t, str) and t.strip() for t in tools):
            raise ConfigError(
                f'{where}.allowed_tools must be a list of tool rules, e.g. ["Read", "Edit", "Bash(npm test:*)"]',
                key=f"{where}.allowed_tools",
            )
        role["allowed_tools"] = [t.strip() for t in tools]
    if "gates" in value:
        role["gates"] = _names(value["gates"], f"{where}.gates")
    return role


def parse_roles(value: object, where: str = "roles", kinds: Collection[str] | None = None) -> dict[str, Role]:
    """Roles by name, each checked. A role named like a shipped one changes only the keys it gives
    (``backend: {model: ...}`` keeps the shipped preamble and gates); ``roles_with_defaults``
    adds the shipped ones left alone."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where} must be a mapping of role names to roles, e.g. {{backend: {{preamble: "..."}}}}', key=where)
    roles = {}
    for name, role in value.items():
        if not isinstance(name, str) or not ROLE_NAME.match(name):
            raise ConfigError(f'{where}: {str(name)[:60]!r} is not a role name (letters, digits, "_", "-", ".")', key=where)
        roles[name] = parse_role(role, f"{where}.{name}", DEFAULT_ROLES.get(name), kinds)
    return roles


def _role(preamble: str, gates: list[str] | None = None) -> Role:
    return {"preamble": preamble, "worker": "", "model": "", "allowed_tools": [], "gates": list(gates or [])}


# The shipped roles: a preamble each (what a lead would tell a specialist joining the task); no
# kind, model or tools of their own (the job's apply). The gates named here apply to the role's
# workers when the job defines gates of those names (lint, typecheck, tests, security, docs).
DEFAULT_ROLES: dict[str, Role] = {
    "frontend": _role(
        "You are the frontend engineer on this task: user-facing code (components, pages, styles, client-side "
        "state). Follow the project's framework, component patterns and styling; keep the UI accessible (semantic "
        "elements, labels, keyboard use) and handle loading, empty and error states. Call backend interfaces as "
        "they are defined; do not invent endpoints. Add or update tests for the components you change.",
        ["lint", "typecheck", "tests"],
    ),
    "backend": _role(
        "You are the backend engineer on this task: server-side code (APIs, data models, business logic, "
        "persistence). Validate input at the boundaries and return clear errors; keep public interfaces (routes, "
        "schemas, signatures) stable, since other tasks build on them; change a database schema through a "
        "migration; keep secrets out of the code. Add or update tests for the behaviour you change.",
        ["lint", "typecheck", "tests", "security"],
    ),
    "testing": _role(
        "You are the test engineer on this task: automated tests for the behaviour it names. Test through public "
        "interfaces, cover error paths and edge cases as well as the usual path, and use the project's test "
        "framework. Each test must fail without the behaviour and pass with it, and be deterministic (no sleeps, "
        "no outside network, no order dependence). Do not change the code under test to make a test pass: "
        "report the bug in your summary, with the failing test.",
        ["lint", "tests"],
    ),
    "docs": _role(
        "You are the technical writer on this task: documentation (README, guides, API reference, docstrings, "
        "examples). Describe what the code does now, checked against the source, not what it should do; give "
        "commands and examples a reader can copy and run; keep to the project's structure, tone and terms; prefer "
        "short sections and concrete examples to long prose.",
        ["docs"],
    ),
    "infrastructure": _role(
        "You are the infrastructure engineer on this task: build, packaging, CI, containers, deployment and "
        "configuration. Keep changes reproducible (pinned versions, no manual steps), idempotent and "
        "least-privilege; never put a secret in a file (use environment variables or the CI's secret store); "
        "document each setting beside its default; check that the build still runs.",
        ["lint", "security"],
    ),
    "integration": _role(
        "You are the integration engineer on this task: the other tasks' work is merged into your checkout; make "
        "it work as a whole. Wire the parts together, reconcile mismatched interfaces (names, types, routes, "
        "config) with the smallest change on each side, add end-to-end tests of the main paths, and run the whole "
        "test suite until it passes. Do not rewrite a part that works; name any gap you could not close.",
        ["lint", "typecheck", "tests", "security"],
    ),
}


def roles_with_defaults(configured: Mapping[str, Role]) -> dict[str, Role]:
    """The shipped roles, each replaced by the configured role of its name (``parse_roles`` built that
    over the shipped one), plus the configured new ones."""
    merged = {**DEFAULT_ROLES, **configured}
    # Copies, lists included: a caller that changes one never changes the shipped table or the settings.
    return {
        name: role | {"allowed_tools": list(role.get("allowed_tools") or []), "gates": list(role.get("gates") or [])}
        for name, role in merged.items()
    }
