"""What can come from outside the package: worker kinds, after-attempt steps and forges, each named
by an installed distribution's entry point or by a dotted path in config.yaml.

This module only names them (it imports no plugin: an entry point's name and target are read from
the installed distributions' metadata), so config.yaml's choices of a kind or a forge are checked
here, below the layers that load the code (workers/adapters/plugins.py, engine/after_attempt.py,
delivery/forge.py). A plugin kind's settings live under ``workers.kinds.<name>`` (``parse_kinds``).

=============================  ================================  ==================================
entry point group              its target                        or by dotted path in config.yaml
=============================  ================================  ==================================
``orchestrator.worker_kinds``  a ``WorkerKind`` (its ``KIND``)   ``workers.kinds.<name>.adapter``
``orchestrator.steps``         a ``Step`` subclass or instance   ``tasks.steps``
``orchestrator.forges``        a ``Forge`` subclass or instance  ``git.pull_request`` itself
=============================  ================================  ==================================
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.metadata
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypedDict

from ..errors import ConfigError

HOW_TO = "docs/plugins.md"  # the page every plugin error points to


AUTO_KIND = "auto"  # the worker kind (orchestrator.worker, a role's) that is the first AI CLI on PATH, else simulated
# The built-in kind that writes placeholders so the orchestrator can be tried offline (its reports say so).
SIMULATED_KIND = "simulated"


class Group(str, Enum):
    """The entry point groups an installed distribution may declare plugins in."""

    WORKER_KINDS = "orchestrator.worker_kinds"
    STEPS = "orchestrator.steps"
    FORGES = "orchestrator.forges"


# The kinds the package ships (workers/adapters: one module each), in listing order; auto is no kind
# of its own. tests/test_worker_kinds.py checks this against the registry.
SHIPPED_KINDS = (SIMULATED_KIND, "command", "claude", "codex", "gemini", "aider", "ollama", "opencode", "anthropic")
# A kind's, a step's or a forge's name: lower case, digits, '-' and '_' (``cursor-agent``); no dot, so
# ``workers.kinds.<name>.command`` names one setting.
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")
# ``package.module:attribute`` (or ``package.module.attribute``), as an entry point's value is written.
DOTTED = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*)?\Z")


@dataclass(frozen=True)
class Declared:
    """One plugin as declared: its name, what to import, and who declared it (for every error)."""

    group: Group
    name: str
    target: str  # "package.module:attribute"
    distribution: str  # the installed distribution's name ("" for config.yaml's)
    where: str  # "entry point cursor-agent of distribution orchestrator-local-command 0.1", "workers.kinds.x.adapter"

    def load(self) -> Any:
        """The target's object; a ``ConfigError`` naming the plugin, its distribution and the fix."""
        module_name, _, attribute = self.target.partition(":")
        if not attribute:
            module_name, _, attribute = self.target.rpartition(".")
        try:
            found: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                found = getattr(found, part)
        except Exception as exc:  # an import error, a syntax error, a missing attribute: all said the same way
            raise self.error(
                f"{self.target} cannot be loaded ({type(exc).__name__}: {_first_line(exc)})",
                self.fix_for_load(),
            ) from None
        return found

    def fix_for_load(self) -> str:
        if self.distribution:
            return (
                f"reinstall or upgrade {self.distribution} (pip install --force-reinstall {self.distribution}), or uninstall it"
            )
        return f"correct {self.where} to module:attribute of an importable module, or remove it"

    def error(self, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"plugin {self.name!r} ({self.where}): {problem}. Fix: {fix} ({HOW_TO})", key=self.where)


@functools.cache
def _entry_points(group: str) -> tuple[Declared, ...]:
    found = []
    for point in importlib.metadata.entry_points(group=group):
        dist = point.dist
        name = f"{dist.metadata['Name']}" if dist is not None else "an unnamed distribution"
        version = f" {dist.version}" if dist is not None else ""
        found.append(Declared(Group(group), point.name, point.value, name, f"entry point {point.name!r} of {name}{version}"))
    return tuple(found)


