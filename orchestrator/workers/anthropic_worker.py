"""``python -m orchestrator.workers.anthropic_worker``: the ``anthropic`` worker kind's program.

An agentic loop on the Anthropic Messages API through the official SDK: each turn is one
streamed request; its tool_use blocks run here (orchestrator/workers/agent_tools.py: files,
search, a command, a child job, all inside the worker's folder) and go back as tool_result
blocks, until the model answers without a tool call or ``--max-turns`` is reached.

It runs as every worker does: a subprocess in its own process group, under the kill ladder and
the resource caps. SIGINT or SIGTERM ends it at once, even while a streamed request hangs: the
handler raises (an exception no ``except Exception`` of the SDK swallows) in the main thread,
whose blocking socket read it interrupts. What it prints is JSON lines: ``init``, one ``turn``
per model call (its usage), one ``tool`` per tool call, and last a ``result`` like
``claude --output-format json``'s: ``subtype``, ``is_error``, ``result``, ``usage`` (the API's
four counts, summed over the turns), ``total_cost_usd`` (from ``--prices``), ``num_turns``, and
for an API error ``api_error_status``, ``api_error_type`` and ``retry_after``. The adapter
(orchestrator/workers/adapters/anthropic.py) reads them; a stopped worker still prints its result.

Credentials: ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` from the worker's environment
(the server's ``workers.env`` / ``env_passthrough``), given to the client explicitly so the SDK
looks for no other credential; the key from ``--api-key-file`` instead where the orchestrator moved
it out of an environment other processes can read (a Landlock sandbox). The key is never printed.

Prompt caching: the system prompt and the tools are the same for every worker, and cached. When
``ORCHESTRATOR_SHARED_CONTEXT`` names a file whose text the prompt starts with (the job's shared
context block), that text goes first as a block of its own, cached too, and the rest after it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import protocol
from .agent_tools import TOOL_SPECS, Tools

SYSTEM_PROMPT = (
    "You are a coding agent working on one subtask in your own working folder. "
    "Use the tools to read, change and test the files there; every path is relative to that folder "
    "and must stay inside it. Commands run as an argv list, never through a shell. "
    "Where your instructions say to run orchestrator-spawn in a shell, call start_child_job with the same "
    "subtasks instead. When the subtask is done, answer with a short summary of what you did, without a tool call."
)
# With --no-tools (a judge, which only reads what it is shown): no tools offered, this system prompt.
ANSWER_PROMPT = "Answer the request below from what it shows you; you have no tools."
CACHED = {"type": "ephemeral"}
SECRET_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# 128 + the signal number: what a shell reports for a program ended by that signal.
EXIT_SIGNALLED = 128


class Stopped(BaseException):
    """Raised by the SIGINT/SIGTERM handler. A BaseException, so no ``except Exception`` in the
    SDK or the HTTP client mistakes it for a failed request and retries."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Failed(Exception):
    """The run ends without an answer: ``subtype`` and, for API errors, what the API said."""

    def __init__(self, subtype: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.subtype, self.message, self.fields = subtype, message, fields


@dataclass
class Run:
    """What the run has used and said so far; its ``result`` line is built from this."""

    model: str
    prices: tuple[float, float, float, float] | None  # USD per million input, output, cache-write, cache-read tokens
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_KEYS, 0))
    pending: dict[str, int] | None = None  # the usage of a message still streaming
    turns: int = 0
    last_text: str = ""

    def add(self, usage: Any) -> dict[str, int]:
        counts = {key: int(getattr(usage, key, 0) or 0) for key in USAGE_KEYS}
        for key, value in counts.items():
            self.usage[key] += value
        return counts

    def settle(self) -> None:
        """Count a message cut off mid-stream (a stop): its input exactly, its output so far."""
        if self.pending is not None:
            for key, value in self.pending.items():
                self.usage[key] += value
            self.pending = None

    def cost(self) -> float | None:
        if self.prices is None:
            return None
        per_token = zip((self.usage[key] for key in USAGE_KEYS), self.prices)
        return round(sum(count * price for count, price in per_token) / 1_000_000, 10)


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.workers.anthropic_worker", description=__doc__.split("\n")[0])
    parser.add_argument("--prompt-file", required=True, type=Path, help="the rendered prompt")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the worker's folder (default: the cwd)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--max-turns", type=int, default=50)
    parser.add_argument("--command-timeout", type=float, default=300.0, help="run_command's limit, seconds")
    parser.add_argument("--tool-output-chars", type=int, default=30000, help="cap of one tool result")
    parser.add_argument("--max-retries", type=int, default=2, help="the SDK's own retries of a failed request")
    parser.add_argument("--prices", help="USD per million input,output,cache-write,cache-read tokens")
    parser.add_argument("--no-tools", action="store_true", help="offer the model no tools: one answer")
    parser.add_argument("--api-key-file", type=Path, help="a file holding the key (in place of ANTHROPIC_API_KEY)")
    return parser.parse_args(argv)


