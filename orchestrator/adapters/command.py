"""The generic ``command`` kind: an argv template from config, filled per element."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Adapter, WorkerContext

if TYPE_CHECKING:
    from ..config import Settings

# What orchestrator.command may contain; its help in config.SCHEMA names each (a test checks).
PLACEHOLDERS = ("{prompt}", "{prompt_file}", "{worker_dir}", "{task}")


class CommandAdapter(Adapter):
    """Runs ``orchestrator.command`` (a list). Placeholders are replaced inside each
    argv element, so user text is always one argument and never reaches a shell."""

    name = "command"
    command_key = "orchestrator.command"

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        template = ctx.settings.orchestrator.command
        if not template:
            raise ConfigError(
                "worker kind 'command' needs orchestrator.command in config.yaml: an argv list such as "
                '["my-tool", "--prompt-file", "{prompt_file}"]'
            )
        values = dict(zip(PLACEHOLDERS, (ctx.prompt, str(ctx.prompt_file), str(ctx.worker_dir), ctx.task)))
        return [_fill(part, values) for part in template]

    def needs_prompt(self, settings: Settings) -> bool:
        return any("{prompt" in part for part in settings.orchestrator.command)

    def needs_prompt_file(self, settings: Settings) -> bool:
        return any("{prompt_file}" in part for part in settings.orchestrator.command)


def _fill(part: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        if key in part:
            part = part.replace(key, value)
    return part
