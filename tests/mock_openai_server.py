"""A loopback stand-in for the OpenAI Responses API, good enough for the real ``codex`` CLI.

Point codex at it with a model provider of its own (see :meth:`MockOpenAIServer.codex_args`)::

    codex exec -c model_provider="mock" -c model_providers.mock.base_url="<url>/v1"
               -c model_providers.mock.wire_api="responses" -c model_providers.mock.env_key="MOCK_OPENAI_KEY" ...

and give it a private ``CODEX_HOME`` so the user's config and ``auth.json`` are never read.
Each ``POST /v1/responses`` gets the next *turn* of a script as a stream of server-sent events
(``response.created``, ``response.output_item.added``, ``response.output_text.delta``,
``response.output_item.done``, ``response.completed`` with ``usage``); every request (path,
headers, body) is logged in :attr:`MockOpenAIServer.requests`. Anything else is a 404.

Turns:

* :class:`Text` - an assistant ``message`` item with one ``output_text``.
* :class:`ShellCall` - a ``function_call`` item for codex's shell tool (the name codex offered).
* :class:`ApiError` - an HTTP error with the OpenAI error JSON (401 ``invalid_api_key`` ...).
* :class:`Hang` - never answers; holds the connection until the server stops.

A script is a list of turns played in order, or a callable ``(body) -> turn``.
The server binds 127.0.0.1 on an ephemeral port and stops by itself after ``lifetime`` seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .mock_http import Logged, LoggingHandler, ScriptedServer, subtask_in

DEFAULT_USAGE = {"input_tokens": 1500, "cached_input_tokens": 300, "output_tokens": 60, "reasoning_tokens": 10}
MODEL_FALLBACK = "gpt-5-codex"
ENV_KEY = "MOCK_OPENAI_KEY"  # the variable codex reads the key from (model_providers.mock.env_key)


@dataclass
class Text:
    text: str
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))


@dataclass
class ShellCall:
    """A call of codex's shell tool; ``command`` is an argv (``["bash", "-lc", "..."]``)."""

    command: list[str]
    workdir: str | None = None
    name: str | None = None  # tool name; None: the shell-like tool codex offered in the request
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))
    options: dict[str, Any] = field(default_factory=dict)  # more arguments, e.g. {"yield_time_ms": 60000}


@dataclass
class ApiError:
    status: int = 401
    code: str = "invalid_api_key"
    message: str = (
        "Incorrect API key provided: mock-key. You can find your API key at https://platform.openai.com/account/api-keys."
    )
    type: str = "invalid_request_error"
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"retry-after": "7"} on a 429


@dataclass
class Hang:
    """Never answer: hold the request until the server stops."""


Turn = Text | ShellCall | ApiError | Hang
Script = Iterable[Turn] | Callable[[dict], Turn]

AUTH_401 = ApiError()


class MockOpenAIServer(ScriptedServer):
    """``with MockOpenAIServer([Text("hi")]) as mock: ... mock.url ...``"""

    thread_name = "mock-openai-server"

    def codex_args(self, *, retries: int = 0) -> list[str]:
        """``-c`` overrides making codex use this server as its model provider (Responses API),
        with the key from $MOCK_OPENAI_KEY and ``retries`` HTTP/stream retries."""
        return [
            "-c",
            'model_provider="mock"',
            "-c",
            'model_providers.mock.name="mock"',
            "-c",
            f'model_providers.mock.base_url="{self.url}/v1"',
            "-c",
            'model_providers.mock.wire_api="responses"',
            "-c",
            f'model_providers.mock.env_key="{ENV_KEY}"',
            "-c",
            f"model_providers.mock.request_max_retries={retries}",
            "-c",
            f"model_providers.mock.stream_max_retries={retries}",
        ]

    # ----------------------------------------------------------------- scripting
    def exhausted(self) -> Turn:
        return ApiError(500, "server_error", "mock script exhausted", "server_error")


# --------------------------------------------------------------------- reading requests


def input_items(body: Any) -> list[dict]:
    items = body.get("input") if isinstance(body, dict) else None
    return [i for i in items or [] if isinstance(i, dict)]


def prompt_text(body: Any) -> str:
    """The text of the user messages of a request, joined."""
    parts: list[str] = []
    for item in input_items(body):
        if item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        for block in content or []:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
    return "\n".join(parts)


def function_outputs(body: Any) -> list[dict]:
    """The ``function_call_output`` items (what codex sends back after running a tool)."""
    return [i for i in input_items(body) if i.get("type") in ("function_call_output", "custom_tool_call_output")]


