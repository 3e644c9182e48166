"""Aider (``aider``) run for one message.

argv (checked against the argparse definitions in aider/args.py of aider-chat 0.86.2)::

    aider --message=PROMPT --yes-always --no-auto-commits --no-check-update
          --no-analytics --no-gitignore --no-pretty --no-git --no-show-release-notes
          --chat-history-file=/dev/null --input-history-file=/dev/null
          [--model M] [CLI_ARGS ...]

* ``--message``'s value would be read as an option if it started with ``-``,
  so it is passed as ``--message=<prompt>``: one argv element.
* ``--no-git``: inside a git checkout aider works at the repository root (and
  writes its ``.aider*`` files there); outside one, ``--yes-always`` would make
  it create a repository in the worker directory. Its chat and input histories
  go to /dev/null so the worker directory holds only the work (the log keeps
  the transcript). ``--no-show-release-notes`` stops a first-run offer to open
  a browser. A later ``--git`` or history option in ``orchestrator.cli_args``
  wins (argparse keeps the last).
* Output is plain text: a banner (``Aider v…``, ``Model: …``, ``Git repo: …``,
  ``Repo-map: …``), the model's reply, then ``Tokens: 1.2k sent, 345 received.``
  and, when the model has a price, ``Cost: $0.0012 message, $0.0034 session.``;
  edits applied after the reply (``Applied edit to x``) follow. Aider exits 0
  even when the model call failed (``litellm.AuthenticationError: …``), so the
  adapter decides: a reply is proved by a ``Tokens:`` line, and an error line
  after the last one is a failure.
* Aider runs no shell command under ``--yes-always`` (it declines every "Run shell
  command?" question then), so an aider worker cannot start child jobs:
  ``no_spawn_reason`` says so in its prompt.
* Cost: the sum of the per-message ``$… message`` figures (the session total is rounded
  to cents once it passes one). Token counts are aider's own rounding (``2.9k``).
* Failures: aider prints one error block per retry (litellm's exception, its
  description, ``Retrying in 0.2 seconds...``); the last block is the error, and its
  exception name gives ``failure_class``. Aider's own retry loop stops once its delay
  passes 60 s (a constant, ``RETRY_TIMEOUT``); the openai client under litellm adds its
  own retries, honouring ``Retry-After`` (up to 60 s each): ``--model-settings-file``
  with ``aider/extra_params: {max_retries: 0}`` turns those off (27 requests in 70 s
  measured without it, 9 with it), unless the user has model settings of their own.
* SIGTERM ends it (SIGINT is aider's "interrupt the reply" key).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .aicli import AICLIAdapter, cli_args_of, has_flag, home_of, is_auth_error, scan_window, strip_ansi
from .base import ParsedResult, PathSetting, PathUse, WorkerContext
from .kind import LoginFacts, WorkerKind

if TYPE_CHECKING:
    pass

# No retries inside litellm's OpenAI client (see the file); skipped when the user has model settings
# of their own (~/.aider.model.settings.yml or --model-settings-file in cli_args), which it would replace.
MODEL_SETTINGS = Path(__file__).with_name("aider_model_settings.yml")
_TOKENS = re.compile(
    r"^Tokens: (?P<sent>[\d.]+k?) sent(?:, (?P<write>[\d.]+k?) cache write)?(?:, (?P<hit>[\d.]+k?) cache hit)?,"
    r" (?P<received>[\d.]+k?) received\.",
)
_COST = re.compile(r"Cost: \$(?P<message>[\d.]+) message, \$(?P<session>[\d.]+) session\.")
_ERROR = re.compile(r"^(?:litellm\.\w+|\w*(?:Error|Exception)\b:?|Error:)")
_RETRYING = re.compile(r"^Retrying in [\d.]+ seconds")
_EXCEPTION = re.compile(r"\b(?:litellm\.)?(\w+(?:Error|Exception|Timeout))\b")
_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?) ?s(?:ec(?:onds?)?)?\b", re.I)
# litellm's exception names (what aider prints first in an error block) by failure class.
_CLASSES = {
    **dict.fromkeys(("AuthenticationError", "PermissionDeniedError"), "auth"),
    **dict.fromkeys(
        (
            "BadRequestError",
            "NotFoundError",
            "ContextWindowExceededError",
            "UnsupportedParamsError",
            "ContentPolicyViolationError",
            "UnprocessableEntityError",
            "InvalidRequestError",
        ),
        "bad_request",
    ),
    **dict.fromkeys(
        (
            "RateLimitError",
            "ServiceUnavailableError",
            "InternalServerError",
            "APIConnectionError",
            "Timeout",
            "APITimeoutError",
            "BadGatewayError",
        ),
        "transient",
    ),
}
_BANNER = (
    "Aider v",
    "Model:",
    "Main model:",
    "Weak model:",
    "Editor model:",
    "Git repo:",
    "Repo-map:",
    "Added ",
    "Use /help",
    "Cur working dir:",
    "Git working dir:",
    "Warning: Input is not a terminal",
)


class AiderAdapter(AICLIAdapter):
    name = "aider"
    rounded_cost = True  # "$0.02 session": cents, from aider's own price table
    co_author_name = "aider"
    # The model APIs litellm reaches for its usual models (a model elsewhere: workers.sandbox_allow).
    network_hosts = ("api.anthropic.com", "api.openai.com", "generativelanguage.googleapis.com", "openrouter.ai")
    base_url_variables = ("OPENAI_API_BASE", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OLLAMA_API_BASE", "GEMINI_API_BASE")
    co_author_email = "aider@aider.chat"  # aider's own --attribute-co-authored-by trailer
    cli = "aider"
    command_key = "orchestrator.aider_command"
    # ~/.aider: its caches (model metadata, tags, the installs it records). Its history files are
    # /dev/null (argv), and its analytics are off.
    path_settings = (PathSetting(None, PathUse.CACHE, default=".aider"),)
    no_spawn_reason = "aider runs no shell commands when it runs unattended, so it cannot run the spawn command"

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        argv = [
            self.program(ctx),
            f"--message={ctx.prompt}",
            "--yes-always",
            "--no-auto-commits",
            "--no-check-update",
            "--no-analytics",
            "--no-gitignore",
            "--no-pretty",
            "--no-git",
            "--no-show-release-notes",
            f"--chat-history-file={os.devnull}",
            f"--input-history-file={os.devnull}",
        ]
        model = self.model_for(ctx.settings, ctx.model)
        if model:
            argv += ["--model", model]
        extra = cli_args_of(ctx)
        if not has_flag(extra, "--model-settings-file") and not (home_of(ctx.env) / ".aider.model.settings.yml").exists():
            argv.append(f"--model-settings-file={MODEL_SETTINGS}")
        return [*argv, *extra]

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        lines = strip_ansi(scan_window(text)).splitlines()
        usage_at = [i for i, line in enumerate(lines) if _TOKENS.match(line)]
        sent = received = None
        for i in usage_at:
            match = _TOKENS.match(lines[i])
            assert match is not None
            sent = (sent or 0) + _count(match["sent"])
            received = (received or 0) + _count(match["received"])
        # The sum of the per-message figures: the session total is rounded to two places
        # once it passes a cent ($0.0073 + $0.0077 printed as "$0.02 session").
        cost = None
        for line in lines:
            for match in _COST.finditer(line):
                cost = (cost or 0.0) + float(match["message"])
        cost = None if cost is None else round(cost, 10)
        last_usage = usage_at[-1] if usage_at else -1
        # The last error block: aider prints one per retry ("Retrying in 0.2 seconds..."); the
        # last one is why it gave up.
        error_at = next((i for i in range(len(lines) - 1, last_usage, -1) if _ERROR.match(lines[i])), None)
        fields = {"cost_usd": cost, "tokens_in": sent, "tokens_out": received}
        if error_at is not None:
            message = _block(lines, error_at)
            output = _reply(lines, usage_at)
            failure, retry_after = _classify(message)
            return self.result(
                output,
                max_chars,
                ok=False,
                error=f"aider: {message}",
                retryable=failure not in ("auth", "bad_request") and not is_auth_error(message),
                failure_class=failure,
                retry_after=retry_after,
                **fields,
            )
        if not usage_at:
            return self.no_result(text, exit_code)
        return self.result(_reply(lines, usage_at), max_chars, **fields)


def _classify(message: str) -> tuple[str | None, float | None]:
    """(failure class, retry-after seconds) of an aider error block, from litellm's exception name."""
    found = _EXCEPTION.search(message)
    name = found.group(1) if found else ""
    failure = _CLASSES.get(name)
    if failure is None and is_auth_error(message):
        failure = "auth"
    wait = _TRY_AGAIN.search(message)
    return failure, float(wait.group(1)) if wait else None


