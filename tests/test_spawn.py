"""The spawn helper (``orchestrator-spawn`` = ``python -m orchestrator spawn``): on every worker's
PATH, standard library only, and the Python client's transport contract (errors, exit codes,
retries, long-poll through a server restart, no redirects)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.engine.core import SPAWN_BIN

from .conftest import ROOT

SPAWN = str(Path(SPAWN_BIN) / "orchestrator-spawn")


def helper(
    *args: str, url: str | None = None, key: str = "k", cwd: Path | None = None, timeout: float = 60, via: str = "script"
) -> subprocess.CompletedProcess[str]:
    """Run the helper as a worker would: the script (default) or ``python -m orchestrator spawn``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR", "PYTHONPATH"))}
    env["ORCHESTRATOR_PYTHON"] = sys.executable
    if url is not None:
        env.update(ORCHESTRATOR_API_URL=url, ORCHESTRATOR_API_KEY=key)
    argv = [SPAWN, *args] if via == "script" else [sys.executable, "-m", "orchestrator", "spawn", *args]
    if via != "script":
        env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class Stub:
    """A loopback HTTP server answering from ``answer(handler) -> (status, headers, body)``; logs requests."""

    def __init__(self, answer, port: int = 0):
        self.answer, self.requests = answer, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stub.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers, payload = stub.answer(self)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


DONE = {
    "job_id": "j1-c1",
    "status": "completed",
    "depth": 1,
    "progress": {"succeeded": 1, "total": 1},
    "results": {
        "workspace": "/ws",
        "tasks": [
            {
                "worker_id": "worker_1",
                "status": "success",
                "task": "A",
                "files_created": ["a.md"],
                "dir": "depth_1/worker_1",
                "output": "did A",
            }
        ],
    },
}


@pytest.mark.slow
def test_the_helpers_imports_are_the_standard_library_errors_protocol_and_wire_only(tmp_path):
    # Against a closed port it goes all the way through its HTTP path (exit 5 after its retries).
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env.update(PYTHONPATH=str(ROOT), ORCHESTRATOR_API_URL="http://127.0.0.1:9", ORCHESTRATOR_API_KEY="k")
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "orchestrator", "spawn", "A", "B"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 5, out.stderr[-2000:]
    modules = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    ours = sorted(m for m in modules if m.startswith("orchestrator"))
    assert ours == [
        "orchestrator",
        "orchestrator.api",  # the two folders' __init__ import nothing
        "orchestrator.api.calls",
        "orchestrator.cli",
        "orchestrator.cli.spawn",
        "orchestrator.errors",
        "orchestrator.protocol",
    ], ours  # __main__ runs, not imported
    assert not modules & {
        "requests",
        "urllib3",
        "http.client",
        "email.parser",
        "orchestrator.cli.main",
        "typing",
        "argparse",
        "shutil",
        "encodings.idna",
        "json",
        "socket",
        "re",
        "enum",
        "selectors",
    }, sorted(modules)


QUICK = [
    [],
    ["A"],
    ["A", "B"],
    ["--wait", "A", "B"],
    ["--wait", "--json", "A"],
    ["--request", "R", "A", "B"],
    ["--request=R x", "--workers", "3", "--timeout=2.5", "--wait-timeout", "1e2", "A"],
    ["--wait", "--", "A", "B"],
    ["--json", "--workers=0", "A b c"],
    ["--request", "only a request"],
]
FOR_ARGPARSE = [
    ["--help"],
    ["-h"],
    ["--wai", "A"],
    ["--wait=1", "A"],
    ["A", "--wait", "B"],
    ["--workers", "x", "A"],
    ["--request", "-x"],
    ["--timeout"],
    ["-A"],
    ["--", "A", "-B"],
    ["A", "--", "B"],
    ["--bogus", "A"],
    ["--request", "--wait"],
]


@pytest.mark.parametrize("argv", QUICK)
def test_quick_parse_gives_what_argparse_gives(argv):
    import argparse

    from orchestrator.cli.spawn import _arguments, quick_parse

    parser = argparse.ArgumentParser(prog="orchestrator-spawn")
    _arguments(parser)
    assert vars(quick_parse(argv)) == vars(parser.parse_args(argv))


@pytest.mark.parametrize("argv", FOR_ARGPARSE)
def test_anything_else_goes_to_argparse(argv):
    from orchestrator.cli.spawn import quick_parse

    assert quick_parse(argv) is None


