"""A loopback stand-in for the Anthropic Messages API, good enough for the real ``claude`` CLI.

Point the CLI at it with ``ANTHROPIC_BASE_URL=<server.url>`` and any ``ANTHROPIC_API_KEY``
(see :meth:`MockModelServer.client_env`). Each ``POST /v1/messages`` that is part of the
conversation gets the next *turn* of a script; every request (path, headers, body) is logged
in :attr:`MockModelServer.requests` so tests can see what the CLI sent.

Turns:

* :class:`Text` - a plain assistant answer (``stop_reason: end_turn``); ``delay`` makes it slow.
* :class:`ToolUse` - a ``tool_use`` block (``stop_reason: tool_use``), e.g. ``Write`` or ``Bash``.
* :class:`ApiError` - an HTTP error with the Anthropic error JSON (401 ``authentication_error`` ...).
* :class:`Hang` - never answers; holds the connection until the server stops.
  (``Text(..., stall=S)`` starts its stream, then holds it S seconds: a stall mid-answer.)

A script is either a list of turns played in order, or a callable ``(body) -> turn`` that
chooses the reply per request (for several CLIs sharing one server). Requests the CLI makes
on the side (title/topic generation with a small model, quota probes, ``count_tokens``) are
answered without consuming a turn: see :meth:`MockModelServer.is_side_request`.

The server binds 127.0.0.1 on an ephemeral port, and stops by itself after ``lifetime``
seconds, so a forgotten server never outlives its test for long.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .mock_http import Logged, LoggingHandler, ScriptedServer, subtask_in

# Per-million-token prices are the CLI's business; these counts just need to be non-zero
# so that it computes a non-zero total_cost_usd.
DEFAULT_USAGE = {"input_tokens": 1200, "output_tokens": 80}
# How the agent's own system prompt opens (the main loop), as claude versions wrote it.
# The agents' own system prompts: claude's, and the anthropic kind's with --no-tools (a planner, a judge).
_AGENT_SYSTEM = ("You are a Claude agent", "You are Claude Code", "you have no tools.")
MODEL_FALLBACK = "claude-sonnet-4-5-20250929"

# Environment that keeps the CLI quiet and local: no telemetry, no auto-update, no error
# reporting, no non-essential traffic (feedback, release notes, model listing...).
QUIET_ENV = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "DISABLE_NON_ESSENTIAL_MODEL_CALLS": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_ENABLE_TELEMETRY": "0",
    "CLAUDE_CODE_IDE_SKIP_AUTO_INSTALL": "1",
}


@dataclass
class Text:
    text: str
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))
    delay: float = 0.0  # seconds to think before answering (a slow model call)
    # Streaming only: seconds to hold the stream after message_start (its input usage already
    # sent), as a model that stalls mid-answer; the rest follows unless the server stops first.
    stall: float = 0.0
    stop_reason: str = "end_turn"  # e.g. "max_tokens": an answer cut at the request's max_tokens


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any]
    text: str = ""  # optional text block before the tool call
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))
    delay: float = 0.0


@dataclass
class ApiError:
    status: int = 401
    type: str = "authentication_error"
    message: str = "invalid x-api-key"
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"retry-after": "7"} on a 429/529


@dataclass
class Hang:
    """Never answer: hold the request until the server stops."""


Turn = Text | ToolUse | ApiError | Hang
Script = Iterable[Turn] | Callable[[dict], Turn]

AUTH_401 = ApiError(401, "authentication_error", "invalid x-api-key")


class MockModelServer(ScriptedServer):
    """``with MockModelServer([Text("hi")]) as mock: ... mock.url ...``"""

    thread_name = "mock-model-server"

    def client_env(self, api_key: str = "sk-ant-mock-0000") -> dict[str, str]:
        """Environment for a CLI talking to this server (add it on top of os.environ)."""
        return {**QUIET_ENV, "ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": api_key}

    # ----------------------------------------------------------------- views for tests
    unscripted = ("side", "404", "count_tokens", "")

    @property
    def turns_played(self) -> int:
        return self._next

    # ----------------------------------------------------------------- scripting
    @staticmethod
    def is_side_request(body: Any) -> bool:
        """True for requests that are not the agent's main loop: no tools offered, and not the
        agent's system prompt.

        The main conversation of ``claude -p`` offers its tools, and with ``--tools ""`` (a planner,
        a judge: none) it still opens with the agent's system prompt ("You are a Claude agent",
        measured with 2.1.329; "You are Claude Code" before); the CLI's own helper calls
        (topic/title detection, quota probe) do neither."""
        if not isinstance(body, dict) or body.get("tools"):
            return False
        system = body.get("system")
        blocks = system if isinstance(system, list) else [{"text": system or ""}]
        text = " ".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))
        return not any(mark in text for mark in _AGENT_SYSTEM)

    def _turn_for(self, body: Any) -> Turn | str:
        return "side" if self.is_side_request(body) else super()._turn_for(body)

    def exhausted(self) -> Turn:
        return ApiError(500, "api_error", "mock script exhausted")


def prompt_text(body: Any) -> str:
    """All the user-side text of a Messages request (strings and text blocks), joined."""
    if not isinstance(body, dict):
        return ""
    parts: list[str] = []
    for message in body.get("messages") or []:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        for block in content or []:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(block.get("text", ""))
    return "\n".join(parts)


def tool_results(body: Any) -> list[dict]:
    """The tool_result blocks in a request (what the CLI sends back after running a tool)."""
    found: list[dict] = []
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in messages or []:
        content = message.get("content")
        if isinstance(content, list):
            found.extend(b for b in content if isinstance(b, dict) and b.get("type") == "tool_result")
    return found


_CWD = re.compile(r"Primary working directory: ([^\n]+)")


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def working_directory(body: Any) -> str | None:
    """The CLI's cwd, as the environment note in its request states it (its file tools want
    absolute paths). Looked for in the messages first, then anywhere (e.g. the system prompt)."""
    parts = [(body or {}).get("messages"), body] if isinstance(body, dict) else []
    for part in parts:
        for text in _strings(part):
            found = _CWD.search(text)
            if found:
                return found.group(1).strip()
    return None


def subtask(body: Any) -> str | None:
    return subtask_in(prompt_text(body))


def tool_names(body: Any) -> list[str]:
    tools = body.get("tools") if isinstance(body, dict) else None
    return [t.get("name", "") for t in tools or []]


class _Handler(LoggingHandler):
    server_mock: MockModelServer
    request_id_header = "request-id"

    # ------------------------------------------------------------ plumbing
    def _not_found(self, entry: Logged) -> None:
        entry.turn = "404"
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": f"Not found: {self.path}"}})

    # ------------------------------------------------------------ verbs
    def do_GET(self):
        entry = self._log(None)
        self._not_found(entry)

    def do_HEAD(self):
        entry = self._log(None)
        entry.turn = "head"
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = self._read_body()
        entry = self._log(body)
        path = self.path.split("?", 1)[0]
        if path == "/v1/messages/count_tokens":
            entry.turn = "count_tokens"
            self._json(200, {"input_tokens": 1000})
            return
        if path != "/v1/messages":
            self._not_found(entry)
            return
        mock = self.server_mock
        turn = mock._turn_for(body)
        if turn == "side":
            entry.turn = "side"
            turn = Text("Mock title", usage={"input_tokens": 10, "output_tokens": 2})
        else:
            entry.turn = type(turn).__name__
        if isinstance(turn, ApiError):
            entry.turn = f"ApiError {turn.status}"
            self._json(
                turn.status, {"type": "error", "error": {"type": turn.type, "message": turn.message}}, headers=turn.headers
            )
            return
        if isinstance(turn, Hang):
            # Say nothing, keep the socket open, and let go only when the server stops.
            mock.hold()
            self.close_connection = True
            return
        if turn.delay:
            mock._stopped.wait(turn.delay)
        model = (body.get("model") if isinstance(body, dict) else None) or MODEL_FALLBACK
        message = self._message(turn, model)
        if isinstance(body, dict) and body.get("stream"):
            self._stream(message, stall=getattr(turn, "stall", 0.0))
        else:
            self._json(200, message)

    # ------------------------------------------------------------ answers
    def _message(self, turn: Text | ToolUse, model: str) -> dict:
        content: list[dict] = []
        if isinstance(turn, Text):
            content.append({"type": "text", "text": turn.text})
            stop = turn.stop_reason
        else:
            if turn.text:
                content.append({"type": "text", "text": turn.text})
            content.append({"type": "tool_use", "id": self.server_mock.new_id("toolu"), "name": turn.name, "input": turn.input})
            stop = "tool_use"
        # A turn's usage may give the prompt-cache counts (the anthropic kind prices each).
        usage = {
            key: turn.usage.get(key, 0)
            for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        }
        return {
            "id": self.server_mock.new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }

    def _event(self, name: str, data: dict) -> None:
        chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.flush()

    def _stream(self, message: dict, stall: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", self.server_mock.new_id("req"))
        self.end_headers()
        usage = message["usage"]
        start = dict(message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
        self._event("message_start", {"type": "message_start", "message": start})
        self._event("ping", {"type": "ping"})
        if stall and self.server_mock._stopped.wait(stall):
            self.close_connection = True
            return
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                self._event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                )
                self._event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": block["text"]}},
                )
            else:
                self._event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                    },
                )
                raw = json.dumps(block["input"])
                half = len(raw) // 2  # two deltas, as the real API splits partial JSON
                for piece in (raw[:half], raw[half:]):
                    self._event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    )
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        self._event("message_stop", {"type": "message_stop"})
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


MockModelServer.handler = _Handler
