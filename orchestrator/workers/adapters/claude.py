"""Claude Code (``claude``) run headless.

argv (checked against ``claude --help`` of @anthropic-ai/claude-code 2.1.329)::

    claude -p --output-format stream-json --verbose [--model M] [--max-turns N]
           --permission-mode MODE [--allowedTools TOOL ...] [CLI_ARGS ...] -- PROMPT

With no tool at all (``allowed_tools`` empty: the AI planner, a judge), ``--tools "" --strict-mcp-config``
replaces ``--allowedTools``: no built-in tool (``--tools ""``) and no MCP server of any settings file.

* ``-p``/``--print`` is a switch; the prompt is the positional argument. ``--``
  ends the options, so a prompt such as ``--help`` or ``-o out`` is still the
  prompt (measured: it reaches the model as one text block, byte for byte).
  ``--`` also ends the variadic ``--allowedTools <tools...>`` list.
* Each allowed tool is its own argv element; claude splits a value on commas
  and spaces outside parentheses, so ``Bash(orchestrator-spawn:*)`` stays one
  rule. ``--max-turns`` is a hidden option of this version.
* Output is JSONL (``stream-json`` needs ``--verbose`` with ``-p``): a ``system``
  ``init`` event, one ``assistant`` event per content block (each carrying its
  message's ``id`` and ``usage`` as the message started), ``user`` events with
  tool results, ``system`` ``api_retry`` events (``error_status``,
  ``retry_delay_ms``: the CLI honours the service's retry-after), and last the
  ``result`` event that ``--output-format json`` would print alone:
  ``subtype``, ``is_error``, ``result``, ``total_cost_usd``, ``usage``,
  ``session_id``. Failures come the same way: a 401 is ``is_error: true`` with
  ``subtype: "success"``, ``api_error_status: 401``, ``api_error_type`` and exit
  code 1; not being logged in is ``"result": "Not logged in · Please run /login"``.
* SIGINT makes 2.1.x exit 0, usually *without* a result event (measured; older versions
  wrote one; 2.1.x still does when the interrupt lands between its steps, and
  then its cost is used). The events streamed so far remain, so a timed-out or cancelled
  worker still gets its input tokens (exact) and output tokens (as each message
  started: a lower bound); claude reported no cost and the output says so (the cost is then
  estimated from those tokens where the model is named and priced: workers/costs.py). SIGTERM
  ends it silently; SIGINT stays ``first_signal`` so it shuts down cleanly.
* As root it refuses ``--dangerously-skip-permissions`` (which
  ``bypassPermissions`` implies) unless ``IS_SANDBOX=1``; ``extra_env`` sets it
  then. ``CLAUDE_CONFIG_DIR`` is left alone: it holds the user's credentials.
* The Bash tool kills a command after ``BASH_DEFAULT_TIMEOUT_MS`` (2 minutes)
  unless the model passes a longer ``timeout`` (ms, up to ``BASH_MAX_TIMEOUT_MS``,
  10 minutes). ``extra_env`` raises both to the attempt's time left, so a
  ``orchestrator-spawn --wait`` for a child job of AI workers returns its results
  (the prompt also asks for a long ``timeout``). A ``settings.json`` ``env`` of
  the user overrides the process environment (measured), as it should.
"""

from __future__ import annotations

import json
import math
import shlex
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .aicli import (
    AICLIAdapter,
    add,
    cli_args_of,
    dict_field,
    has_flag,
    home_of,
    is_auth_error,
    json_lines,
    last_json_object,
    setting,
    str_field,
    to_float,
)

if TYPE_CHECKING:
    from ...config import Settings

from . import transcript
from .base import ANTHROPIC_ERROR_CLASSES, Advice, ParsedResult, PathSetting, PathUse, WorkerContext, class_of_http_status
from .kind import Login, LoginAnswer, LoginFacts, StoredLogin, WorkerKind, run_probe

# Result subtypes that a retry would only repeat.
_LIMIT_SUBTYPES = ("error_max_turns", "error_max_budget_usd", "error_max_structured_output_retries")
# How often the CLI retries one failed API request itself. Its default (10, with backoff up to
# about 3 minutes) also applies to a 401, which would then look like a hang. A retry inside the
# CLI keeps the conversation; a retry by the orchestrator starts the worker again. So the CLI
# absorbs a short blip (3 retries: about 4 s of backoff, or 3 short retry-afters, which it
# honours), and anything longer comes back classified "transient" for the orchestrator's own
# budget (workers.transient_retries, backing off up to workers.transient_backoff_max). Asked
# for a long retry-after (100 s measured) the CLI gives up at once without saying how long.
CLI_MAX_RETRIES = "3"
# The Bash tool's own limits (ms), when the attempt's time left is shorter: never lowered.
BASH_DEFAULT_MS, BASH_MAX_MS = 120_000, 600_000
COST_UNKNOWN = "[no cost reported: claude ended before reporting it (timeout or cancel); tokens counted from its stream]"


