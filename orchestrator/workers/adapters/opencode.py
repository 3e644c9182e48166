"""opencode (``opencode run``) run headless.

argv (checked against ``opencode run --help`` of opencode-ai 1.18.33)::

    opencode run --format json --dir WORKER_DIR [-m PROVIDER/MODEL] [CLI_ARGS ...] -- PROMPT

* ``--dir``: opencode works in ``$PWD`` when it is set, not in its cwd (its run command:
  ``path.resolve(process.env.PWD ?? process.cwd())``), and a worker inherits the server's
  ``$PWD``: started from the user's checkout, the workers wrote their files there (measured,
  1.18.33). ``--dir`` makes it change into the worker's directory and work there; a ``--dir`` in
  ``orchestrator.cli_args`` is left to win.
* ``-m`` is the worker's role's model, else ``orchestrator.opencode_model``, else ``orchestrator.model`` when it
  has the ``provider/model`` form opencode needs, else opencode's default.
* The message is a yargs array positional; ``--`` ends the options, so a
  prompt starting with ``-`` is still the prompt (measured). opencode itself
  joins the message elements with spaces and wraps every element that contains
  a space in double quotes (``"…"``, inner ``"`` escaped) before sending it:
  the model reads the prompt intact, inside quotes. That is opencode's doing
  (its run command, 1.18.33), not the adapter's.
* With ``--format json`` it prints one JSON event per line:
  ``step_start``, ``text`` (``part.text``), ``tool_use``, ``reasoning``,
  ``step_finish`` (``part.cost`` in USD and ``part.tokens`` {input, output,
  reasoning, cache {read, write}} for that step; summed here) and ``error``
  (``error.name``, ``error.data.message``, ``statusCode``, ``isRetryable``).
  The answer is the text of the last step that produced text.
* Permissions that opencode would ask about are auto-rejected in ``run`` unless
  ``--auto`` is given (add it to ``orchestrator.cli_args`` to allow them).
* SIGTERM ends it; SIGINT does not (measured: still running 10 s after SIGINT).
* Its auth store (``$XDG_DATA_HOME/opencode/auth.json``) is left alone. Its session
  database is not: parallel first runs on a machine where opencode never ran race on
  creating ``opencode.db`` ("database is locked"), so each worker gets its own
  (``OPENCODE_DB`` beside the worker's prompt file under ``state/``), unless the
  user set ``OPENCODE_DB``. Sessions of workers are therefore not in the user's list.
* Its bash tool's time limit is ``OPENCODE_EXPERIMENTAL_BASH_DEFAULT_TIMEOUT_MS``
  (default 2 minutes): set to the attempt's remaining time so a long
  ``spawn --wait`` returns to the model, unless the user set it.
* Errors: ``failure_class`` from the event's ``statusCode`` (else ``isRetryable``;
  ``ProviderAuthError`` is auth), ``retry_after`` from its ``responseHeaders``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import transcript
from .aicli import (
    AICLIAdapter,
    add,
    chosen_model,
    cli_args_of,
    dict_field,
    has_flag,
    is_auth_error,
    json_lines,
    message_of,
    setting_in,
    to_float,
    to_int,
)
from .base import ConfigEndpoint, ParsedResult, PathSetting, PathUse, WorkerContext, class_of_http_status, home_of
from .kind import LoginFacts, StoredLogin, WorkerKind

if TYPE_CHECKING:
    from ...config import Settings


_BASE_URL = re.compile(r'"baseURL"\s*:\s*"([^"]+)"')  # a provider's endpoint in its config


class OpencodeAdapter(AICLIAdapter):
    name = "opencode"
    co_author_name = "opencode"
    # Its model list (models.dev), its own service and the providers it ships with by default.
    network_hosts = ("models.dev", "opencode.ai", "api.anthropic.com", "api.openai.com")
    base_url_variables = ("ANTHROPIC_BASE_URL", "OPENAI_BASE_URL")

    def model_urls(self, settings: Settings, env: Mapping[str, str]) -> list[str]:
        """Besides the variables, each provider's ``baseURL`` in ``OPENCODE_CONFIG_CONTENT``."""
        found = super().model_urls(settings, env)
        return found + _BASE_URL.findall(env.get("OPENCODE_CONFIG_CONTENT", ""))

    def config_files(self, env: Mapping[str, str]) -> list[Path]:
        """Its global config (``$XDG_CONFIG_HOME/opencode``: config.json, opencode.json, opencode.jsonc)
        and the file ``OPENCODE_CONFIG`` names. (A project's own opencode.json is in the worker's
        checkout, which it writes: never read for an endpoint.)"""
        folder = Path(env.get("XDG_CONFIG_HOME") or home_of(env) / ".config") / "opencode"
        files = [folder / name for name in ("config.json", "opencode.json", "opencode.jsonc")]
        named = env.get("OPENCODE_CONFIG", "")
        return [*files, Path(named)] if named and Path(named).is_absolute() else files

    def config_endpoints(self, texts: Mapping[Path, str]) -> list[ConfigEndpoint]:
        """Each provider's ``options.baseURL`` (read as words: the file may be JSON with comments)."""
        return [
            ConfigEndpoint(url, f"a provider's baseURL in {path}")
            for path, text in texts.items()
            for url in _BASE_URL.findall(text)
        ]

    co_author_email = "noreply@opencode.ai"  # opencode's own trailer
    cli = "opencode"
    command_key = "orchestrator.opencode_command"
    path_settings = (
        # Its XDG folders: data (auth, snapshots), config, cache, state.
        PathSetting("XDG_DATA_HOME", PathUse.DATA, default=".local/share", sub="opencode"),
        PathSetting("XDG_CONFIG_HOME", PathUse.CONFIG, default=".config", sub="opencode"),
        PathSetting("XDG_CACHE_HOME", PathUse.CACHE, default=".cache", sub="opencode"),
        PathSetting("XDG_STATE_HOME", PathUse.STATE, default=".local/state", sub="opencode"),
        # A config folder of agents, commands and plugins (it installs the plugins' packages there).
        PathSetting("OPENCODE_CONFIG_DIR", PathUse.CONFIG),
        PathSetting("OPENCODE_DB", PathUse.DATA, file=True),  # its session database's folder
    )

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        argv = [self.program(ctx), "run", "--format", "json"]
        if not has_flag(cli_args_of(ctx), "--dir"):
            argv += ["--dir", str(ctx.worker_dir)]
        model = self.model_for(ctx.settings, ctx.model)
        if model:
            argv += ["-m", model]
        return [*argv, *cli_args_of(ctx), "--", ctx.prompt]

    def model_for(self, settings: Settings, model: str | None) -> str:
        """A role's model, else ``orchestrator.opencode_model``, else ``orchestrator.model`` in
        opencode's ``provider/model`` form; "" for opencode's default."""
        found = (model or "").strip() or str(setting_in(settings, "opencode_model", "") or "").strip()
        general = chosen_model(settings, model)
        return found or (general if "/" in general else "")

    def extra_env(self, ctx: WorkerContext) -> dict[str, str]:
        env: dict[str, str] = {}
        if "OPENCODE_DB" not in ctx.env:  # the worker's own, from workers.env or the server's it inherits
            # A folder of its own (SQLite writes its journal beside the file): a sandbox opens it alone.
            folder = ctx.prompt_file.with_name(ctx.prompt_file.stem + ".opencode")
            folder.mkdir(exist_ok=True)
            env["OPENCODE_DB"] = str(folder / "opencode.db")
        if ctx.time_left and "OPENCODE_EXPERIMENTAL_BASH_DEFAULT_TIMEOUT_MS" not in ctx.env:
            env["OPENCODE_EXPERIMENTAL_BASH_DEFAULT_TIMEOUT_MS"] = str(int(ctx.time_left * 1000))
        return env

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        cost: float | None = None
        tokens_in = tokens_out = None
        step_texts: list[str] = []
        answer: list[str] | None = None
        finished = False
        error: dict[str, Any] | None = None
        extra: dict[str, Any] = {}
        for event in json_lines(text):
            kind = event.get("type")
            part = dict_field(event, "part")
            if event.get("sessionID") and "session_id" not in extra:
                extra["session_id"] = event["sessionID"]
            if kind == "step_start":
                step_texts = []
            elif kind == "text" and isinstance(part.get("text"), str):
                step_texts.append(part["text"])
                answer = list(step_texts)
            elif kind == "step_finish":
                finished = True
                step_cost = to_float(part.get("cost"))
                if step_cost is not None:
                    cost = (cost or 0.0) + step_cost
                tokens = dict_field(part, "tokens")
                cache = dict_field(tokens, "cache")
                tokens_in = add(add(add(tokens_in, tokens.get("input")), cache.get("read")), cache.get("write"))
                tokens_out = add(add(tokens_out, tokens.get("output")), tokens.get("reasoning"))
            elif kind == "error":
                error = event.get("error") if isinstance(event.get("error"), dict) else {"name": str(event.get("error"))}
        cost = None if cost is None else round(cost, 10)  # a sum of floats: drop the binary noise
        fields: dict[str, Any] = {"cost_usd": cost, "tokens_in": tokens_in, "tokens_out": tokens_out, "extra": extra}
        output = "\n\n".join(t.strip() for t in answer or [] if t.strip())
        if error is not None:
            data = dict_field(error, "data")
            message = message_of(data) or str(error.get("name") or "unknown error")
            status = to_int(data.get("statusCode"))
            name = error.get("name")
            label = f"{name}" + (f" {status}" if status else "") if isinstance(name, str) else ""
            failure = _failure_class(name, status, data.get("isRetryable"), message)
            retryable = data.get("isRetryable") is not False and failure not in ("auth", "bad_request")
            return self.result(
                output,
                max_chars,
                ok=False,
                error=f"opencode: {message}" + (f" ({label})" if label else ""),
                retryable=retryable,
                failure_class=failure,
                retry_after=_retry_after(data),
                **fields,
            )
        if answer is None and not finished:
            parsed = self.no_result(text, exit_code)
            parsed.extra = extra
            return parsed
        return self.result(output, max_chars, **fields)

    def readable(self, line: str) -> str | None:
        """An event as a reader wants it: the text, each tool call (→) with its shortened output (←),
        errors, and each step's cost and tokens; other lines as written."""
        event = transcript.event_of(line)
        if event is None or not isinstance(event.get("type"), str):
            return line
        kind, part = event["type"], dict_field(event, "part")
        if kind == "text":
            return str(part.get("text", "")).strip() or None
        if kind == "tool_use":
            state = dict_field(part, "state")
            said = f"← {state.get('status', 'done')}"
            return f"→ {part.get('tool', '?')} {transcript.one_line(state.get('input', {}))}\n{said}\n" + transcript.shortened(
                str(state.get("output") or "")
            )
        if kind == "step_finish":
            tokens = dict_field(part, "tokens")
            return (
                f"= step finished: {transcript.cost_line(to_float(part.get('cost')), tokens.get('input'), tokens.get('output'))}"
            )
        if kind == "error":
            error = dict_field(event, "error")
            return f"· error: {message_of(dict_field(error, 'data')) or error.get('name') or 'unknown error'}"
        return None


