"""Records that travel between features, as dataclasses: what the records of models.py hold
(``WorkerRecord.gates``, ``WorkerRecord.integrated``, ``JobRecord.merge``), kept here, below every
folder, so models.py can name them. Each one's ``to_dict`` is the shape on disk and in the API;
``from_dict`` loads what ``to_dict`` (and the code before these classes) wrote.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A gate's status (quality/gates.py).
PASSED, FAILED, TIMEOUT, NOT_STARTED, CRASHED, CANCELLED = "passed", "failed", "timeout", "not_started", "crashed", "cancelled"
NO_TESTS = "no_tests"


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate's run: an entry of ``WorkerRecord.gates`` (``to_dict``, the shape on disk and in the
    API; see the module docstring)."""

    name: str
    required: bool
    status: str
    passed: bool
    exit_code: int | None
    duration: float
    log_path: str
    commit: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(
            name=data["name"],
            required=bool(data.get("required", True)),
            status=data.get("status") or CRASHED,
            passed=bool(data.get("passed")),
            exit_code=data.get("exit_code"),
            duration=data.get("duration") or 0.0,
            log_path=data.get("log_path") or "",
            commit=data.get("commit"),
            reason=data.get("reason") or "",
        )


# -- merges (git/merging.py) ------------------------------------------------------------------


@dataclass(frozen=True)
class FileConflict:
    """One conflicting path: the workers whose changes meet there and how many hunks conflict."""

    path: str
    workers: tuple[str, ...]
    hunks: int
    kind: str  # content, add/add, modify/delete, delete/modify
    resolved_by: str = ""  # under theirs: the worker whose side won
    predicted: bool = False  # not merged: what would conflict if it were


@dataclass(frozen=True)
class Integrated:
    """One worker's commit merged into a graph job's integration branch (``integrate``)."""

    ref: str
    commit: str | None  # the branch's tip after it (None: not merged)
    merged: bool
    conflicts: tuple[FileConflict, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "commit": self.commit,
            "merged": self.merged,
            "conflicts": [dataclasses.asdict(c) | {"workers": list(c.workers)} for c in self.conflicts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Integrated:
        conflicts = tuple(FileConflict(**(c | {"workers": tuple(c["workers"])})) for c in data.get("conflicts") or ())
        return cls(data["ref"], data.get("commit"), bool(data.get("merged")), conflicts)


@dataclass(frozen=True, slots=True)
class IntegrationRecord:
    """``WorkerRecord.integrated``: the worker's commit merged into its job's integration branch
    (``Integrated``), when (clock time) and, when it was not merged, why."""

    integrated: Integrated
    at: float
    reason: str | None = None

    @property
    def merged(self) -> bool:
        return self.integrated.merged

    def to_dict(self) -> dict[str, Any]:
        return self.integrated.to_dict() | {"at": self.at, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntegrationRecord:
        return cls(Integrated.from_dict(data), data["at"], data.get("reason"))
