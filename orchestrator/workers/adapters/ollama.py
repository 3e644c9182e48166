"""Ollama (``ollama run``) for one prompt.

argv (checked against the cobra definition of ``run`` in ollama's cmd/cmd.go)::

    ollama run MODEL --verbose --nowordwrap [CLI_ARGS ...] -- PROMPT

* ``MODEL`` is the worker's role's model when it has one, else
  ``orchestrator.ollama_model`` (``orchestrator.model`` is for the other CLIs:
  ollama's model names differ).
* ``--`` ends the options, so a prompt starting with ``-`` is still the prompt;
  ollama joins its prompt arguments with spaces, so one element arrives as it is.
  Ollama reads stdin when it is not a terminal and puts it before the prompt;
  the orchestrator's stdin is /dev/null, which adds nothing.
* Output is the model's text on stdout. ``--verbose`` adds timing lines on
  stderr (``prompt eval count:    26 token(s)``, ``eval count:           298
  token(s)``), read here as tokens and left out of the result. Ollama has no
  cost. A thinking model's ``Thinking...`` … ``...done thinking.`` block, the
  spinner and the pull progress of a model fetched on first use are left out
  too.
* Errors are one line, ``Error: …``, exit code 1: ``could not connect to ollama
  app, is it running?`` when the server is down (retryable: it may be
  starting), ``pull model manifest: file does not exist`` / ``model … not found``
  for a model that does not exist (not retryable).
* SIGTERM, not SIGINT: on SIGINT ollama cancels the reply and exits 0 with a
  partial answer, which would read as a success.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .aicli import AICLIAdapter, cli_args_of, scan_window, setting_in, strip_ansi
from .base import ParsedResult, WorkerContext
from .kind import LoginFacts, WorkerKind

if TYPE_CHECKING:
    from ...config import Settings

_STATS = re.compile(
    r"^(?:total duration|load duration|prompt eval count|prompt eval duration|prompt eval rate"
    r"|eval count|eval duration|eval rate):\s"
)
_PROMPT_TOKENS = re.compile(r"^prompt eval count:\s+(\d+) token", re.M)
_EVAL_TOKENS = re.compile(r"^eval count:\s+(\d+) token", re.M)
_PULL = re.compile(
    r"^(?:pulling [\w.:-]+|verifying sha256 digest|writing manifest|removing any unused layers|removing unused layers)"
)
_SPINNER = re.compile(r"[\u2800-\u28ff]")
_THINKING = re.compile(r"^Thinking\.\.\.\n.*?^\.\.\.done thinking\.\n*", re.M | re.S)
_ERROR = re.compile(r"^Error: (.+)$", re.M)
_NOT_RETRYABLE = re.compile(
    r"file does not exist|not found|invalid model name|unknown flag|requires at least|model is required|does not support", re.I
)


class OllamaAdapter(AICLIAdapter):
    name = "ollama"
    co_author_name = "Ollama"
    co_author_email = "noreply@ollama.com"
    cli = "ollama"
    command_key = "orchestrator.ollama_command"

    def model_urls(self, settings: Settings, env: Mapping[str, str]) -> list[str]:
        """The ollama server the CLI talks to: ``OLLAMA_HOST`` (``host:port`` or a URL), else its default."""
        host = (env.get("OLLAMA_HOST") or "127.0.0.1:11434").strip()
        return [host if "://" in host else f"http://{host}"]

    def model_for(self, settings: Settings, model: str | None) -> str:
        """A role's model names an ollama model outright; else ``orchestrator.ollama_model``."""
        return (model or "").strip() or str(setting_in(settings, "ollama_model", "") or "").strip() or "llama3.2"

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        model = self.model_for(ctx.settings, ctx.model)
        return [self.program(ctx), "run", model, "--verbose", "--nowordwrap", *cli_args_of(ctx), "--", ctx.prompt]

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        clean = _SPINNER.sub("", strip_ansi(scan_window(text))).replace("\r\n", "\n")
        clean = "\n".join(line.rsplit("\r", 1)[-1] for line in clean.split("\n"))  # a redrawn line keeps its last state
        prompt_tokens = [int(n) for n in _PROMPT_TOKENS.findall(clean)]
        eval_tokens = [int(n) for n in _EVAL_TOKENS.findall(clean)]
        tokens_in = prompt_tokens[-1] if prompt_tokens else None
        tokens_out = eval_tokens[-1] if eval_tokens else None
        pulled = False
        kept = []
        for line in clean.split("\n"):
            if _STATS.match(line):
                continue
            if _PULL.match(line):
                pulled = True
                continue
            if pulled and line.strip() == "success":
                continue
            kept.append(line)
        body = _THINKING.sub("", "\n".join(kept))
        errors = _ERROR.findall(body)
        if errors and (exit_code != 0 or not _ERROR.sub("", body).strip()):
            message = errors[-1].strip()
            fatal = _NOT_RETRYABLE.search(message) is not None
            # Not found/invalid: a bad request; anything else (server down or starting, 5xx): transient.
            return ParsedResult(
                output="",
                ok=False,
                error=f"ollama: {message}",
                retryable=not fatal,
                failure_class="bad_request" if fatal else "transient",
                tokens_in=tokens_in,
                tokens_out=tokens_out,
            )
        if not body.strip():
            return self.no_result(text, exit_code)
        if exit_code is not None and exit_code < 0:
            # Killed mid-answer: keep the partial text; the execution layer names the signal.
            return self.result(body, max_chars, ok=False, tokens_in=tokens_in, tokens_out=tokens_out)
        return self.result(body, max_chars, tokens_in=tokens_in, tokens_out=tokens_out)


KIND = WorkerKind(
    OllamaAdapter,
    rank=70,
    auto=True,
    memory_peak_mb=50,  # the ``ollama run`` client only: the model is held by the ollama server, outside its tree
    local_models=True,
    install="see https://ollama.com/download",
    login=LoginFacts(variables=("OLLAMA_HOST",), fix="", not_needed="local models: no login"),
)
