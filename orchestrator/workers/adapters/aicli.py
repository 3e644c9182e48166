"""What the AI CLI adapters share: their settings, and finding a result in mixed output.

A worker's stdout and stderr go to the same log file, so a CLI's JSON result is
found inside text that may also hold warnings, stack traces and progress lines.
The helpers here scan that text; none of them trusts the exit code alone.

Per-worker configuration directories: none of the six CLIs can be given a
private config directory without losing the user's credentials (claude keeps
them under ``CLAUDE_CONFIG_DIR``, codex under ``CODEX_HOME``, gemini under
``~/.gemini``, opencode under ``$XDG_DATA_HOME/opencode``), so the adapters
leave those alone. Each worker still gets its own cwd and (from the engine)
its own TMPDIR. Each adapter declares the folders its CLI writes
(``path_settings``: the documented variables and their defaults), which a
sandbox opens for it.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Adapter, ParsedResult, WorkerContext, home_of, tail_chars

if TYPE_CHECKING:
    from ...config import Settings

# How much of an attempt's output (its end) a parser looks at. The execution layer
# passes at most a few hundred KiB; this bound keeps a direct call on megabytes fast.
SCAN_CHARS = 2_000_000
# Objects tried when looking for the last JSON result; a result is near the end.
MAX_JSON_TRIES = 20_000

ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_OBJECT_START = re.compile(r"^\{", re.M)
_OBJECT_END = re.compile(r"^\}", re.M)
# Wording of failures that a retry cannot fix: bad or missing credentials.
AUTH_RE = re.compile(
    r"\b40[13]\b|unauthori[sz]ed|unauthenticated|authenticationerror|authentication[\s_]*(?:error|failed|required)"
    r"|failed to authenticate|not (?:able to )?authenticate|permission_error"
    r"|invalid[\s_-]*(?:x-)?api[\s_-]*key|incorrect api key|api key not valid"
    r"|api[\s_-]*key\b[^\n]{0,60}\b(?:not set|missing|must be set|invalid|expired)"
    r"|\boauth\b[^\n]{0,60}\b(?:token|expired|invalid|revoked|login)|not logged in|please run /login",
    re.I,
)


def is_auth_error(text: str | None) -> bool:
    return text is not None and AUTH_RE.search(text) is not None  # "" matches no alternative


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text) if "\x1b" in text else text


def scan_window(text: str) -> str:
    """The end of ``text`` that parsers examine, starting at a line boundary."""
    if len(text) <= SCAN_CHARS:
        return text
    cut = len(text) - SCAN_CHARS
    newline = text.find("\n", cut)
    return text[newline + 1 :] if newline >= 0 else text[cut:]


def setting(ctx: WorkerContext, key: str, default: Any = None) -> Any:
    return setting_in(ctx.settings, key, default)


def setting_in(settings: Settings, key: str, default: Any = None) -> Any:
    """``orchestrator.<key>``, or ``default`` when it is unset."""
    try:
        value = settings.get("orchestrator", key)
    except (KeyError, AttributeError):
        return default
    return default if value is None else value


def model_of(ctx: WorkerContext) -> str:
    return chosen_model(ctx.settings, ctx.model)


def chosen_model(settings: Settings, model: str | None) -> str:
    """The worker's model: its role's (``model``), else ``orchestrator.model``; "" for the CLI's default."""
    if model is not None:
        return model.strip()
    return str(setting_in(settings, "model", "") or "").strip()


def cli_args_of(ctx: WorkerContext) -> list[str]:
    """``orchestrator.cli_args``, each element passed as it is (never split, never a shell)."""
    return [str(arg) for arg in (setting(ctx, "cli_args", []) or [])]


def has_flag(args: list[str], *names: str) -> bool:
    """Whether ``args`` holds one of ``names`` (``--name`` or ``--name=value``)."""
    return any(arg in names or arg.split("=", 1)[0] in names for arg in args)


