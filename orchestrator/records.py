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
