"""What the loopback model-API mocks share: the request log, the threaded server and its lifecycle.

Each mock (``mock_model_server`` for the Anthropic Messages API, ``mock_openai_server`` for
the OpenAI Responses API) subclasses ``ScriptedServer`` with its own request handler. A
server binds 127.0.0.1 only and stops itself after ``lifetime`` seconds.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Logged:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    turn: str = ""  # what the server answered with (class name, or "side"/"404"/...)
    at: float = field(default_factory=time.monotonic)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a held (Hang) request never blocks server_close()

    def handle_error(self, request, client_address):
        # A CLI killed mid-answer (the timeout tests do that) breaks the pipe: not worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


_SUBTASK = re.compile(r"# Your subtask\s*\n\s*\n(.+?)\n")


def subtask_in(text: str) -> str | None:
    """The subtask of an orchestrator worker prompt (the line under "# Your subtask"), if any."""
    found = _SUBTASK.search(text)
    return found.group(1).strip() if found else None


class LoggingHandler(BaseHTTPRequestHandler):
    """Request plumbing the mocks share: read a JSON body, log the request, answer JSON."""

    server_mock: ScriptedServer
    protocol_version = "HTTP/1.1"
    request_id_header = "request-id"  # the API's own name for it

    def log_message(self, format, *args):  # noqa: A002 - quiet; the mock keeps its own log
        pass

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        if (self.headers.get("Content-Encoding") or "").lower() == "zstd":
            return raw  # not decoded; the CLIs do not compress for a custom endpoint
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _log(self, body: Any) -> Logged:
        entry = Logged(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        with self.server_mock._lock:
            self.server_mock.requests.append(entry)
        return entry

    def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header(self.request_id_header, self.server_mock.new_id("req"))
        self.end_headers()
        self.wfile.write(data)


class ScriptedServer:
    """Plays ``script`` (a list of turns, or a function choosing one per request)."""

    handler: type[BaseHTTPRequestHandler]  # set by the subclass; it reads ``server_mock``
    thread_name = "mock-server"

    def __init__(self, script: Any = (), *, lifetime: float = 120.0, default: Any = None):
        self._choose = script if callable(script) else None
        self._turns = [] if callable(script) else list(script)
        self._next = 0
        # what to answer once a list script runs out (None: a 500 error, which the test will notice)
        self.default = default
        self.lifetime = lifetime
        self.requests: list[Logged] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    def start(self):
        handler = type("Handler", (self.handler,), {"server_mock": self})
        self._server = QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()  # releases every Hang
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def hold(self) -> None:
        """Hold a request until the server stops. Should the lifetime's timer run late (a loaded
        machine), the held request stops the server itself: it never ends before the server."""
        if not self._stopped.wait(self.lifetime):
            self.stop()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_mock{next(self._ids):06d}"

    # What a request logged outside the script is marked with (side requests, 404s...), left out
    # of ``conversation``.
    unscripted: tuple[str, ...] = ("", "404")

    @property
    def paths(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    @property
    def conversation(self) -> list[Logged]:
        """The requests that were answered from the script."""
        return [r for r in self.requests if r.turn not in self.unscripted]

    def summary(self) -> str:
        return "\n".join(f"{r.method} {r.path} -> {r.turn}" for r in self.requests)

    def exhausted(self) -> Any:
        """The answer once a list script has run out and no ``default`` was given."""
        raise NotImplementedError

    def _turn_for(self, body: Any) -> Any:
        """The next turn: the script function's choice, else the list's next, else the default."""
        if self._choose is not None:
            return self._choose(body)
        with self._lock:
            if self._next < len(self._turns):
                turn = self._turns[self._next]
                self._next += 1
                return turn
        return self.default if self.default is not None else self.exhausted()
