"""A loopback stand-in for the forges' pull-request endpoints, as their REST docs give them.

GitHub: ``GET /repos/{o}/{r}/pulls?head=OWNER:BRANCH&state=open`` (a list), ``POST
/repos/{o}/{r}/pulls`` (201, ``number``, ``html_url``; 422 "A pull request already exists" for a
second one from the same head), ``PATCH /repos/{o}/{r}/pulls/{n}``. GitLab: ``GET
/projects/{id}/merge_requests?source_branch=B&state=opened``, ``POST`` (201, ``iid``, ``web_url``),
``PUT .../merge_requests/{iid}``. ``fail`` makes the next calls answer an error instead.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: Any


@dataclass
class MockForge:
    calls: list[Call] = field(default_factory=list)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    fail: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (status, body) answered next, in turn
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, call: Call) -> tuple[int, Any]:
        self.calls.append(call)
        if self.fail:
            return self.fail.pop(0)
        parts = [unquote(p) for p in call.path.strip("/").split("/")]
        github = parts[0] == "repos"
        key_number, key_url, head_key = ("number", "html_url", "head") if github else ("iid", "web_url", "source_branch")
        if (github and len(parts) == 4) or (not github and len(parts) == 3):  # the collection
            if call.method == "GET":
                head = (call.query.get(head_key) or [""])[0].split(":")[-1]
                return 200, [p for p in self.pulls.values() if p["head"] == head and p["open"]]
            if call.method == "POST":
                head = call.body["head"] if github else call.body["source_branch"]
                if any(p["head"] == head and p["open"] for p in self.pulls.values()):
                    return 422, {"message": "Validation Failed", "errors": [{"message": "A pull request already exists"}]}
                number = len(self.pulls) + 1
                self.pulls[number] = {
                    key_number: number,
                    key_url: f"https://forge.example/{'pull' if github else 'merge_requests'}/{number}",
                    "head": head,
                    "base": call.body["base"] if github else call.body["target_branch"],
                    "title": call.body["title"],
                    "body": call.body.get("body") or call.body.get("description"),
                    "draft": call.body.get("draft", str(call.body["title"]).startswith("Draft:")),
                    "open": True,
                }
                return 201, self.pulls[number]
        if call.method in ("PATCH", "PUT"):
            number = int(parts[-1])
            if number not in self.pulls:
                return 404, {"message": "Not Found"}
            self.pulls[number].update(title=call.body["title"], body=call.body.get("body") or call.body.get("description"))
            return 200, self.pulls[number]
        return 404, {"message": "Not Found"}


def start() -> MockForge:
    forge = MockForge()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            call = Call(self.command, split.path, parse_qs(split.query), {k.lower(): v for k, v in self.headers.items()}, body)
            status, answer = forge.answer(call)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    forge.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=forge.server.serve_forever, daemon=True).start()
    return forge


def stop(forge: MockForge) -> None:
    if forge.server is not None:
        forge.server.shutdown()
        forge.server.server_close()