def test_help_and_usage_errors_are_argparses():
    out = helper("--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: orchestrator-spawn") and "--wait-timeout" in out.stdout
    # argparse sizes help by the terminal without shutil.get_terminal_size (shutil's imports cost more)
    timed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "orchestrator", "spawn", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "60"},
    )
    assert "argparse" in timed.stderr and "shutil" not in timed.stderr
    assert max(len(line) for line in timed.stdout.splitlines()) <= 58
    out = helper("--workers", "many", "A")
    assert out.returncode == 2 and "argument --workers: invalid int value: 'many'" in out.stderr


DOCS = [
    {"request": 'h\u00e9llo "q" \\ \n\t', "config": {"max_workers": 3, "default_timeout": 2.5}, "tasks": ["a", "b"]},
    {"job_id": "x", "nested": [[], {}, [1, -2, 3.25e-7, True, False, None]], "emoji": "\U0001f600"},
    [],
    "text",
    0,
    -1.5,
    None,
]


@pytest.mark.parametrize("doc", DOCS)
def test_wire_json_is_jsons(doc):
    from orchestrator.api.calls import dumps, loads

    assert dumps(doc) == json.dumps(doc)
    assert loads(json.dumps(doc).encode()) == doc and loads("  " + json.dumps(doc, indent=2) + "\n") == doc


@pytest.mark.parametrize("text", ["", "   ", '{"a": ', '{"a": 1} x', "<html>", '{"a": 1}{"b": 2}', b"\xff\xfe"])
def test_wire_json_refuses_what_json_refuses(text):
    from orchestrator.api.calls import loads

    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads(text)


def test_wire_dumps_refuses_what_json_cannot_write():
    from orchestrator.api.calls import dumps

    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"a": object()})


