"""The ``local-command`` worker kind: runs a program of this machine on each subtask.

Its workers start ``workers.kinds.local-command.command`` (default ``local-agent``: a kind's
program need not be named as the kind), with ``args`` and then the subtask as its last argument,
in the worker's directory and sandbox like any kind; what it prints is the worker's output. The
options ``prompt_file: true`` adds ``--prompt-file <path>`` (the rendered prompt) before the subtask.

    workers:
      kinds:
        local-command:
          command: /usr/local/bin/my-agent
          args: [--quiet]
          options: {prompt_file: true}
"""

from __future__ import annotations

from orchestrator.config import Settings
from orchestrator.workers.adapters.base import Adapter, WorkerContext
from orchestrator.workers.adapters.kind import WorkerKind


class LocalCommandAdapter(Adapter):
    name = "local-command"
    default_program = "local-agent"  # its command_key is workers.kinds.local-command.command (base.Adapter)

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        own = self.kind_settings(ctx.settings)
        prompt = ["--prompt-file", str(ctx.prompt_file)] if self.needs_prompt_file(ctx.settings) else []
        return [self.configured_program(ctx.settings) or self.default_program, *own["args"], *prompt, ctx.task]

    def needs_prompt(self, settings: Settings) -> bool:
        return self.needs_prompt_file(settings)

    def needs_prompt_file(self, settings: Settings) -> bool:
        return self.kind_settings(settings)["options"].get("prompt_file") is True

    def feedback_refusal(self, settings: Settings) -> str | None:
        return None if self.needs_prompt_file(settings) else "local-command reads no feedback without options.prompt_file"

    def continue_refusal(self, settings: Settings) -> str | None:
        return self.feedback_refusal(settings)


KIND = WorkerKind(
    LocalCommandAdapter, rank=100, memory_peak_mb=50, install="put your program on PATH or in workers.kinds.local-command.command"
)