def tool_names(body: Any) -> list[str]:
    tools = body.get("tools") if isinstance(body, dict) else None
    return [t.get("name") or t.get("type", "") for t in tools or [] if isinstance(t, dict)]


def subtask(body: Any) -> str | None:
    return subtask_in(prompt_text(body))


def _shell_tool(body: Any) -> dict | None:
    tools = body.get("tools") if isinstance(body, dict) else None
    for wanted in ("shell", "shell_command", "exec_command", "local_shell"):
        for tool in tools or []:
            if isinstance(tool, dict) and (tool.get("name") or tool.get("type")) == wanted:
                return tool
    return None


# --------------------------------------------------------------------- HTTP


class _Handler(LoggingHandler):
    server_mock: MockOpenAIServer
    request_id_header = "x-request-id"

    def _not_found(self, entry: Logged) -> None:
        entry.turn = "404"
        self._json(
            404,
            {
                "error": {
                    "message": f"Not found: {self.command} {self.path}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "not_found",
                }
            },
        )

    def do_GET(self):
        self._not_found(self._log(None))

    def do_POST(self):
        body = self._read_body()
        entry = self._log(body)
        if self.path.split("?", 1)[0] != "/v1/responses":
            self._not_found(entry)
            return
        mock = self.server_mock
        turn = mock._turn_for(body)
        entry.turn = type(turn).__name__
        if isinstance(turn, ApiError):
            entry.turn = f"ApiError {turn.status}"
            self._json(
                turn.status,
                {"error": {"message": turn.message, "type": turn.type, "param": None, "code": turn.code}},
                headers=turn.headers,
            )
            return
        if isinstance(turn, Hang):
            mock.hold()
            self.close_connection = True
            return
        model = (body.get("model") if isinstance(body, dict) else None) or MODEL_FALLBACK
        self._stream(self._item(turn, body), turn.usage, model)

    def _item(self, turn: Text | ShellCall, body: Any) -> dict:
        if isinstance(turn, Text):
            return {
                "type": "message",
                "id": self.server_mock.new_id("msg"),
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": turn.text, "annotations": []}],
            }
        tool = _shell_tool(body)
        name = turn.name or (tool.get("name") if tool else None) or "shell"
        if name == "shell_command":  # takes one command string
            args: dict[str, Any] = {
                "command": turn.command[-1] if turn.command[:2] == ["bash", "-lc"] else " ".join(turn.command)
            }
        elif name == "exec_command":
            args = {"cmd": turn.command[-1] if turn.command[:2] == ["bash", "-lc"] else " ".join(turn.command)}
        else:
            args = {"command": turn.command}
        if turn.workdir:
            args["workdir"] = turn.workdir
        args.update(turn.options)
        return {
            "type": "function_call",
            "id": self.server_mock.new_id("fc"),
            "status": "completed",
            "name": name,
            "arguments": json.dumps(args),
            "call_id": self.server_mock.new_id("call"),
        }

    def _event(self, data: dict) -> None:
        chunk = f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.flush()

    def _stream(self, item: dict, usage: dict[str, int], model: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", self.server_mock.new_id("req"))
        self.end_headers()
        inp, out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        response = {
            "id": self.server_mock.new_id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": model,
            "output": [item],
            "usage": {
                "input_tokens": inp,
                "input_tokens_details": {"cached_tokens": usage.get("cached_input_tokens", 0)},
                "output_tokens": out,
                "output_tokens_details": {"reasoning_tokens": usage.get("reasoning_tokens", 0)},
                "total_tokens": inp + out,
            },
        }
        self._event({"type": "response.created", "response": dict(response, status="in_progress", output=[], usage=None)})
        if item["type"] == "message":
            self._event(
                {"type": "response.output_item.added", "output_index": 0, "item": dict(item, status="in_progress", content=[])}
            )
            text = item["content"][0]["text"]
            half = len(text) // 2
            for piece in (text[:half], text[half:]):
                if piece:
                    self._event(
                        {
                            "type": "response.output_text.delta",
                            "item_id": item["id"],
                            "output_index": 0,
                            "content_index": 0,
                            "delta": piece,
                        }
                    )
        else:
            self._event(
                {"type": "response.output_item.added", "output_index": 0, "item": dict(item, status="in_progress", arguments="")}
            )
        self._event({"type": "response.output_item.done", "output_index": 0, "item": item})
        self._event({"type": "response.completed", "response": response})
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


MockOpenAIServer.handler = _Handler
