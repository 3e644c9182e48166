"""Claude Code (``claude``) run headless.

argv (checked against ``claude --help`` of @anthropic-ai/claude-code 2.1.329)::

    claude -p --output-format json [--model M] [--max-turns N]
           --permission-mode MODE [--allowedTools TOOL ...] [CLI_ARGS ...] -- PROMPT

* ``-p``/``--print`` is a switch; the prompt is the positional argument. ``--``
  ends the options, so a prompt such as ``--help`` or ``-o out`` is still the
  prompt (measured: it reaches the model as one text block, byte for byte).
  ``--`` also ends the variadic ``--allowedTools <tools...>`` list.
* Each allowed tool is its own argv element; claude splits a value on commas
  and spaces outside parentheses, so ``Bash(python -m orchestrator spawn:*)``
  stays one rule. ``--max-turns`` is a hidden option of this version.
* The result is one JSON object on stdout (``"type": "result"``) with
  ``subtype``, ``is_error``, ``result``, ``total_cost_usd``, ``usage`` and
  ``session_id``. Failures come the same way: a 401 is ``is_error: true`` with
  ``subtype: "success"``, ``api_error_status: 401`` and exit code 1; not being
  logged in is ``"result": "Not logged in · Please run /login"``.
* SIGINT makes it write a result (``subtype: "error_during_execution"``, exit 0)
  before exiting; SIGTERM ends it silently, hence ``first_signal``.
* As root it refuses ``--dangerously-skip-permissions`` (which
  ``bypassPermissions`` implies) unless ``IS_SANDBOX=1``; ``extra_env`` sets it
  then. ``CLAUDE_CONFIG_DIR`` is left alone: it holds the user's credentials.
"""
from __future__ import annotations

import os

import signal
from typing import Any

from .aicli import AICLIAdapter, add, cli_args_of, has_flag, is_auth_error, last_json_object, model_of, setting, to_float
from .base import ParsedResult, WorkerContext

# Result subtypes that a retry would only repeat.
_LIMIT_SUBTYPES = ("error_max_turns", "error_max_budget_usd", "error_max_structured_output_retries")
_AUTH_TYPES = ("authentication_error", "permission_error")


class ClaudeAdapter(AICLIAdapter):
    name = "claude"
    cli = "claude"
    command_key = "orchestrator.claude_command"
    first_signal = signal.SIGINT

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        argv = [self.program(ctx), "-p", "--output-format", "json"]
        model = model_of(ctx)
        if model:
            argv += ["--model", model]
        turns = int(setting(ctx, "claude_max_turns", 0) or 0)
        if turns > 0:
            argv += ["--max-turns", str(turns)]
        argv += ["--permission-mode", str(setting(ctx, "claude_permission_mode", "acceptEdits"))]
        tools = [str(tool) for tool in (setting(ctx, "claude_allowed_tools", []) or []) if str(tool).strip()]
        if tools:
            argv += ["--allowedTools", *tools]
        return [*argv, *cli_args_of(ctx), "--", ctx.prompt]

    def extra_env(self, ctx: WorkerContext) -> dict[str, str]:
        bypass = setting(ctx, "claude_permission_mode", "") == "bypassPermissions" or has_flag(
            cli_args_of(ctx), "--dangerously-skip-permissions"
        )
        env = {"IS_SANDBOX": "1"} if bypass else {}
        # By default claude retries a 401 ten times over ~3 minutes before it prints its result, so a
        # bad key would look like a timeout. Two retries fail it in seconds; the user's own value wins.
        if "CLAUDE_CODE_MAX_RETRIES" not in os.environ:
            env["CLAUDE_CODE_MAX_RETRIES"] = "2"
        return env

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        obj = last_json_object(text, lambda o: o.get("type") == "result")
        if obj is None:
            return self.no_result(text, exit_code, retryable=None if "root/sudo" not in text else False)
        result = obj.get("result") if isinstance(obj.get("result"), str) else ""
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        tokens_in = None
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            tokens_in = add(tokens_in, usage.get(key))
        cost = to_float(obj.get("total_cost_usd"))
        if cost is None:
            cost = to_float(obj.get("cost_usd"))  # the name before claude 1.0
        extra = {
            key: obj[key]
            for key in ("session_id", "subtype", "num_turns", "duration_ms", "api_error_status", "terminal_reason")
            if obj.get(key) is not None
        }
        subtype = obj.get("subtype") if isinstance(obj.get("subtype"), str) else ""
        fields: dict[str, Any] = {"cost_usd": cost, "tokens_in": tokens_in, "tokens_out": add(None, usage.get("output_tokens")), "extra": extra}
        if obj.get("is_error") is True or (subtype and subtype != "success"):
            errors = [str(e) for e in obj.get("errors") or [] if e] if isinstance(obj.get("errors"), list) else []
            message = result.strip() or "; ".join(errors) or subtype or "is_error"
            status = obj.get("api_error_status")
            if subtype and subtype != "success":
                message = f"{subtype}: {message}" if message != subtype else subtype
            error = f"claude: {message}" + (f" (API error {status})" if status else "")
            auth = status in (401, 403) or obj.get("api_error_type") in _AUTH_TYPES or is_auth_error(message)
            return self.result(result, max_chars, ok=False, error=error, retryable=not auth and subtype not in _LIMIT_SUBTYPES, **fields)
        return self.result(result, max_chars, **fields)
