"""Worker kinds by name, and the ``auto`` choice.

The registry is built from this package's modules: each that declares ``KIND`` (a
``WorkerKind``, kind.py) is a kind, so a new kind is one module here and its tests. Every table
of kinds is read from the registry (``ADAPTERS``, ``auto_order``, ``memory_peaks``, doctor's hints,
the price table's providers), never kept by hand; ``register`` adds one at run time (a test's).

A kind from outside the package (docs/plugins.md) joins the same registry: ``load_plugins`` imports
each installed distribution's ``orchestrator.worker_kinds`` entry point and each ``workers.kinds.<name>.adapter``
of config.yaml, at the server's start (the engine's), and refuses one that does not load, is no
``WorkerKind``, is named otherwise than declared or takes a shipped kind's name, saying which
plugin, which distribution and how to fix it, before any job runs.

Modules:

- ``base``: ``Adapter``, ``WorkerContext``, ``ParsedResult``; ``kind``: ``WorkerKind``;
- ``transcript``: what the kinds' logs share; ``aicli``: what the AI CLIs' adapters share;
- ``claude``, ``codex``, ``gemini``, ``aider``, ``opencode``, ``ollama``, ``anthropic``, ``command``,
  ``simulated``: the kinds, one module each.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from ...config import AUTO_KIND, plugins
from ...errors import ConfigError
from .base import Adapter, ParsedResult, WorkerContext
from .kind import WorkerKind

if TYPE_CHECKING:
    from ...config import Settings
    from ...models import WorkerRecord


def discover(package: str, path: Iterable[str]) -> dict[str, WorkerKind]:
    """Every ``KIND`` declared by a module of ``package`` (whose folders are ``path``), by name."""
    found: dict[str, WorkerKind] = {}
    for module in pkgutil.iter_modules(list(path)):
        declared = getattr(importlib.import_module(f"{package}.{module.name}"), "KIND", None)
        if isinstance(declared, WorkerKind):
            found[declared.name] = declared
    return found


# The registry: every worker kind this server can run, by name.
KINDS: dict[str, WorkerKind] = discover(__name__, __path__)


def kinds() -> list[WorkerKind]:
    """Every kind, in its listing order (``rank``)."""
    return sorted(KINDS.values(), key=lambda kind: kind.rank)


SHIPPED = tuple(KINDS)  # the package's own kinds, which no plugin may replace


def register(kind: WorkerKind) -> None:
    """Add ``kind`` to the registry (a kind declared outside this package: a plugin's, a test's)."""
    KINDS[kind.name] = kind
    plugins.loaded(kind.name)


def unregister(name: str) -> None:
    KINDS.pop(name, None)
    plugins.loaded(name, present=False)


def load_plugins(settings: Settings) -> list[str]:
    """Register every plugin kind (installed entry points, then config.yaml's ``workers.kinds``
    with an ``adapter``): a line per kind for the server's log. A bad one raises ``ConfigError``
    naming the plugin, its distribution and the fix; the registry is then left as it was."""
    declared = list(plugins.entry_points(plugins.Group.WORKER_KINDS))
    declared += [
        plugins.Declared(plugins.Group.WORKER_KINDS, name, spec["adapter"], "", plugins.kind_key(name, "adapter"))
        for name, spec in settings.workers.kinds.items()
        if spec["adapter"]
    ]
    installed = {d.name for d in declared}
    for name in settings.workers.kinds:
        if name not in installed:
            raise ConfigError(
                f"workers.kinds.{name}: no installed package declares the worker kind {name!r} and it names no adapter. "
                f"Fix: install its package into this Python, or set workers.kinds.{name}.adapter to package.module:KIND "
                f"({plugins.HOW_TO})",
                key=plugins.kind_key(name, "adapter"),
            )
    found = [(d, _plugin_kind(d)) for d in declared]  # all checked before any is registered
    for _, kind in found:
        register(kind)
    return [f"worker kind {d.name} from {d.where} ({d.target})" for d, _ in found]


def _plugin_kind(declared: plugins.Declared) -> WorkerKind:
    plugins.check_name(plugins.Group.WORKER_KINDS, declared)
    fix_name = (
        f"uninstall {declared.distribution} or ask its authors for another name"
        if declared.distribution
        else "give it another name under workers.kinds"
    )
    if declared.name in SHIPPED:
        raise declared.error(f"{declared.name!r} is a kind the orchestrator ships", fix_name)
    kind = declared.load()
    if not isinstance(kind, WorkerKind):
        raise declared.error(
            f"{declared.target} is a {type(kind).__name__}, not a WorkerKind",
            "point it at the module's KIND = WorkerKind(MyAdapter, rank=...) (orchestrator.workers.adapters.kind)",
        )
    if kind.name != declared.name:
        raise declared.error(
            f"its adapter is named {kind.name!r}, not {declared.name!r}",
            "give the adapter's name and the declared one the same value",
        )
    return kind


class _Adapters(Mapping[str, type[Adapter]]):
    """The adapter class of each kind, in listing order: a view of the registry."""

    def __getitem__(self, name: str) -> type[Adapter]:
        return KINDS[name].adapter

    def __iter__(self) -> Iterator[str]:
        return iter([kind.name for kind in kinds()])

    def __len__(self) -> int:
        return len(KINDS)


ADAPTERS: Mapping[str, type[Adapter]] = _Adapters()


def auto_order() -> tuple[str, ...]:
    """The kinds ``auto`` looks for on PATH, in order (each is found through its
    ``orchestrator.<kind>_command`` setting, so a full path there counts too)."""
    return tuple(kind.name for kind in kinds() if kind.auto)


def memory_peaks() -> dict[str, int]:
    """Each kind's process-tree peak in MB until one of its workers is measured (process/admission.py)."""
    return {kind.name: kind.memory_peak_mb for kind in kinds()}