def json_objects_from_end(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object that starts at the beginning of a line, the last one first.
    An object is either one line (maybe followed by other text) or, when its line is
    just ``{``, pretty-printed up to the next line that starts with ``}``. Each try
    decodes only that stretch, so a long noisy output costs linear time."""
    decoder = json.JSONDecoder()
    starts = [m.start() for m in _OBJECT_START.finditer(text)]
    closers = [m.start() for m in _OBJECT_END.finditer(text)]
    for index in reversed(starts[-MAX_JSON_TRIES:]):
        eol = text.find("\n", index)
        eol = len(text) if eol < 0 else eol
        chunk = text[index:eol]
        if chunk.strip() == "{":
            at = bisect.bisect_right(closers, index)
            if at == len(closers):
                continue
            close_eol = text.find("\n", closers[at])
            chunk = text[index : len(text) if close_eol < 0 else close_eol]
        try:
            obj, _ = decoder.raw_decode(chunk)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def last_json_object(text: str, accept: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    for obj in json_objects_from_end(scan_window(text)):
        if accept(obj):
            return obj
    return None


def dict_field(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """``obj[key]`` if it is a JSON object, else an empty one (CLI output is read, not trusted)."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def str_field(obj: dict[str, Any], key: str) -> str:
    """``obj[key]`` if it is a string, else ``""``."""
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def json_lines(text: str) -> Iterator[dict[str, Any]]:
    """JSONL events in order; other lines (stderr noise) are skipped."""
    for line in scan_window(text).splitlines():
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def last_words(text: str, limit: int = 300) -> str:
    """The last non-empty line, for "no result" messages; a JSON line with a message gives its message."""
    window = text[-65536:]
    for line in reversed(strip_ansi(window).splitlines()):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            message = message_of(obj, fallback_to_name=False) if isinstance(obj, dict) else ""
            if message:
                line = message
        return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def message_of(obj: Any, *, fallback_to_name: bool = True) -> str:
    """A human message inside a CLI's error object (``message``, ``error.message``,
    ``error.data.message``); a message that is itself a JSON error body is opened."""
    if isinstance(obj, str):
        text = obj.strip()
        if text.startswith("{"):
            try:
                inner = json.loads(text)
            except ValueError:
                return text
            return message_of(inner, fallback_to_name=False) or text
        return text
    if not isinstance(obj, dict):
        return ""
    for key in ("message", "error", "data", "result"):
        value = obj.get(key)
        found = message_of(value, fallback_to_name=False) if isinstance(value, (dict, str)) else ""
        if found:
            return found
    if not fallback_to_name:
        return ""
    name = obj.get("name") or obj.get("type")
    return str(name) if isinstance(name, str) else ""


def to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def to_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def add(total: int | None, value: Any) -> int | None:
    """Sum token counts, staying None while nothing was reported."""
    number = to_int(value)
    if number is None:
        return total
    return number if total is None else total + number


def env_dir(env: Mapping[str, str], name: str, default: str) -> Path:
    """A folder an environment variable names, else ``default`` under the worker's home."""
    return Path(env[name]) if env.get(name) else home_of(env) / default


class AICLIAdapter(Adapter):
    """An AI coding CLI run headless: the prompt is one argv element, never a file or stdin."""

    is_ai = True
    result_window = 8 * 1024 * 1024  # a JSON result (or every cost-bearing event) must be read whole
    cli = "ai"  # the program's usual name, for messages

    def needs_prompt_file(self, settings: Settings) -> bool:
        return False

    def model_for(self, settings: Settings, model: str | None) -> str:
        return chosen_model(settings, model)

    def program(self, ctx: WorkerContext) -> str:
        return str(setting(ctx, f"{self.name}_command", self.cli) or self.cli)

    def no_result(
        self, text: str, exit_code: int | None, *, retryable: bool | None = None, why: str | None = None
    ) -> ParsedResult:
        """The CLI ended without its result: a failure whatever the exit code said."""
        if exit_code is not None and exit_code < 0:
            # Killed by a signal: the execution layer names the signal; nothing to add.
            return ParsedResult(output="", ok=False, error=None)
        detail = why or last_words(text) or (f"exit code {exit_code}" if exit_code is not None else "no output")
        if retryable is None:
            retryable = not is_auth_error(detail)
        return ParsedResult(output="", ok=False, error=f"no result from {self.cli} ({detail})", retryable=retryable)

    def result(self, text: str, max_chars: int, **fields: Any) -> ParsedResult:
        return ParsedResult(output=tail_chars(text, max_chars), **fields)
