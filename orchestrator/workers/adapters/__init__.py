"""Worker kinds by name, and the ``auto`` choice."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from ...config import AUTO_KIND
from ...errors import ConfigError
from .aider import AiderAdapter
from .anthropic import AnthropicAdapter
from .base import Adapter, ParsedResult, WorkerContext
from .claude import ClaudeAdapter
from .codex import CodexAdapter
from .command import CommandAdapter
from .gemini import GeminiAdapter
from .ollama import OllamaAdapter
from .opencode import OpencodeAdapter
from .simulated import SimulatedAdapter

if TYPE_CHECKING:
    from ...config import Settings
    from ...models import WorkerRecord

ADAPTERS: dict[str, type[Adapter]] = {
    "simulated": SimulatedAdapter,
    "command": CommandAdapter,
    "claude": ClaudeAdapter,
    "codex": CodexAdapter,
    "gemini": GeminiAdapter,
    "aider": AiderAdapter,
    "ollama": OllamaAdapter,
    "opencode": OpencodeAdapter,
    "anthropic": AnthropicAdapter,  # not in AUTO_ORDER: no CLI to find; chosen by name
}
# Order in which ``auto`` looks for an AI CLI on PATH (each is found through its
# ``orchestrator.<kind>_command`` setting, so a full path there counts too).
AUTO_ORDER = ("claude", "codex", "gemini", "aider", "ollama", "opencode")

__all__ = ["ADAPTERS", "Adapter", "ParsedResult", "WorkerContext", "co_author_of", "get_adapter", "resolve_kind"]


def resolve_kind(kind: str, settings: Settings) -> tuple[str, str]:
    """The concrete kind for ``kind`` and a sentence saying why (for logs and the CLI)."""
    if kind != AUTO_KIND:
        if kind not in ADAPTERS:
            known = ", ".join([AUTO_KIND, *ADAPTERS])
            raise ConfigError(f"worker kind '{kind}' is not available here. Available kinds: {known}", key="worker")
        return kind, f"worker kind {kind} (configured)"
    for name in AUTO_ORDER:
        if name not in ADAPTERS:
            continue
        found = shutil.which(settings.get("orchestrator", f"{name}_command"))
        if found:
            return name, f"worker kind auto: found {name} on PATH ({found})"
    looked = ", ".join(settings.get("orchestrator", f"{n}_command") for n in AUTO_ORDER if n in ADAPTERS)
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
