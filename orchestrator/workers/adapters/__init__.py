"""Worker kinds by name, and the ``auto`` choice.

The registry is built from this package's modules: each that declares ``KIND`` (a
``WorkerKind``, kind.py) is a kind, so a new kind is one module here and its tests. Every table
of kinds is read from the registry (``ADAPTERS``, ``auto_order``, ``memory_peaks``, doctor's hints,
the price table's providers), never kept by hand; ``register`` adds one at run time (a test's).

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

from ...config import AUTO_KIND
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


def register(kind: WorkerKind) -> None:
    """Add ``kind`` to the registry (a kind declared outside this package: a test's)."""
    KINDS[kind.name] = kind


def unregister(name: str) -> None:
    KINDS.pop(name, None)


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
    "memory_peaks",
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
        found = shutil.which(settings.get("orchestrator", f"{name}_command"))
        if found:
            return name, f"worker kind auto: found {name} on PATH ({found})"
    looked = ", ".join(settings.get("orchestrator", f"{n}_command") for n in order)
    return "simulated", f"worker kind auto: no AI CLI found on PATH (looked for: {looked}); using the simulated worker"


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