class ClaudeAdapter(AICLIAdapter):
    name = "claude"
    co_author_name = "Claude Code"
    # Its API, the sign-in's token refresh and its feature flags (Claude Code's network needs).
    network_hosts = ("api.anthropic.com", "console.anthropic.com", "statsig.anthropic.com")
    base_url_variables = ("ANTHROPIC_BASE_URL",)
    co_author_email = "noreply@anthropic.com"  # Claude Code's own trailer names Claude at this address
    cli = "claude"
    command_key = "orchestrator.claude_command"
    first_signal = signal.SIGINT
    resumes = True  # ``claude -p --resume ID``: the session_id its result reported, kept under its config folder
    path_settings = (
        # Its config folder: sessions, todos, the credentials it refreshes (its config file too, when set).
        PathSetting("CLAUDE_CONFIG_DIR", PathUse.CONFIG, default=".claude"),
        # Its temporary files (under CLAUDE_CODE_TMPDIR/claude): unset, the process's TMPDIR.
        PathSetting("CLAUDE_CODE_TMPDIR", PathUse.TMP),
    )

    def advice(self, settings: Settings, sandboxed: bool) -> Advice:
        """Plain Bash among the allowed tools where workers run sandboxed, so the tests can run; unconfined, only a note."""
        tools = list(settings.orchestrator.claude_allowed_tools)
        if "Bash" in tools:
            return Advice()
        if sandboxed:
            return Advice({"claude_allowed_tools": [*tools, "Bash"]})
        return Advice(
            note="claude workers may run only the listed commands (orchestrator.claude_allowed_tools has no plain Bash); "
            "doctor adds Bash only where workers run sandboxed",
            fix='add "Bash" to orchestrator.claude_allowed_tools if you accept unconfined shell commands',
        )

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        argv = [self.program(ctx), "-p", "--output-format", "stream-json", "--verbose"]
        model = self.model_for(ctx.settings, ctx.model)
        if model:
            argv += ["--model", model]
        turns = int(setting(ctx, "claude_max_turns", 0) or 0)
        if turns > 0:
            argv += ["--max-turns", str(turns)]
        argv += ["--permission-mode", str(setting(ctx, "claude_permission_mode", "acceptEdits"))]
        if ctx.allowed_tools == ():  # no tool at all (a planner, a judge): no built-in tool, no MCP server
            argv += ["--tools", "", "--strict-mcp-config"]
        listed = ctx.allowed_tools if ctx.allowed_tools is not None else setting(ctx, "claude_allowed_tools", []) or []
        tools = [str(tool) for tool in listed if str(tool).strip()]
        if tools:
            argv += ["--allowedTools", *tools]
        if ctx.resume_session:
            argv += ["--resume", ctx.resume_session]
        return [*argv, *cli_args_of(ctx), "--", ctx.prompt]

    keys_by_file = ("ANTHROPIC_API_KEY",)

    def key_from_file(self, argv: list[str], variable: str, path: str) -> list[str] | None:
        """Its ``apiKeyHelper`` (a shell command whose output is the key, sent as x-api-key) in a
        ``--settings`` of its own; not where the user's cli_args give one (claude reads one only)."""
        options = argv[: argv.index("--")] if "--" in argv else argv
        if variable != "ANTHROPIC_API_KEY" or any(a == "--settings" or a.startswith("--settings=") for a in options):
            return None
        return [argv[0], "--settings", json.dumps({"apiKeyHelper": f"cat {shlex.quote(path)}"}), *argv[1:]]

    def state_files(self, settings: Settings, env: Mapping[str, str]) -> list[Path]:
        """Without CLAUDE_CONFIG_DIR, its config file sits in the home folder itself."""
        return [] if env.get("CLAUDE_CONFIG_DIR") else [home_of(env) / ".claude.json"]

    def extra_env(self, ctx: WorkerContext) -> dict[str, str]:
        bypass = setting(ctx, "claude_permission_mode", "") == "bypassPermissions" or has_flag(
            cli_args_of(ctx), "--dangerously-skip-permissions"
        )
        wanted = {"CLAUDE_CODE_MAX_RETRIES": CLI_MAX_RETRIES}
        if ctx.time_left is not None and ctx.time_left > 0:
            left_ms = math.ceil(ctx.time_left) * 1000
            wanted["BASH_DEFAULT_TIMEOUT_MS"] = str(max(left_ms, BASH_DEFAULT_MS))
            wanted["BASH_MAX_TIMEOUT_MS"] = str(max(left_ms, BASH_MAX_MS))
        # The user's explicit value (workers.env, or the server's the worker inherits) wins.
        env = {name: value for name, value in wanted.items() if name not in ctx.env}
        if bypass:
            env["IS_SANDBOX"] = "1"
        return env

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        obj = last_json_object(text, lambda o: o.get("type") == "result")
        if obj is None:
            return self._without_result(text, exit_code, max_chars)
        result = str_field(obj, "result")
        tokens_in, tokens_out = session_tokens(obj)
        cost = to_float(obj.get("total_cost_usd"))
        if cost is None:
            cost = to_float(obj.get("cost_usd"))  # the name before claude 1.0
        extra = {
            key: obj[key]
            for key in (
                "session_id",
                "subtype",
                "num_turns",
                "duration_ms",
                "api_error_status",
                "api_error_type",
                "terminal_reason",
            )
            if obj.get(key) is not None
        }
        subtype = str_field(obj, "subtype")
        fields: dict[str, Any] = {"cost_usd": cost, "tokens_in": tokens_in, "tokens_out": tokens_out, "extra": extra}
        fields["model"] = model_of(obj, text)
        if obj.get("is_error") is True or (subtype and subtype != "success"):
            errors = [str(e) for e in obj.get("errors") or [] if e] if isinstance(obj.get("errors"), list) else []
            message = result.strip() or "; ".join(errors) or subtype or "is_error"
            status = obj.get("api_error_status") if isinstance(obj.get("api_error_status"), int) else None
            if subtype and subtype != "success":
                message = f"{subtype}: {message}" if message != subtype else subtype
            error = f"claude: {message}" + (f" (API error {status})" if status else "")
            failure = failure_class(status, obj.get("api_error_type"), message)
            retryable = failure not in ("auth", "bad_request") and subtype not in _LIMIT_SUBTYPES
            retry_after = last_retry_delay(text) if failure == "transient" else None
            return self.result(
                result,
                max_chars,
                ok=False,
                error=error,
                retryable=retryable,
                failure_class=failure,
                retry_after=retry_after,
                **fields,
            )
        return self.result(result, max_chars, **fields)

    def _without_result(self, text: str, exit_code: int | None, max_chars: int) -> ParsedResult:
        """No result event: ended by a signal (SIGINT exits 0 without one), or the CLI failed to start.
        What its stream showed is kept: tokens of the messages it started, and its last text."""
        messages: dict[str, dict] = {}
        last_text = ""
        for event in json_lines(text):
            message = event.get("message") if event.get("type") == "assistant" else None
            if not isinstance(message, dict):
                continue
            if isinstance(message.get("usage"), dict):
                messages[str(message.get("id"))] = message["usage"]  # one entry per message, not per block
            for block in message.get("content") or []:
                if isinstance(block, dict) and block.get("type") == "text" and str(block.get("text", "")).strip():
                    last_text = block["text"]
        parsed = self.no_result(text, exit_code, retryable=None if "root/sudo" not in text else False)
        if parsed.error and is_auth_error(parsed.error):
            parsed.failure_class = "auth"
        if messages:
            for usage in messages.values():
                for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
                    parsed.tokens_in = add(parsed.tokens_in, usage.get(key))
                parsed.tokens_out = add(parsed.tokens_out, usage.get("output_tokens"))
            parsed.output = self.result(f"{last_text}\n\n{COST_UNKNOWN}".strip(), max_chars).output
        return parsed

    def readable(self, line: str) -> str | None:
        """An event as a reader wants it: the assistant's text, each tool call (→) and its result (←),
        retries, and the result event's answer and cost; other lines as written."""
        event = transcript.event_of(line)
        if event is None or not isinstance(event.get("type"), str):
            return line
        kind, message = event["type"], event.get("message")
        if kind == "system":
            if event.get("subtype") == "init":
                return f"· session {event.get('session_id', '?')} (model {event.get('model', '?')})"
            if event.get("subtype") == "api_retry":
                return f"· API retry (status {event.get('error_status', '?')}), in {event.get('retry_delay_ms', '?')} ms"
            return None
        if kind in ("assistant", "user") and isinstance(message, dict) and isinstance(message.get("content"), list):
            shown = [_block(block) for block in message["content"] if isinstance(block, dict)]
            return "\n".join(text for text in shown if text) or None
        if kind == "result":
            said = "error" if event.get("is_error") else "answer"
            cost = transcript.cost_line(event.get("total_cost_usd"), *session_tokens(event))
            turns = f", {event['num_turns']} turn(s)" if isinstance(event.get("num_turns"), int) else ""
            return f"= {said}: {event.get('result', '')}\n= {event.get('subtype', 'done')}{turns}" + (f", {cost}" if cost else "")
        return None