__all__ = [
    "ADAPTERS",
    "KINDS",
    "Adapter",
    "ParsedResult",
    "WorkerContext",
    "WorkerKind",
    "auto_order",
    "co_author_of",
    "discover",
    "get_adapter",
    "kinds",
    "load_plugins",
    "memory_peaks",
    "program_of",
    "register",
    "resolve_kind",
    "unregister",
]


def resolve_kind(kind: str, settings: Settings) -> tuple[str, str]:
    """The concrete kind for ``kind`` and a sentence saying why (for logs and the CLI)."""
    if kind != AUTO_KIND:
        if kind not in ADAPTERS:
            known = ", ".join([AUTO_KIND, *ADAPTERS])
            raise ConfigError(f"worker kind '{kind}' is not available here. Available kinds: {known}", key="worker")
        return kind, f"worker kind {kind} (configured)"
    order = auto_order()
    for name in order:
        found = shutil.which(program_of(name, settings))
        if found:
            return name, f"worker kind auto: found {name} on PATH ({found})"
    looked = ", ".join(program_of(n, settings) for n in order)
    return "simulated", f"worker kind auto: no AI CLI found on PATH (looked for: {looked}); using the simulated worker"


def program_of(kind: str, settings: Settings) -> str:
    """The program ``kind``'s workers start as configured (its ``orchestrator.<kind>_command``, a
    plugin's ``workers.kinds.<kind>.command``); "" for one that runs the package's own Python."""
    return ADAPTERS[kind]().configured_program(settings) or ""


def get_adapter(kind: str) -> Adapter:
    try:
        return ADAPTERS[kind]()
    except KeyError:
        raise ConfigError(f"unknown worker kind '{kind}'. Known kinds: {', '.join(ADAPTERS)}", key="worker") from None


def co_author_of(worker: WorkerRecord, settings: Settings) -> str | None:
    """The ``Co-authored-by:`` value for ``worker``'s work: its kind's, with the model it ran
    (the one its CLI reported, else the one asked for; None: a kind that is no AI, or one this
    server does not know)."""
    found = ADAPTERS.get(worker.kind)
    return found().co_author(settings, worker.model, worker.reported_model) if found is not None else None


def reported_model(parsed: ParsedResult) -> str | None:
    """The model an attempt's CLI said it ran: the one it named, else of the models it counted
    tokens for, the one that wrote the most (a CLI may call a small model for side tasks)."""
    if parsed.model:
        return parsed.model
    most = max(parsed.usage_by_model, key=lambda u: u.tokens_out, default=None)
    return most.model if most is not None else None
