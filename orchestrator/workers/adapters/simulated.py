"""The built-in simulated worker: deterministic, offline, never pretends to be an AI.

It runs ``orchestrator.workers.simulated_worker`` on the orchestrator's interpreter (interpreter.package_argv),
which writes a deliverable file for its subtask and, when the subtask is
compound and depth allows, starts a child job through the same ``spawn``
command an AI worker would use.
"""

from __future__ import annotations

from ... import protocol
from ...config import SIMULATED_KIND
from ...process.interpreter import package_argv
from .base import Adapter, WorkerContext
from .kind import WorkerKind


class SimulatedAdapter(Adapter):
    name = SIMULATED_KIND

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        goal = ["--goal", ctx.goal] if ctx.goal else []
        return package_argv("orchestrator.workers.simulated_worker", "main", [*goal, "--", ctx.task])

    def needs_prompt(self, settings: object) -> bool:
        return False  # it reads its subtask from argv

    def needs_prompt_file(self, settings: object) -> bool:
        return False

    def feedback_refusal(self, settings: object) -> str | None:
        return "the simulated worker runs the same script whatever it is told"

    def extra_env(self, ctx: WorkerContext) -> dict[str, str]:
        sim = ctx.settings.simulated
        return {
            protocol.SIM_DURATION: str(sim.duration),
            protocol.SIM_FAIL_MATCHING: sim.fail_matching,
            protocol.SIM_FAIL_ATTEMPTS: str(sim.fail_attempts),
            protocol.SIM_RECURSE: "1" if sim.recurse else "0",
        }


KIND = WorkerKind(SimulatedAdapter, rank=10, memory_peak_mb=30)  # this package's own Python: 11 MB idle here