def prices_of(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    values = [float(part) for part in text.split(",")]
    if len(values) != 4:
        raise SystemExit("--prices wants four numbers: input,output,cache-write,cache-read")
    return values[0], values[1], values[2], values[3]


def first_message(prompt: str, shared_path: str | None) -> tuple[list[dict[str, Any]], int]:
    """The user message's content blocks, and the bytes of the shared block sent cached (0: none)."""
    shared = ""
    if shared_path:
        try:
            shared = Path(shared_path).read_text(encoding="utf-8")
        except OSError:
            shared = ""
    if shared.strip() and prompt.startswith(shared):
        blocks = [{"type": "text", "text": shared, "cache_control": CACHED}]
        rest = prompt[len(shared) :]
        if rest.strip():  # the API refuses an empty text block
            blocks.append({"type": "text", "text": rest})
        return blocks, len(shared.encode("utf-8"))
    return [{"type": "text", "text": prompt}], 0


def on_signal(signum: int, _frame: Any) -> None:
    quiet()  # once: the rest of the kill ladder (SIGTERM after SIGINT) must not cut the result line
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    run = Run(model=args.model, prices=prices_of(args.prices))
    started = time.monotonic()
    fields: dict[str, Any] = {}
    try:
        try:
            subtype, text, code = "success", agent_loop(args, run), 0
        finally:
            quiet()  # from here on, the result line is written whatever signal arrives
    except Stopped as stop:
        name = signal.Signals(stop.signum).name
        subtype, text, code = "stopped", f"stopped by {name} (timeout or cancel)", EXIT_SIGNALLED + stop.signum
        fields["signal"] = name
    except Failed as failed:
        subtype, text, code, fields = failed.subtype, failed.message, 1, failed.fields
    except Exception as exc:  # a bug here, or an answer the SDK could not read: said, never silent
        traceback.print_exc()
        subtype, text, code = "error", f"the anthropic worker failed: {exc!r}", 1
    run.settle()
    finish(run, started, subtype, text, **fields)
    return code


def quiet() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def finish(run: Run, started: float, subtype: str, text: str, **fields: Any) -> None:
    is_error = subtype != "success"
    sys.stdout.write("\n")  # on a line of its own even if a stop cut the previous line short
    emit(
        {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "result": text if not is_error else run.last_text,
            **({"error": text} if is_error else {}),
            "model": run.model,
            "num_turns": run.turns,
            "duration_ms": round((time.monotonic() - started) * 1000),
            "usage": dict(run.usage),
            "total_cost_usd": run.cost(),
            **fields,
        }
    )


def agent_loop(args: argparse.Namespace, run: Run) -> str:
    """Turns until the model answers without a tool call; the answer's text."""
    try:
        prompt = args.prompt_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise Failed("error", f"cannot read the prompt file {args.prompt_file}: {exc.strerror}") from None
    content, shared_bytes = first_message(prompt, os.environ.get(protocol.SHARED_CONTEXT))
    # The commands it runs do not get the API key: nothing the model runs can print it into a
    # tool result, the conversation or the log.
    env = {name: value for name, value in os.environ.items() if name not in SECRET_ENV}
    tools = Tools(args.root, command_timeout=args.command_timeout, output_chars=args.tool_output_chars, env=env)
    client = make_client(args.max_retries, args.api_key_file)
    emit(
        {
            "type": "system",
            "subtype": "init",
            "model": run.model,
            "cwd": str(tools.root),
            "tools": [] if args.no_tools else [spec["name"] for spec in TOOL_SPECS],
            "shared_context_bytes": shared_bytes,
            "prompt_bytes": len(prompt.encode("utf-8")),
        }
    )
    system = ANSWER_PROMPT if args.no_tools else SYSTEM_PROMPT
    request: dict[str, Any] = {
        "model": run.model,
        "max_tokens": args.max_tokens,
        "system": [{"type": "text", "text": system, "cache_control": CACHED}],
    }
    if not args.no_tools:
        request["tools"] = TOOL_SPECS
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    while True:
        if run.turns >= args.max_turns:
            raise Failed("error_max_turns", f"reached max_turns ({args.max_turns}) before an answer")
        run.turns += 1
        message = one_turn(client, request, messages, run)
        calls = [block for block in message.content if block.type == "tool_use"]
        messages.append({"role": "assistant", "content": [block_param(block) for block in message.content]})
        if message.stop_reason == "max_tokens":
            raise Failed(
                "error_max_tokens",
                f"an answer was cut at max_tokens ({args.max_tokens}): raise anthropic.max_tokens",
            )
        if message.stop_reason != "tool_use" or not calls:
            return run.last_text
        results = []
        for call in calls:
            answer, is_error = tools.run(call.name, call.input)
            emit({"type": "tool", "name": call.name, "input": brief(call.input), "is_error": is_error, "bytes": len(answer)})
            results.append({"type": "tool_result", "tool_use_id": call.id, "content": answer, "is_error": is_error})
        move_breakpoint(messages, results)
        messages.append({"role": "user", "content": results})


def move_breakpoint(messages: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
    """Cache the conversation so far: the newest tool result carries the moving cache breakpoint
    (the previous one's is dropped), so the next turn reads every earlier turn from the cache.
    With the system prompt's and the shared block's, a request has at most the API's 4."""
    for message in messages[1:]:
        if message["role"] == "user":
            for block in message["content"]:
                block.pop("cache_control", None)
    results[-1]["cache_control"] = CACHED


def make_client(max_retries: int, key_file: Path | None = None) -> Any:
    import anthropic  # the SDK: imported here, after the arguments and the prompt were checked

    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise Failed(
                "error", f"cannot read the API key file {key_file}: {exc.strerror}", api_error_type="authentication_error"
            ) from None
    else:
        key = os.environ.get("ANTHROPIC_API_KEY", "")
    if not key.strip():
        raise Failed(
            "error",
            "ANTHROPIC_API_KEY is not set for this worker: give it in workers.env, or pass it through "
            "workers.env_passthrough (with workers.inherit_env false)",
            api_error_type="authentication_error",
        )
    base_url = os.environ.get("ANTHROPIC_BASE_URL") or None
    return anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=max_retries, open_telemetry=False)


def one_turn(client: Any, request: dict[str, Any], messages: list[dict[str, Any]], run: Run) -> Any:
    """One streamed request; its final message. Usage is counted as it streams in, so a stop
    mid-message still counts the message's input tokens."""
    import anthropic

    try:
        with client.messages.stream(messages=messages, **request) as stream:
            for event in stream:
                if event.type in ("message_start", "message_delta"):
                    snapshot = stream.current_message_snapshot.usage
                    run.pending = {key: int(getattr(snapshot, key, 0) or 0) for key in USAGE_KEYS}
            message = stream.get_final_message()
    except anthropic.APIStatusError as exc:
        raise api_failure(exc) from None
    except anthropic.APIConnectionError as exc:  # includes the SDK's own timeout
        raise Failed("api_error", f"cannot reach the Anthropic API: {exc}", api_error_type="api_connection_error") from None
    run.pending = None
    counts = run.add(message.usage)
    texts = [block.text for block in message.content if block.type == "text" and block.text.strip()]
    if texts:
        run.last_text = "\n".join(texts)
    turn = {"type": "turn", "turn": run.turns, "id": message.id, "stop_reason": message.stop_reason, "usage": counts}
    emit({**turn, "text": run.last_text[:500]} if texts else turn)  # what the model said, for the log
    return message


def api_failure(exc: Any) -> Failed:
    """An HTTP error of the API as a Failed: its status, error type and retry-after (seconds)."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    found = body.get("error") if isinstance(body, dict) else None
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else str(exc)
    response = getattr(exc, "response", None)
    headers: Any = response.headers if response is not None else {}
    return Failed(
        "api_error",
        f"Anthropic API error {status}: {message}",
        api_error_status=status,
        api_error_type=kind,
        retry_after=retry_after(headers),
    )


def retry_after(headers: Any) -> float | None:
    """Seconds the API asked to wait (``retry-after-ms``, else ``retry-after`` in seconds)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        try:
            seconds = float(value) * scale if value is not None else None
        except ValueError:
            seconds = None
        if seconds is not None and 0 <= seconds < 86400:
            return round(seconds, 3)
    return None


def block_param(block: Any) -> dict[str, Any]:
    """An assistant content block as a request sends it back."""
    if block.type == "text":
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if block.type == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    return dict(block.model_dump(exclude_none=True))


def brief(value: Any, limit: int = 300) -> str:
    """A tool input for the log: JSON, cut to ``limit`` characters (file contents can be long)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cli() -> None:
    """The program's entry (the adapter's argv, or ``python -m``): ``main``, then leave at once.
    The result line is out; the interpreter's own teardown (the SDK's modules, its connection
    pool) took 0.9 to 2 s more after a stop, measured under load, and a cancel would wait for it."""
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    cli()