def _block(block: dict[str, Any]) -> str:
    """One content block of an assistant or user message, for the transcript ("" for thinking)."""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", "")).strip()
    if kind == "tool_use":
        return f"→ {block.get('name', '?')} {transcript.one_line(block.get('input', {}))}"
    if kind == "tool_result":
        said = "← error" if block.get("is_error") else "←"
        return f"{said}\n{transcript.shortened(transcript.text_of(block.get('content')))}"
    return ""


def model_of(result: dict, text: str) -> str | None:
    """The model claude ran: of its result's ``modelUsage``, the one that wrote the most (it calls
    a small model for side tasks), else its ``init`` event's ``model`` (None: neither says)."""
    models = result.get("modelUsage")
    if isinstance(models, dict) and models:
        counted = [(_count(m.get("outputTokens")), name) for name, m in models.items() if isinstance(m, dict)]
        if counted:
            return str(max(counted)[1])
    for event in json_lines(text):
        if event.get("type") == "system" and event.get("subtype") == "init" and isinstance(event.get("model"), str):
            return str(event["model"])
    return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def session_tokens(result: dict) -> tuple[int | None, int | None]:
    """(tokens in, tokens out) of the whole session. A run that waited for a background task
    prints one result event per answer: its ``usage`` counts only the turns since the previous
    result, while ``modelUsage`` (per model) and ``total_cost_usd`` are the session's."""
    models = result.get("modelUsage")
    if isinstance(models, dict) and models and all(isinstance(m, dict) for m in models.values()):
        tokens_in = tokens_out = None
        for usage in models.values():
            for key in ("inputTokens", "cacheCreationInputTokens", "cacheReadInputTokens"):
                tokens_in = add(tokens_in, usage.get(key))
            tokens_out = add(tokens_out, usage.get("outputTokens"))
        return tokens_in, tokens_out
    usage = dict_field(result, "usage")
    tokens_in = None
    for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        tokens_in = add(tokens_in, usage.get(key))
    return tokens_in, add(None, usage.get("output_tokens"))


