"""A loopback stand-in for the Gemini API (generateContent / streamGenerateContent), for the real ``gemini`` CLI.

Point the CLI at it with ``GOOGLE_GEMINI_BASE_URL=<server.url>``, ``GEMINI_API_KEY`` and a settings
file that selects the ``gemini-api-key`` auth type (see ``tests/test_real_gemini.py``). Every
``POST /v1beta/models/<model>:generateContent`` or ``:streamGenerateContent`` (``?alt=sse``: server-sent
events, one ``GenerateContentResponse`` per ``data:`` line) gets the next *turn* of a script; every
request is logged in :attr:`MockGeminiServer.requests`. ``countTokens`` is answered on the side;
anything else is a 404 in the API's error shape.

Turns:

* :class:`Text` - a model answer (``finishReason: STOP``) with ``usageMetadata``.
* :class:`Call` - a ``functionCall`` part for one of the CLI's tools (``write_file``, ``run_shell_command``).
* :class:`ApiError` - an HTTP error with Google's error JSON ``{"error": {"code", "message", "status"}}``,
  and a ``Retry-After`` header when ``retry_after`` is set.
* :class:`Hang` - never answers; holds the connection until the server stops.

A script is a list of turns played in order, or a callable ``(body) -> turn``. The server binds
127.0.0.1 on an ephemeral port and stops by itself after ``lifetime`` seconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .mock_http import LoggingHandler, ScriptedServer, subtask_in

DEFAULT_USAGE = {"promptTokenCount": 1300, "candidatesTokenCount": 40, "thoughtsTokenCount": 0}
# What the real API says for a key it does not know (HTTP 400, not 401).
BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."


@dataclass
class Text:
    text: str
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))


@dataclass
class Call:
    name: str
    args: dict[str, Any]
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))


@dataclass
class ApiError:
    code: int = 400
    message: str = BAD_KEY_MESSAGE
    status: str = "INVALID_ARGUMENT"
    retry_after: int | None = None


@dataclass
class Hang:
    """Never answer: hold the request until the server stops."""


Turn = Text | Call | ApiError | Hang
Script = Iterable[Turn] | Callable[[dict], Turn]

BAD_KEY_400 = ApiError()
UNAUTHENTICATED_401 = ApiError(
    401,
    "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential.",
    "UNAUTHENTICATED",
)
PERMISSION_403 = ApiError(
    403,
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API.",
    "PERMISSION_DENIED",
)
RATE_LIMIT_429 = ApiError(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED", retry_after=7)
OVERLOADED_503 = ApiError(503, "The model is overloaded. Please try again later.", "UNAVAILABLE")

_METHOD = re.compile(r"^/v1(?:beta|alpha)?/models/(?P<model>[^:/?]+):(?P<method>\w+)")


class MockGeminiServer(ScriptedServer):
    """``with MockGeminiServer([Text("hi")]) as mock: ... mock.url ...``"""

    thread_name = "mock-gemini-server"
    unscripted = ("", "404", "side")  # countTokens and the like are "side"

    def exhausted(self) -> Turn:
        return ApiError(500, "mock script exhausted", "INTERNAL")


# --------------------------------------------------------------------- reading requests


def contents(body: Any) -> list[dict]:
    items = body.get("contents") if isinstance(body, dict) else None
    return [c for c in items or [] if isinstance(c, dict)]


def user_text(body: Any) -> str:
    """The text parts of the user turns, joined."""
    return "\n".join(
        p["text"]
        for c in contents(body)
        if c.get("role") == "user"
        for p in c.get("parts") or []
        if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def function_responses(body: Any) -> list[dict]:
    """The ``functionResponse`` parts the CLI sent back after running a tool."""
    return [
        p["functionResponse"]
        for c in contents(body)
        for p in c.get("parts") or []
        if isinstance(p, dict) and isinstance(p.get("functionResponse"), dict)
    ]


def tool_names(body: Any) -> list[str]:
    names = []
    for tool in (body.get("tools") if isinstance(body, dict) else None) or []:
        for decl in tool.get("functionDeclarations") or [] if isinstance(tool, dict) else []:
            names.append(decl.get("name"))
    return names


def subtask(body: Any) -> str | None:
    return subtask_in(user_text(body))


# --------------------------------------------------------------------- HTTP


class _Handler(LoggingHandler):
    server_mock: MockGeminiServer
    request_id_header = "x-goog-request-id"

    def _error(self, status: int, message: str, reason: str, retry_after: int | None = None) -> None:
        data = json.dumps({"error": {"code": status, "message": message, "status": reason}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        entry = self._log(None)
        entry.turn = "404"
        self._error(404, f"Not found: GET {self.path}", "NOT_FOUND")

    def do_POST(self):
        body = self._read_body()
        entry = self._log(body)
        found = _METHOD.match(self.path)
        method = found["method"] if found else ""
        if method == "countTokens":
            entry.turn = "side"
            self._json(200, {"totalTokens": 100})
            return
        if method not in ("generateContent", "streamGenerateContent"):
            entry.turn = "404"
            self._error(404, f"Not found: POST {self.path}", "NOT_FOUND")
            return
        mock = self.server_mock
        turn = mock._turn_for(body)
        entry.turn = type(turn).__name__
        if isinstance(turn, ApiError):
            entry.turn = f"ApiError {turn.code}"
            self._error(turn.code, turn.message, turn.status, turn.retry_after)
            return
        if isinstance(turn, Hang):
            mock.hold()
            self.close_connection = True
            return
        part = {"text": turn.text} if isinstance(turn, Text) else {"functionCall": {"name": turn.name, "args": turn.args}}
        usage = dict(turn.usage)
        usage["totalTokenCount"] = sum(usage.values())
        response = {
            "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage,
            "modelVersion": found["model"],
            "responseId": mock.new_id("resp"),
        }
        if method == "generateContent":
            self._json(200, response)
            return
        data = f"data: {json.dumps(response)}\r\n\r\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


MockGeminiServer.handler = _Handler
