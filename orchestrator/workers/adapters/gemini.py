"""Google Gemini CLI (``gemini``) run headless.

argv (checked against ``gemini --help`` of @google/gemini-cli 0.61.0)::

    gemini --prompt=PROMPT --output-format json --yolo --skip-trust [-m MODEL] [CLI_ARGS ...]

* ``-p``/``--prompt`` takes a string value; gemini's parser (yargs) would read a
  separate value that starts with ``-`` (``--help``, ``-o out``) as an option,
  so the prompt is passed in the ``--prompt=<prompt>`` form: one argv element,
  which reaches the model byte for byte (measured with quotes, ``$( )``,
  backticks, a newline and ``--help`` inside).
* ``--skip-trust`` trusts the worker directory for this run; without it gemini
  exits 55 in a folder it has not been told to trust. ``--yolo`` approves tools.
* The result is one pretty-printed JSON object on stdout:
  ``{"session_id", "response", "stats": {"models": {M: {"tokens": {"input",
  "prompt", "candidates", "thoughts", "cached", ...}}}, "tools", "files"}}``.
  Failures print ``{"session_id", "error": {"type", "message", "code"}}`` on
  stderr: code 41 (no or bad auth method, also the exit code), 401/403 from
  the API. Exit codes 41, 42, 44, 52, 53 and 55 are gemini's fatal
  authentication, input, sandbox, config, turn-limit and untrusted-folder
  errors: a retry cannot fix them. An API error's ``code`` is the HTTP status
  (and the exit code is that status modulo 256: 400 exits 144, 403 exits 147);
  ``failure_class`` comes from it (a bad key is a 400 "API key not valid": auth).
  gemini retries 429/5xx itself up to ``general.maxAttempts`` (default 10, 5-30 s
  apart) before it prints the error.
* Killed by SIGINT or SIGTERM it exits 0 without any JSON (measured), which
  parses as "no result": a failure.
* Settings a worker needs (``GEMINI_CLI_HOME``): gemini reads them only from files (a
  system file must be owned by root), so each worker gets a private home,
  ``state/prompts/<worker>.gemini-home``, whose ``.gemini/settings.json`` is the user's
  own (``$GEMINI_CLI_HOME`` or ``~``) plus, where the user set none,
  ``tools.shell.inactivityTimeout`` (its shell tool's limit: seconds without output,
  default 300) = the attempt's time left, so a long ``spawn --wait`` returns to the
  model, and ``general.maxAttempts`` = 3 (default 10: a sustained 503 cost 266 s in one
  attempt; the orchestrator retries transient failures itself). Every other entry of
  the user's ``.gemini`` (OAuth credentials, trusted folders, history), and the home's
  ``.env``, is a symlink to the original: nothing is copied or changed. A settings file gemini could not read
  either (not a JSON object) leaves the worker on the user's home, untouched.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .aicli import (
    AICLIAdapter,
    add,
    cli_args_of,
    dict_field,
    home_of,
    is_auth_error,
    last_json_object,
    last_words,
    message_of,
    str_field,
    to_int,
)
from .base import ModelUsage, ParsedResult, PathSetting, PathUse, WorkerContext, class_of_http_status
from .kind import LoginFacts, StoredLogin, WorkerKind

if TYPE_CHECKING:
    pass


def _failure_class(code: int | None, message: str) -> str | None:
    """The class of gemini's error JSON: its ``code`` is the HTTP status for API errors (a bad key is a
    400 "API key not valid"), else one of gemini's exit codes."""
    if code == 41 or is_auth_error(message):
        return "auth"
    if code in FATAL_EXIT_CODES:
        return "bad_request"
    return class_of_http_status(code)


FATAL_EXIT_CODES = {41: "authentication", 42: "input", 44: "sandbox", 52: "config", 53: "turn limit", 55: "untrusted folder"}


