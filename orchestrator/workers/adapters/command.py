"""The generic ``command`` kind: an argv template from config, filled per element."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from ...errors import ConfigError
from .aicli import model_of
from .base import Adapter, WorkerContext
from .kind import WorkerKind

if TYPE_CHECKING:
    from ...config import Settings

# What orchestrator.command may contain; its help in config.SCHEMA names each (a test checks).
# {task} is always the subtask; {feedback} is a continue round's feedback ("" in the first run).
PLACEHOLDERS = ("{prompt}", "{prompt_file}", "{worker_dir}", "{task}", "{model}", "{feedback}")
# Those that carry a continue round's feedback to the command ({prompt} and {prompt_file} hold the
# task's prompt, the previous outcome and the feedback): a template with none of them is not continued.
FEEDBACK_PLACEHOLDERS = ("{feedback}", "{prompt}", "{prompt_file}")
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


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
        # {model}: the worker's role's model, else orchestrator.model ("" when neither is set).
        values = dict(
            zip(PLACEHOLDERS, (ctx.prompt, str(ctx.prompt_file), str(ctx.worker_dir), ctx.task, model_of(ctx), ctx.feedback))
        )
        return [_fill(part, values) for part in template]

    def continue_refusal(self, settings: Settings) -> str | None:
        template = settings.orchestrator.command
        if any(p in part for part in template for p in FEEDBACK_PLACEHOLDERS):
            return None
        return (
            f"orchestrator.command {json.dumps(template)} has no placeholder that carries the feedback "
            f"({', '.join(FEEDBACK_PLACEHOLDERS)}): a continue round would run the same command again without "
            "your feedback. Add {feedback} (the round's feedback; empty in a first run) where your command reads it, "
            f"e.g. ./orchestrator.sh config set orchestrator.command '{json.dumps(_with_feedback(template))}', "
            "or give it {prompt_file} (the task's prompt, its previous outcome and the feedback)"
        )

    def configured_program(self, settings: Settings) -> str:
        template = settings.orchestrator.command
        return template[0] if template else ""

    def unset_program(self) -> str:
        return "the command kind needs orchestrator.command (an argv list) in config.yaml"

    def program_fix(self) -> str:
        return (
            "set it in config.yaml, e.g. ./orchestrator.sh config set orchestrator.command "
            '\'["my-agent", "--prompt-file", "{prompt_file}"]\' (a request never carries a command)'
        )

    def needs_prompt(self, settings: Settings) -> bool:
        return any("{prompt" in part for part in settings.orchestrator.command)

    def needs_prompt_file(self, settings: Settings) -> bool:
        return any("{prompt_file}" in part for part in settings.orchestrator.command)


def _with_feedback(template: list[str]) -> list[str]:
    """``template`` with ``{feedback}`` added: a shell's ``-c`` line runs it as its next line
    (``["bash", "-c", "{task}\n{feedback}"]``), any other command gets it as its last argument."""
    if len(template) > 2 and template[1] == "-c":
        return [*template[:2], template[2] + "\n{feedback}", *template[3:]]
    return [*template, "{feedback}"]


def _fill(part: str, values: dict[str, str]) -> str:
    """Each placeholder replaced in one pass: a value that contains ``{task}`` (a prompt may) stays as it is."""
    return _PLACEHOLDER.sub(lambda found: values[found.group(0)], part)


KIND = WorkerKind(CommandAdapter, rank=20, memory_peak_mb=50)  # whatever the user's command is: small until measured