def failure_class(status: int | None, error_type: Any, message: str) -> str | None:
    """auth / bad_request / transient, from the HTTP status claude reports, else its error type."""
    found = class_of_http_status(status) if status else None
    if found is None and isinstance(error_type, str):
        found = ANTHROPIC_ERROR_CLASSES.get(error_type)
    if found is None and is_auth_error(message):
        found = "auth"
    return found


def last_retry_delay(text: str) -> float | None:
    """Seconds of the CLI's last ``api_retry`` wait: it follows the service's retry-after when sent."""
    delay = None
    for event in json_lines(text):
        if event.get("type") == "system" and event.get("subtype") == "api_retry":
            delay = to_float(event.get("retry_delay_ms"))
    return None if delay is None else round(delay / 1000, 3)


def _auth_status(path: str, env: Mapping[str, str]) -> LoginAnswer | None:
    """``claude auth status`` (JSON: loggedIn, authMethod, apiKeySource); None from a version without it."""
    done = run_probe([path, "auth", "status", "--json"], env)
    if isinstance(done, str):
        return None
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("loggedIn"), bool):
        return None
    how = ", ".join(str(doc[k]) for k in ("authMethod", "apiKeySource") if isinstance(doc.get(k), str))
    if doc["loggedIn"]:
        return Login.YES, f"`claude auth status`: {how or 'logged in'}"
    return Login.NO, "`claude auth status`: not logged in"


# A real Claude Code worker's tree peaks near 300 MB on this machine (about 100-120 MB of it unique
# when several share pages; counting all of it errs on the safe side).
KIND = WorkerKind(
    ClaudeAdapter,
    rank=30,
    auto=True,
    memory_peak_mb=300,
    cost_provider="anthropic",
    npm_package="@anthropic-ai/claude-code",
    login=LoginFacts(
        variables=(
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "ANTHROPIC_BASE_URL",
            "CLAUDE_CODE_USE_BEDROCK",
            "CLAUDE_CODE_USE_VERTEX",
            "CLAUDE_CODE_OAUTH_TOKEN",
        ),
        fix="set ANTHROPIC_API_KEY in workers.env (config.yaml) or in the server's environment, or run `claude` once and /login",
        stored=(StoredLogin("CLAUDE_CONFIG_DIR", ".claude", ".credentials.json"),),
        status=_auth_status,
    ),
    aliases=("claude_code", "claude-code"),
)