def entry_points(group: Group) -> tuple[Declared, ...]:
    """The plugins the installed distributions declare in ``group`` (read once per process)."""
    return _entry_points(group.value)


def forget_entry_points() -> None:
    """Read the installed distributions again (a test that installed or removed one)."""
    _entry_points.cache_clear()


def check_name(group: Group, declared: Declared) -> None:
    if not NAME.match(declared.name):
        raise declared.error(
            "its name is not one the orchestrator accepts (lower-case letters, digits, '-' and '_', at most 63)",
            "rename it" if not declared.distribution else f"ask for a new release of {declared.distribution}",
        )


# -- worker kinds ------------------------------------------------------------------------------


OptionValue = str | int | float | bool | list[str]  # a plugin kind's option: what YAML spells plainly


class KindSettings(TypedDict):
    """``workers.kinds.<name>``: a plugin kind's own settings, every key filled."""

    adapter: str  # "package.module:KIND" (a kind of config.yaml's); "": an installed entry point's
    command: str  # the program its workers start (path or name); "": the kind's own default
    args: list[str]  # extra arguments its adapter appends
    options: dict[str, OptionValue]  # anything else its adapter reads


KIND_KEYS = tuple(KindSettings.__annotations__)
KINDS_HELP = (
    "settings of plugin worker kinds (docs/plugins.md), by name: {adapter: package.module:KIND (a kind not installed "
    "as an entry point), command: its program (path or name; empty: the kind's own), args: [extra arguments], "
    "options: {what its adapter reads}}"
)

# The kinds the config being read declares (workers.kinds), while it is checked: config.yaml may
# name in orchestrator.worker a kind it declares itself.
_being_read: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("declared_kinds", default=())
# Kinds loaded into this process's registry (workers/adapters: a config's kind once loaded, a test's).
_loaded: set[str] = set()


@contextlib.contextmanager
def declaring(names: Collection[str]) -> Iterator[None]:
    """Within it, ``KINDS`` counts ``names`` too (the kinds a config being read declares)."""
    token = _being_read.set(tuple(names))
    try:
        yield
    finally:
        _being_read.reset(token)


def loaded(name: str, present: bool = True) -> None:
    """The workers' registry says a kind of a plugin is (or is no more) in this process."""
    (_loaded.add if present else _loaded.discard)(name)


class KindNames(Collection[str]):
    """Every worker kind name a setting may hold, read when asked: ``first`` (``auto``), the shipped
    kinds, the installed entry points', those loaded into the registry and those the config being
    read declares."""

    def __init__(self, first: tuple[str, ...] = (AUTO_KIND,)) -> None:
        self.first = first

    def _names(self) -> list[str]:
        plugins = [d.name for d in entry_points(Group.WORKER_KINDS)] + sorted(_loaded) + list(_being_read.get())
        return list(dict.fromkeys([*self.first, *SHIPPED_KINDS, *plugins]))

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @property
    def documented(self) -> tuple[str, ...]:
        """The names config.template.yaml lists (the shipped ones: the template is the package's)."""
        return (*self.first, *SHIPPED_KINDS)


KINDS = KindNames()  # every kind name a setting may hold: orchestrator.worker, a role's, a candidate's
RESOLVER_KINDS = KindNames(first=("",))  # git.resolver_kind: "" (the conflicting worker's kind) or a kind


def parse_kinds(value: Any, where: str) -> dict[str, KindSettings]:
    """``workers.kinds``: a mapping of plugin kind names to their settings (``KindSettings``)."""
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where} must be a mapping of kind names to their settings, e.g. {{my-kind: {{command: my-tool}}}}", key=where
        )
    kinds: dict[str, KindSettings] = {}
    for name, spec in value.items():
        at = f"{where}.{name}"
        if not isinstance(name, str) or not NAME.match(name):
            raise ConfigError(
                f"{where}: {str(name)[:60]!r} is not a kind name (lower-case letters, digits, '-' and '_', no dot)", key=where
            )
        if name in SHIPPED_KINDS or name == AUTO_KIND:
            raise ConfigError(
                f"{at}: {name!r} is a kind the orchestrator ships; its settings are orchestrator.{name}_command and "
                f"the {name} section's. Give your own kind another name",
                key=at,
            )
        kinds[name] = _kind_settings(spec if spec is not None else {}, at)
    return kinds


