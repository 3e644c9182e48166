"""TEMPORARY local stand-in of helper select's interface (never committed)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..runner import ProcessRunner


@dataclass
class Candidate:
    name: str
    kind: str
    model: str | None
    status: str
    eligible: bool
    gates: list[dict[str, Any]]
    cost_usd: float | None
    duration: float | None
    ended_at: float | None
    diff: str
    diff_truncated: bool
    diffstat: str | None
    files_changed: int
    lines_added: int
    lines_removed: int
    output: str
    cwd: Path | None


@dataclass
class Selection:
    winner: str | None
    reason: str
    ranking: list[dict[str, Any]] = field(default_factory=list)
    judge: dict[str, Any] | None = None
    cost_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "reason": self.reason,
            "ranking": self.ranking,
            "judge": self.judge,
            "cost_usd": self.cost_usd,
        }


def choose(
    task: str,
    candidates: list[Candidate],
    select: str,
    *,
    settings: Settings,
    judge: dict[str, Any],
    runner: ProcessRunner,
    env: dict[str, str],
    work_dir: Path,
    cancel: threading.Event | None = None,
) -> Selection:
    ok = [c for c in candidates if c.eligible]
    key = {
        "cheapest": lambda c: (c.cost_usd is None, c.cost_usd or 0, c.name),
        "fastest": lambda c: (c.duration or 0, c.name),
        "first_passing": lambda c: (c.ended_at or 0, c.name),
    }.get(select, lambda c: (c.lines_added + c.lines_removed, c.name))
    ok.sort(key=key)
    rows = [
        {
            "worker": c.name,
            "kind": c.kind,
            "model": c.model,
            "eligible": c.eligible,
            "score": None,
            "parts": {},
            "measures": {"lines": c.lines_added + c.lines_removed},
            "rank": (ok.index(c) + 1 if c in ok else None),
            "reason": "",
        }
        for c in candidates
    ]
    return Selection(ok[0].name if ok else None, f"{select}: {ok[0].name}" if ok else "no candidate passed", rows)