class GeminiAdapter(AICLIAdapter):
    name = "gemini"
    co_author_name = "Gemini CLI"
    # The Gemini API, Code Assist (a Google sign-in's) and its OAuth tokens.
    network_hosts = ("generativelanguage.googleapis.com", "cloudcode-pa.googleapis.com", "oauth2.googleapis.com")
    base_url_variables = ("GOOGLE_GEMINI_BASE_URL", "GOOGLE_VERTEX_BASE_URL")
    co_author_email = "noreply@google.com"
    cli = "gemini"
    command_key = "orchestrator.gemini_command"
    # Its .gemini folder (in the worker's private GEMINI_CLI_HOME when it has one): settings, chats, its tmp.
    path_settings = (PathSetting("GEMINI_CLI_HOME", PathUse.CONFIG, default="", sub=".gemini"),)

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        # No tool (a planner, a judge): its read-only plan mode, not --yolo (which approves every tool).
        approval = ["--approval-mode", "plan"] if ctx.allowed_tools == () else ["--yolo"]
        argv = [self.program(ctx), f"--prompt={ctx.prompt}", "--output-format", "json", *approval, "--skip-trust"]
        model = self.model_for(ctx.settings, ctx.model)
        if model:
            argv += ["-m", model]
        return [*argv, *cli_args_of(ctx)]

    def extra_env(self, ctx: WorkerContext) -> dict[str, str]:
        home = private_home(ctx)
        return {"GEMINI_CLI_HOME": str(home)} if home else {}

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        obj = last_json_object(text, lambda o: "response" in o or isinstance(o.get("error"), dict))
        fatal = exit_code in FATAL_EXIT_CODES
        if obj is None:
            if fatal and exit_code is not None:
                why = f"{FATAL_EXIT_CODES[exit_code]} error, exit code {exit_code}: {last_words(text)}"
                parsed = self.no_result(text, exit_code, retryable=False, why=why)
                parsed.failure_class = "auth" if exit_code == 41 else "bad_request"
                return parsed
            return self.no_result(text, exit_code)
        extra = {"session_id": obj["session_id"]} if obj.get("session_id") else {}
        error = obj.get("error")
        if isinstance(error, dict) and error:
            message = message_of(error) or "unknown error"
            code = to_int(error.get("code"))
            failure = _failure_class(code, message)
            label = (
                f" ({FATAL_EXIT_CODES[code]} error {code})"
                if code is not None and code in FATAL_EXIT_CODES
                else (f" (code {code})" if code is not None else "")
            )
            return ParsedResult(
                output="",
                ok=False,
                error=f"gemini: {message}{label}",
                extra=extra,
                failure_class=failure,
                retryable=failure not in ("auth", "bad_request") and not (fatal or code in FATAL_EXIT_CODES),
            )
        response = str_field(obj, "response")
        tokens_in = tokens_out = cached = None
        stats = dict_field(obj, "stats")
        models = dict_field(stats, "models")
        by_model: list[ModelUsage] = []
        for name, per_model in models.items():
            tokens = per_model.get("tokens") if isinstance(per_model, dict) else None
            if not isinstance(tokens, dict):
                continue
            model_in = add(None, tokens.get("prompt", tokens.get("input")))  # cached tokens included
            model_out = add(add(None, tokens.get("candidates")), tokens.get("thoughts"))
            model_cached = add(None, tokens.get("cached"))
            tokens_in, tokens_out, cached = add(tokens_in, model_in), add(tokens_out, model_out), add(cached, model_cached)
            requests = to_int(dict_field(per_model, "api").get("totalRequests"))
            by_model.append(ModelUsage(str(name), model_in or 0, model_out or 0, model_cached or 0, requests))
        parsed = self.result(
            response, max_chars, tokens_in=tokens_in, tokens_out=tokens_out, tokens_cache_read=cached, extra=extra
        )
        parsed.usage_by_model = by_model
        return parsed


MAX_ATTEMPTS = 3  # gemini's own tries per model request (its default is 10, 5-30 s apart)


def private_home(ctx: WorkerContext) -> Path | None:
    """A worker's GEMINI_CLI_HOME (see the module docstring), or None to leave the user's."""
    user = Path(ctx.env.get("GEMINI_CLI_HOME") or home_of(ctx.env)) / ".gemini"  # the worker's, not the server's
    settings: dict[str, Any] = {}
    user_settings = user / "settings.json"
    if user_settings.is_file():
        try:
            settings = json.loads(_strip_comments(user_settings.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None
        if not isinstance(settings, dict):
            return None
    tools = settings.setdefault("tools", {})
    shell = tools.setdefault("shell", {}) if isinstance(tools, dict) else None
    general = settings.setdefault("general", {})
    if not isinstance(shell, dict) or not isinstance(general, dict):
        return None
    if ctx.time_left and "inactivityTimeout" not in shell:
        shell["inactivityTimeout"] = math.ceil(ctx.time_left)
    general.setdefault("maxAttempts", MAX_ATTEMPTS)
    home = ctx.prompt_file.with_name(ctx.prompt_file.stem + ".gemini-home")
    mine = home / ".gemini"
    try:
        mine.mkdir(parents=True, exist_ok=True)
        if user.is_dir():
            for entry in user.iterdir():
                link = mine / entry.name
                if entry.name != "settings.json" and not link.is_symlink() and not link.exists():
                    link.symlink_to(entry)
        (mine / "settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
        dotenv = user.parent / ".env"  # gemini reads $GEMINI_CLI_HOME/.env too (a key may live there)
        if dotenv.is_file() and not (home / ".env").is_symlink():
            (home / ".env").symlink_to(dotenv)
    except OSError:
        return None  # the user's home as it is: no limits rather than no worker
    return home


def _strip_comments(text: str) -> str:
    """gemini's settings are JSON with comments: drop ``//`` and ``/* */`` comments outside strings."""
    return re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', lambda m: m.group(1) or "", text, flags=re.S)


KIND = WorkerKind(
    GeminiAdapter,
    rank=50,
    auto=True,
    memory_peak_mb=300,  # Node.js: of the order of claude's measured tree
    cost_provider="google",
    npm_package="@google/gemini-cli",
    login=LoginFacts(
        variables=(
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "GOOGLE_GEMINI_BASE_URL",
            "GOOGLE_GENAI_USE_VERTEXAI",
            "GOOGLE_CLOUD_PROJECT",
        ),
        fix="set GEMINI_API_KEY in workers.env (config.yaml), or run `gemini` once and choose a login",
        stored=(StoredLogin("GEMINI_CLI_HOME", "", ".gemini/oauth_creds.json"),),
    ),
)
