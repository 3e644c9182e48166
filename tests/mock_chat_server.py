"""A loopback stand-in for the OpenAI Chat Completions API, for the real ``aider`` and ``opencode`` CLIs.

aider reaches it through litellm (``OPENAI_API_BASE=<url>/v1``, ``--model openai/<name>``); opencode
through an OpenAI-compatible provider in its config (``baseURL: <url>/v1``). Every
``POST /v1/chat/completions`` gets the next *turn* of a script, as one JSON ``chat.completion`` or,
when the request asks for ``stream: true``, as server-sent ``chat.completion.chunk`` events ending
in ``data: [DONE]`` (usage in the last chunk). Every request is logged in
:attr:`MockChatServer.requests`; ``GET /v1/models`` lists the one model; anything else is a 404.

Turns:

* :class:`Text` - an assistant message (``finish_reason: stop``).
* :class:`ToolCall` - one ``tool_calls`` entry (``finish_reason: tool_calls``) for a tool the CLI offered.
* :class:`ApiError` - an HTTP error with the OpenAI error JSON, and ``Retry-After`` when set.
* :class:`Hang` - never answers; holds the connection until the server stops.

A script is a list of turns played in order, or a callable ``(body) -> turn``. The server binds
127.0.0.1 on an ephemeral port and stops by itself after ``lifetime`` seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .mock_http import LoggingHandler, ScriptedServer, subtask_in

MODEL = "mock-model"
DEFAULT_USAGE = {"prompt_tokens": 2900, "completion_tokens": 120}


@dataclass
class Text:
    text: str
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))


@dataclass
class ApiError:
    status: int = 401
    message: str = (
        "Incorrect API key provided: sk-bad. You can find your API key at https://platform.openai.com/account/api-keys."
    )
    type: str = "invalid_request_error"
    code: str | None = "invalid_api_key"
    retry_after: int | None = None


@dataclass
class Hang:
    """Never answer: hold the request until the server stops."""


Turn = Text | ToolCall | ApiError | Hang
Script = Iterable[Turn] | Callable[[dict], Turn]

AUTH_401 = ApiError()
RATE_LIMIT_429 = ApiError(
    429, "Rate limit reached for requests. Please try again in 20s.", "requests", "rate_limit_exceeded", retry_after=20
)


class MockChatServer(ScriptedServer):
    """``with MockChatServer([Text("hi")]) as mock: ... mock.url ...``"""

    thread_name = "mock-chat-server"
    unscripted = ("", "404", "models")

    def exhausted(self) -> Turn:
        return ApiError(500, "mock script exhausted", "server_error", None)


# --------------------------------------------------------------------- reading requests


def messages(body: Any) -> list[dict]:
    items = body.get("messages") if isinstance(body, dict) else None
    return [m for m in items or [] if isinstance(m, dict)]


def text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def user_text(body: Any) -> str:
    return "\n".join(text_of(m) for m in messages(body) if m.get("role") == "user")


def tool_results(body: Any) -> list[dict]:
    """The ``role: tool`` messages (what the CLI sends back after running a tool)."""
    return [m for m in messages(body) if m.get("role") == "tool"]


def tool_names(body: Any) -> list[str]:
    tools = body.get("tools") if isinstance(body, dict) else None
    return [t.get("function", {}).get("name") for t in tools or [] if isinstance(t, dict)]


def subtask(body: Any) -> str | None:
    return subtask_in(user_text(body))


# --------------------------------------------------------------------- HTTP


class _Handler(LoggingHandler):
    server_mock: MockChatServer
    request_id_header = "x-request-id"

    def _error(self, turn: ApiError) -> None:
        data = json.dumps({"error": {"message": turn.message, "type": turn.type, "param": None, "code": turn.code}}).encode()
        self.send_response(turn.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if turn.retry_after is not None:
            self.send_header("Retry-After", str(turn.retry_after))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        entry = self._log(None)
        if self.path.split("?", 1)[0] == "/v1/models":
            entry.turn = "models"
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "mock"}]})
            return
        entry.turn = "404"
        self._error(ApiError(404, f"Not found: GET {self.path}", "invalid_request_error", "not_found"))

    def do_POST(self):
        body = self._read_body()
        entry = self._log(body)
        if self.path.split("?", 1)[0] != "/v1/chat/completions":
            entry.turn = "404"
            self._error(ApiError(404, f"Not found: POST {self.path}", "invalid_request_error", "not_found"))
            return
        mock = self.server_mock
        turn = mock._turn_for(body)
        entry.turn = type(turn).__name__
        if isinstance(turn, ApiError):
            entry.turn = f"ApiError {turn.status}"
            self._error(turn)
            return
        if isinstance(turn, Hang):
            mock.hold()
            self.close_connection = True
            return
        model = (body.get("model") if isinstance(body, dict) else None) or MODEL
        usage = dict(turn.usage)
        usage["total_tokens"] = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        if isinstance(turn, Text):
            message: dict[str, Any] = {"role": "assistant", "content": turn.text}
            finish = "stop"
        else:
            call = {
                "id": mock.new_id("call"),
                "type": "function",
                "function": {"name": turn.name, "arguments": json.dumps(turn.arguments)},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        base = {"id": mock.new_id("chatcmpl"), "created": int(time.time()), "model": model}
        if not (isinstance(body, dict) and body.get("stream")):
            self._json(
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = {**base, "object": "chat.completion.chunk"}
        delta: dict[str, Any] = {"role": "assistant"}
        if isinstance(turn, Text):
            delta["content"] = turn.text
        else:
            delta["tool_calls"] = [dict(message["tool_calls"][0], index=0)]
        self._event({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        self._event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": usage})
        self._send(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _event(self, data: dict) -> None:
        self._send(f"data: {json.dumps(data)}\n\n".encode())

    def _send(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


MockChatServer.handler = _Handler
