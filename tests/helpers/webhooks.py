"""Helpers of tests/test_webhooks.py, used by other test files too."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SECRET = "test-secret-0123456789abcdef"


class Receiver:
    """A webhook receiver: records every POST (headers, raw body, time); ``answers`` are the
    statuses it gives in turn (then 200); ``hang`` makes it hold each request until released."""

    def __init__(self, answers=(), hang=False, port=0):
        self.requests: list[dict] = []
        self.answers = list(answers)
        self.release = threading.Event()
        if not hang:
            self.release.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append({"headers": dict(self.headers), "body": body, "at": time.time()})
                outer.release.wait(30)
                code = outer.answers.pop(0) if outer.answers else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def types(self):
        return [json.loads(r["body"])["type"] for r in self.requests]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made = []

    def factory(**kwargs):
        made.append(Receiver(**kwargs))
        return made[-1]

    yield factory
    for receiver in made:
        receiver.close()


def endpoint(receiver, events=("*",), **extra):
    return {"url": receiver.url, "events": list(events), "secret": SECRET, **extra}


def hooks(*endpoints, **settings):
    return {"webhooks": {"endpoints": list(endpoints), "backoff": 0.05, "backoff_max": 0.2, **settings}}
