"""How much of a job's prompts was its shared context block: pure, from the
workers' records (``prompt_bytes``, ``shared_prompt_bytes``, ``tokens_cache_read``). The status
document, LEVEL_<n>_REPORT.md and FINAL_RESULT.md show it as one line:
``prompts: 7 workers, 41 KB, 62% shared context; 12,345 cache-read tokens``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator.models import WorkerRecord


@dataclass(frozen=True)
class PromptShare:
    """The prompts of some workers: how many rendered one, their bytes, the shared block's bytes
    among them, and the prompt-cache reads a model API reported (None: no worker reported any)."""

    workers: int
    bytes: int
    shared_bytes: int
    cache_read: int | None

    @property
    def fraction(self) -> float:
        return self.shared_bytes / self.bytes if self.bytes else 0.0

    @property
    def line(self) -> str:
        text = f"{self.workers} worker{'s' if self.workers != 1 else ''}, {_size(self.bytes)}, {self.fraction:.0%} shared context"
        if self.cache_read is not None:
            text += f"; {self.cache_read:,} cache-read tokens"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "bytes": self.bytes,
            "shared_bytes": self.shared_bytes,
            "shared_fraction": round(self.fraction, 4),
            "cache_read_tokens": self.cache_read,
            "summary": self.line,
        }


def prompt_share(workers: Iterable[WorkerRecord]) -> PromptShare | None:
    """Over the workers that rendered a prompt (``prompt_bytes`` set); None: none did."""
    count = total = shared = 0
    cache: int | None = None
    for w in workers:
        if w.prompt_bytes is None:
            continue
        count += 1
        total += w.prompt_bytes
        shared += w.shared_prompt_bytes or 0
        if w.tokens_cache_read is not None:
            cache = (cache or 0) + w.tokens_cache_read
    return PromptShare(count, total, shared, cache) if count else None


def _size(n: int) -> str:
    return f"{n} B" if n < 1000 else f"{n / 1000:.0f} KB" if n < 1_000_000 else f"{n / 1_000_000:.1f} MB"
