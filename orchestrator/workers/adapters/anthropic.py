"""The ``anthropic`` kind: a worker calling the Anthropic Messages API directly, through the SDK.

argv (``python -m orchestrator.workers.anthropic_worker ...``, but never from the cwd)::

    PYTHON -E -c LAUNCH PACKAGE_PARENT --prompt-file FILE --root WORKER_DIR --model M
           --max-tokens N --max-turns N --command-timeout S --tool-output-chars N
           --max-retries N [--no-tools] [--prices IN,OUT,CACHE_WRITE,CACHE_READ]

``LAUNCH`` (interpreter.package_argv) puts the server's own package first on ``sys.path`` in place of
the cwd, which ``-m`` would put there: a worker's cwd may be a worktree of a repository that holds
an ``orchestrator`` package of its own (as ``orchestrator-spawn`` guards against too), and the
worker's ``PYTHONPATH`` is the user's (-E: the interpreter ignores it; the commands the model runs
still get it).

The program (orchestrator/workers/anthropic_worker.py) is a subprocess like any CLI, so the process
group, the kill ladder, the resource caps and the exit-status shim apply unchanged. Its settings
come from the ``anthropic`` section; the model is the worker's role's, else
``orchestrator.model``, else ``anthropic.model``; its prices are ``anthropic.prices``' entry for
the model (exact name, else the longest name prefix). ``ANTHROPIC_API_KEY`` and
``ANTHROPIC_BASE_URL`` reach it through the worker environment settings like any variable.

It prints JSON lines and last a ``result`` line (see the program's docstring), read here:
the exact token counts the API reported (``tokens_in`` = input + cache writes + cache reads,
as for claude; ``tokens_cache_read`` alone too) and the cost from them. An API error comes with
its HTTP status: 401/403 is ``auth`` (never retried), 429/529/5xx ``transient`` with the
service's retry-after.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from ...outcomes import CostBasis
from ...process.interpreter import package_argv
from .aicli import add, chosen_model, dict_field, json_lines, last_json_object, str_field, to_float
from .base import ANTHROPIC_ERROR_CLASSES, Adapter, ParsedResult, WorkerContext, class_of_http_status, tail_chars
from .kind import WorkerKind

if TYPE_CHECKING:
    from ...config import Settings

LIMITS = ("error_max_turns", "error_max_tokens")  # the program's subtypes for anthropic.max_turns and max_tokens
COST_UNKNOWN = "[cost unknown: no price for model {model} in anthropic.prices]"


def prices_for(table: dict[str, dict[str, Any]], model: str) -> tuple[float, float, float, float] | None:
    """The model's (input, output, cache_write, cache_read) USD per million tokens: its own
    entry, else the longest entry its name starts with (``claude-sonnet-4-5-20250929``)."""
    found = table.get(model)
    if found is None:
        prefixes = sorted((name for name in table if model.startswith(name)), key=len, reverse=True)
        found = table[prefixes[0]] if prefixes else None
    if found is None:
        return None
    return (float(found["input"]), float(found["output"]), float(found["cache_write"]), float(found["cache_read"]))


class AnthropicAdapter(Adapter):
    name = "anthropic"
    network_hosts = ("api.anthropic.com",)
    base_url_variables = ("ANTHROPIC_BASE_URL",)
    co_author_name = "Claude"
    co_author_email = "noreply@anthropic.com"  # Claude Code's own trailer
    first_signal = signal.SIGINT  # the program ends at once on SIGINT or SIGTERM, printing its result
    is_ai = True
    result_window = 8 * 1024 * 1024

    def model_for(self, settings: Settings, model: str | None) -> str:
        return chosen_model(settings, model) or settings.anthropic.model

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        a = ctx.settings.anthropic
        model = self.model_for(ctx.settings, ctx.model)
        argv = package_argv(
            "orchestrator.workers.anthropic_worker",
            "cli",
            [
                "--prompt-file",
                str(ctx.prompt_file),
                "--root",
                str(ctx.worker_dir),
                "--model",
                model,
                "--max-tokens",
                str(a.max_tokens),
                "--max-turns",
                str(a.max_turns),
                "--command-timeout",
                f"{a.command_timeout:g}",
                "--tool-output-chars",
                str(a.tool_output_chars),
                "--max-retries",
                str(a.max_retries),
            ],
        )
        if ctx.allowed_tools is not None and not ctx.allowed_tools:
            argv.append("--no-tools")  # no tool at all (a judge); a role's list names claude's tools, not these
        prices = prices_for(a.prices, model)
        if prices is not None:
            argv += ["--prices", ",".join(f"{p!r}" for p in prices)]
        return argv

    keys_by_file = ("ANTHROPIC_API_KEY",)

    def key_from_file(self, argv: list[str], variable: str, path: str) -> list[str] | None:
        return [*argv, "--api-key-file", path] if variable == "ANTHROPIC_API_KEY" else None

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        obj = last_json_object(text, lambda o: o.get("type") == "result")
        if obj is None:
            return self._without_result(text, exit_code, max_chars)
        usage = dict_field(obj, "usage")
        tokens_in = None
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            tokens_in = add(tokens_in, usage.get(key))
        cost = to_float(obj.get("total_cost_usd"))
        output = str_field(obj, "result")
        if cost is None and tokens_in:
            output = f"{output}\n\n{COST_UNKNOWN.format(model=str_field(obj, 'model'))}".strip()
        extra = {
            k: obj[k]
            for k in ("subtype", "num_turns", "duration_ms", "model", "api_error_status", "api_error_type")
            if obj.get(k) is not None
        }
        parsed = ParsedResult(
            output=tail_chars(output, max_chars),
            cost_usd=cost,
            tokens_in=tokens_in,
            tokens_out=add(None, usage.get("output_tokens")),
            tokens_cache_read=add(None, usage.get("cache_read_input_tokens")),
            extra=extra,
            # Its cost is computed from anthropic.prices (the Messages API reports none); without a
            # price there, it is unknown (the kind's own table decides, not the general estimate's).
            cost_basis=CostBasis.ESTIMATED if cost is not None else None,
            cost_note=f"cost unknown (model {str_field(obj, 'model')})" if cost is None and tokens_in else None,
        )
        subtype = str_field(obj, "subtype")
        if obj.get("is_error") is not True and subtype == "success":
            return parsed
        parsed.ok = False
        parsed.error = f"anthropic: {str_field(obj, 'error') or subtype or 'failed'}"
        status = obj.get("api_error_status") if isinstance(obj.get("api_error_status"), int) else None
        kind = obj.get("api_error_type")
        parsed.failure_class = class_of_http_status(status) if status else None
        if parsed.failure_class is None and isinstance(kind, str):
            parsed.failure_class = ANTHROPIC_ERROR_CLASSES.get(kind)
        if parsed.failure_class == "transient":
            parsed.retry_after = to_float(obj.get("retry_after"))
        # A bad key, a refused request, the turn or the answer limit would only fail the same way again.
        parsed.retryable = parsed.failure_class not in ("auth", "bad_request") and subtype not in LIMITS
        return parsed

    def _without_result(self, text: str, exit_code: int | None, max_chars: int) -> ParsedResult:
        """No result line: killed (SIGKILL) or crashed. The turns it reported still count."""
        parsed = ParsedResult(output="", ok=False)
        for event in json_lines(text):
            if event.get("type") != "turn":
                continue
            usage = dict_field(event, "usage")
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
                parsed.tokens_in = add(parsed.tokens_in, usage.get(key))
            parsed.tokens_out = add(parsed.tokens_out, usage.get("output_tokens"))
            parsed.tokens_cache_read = add(parsed.tokens_cache_read, usage.get("cache_read_input_tokens"))
        if exit_code is not None and exit_code >= 0:
            lines = [line for line in text.strip().splitlines() if line.strip()]
            parsed.error = f"no result from the anthropic worker ({lines[-1][:300] if lines else f'exit code {exit_code}'})"
        return parsed


# No CLI to find (``auto`` never picks it: it is chosen by name); this package's own Python (16 MB
# idle here) plus the commands its tools run.
KIND = WorkerKind(AnthropicAdapter, rank=90, memory_peak_mb=100, cost_provider="anthropic", aliases=("claude-api", "claude_api"))