def _kind_settings(spec: Any, at: str) -> KindSettings:
    if not isinstance(spec, dict):
        raise ConfigError(f"{at} must be a mapping with any of {', '.join(KIND_KEYS)}", key=at)
    unknown = [k for k in spec if k not in KIND_KEYS]
    if unknown:
        raise ConfigError(f"{at}: unknown key {str(unknown[0])!r}. Known keys: {', '.join(KIND_KEYS)}", key=f"{at}.{unknown[0]}")
    adapter, command = spec.get("adapter", ""), spec.get("command", "")
    args, options = spec.get("args", []), spec.get("options", {})
    if not isinstance(adapter, str) or (adapter and not DOTTED.match(adapter)):
        raise ConfigError(
            f"{at}.adapter must be package.module:KIND (a WorkerKind's dotted path), or left out", key=f"{at}.adapter"
        )
    if not isinstance(command, str) or "\0" in command:
        raise ConfigError(f"{at}.command must be a string: the program's path or name", key=f"{at}.command")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{at}.args must be a list of strings", key=f"{at}.args")
    if not isinstance(options, dict) or not all(isinstance(k, str) and _plain(v) for k, v in options.items()):
        raise ConfigError(
            f"{at}.options must be a mapping of names to strings, numbers, booleans or lists of strings", key=f"{at}.options"
        )
    return {"adapter": adapter, "command": command, "args": list(args), "options": dict(options)}


def _plain(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    return isinstance(value, (str, int, float, bool))


def kind_key(name: str, field: str = "command") -> str:
    """The dotted setting of a plugin kind's ``field`` (``workers.kinds.cursor-agent.command``)."""
    return f"workers.kinds.{name}.{field}"


# -- steps and forges ----------------------------------------------------------------------------


def parse_dotted_paths(value: Any, where: str) -> list[str]:
    """``tasks.steps``: a list of ``package.module:Attribute`` paths."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of dotted paths such as my_package.checks:LicenceStep", key=where)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not DOTTED.match(item):
            raise ConfigError(
                f"{where}[{i}]: {str(item)[:80]!r} is not a dotted path: package.module:Attribute, an importable "
                "module and a name in it",
                key=f"{where}[{i}]",
            )
    return list(dict.fromkeys(value))


def config_step(target: str, index: int) -> Declared:
    return Declared(Group.STEPS, target.rpartition(":")[2] or target.rpartition(".")[2], target, "", f"tasks.steps[{index}]")


NO_FORGE = "none"
SHIPPED_FORGES = ("github", "gitlab")


class ForgeNames(Collection[str]):
    """What ``git.pull_request`` may hold, read when asked: none, the shipped forges, the installed
    entry points' names, or a ``package.module:Forge`` dotted path (a forge of config.yaml's)."""

    def _names(self) -> list[str]:
        return list(dict.fromkeys([NO_FORGE, *SHIPPED_FORGES, *(d.name for d in entry_points(Group.FORGES))]))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._names() or (":" in name and bool(DOTTED.match(name))))

    def __iter__(self) -> Iterator[str]:
        return iter([*self._names(), "package.module:Forge"])

    def __len__(self) -> int:
        return len(self._names()) + 1

    @property
    def documented(self) -> tuple[str, ...]:
        return (NO_FORGE, *SHIPPED_FORGES, "package.module:Forge")


FORGES = ForgeNames()


def config_forge(target: str) -> Declared:
    return Declared(Group.FORGES, target, target, "", "git.pull_request")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