def _failure_class(name: Any, status: int | None, retryable: Any, message: str) -> str | None:
    """The class of an opencode ``error`` event: its HTTP status when there is one, else its name
    (``ProviderAuthError``) or ``isRetryable``."""
    if name == "ProviderAuthError" or is_auth_error(message):
        return "auth"
    found = class_of_http_status(status)
    if found:
        return found
    return "transient" if retryable is True else None


def _retry_after(data: dict[str, Any]) -> float | None:
    """Seconds from a ``retry-after`` (or ``retry-after-ms``) response header opencode passed on."""
    headers = data.get("responseHeaders")
    if not isinstance(headers, dict):
        return None
    headers = {str(k).lower(): v for k, v in headers.items()}
    for key, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return float(headers[key]) * scale
        except (KeyError, TypeError, ValueError):
            continue
    return None


KIND = WorkerKind(
    OpencodeAdapter,
    rank=80,
    auto=True,
    memory_peak_mb=300,  # a Bun binary and its server: of the order of claude's measured tree
    npm_package="opencode-ai",
    login=LoginFacts(
        variables=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY", "GEMINI_API_KEY"),
        fix="run `opencode auth login`, or set your provider's key in workers.env (config.yaml)",
        stored=(StoredLogin("XDG_DATA_HOME", ".local/share", "opencode/auth.json"),),
        required=False,  # its own login store is not readable without a model call
    ),
)