def _count(value: str) -> int:
    """Aider's token counts: ``678``, ``1.2k``, ``12k``."""
    return round(float(value[:-1]) * 1000) if value.endswith("k") else int(float(value))


def _block(lines: list[str], start: int) -> str:
    """An error message and the lines wrapped after it, up to a blank line (not the retry notice)."""
    parts = []
    for line in lines[start : start + 12]:
        if not line.strip() or _RETRYING.match(line):
            break
        parts.append(line.strip())
    return " ".join(" ".join(parts).split())[:1000]


def _reply(lines: list[str], usage_at: list[int]) -> str:
    """What followed the banner, without the usage lines."""
    end = usage_at[0] if usage_at else len(lines)
    start = 0
    for i in range(end):
        if lines[i].startswith(_BANNER):
            start = i + 1
    return "\n".join(line for line in lines[start:] if not _TOKENS.match(line) and not _COST.match(line))


KIND = WorkerKind(
    AiderAdapter,
    rank=60,
    auto=True,
    memory_peak_mb=250,  # Python with litellm and tree-sitter loaded
    install="python3 -m pip install aider-install && aider-install",
    login=LoginFacts(
        variables=(
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "GEMINI_API_KEY",
            "OPENROUTER_API_KEY",
            "DEEPSEEK_API_KEY",
            "OPENAI_API_BASE",
        ),
        fix="set your model provider's key (e.g. ANTHROPIC_API_KEY or OPENAI_API_KEY) in workers.env (config.yaml)",
    ),
)
