"""What a selection sees of each candidate, and what it decides (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..outcomes import GateResult, JudgeRecord, RankingRow, SelectionRecord
from ..process.sandbox import SandboxSpec


@dataclass
class Candidate:
    """One candidate of a task, built by the engine from its WorkerRecord."""

    name: str  # worker name, e.g. "worker_2"
    kind: str  # worker kind: "claude", "command", ...
    model: str | None
    status: str  # its final WorkerStatus value ("success", "failed", "timeout", "cancelled", ...)
    eligible: bool  # it succeeded, and so every required gate passed
    gates: list[GateResult] = field(default_factory=list)  # WorkerRecord.gates
    cost_usd: float | None = None
    duration: float | None = None
    ended_at: float | None = None
    diff: str = ""  # its diff against the task's base, capped to candidates.judge_diff_bytes
    diff_truncated: bool = False
    diffstat: str | None = None
    files_changed: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    output: str = ""  # its result text (a summary of the run)
    cwd: Path | None = None  # its worktree (or worker folder) where scoring.command runs; None: gone
    sandbox: SandboxSpec | None = None  # the sandbox its worker ran in: scoring.command runs its code there too
    # What its scoring command's tag starts with: its tree's ("<root id>."), so a restart finds one a
    # stop left running and kills it before scoring it again; "" outside a tree.
    tree_tag: str = ""


@dataclass
class Selection:
    """The decision for one task, with everything that led to it."""

    winner: str | None  # a candidate's name; None when no candidate is eligible
    reason: str  # one line: why it won, or why none did
    ranking: list[RankingRow] = field(default_factory=list)  # one row per candidate, best first
    judge: JudgeRecord | None = None  # select: judge: the bracket's matches
    cost_usd: float | None = None  # what the judge's calls cost (counts toward the tree)

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "reason": self.reason,
            "ranking": [r.to_dict() for r in self.ranking],
            "judge": self.judge.to_dict() if self.judge is not None else None,
            "cost_usd": self.cost_usd,
        }

    def record(self, task_id: str, select: str, candidates: list[str]) -> SelectionRecord:
        """What the job's record keeps of it (``JobRecord.selections[task_id]``); ``at`` is set once
        the winner is merged (a graph job's), or left None."""
        return SelectionRecord(
            self.winner,
            self.reason,
            list(self.ranking),
            self.judge,
            self.cost_usd,
            task_id=task_id,
            select=select,
            candidates=list(candidates),
        )