def test_the_script_runs_from_any_folder_with_a_bare_path(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "ORCHESTRATOR_PYTHON": sys.executable, "HOME": str(tmp_path)}
    out = subprocess.run([SPAWN, "--help"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("usage: orchestrator-spawn"), out.stderr
    outside = subprocess.run([SPAWN, "A", "B"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert outside.returncode == 2 and "spawn runs inside a worker" in outside.stderr


@pytest.mark.parametrize("via", ["script", "module"])
@pytest.mark.slow
def test_an_unreachable_server_exits_5_with_the_clients_message(via):
    url = closed_port_url()
    out = helper("A", "B", url=url, via=via)
    assert out.returncode == 5
    assert out.stderr.startswith(
        f"error: Cannot reach the orchestrator API at {url} (ConnectionRefusedError on POST "
        f"{url}/api/v1/orchestrate after 4 attempts); start the server"
    ), out.stderr


def closed_port_url() -> str:
    """A 127.0.0.1 URL nobody listens on (bound, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_the_key_comes_from_the_file_orchestrator_api_key_file_names(tmp_path, monkeypatch):
    """Where /proc is shared (Landlock), a worker's key is a file (workers/environment.py's
    credential_by_file): the helper and the Python client send what it holds; without either, the
    helper says which variables a worker has."""
    (tmp_path / "key").write_text("from-the-file\n")
    stub = Stub(lambda h: (422, {}, {"error": "recursion_limit", "message": "Max recursion depth reached"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR", "PYTHONPATH"))}
    env.update(ORCHESTRATOR_PYTHON=sys.executable, ORCHESTRATOR_API_URL=stub.url)
    try:
        with_file = {**env, "ORCHESTRATOR_API_KEY_FILE": str(tmp_path / "key")}
        out = subprocess.run([SPAWN, "A"], env=with_file, capture_output=True, text=True, timeout=60)
        assert (out.returncode, out.stderr.strip()) == (1, "error: Max recursion depth reached")
        unreadable = {**env, "ORCHESTRATOR_API_KEY_FILE": str(tmp_path / "none")}
        out = subprocess.run([SPAWN, "A"], env=unreadable, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "spawn runs inside a worker" in out.stderr, out.stderr
        monkeypatch.delenv("ORCHESTRATOR_API_KEY", raising=False)
        monkeypatch.setenv("ORCHESTRATOR_API_URL", stub.url)
        monkeypatch.setenv("ORCHESTRATOR_API_KEY_FILE", str(tmp_path / "key"))
        from orchestrator.api.client import OrchestratorClient

        with pytest.raises(Exception, match="Max recursion depth reached"):
            OrchestratorClient(retries=0).orchestrate(request="A")
    finally:
        stub.close()
    assert [headers["X-API-Key"] for _, _, headers, _ in stub.requests] == ["from-the-file", "from-the-file"]


def test_errors_come_back_as_the_servers_with_its_exit_codes():
    answers = {"/api/v1/orchestrate": (422, {}, {"error": "recursion_limit", "message": "Max recursion depth reached"})}
    stub = Stub(lambda h: answers[h.path])
    try:
        out = helper("A", "B", url=stub.url)
        assert (out.returncode, out.stderr.strip()) == (1, "error: Max recursion depth reached")
        answers["/api/v1/orchestrate"] = (401, {}, {"error": "unauthorized", "message": "Invalid API key"})
        out = helper("A", "B", url=stub.url)
        assert (out.returncode, out.stderr.strip()) == (1, "error: Invalid API key")
        answers["/api/v1/orchestrate"] = (400, {}, b"<html>bad</html>")  # not the server's JSON: by status
        out = helper("A", "B", url=stub.url)
        assert (out.returncode, out.stderr.strip()) == (2, "error: <html>bad</html>")
    finally:
        stub.close()
    method, path, headers, body = stub.requests[0]
    assert (method, path, headers["X-API-Key"]) == ("POST", "/api/v1/orchestrate", "k")
    assert json.loads(body) == {"request": "A; B", "config": {}, "tasks": ["A", "B"]}


def test_the_sockets_client_makes_the_python_clients_calls():
    """SpawnClient is the one client over sockets: every call of OrchestratorClient that does not
    stream works through it (query strings, a text body in its charset, a 204, a POST without a body)."""
    from orchestrator.api.calls import SpawnClient

    answers = {
        "GET /api/v1/jobs?limit=5&offset=0&status=running": (200, {}, {"jobs": [], "total": 0}),
        "GET /api/v1/jobs/j%2F1/workers/w%201/log?tail=2": (200, {"Content-Type": "text/plain; charset=latin-1"}, b"caf\xe9"),
        "POST /api/v1/jobs/j1/cancel": (200, {}, {"job_id": "j1", "status": "cancelled"}),
        "DELETE /api/v1/jobs/j1?branches=all": (204, {}, b""),
    }
    stub = Stub(lambda h: answers[f"{h.command} {h.path}"])
    try:
        client = SpawnClient(stub.url, "k")
        assert client.list_jobs(status="running", limit=5) == {"jobs": [], "total": 0}
        assert client.logs("j/1", "w 1", tail=2) == "caf\u00e9"
        assert client.cancel("j1") == {"job_id": "j1", "status": "cancelled"}
        assert client.delete("j1", branches="all") is None
    finally:
        stub.close()
    cancel = next(headers for method, _, headers, _ in stub.requests if method == "POST")
    assert (cancel["X-API-Key"], cancel["Content-Length"]) == ("k", "0")


def test_a_redirect_is_not_followed_and_the_key_goes_nowhere_else():
    elsewhere = Stub(lambda h: (202, {}, {"job_id": "x", "depth": 1}))
    stub = Stub(lambda h: (307, {"Location": elsewhere.url + "/api/v1/orchestrate"}, b""))
    try:
        out = helper("A", url=stub.url)
    finally:
        stub.close()
        elsewhere.close()
    assert out.returncode == 1
    assert f"was redirected to '{elsewhere.url}/api/v1/orchestrate'; set ORCHESTRATOR_API_URL" in out.stderr
    assert elsewhere.requests == []


@pytest.mark.slow
def test_a_429_is_waited_out_as_retry_after_asks_then_given_up_with_the_limit_named():
    calls = []

    def answer(handler):
        calls.append(time.monotonic())
        if handler.path.startswith("/api/v1/orchestrate") and len(calls) <= 2:
            return (
                429,
                {"Retry-After": "0.5"},
                {"error": "rate_limited", "message": "slow down", "details": {"limit": "api.rate_limit_worker"}},
            )
        if handler.path.startswith("/api/v1/orchestrate"):
            return 202, {}, {"job_id": "j1-c1", "depth": 1}
        return 200, {}, DONE

    stub = Stub(answer)
    try:
        out = helper("--wait", "A", url=stub.url)
        assert out.returncode == 0, out.stderr
        assert calls[1] - calls[0] >= 0.45 and calls[2] - calls[1] >= 0.45
        assert "## Child job j1-c1: completed" in out.stdout and "did A" in out.stdout
        stub.requests.clear()
        stub.answer = lambda h: (
            429,
            {"Retry-After": "0.1"},
            {"error": "rate_limited", "message": "slow down", "details": {"limit": "api.rate_limit_worker"}},
        )
        out = helper("A", url=stub.url)
    finally:
        stub.close()
    assert out.returncode == 1 and len(stub.requests) == 4  # the first try and 3 waits
    assert (
        "POST /api/v1/orchestrate is rate limited by api.rate_limit_worker: still refused after 3 wait(s) totalling "
        "0.3s as Retry-After asked; gave up because rate_limit_retries=3 reached. Server: slow down"
    ) in out.stderr


@pytest.mark.slow
def test_the_wait_rides_out_a_server_restart():
    # POST is answered, then the server goes away mid-wait and comes back on the same port
    # (it re-adopts its workers): the helper keeps long-polling and prints the child's results.
    def first(handler):
        if handler.command == "POST":
            return 202, {}, {"job_id": "j1-c1", "depth": 1}
        threading.Thread(target=stub.close, daemon=True).start()
        return 200, {}, dict(DONE, status="running")

    stub = Stub(first)
    port = stub.server.server_address[1]
    proc = subprocess.Popen(
        [SPAWN, "--wait", "A"],
        env={**os.environ, "ORCHESTRATOR_PYTHON": sys.executable, "ORCHESTRATOR_API_URL": stub.url, "ORCHESTRATOR_API_KEY": "k"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(stub.requests) < 2:
            time.sleep(0.05)
        time.sleep(3.0)  # down for longer than one request's own retries (about 1.5 s): the wait loop rides it out
        assert proc.poll() is None, proc.communicate()
        back = Stub(lambda h: (200, {}, DONE), port=port)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            back.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "## Child job j1-c1: completed" in out
    assert [r[0] for r in back.requests] == ["GET"] and back.requests[0][1].startswith("/api/v1/jobs/j1-c1/wait?timeout=")


@pytest.mark.slow
def test_every_worker_kind_has_orchestrator_spawn_on_its_path(make_live):
    # A plain command worker (no AI CLI) runs the bare command name: the engine put it on PATH.
    script = 'if [ "$ORCHESTRATOR_DEPTH" = 0 ]; then orchestrator-spawn --wait "leaf A" "leaf B"; else echo "$1" > leaf.txt; fi'
    live = make_live(
        orchestrator={"worker": "command", "command": ["sh", "-c", script, "worker", "{task}"]}, workers={"max_retries": 0}
    )
    job_id = live.submit(request="big", tasks=["big"], config={"max_recursion_depth": 1}).json()["job_id"]
    doc = live.wait(job_id)
    assert doc["status"] == "completed", doc
    (worker,) = doc["results"]["tasks"]
    assert worker["status"] == "recursive_success"
    assert worker["output"].startswith(f"## Child job {job_id}-c1: completed")
    assert sorted(c["task"] for c in worker["child_results"]) == ["leaf A", "leaf B"]


def test_json_errors_are_one_object_on_stdout_with_the_exit_code_of_the_text():
    # Given a server that refuses a child job, and one that accepts it but whose job never ends
    refusing = Stub(lambda h: (422, {}, {"error": "recursion_limit", "message": "Max recursion depth reached"}))
    endless = Stub(
        lambda h: (
            (202, {}, {"job_id": "abc", "depth": 1}) if h.command == "POST" else (200, {}, {"job_id": "abc", "status": "running"})
        )
    )
    try:
        refused = helper("--json", "A", url=refusing.url)
        waited = helper("--wait", "--wait-timeout", "0.2", "--json", "A", url=endless.url)
    finally:
        refusing.close()
        endless.close()
    # Then each error is one JSON object on stdout, the server's code with its HTTP status, the text on stderr
    assert refused.returncode == 1 and refused.stderr.strip() == "error: Max recursion depth reached"
    assert json.loads(refused.stdout) == {"error": "recursion_limit", "message": "Max recursion depth reached", "status": 422}
    assert waited.returncode == 1, waited.stderr
    doc = json.loads(waited.stdout)
    assert doc["error"] == "timeout" and "gave up waiting: job abc is still running" in doc["message"]
    assert doc["details"] == {"job_id": "abc", "job_status": "running"}
    # and the helper's own refusals: a bad argument, and outside a worker
    bad = helper("--workers", "many", "--json", "A", url="http://127.0.0.1:9")
    assert bad.returncode == 2 and "argument --workers: invalid int value: 'many'" in bad.stderr
    assert json.loads(bad.stdout) == {"error": "invalid_argument", "message": "argument --workers: invalid int value: 'many'"}
    outside = helper("--json", "A")
    assert outside.returncode == 2 and json.loads(outside.stdout)["error"] == "invalid_request"


@pytest.mark.slow
def test_an_unreachable_server_with_json_is_server_unreachable_exit_5():
    url = closed_port_url()
    out = helper("--json", "A", url=url, via="module")
    assert out.returncode == 5 and out.stderr.startswith(f"error: Cannot reach the orchestrator API at {url}")
    doc = json.loads(out.stdout)
    assert doc["error"] == "server_unreachable" and doc["message"].startswith(f"Cannot reach the orchestrator API at {url}")
