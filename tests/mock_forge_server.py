"""A loopback stand-in for the forges' pull-request endpoints, as their REST docs give them.

GitHub: ``GET /repos/{o}/{r}/pulls?head=OWNER:BRANCH&state=open`` (a list), ``POST
/repos/{o}/{r}/pulls`` (201, ``number``, ``html_url``; 422 "A pull request already exists" for a
second one from the same head), ``PATCH /repos/{o}/{r}/pulls/{n}``. GitLab: ``GET
/projects/{id}/merge_requests?source_branch=B&state=opened``, ``POST`` (201, ``iid``, ``web_url``),
``PUT .../merge_requests/{iid}``. ``fail`` makes the next calls answer an error instead.

A pull request's checks, for the commit a test's ``checker`` judges (a list of ``Check``; it reads
the pushed commit, so a re-push is judged again): GitHub's ``GET
/repos/{o}/{r}/commits/{sha}/check-runs`` (``total_count``, ``check_runs[]`` with ``id``, ``name``,
``head_sha``, ``status`` queued / in_progress / completed, ``conclusion``, ``output``), ``GET
.../commits/{sha}/status`` (the combined ``state`` and ``statuses[]``, from ``statuses``), and a
check run's job log ``GET .../actions/jobs/{id}/logs`` (302 to the text, as GitHub answers it).
GitLab's ``GET /projects/{id}/merge_requests/{iid}/pipelines`` (one pipeline per commit ``head``
returned, newest first), ``GET .../pipelines/{pid}/jobs`` and ``GET .../jobs/{jid}/trace`` (text).
``garbage`` makes the next check readings answer 200 with a body that is not JSON.

A commit pushed to a branch of no pull request (a bisection's candidate): GitHub's check runs and
status are by commit already; GitLab's ``GET /projects/{id}/pipelines?sha=`` lists the pipelines of
a commit, one made for each commit ``pushed`` returns (what the remote's branches hold) as it is
first asked for. Review comments: GitHub's ``GET /repos/{o}/{r}/pulls/{n}/comments`` answers
``comments``; GitLab's ``GET .../merge_requests/{iid}/discussions`` answers ``discussions`` and
``GET /projects/{id}/members/all/{user_id}`` the member of ``members`` (user id -> access level; 404
for another).
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable
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


@dataclass(frozen=True)
class Check:
    name: str
    conclusion: str | None  # success, failure, ...; None: not finished (in_progress)
    log: str = ""


@dataclass(frozen=True)
class Raw:
    """An answer that is not JSON: a text body, or a redirect (``location``)."""

    status: int
    text: str = ""
    location: str | None = None


def _pipeline_status(checks: list[Check]) -> str:
    if any(c.conclusion is None for c in checks):
        return "running"
    return "failed" if any(c.conclusion not in ("success", "neutral", "skipped") for c in checks) else "success"


@dataclass
class MockForge:
    calls: list[Call] = field(default_factory=list)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    fail: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (status, body) answered next, in turn
    server: ThreadingHTTPServer | None = None
    checker: Callable[[str], list[Check]] = lambda sha: []  # the check runs (or jobs) of a commit
    statuses: Callable[[str], list[dict[str, Any]]] = lambda sha: []  # GitHub commit statuses of a commit
    head: Callable[[], str | None] = lambda: None  # the merge request's head commit now (GitLab)
    garbage: int = 0  # check readings to answer with a body that is not JSON
    pipelines: list[str] = field(default_factory=list)  # GitLab: the commits a pipeline ran for, by id - 1
    logs: dict[int, str] = field(default_factory=dict)  # a check run's or job's id -> its log
    pushed: Callable[[], list[str]] = lambda: []  # GitLab: the commits on the remote's branches (pipelines run for them)
    comments: list[dict[str, Any]] = field(default_factory=list)  # GitHub review comments of every pull request
    discussions: list[dict[str, Any]] = field(default_factory=list)  # GitLab discussions of every merge request
    members: dict[int, int] = field(default_factory=dict)  # GitLab user id -> access level

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, call: Call) -> tuple[int, Any]:
        self.calls.append(call)
        if self.fail:
            return self.fail.pop(0)
        parts = [unquote(p) for p in call.path.strip("/").split("/")]
        checks = self._checks(call, parts)
        if checks is not None:
            return checks
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

    def _checks(self, call: Call, parts: list[str]) -> tuple[int, Any] | None:
        """The check endpoints' answer, or None for another path."""
        if call.method != "GET":
            return None
        if parts[0] == "_logs":
            return 200, Raw(200, self.logs.get(int(parts[1]), ""))
        reading = (parts[0] == "repos" and len(parts) == 6 and parts[3] == "commits") or (
            parts[0] == "projects" and len(parts) >= 4 and parts[2] in ("merge_requests", "pipelines")
        )
        if reading and self.garbage:
            self.garbage -= 1
            return 200, Raw(200, "<html>502 Bad Gateway</html>")
        if parts[0] == "repos" and len(parts) == 6 and parts[3] == "pulls" and parts[5] == "comments":
            return 200, list(self.comments)
        if parts[0] == "projects" and len(parts) == 5 and parts[2] == "merge_requests" and parts[4] == "discussions":
            return 200, list(self.discussions)
        if parts[0] == "projects" and len(parts) == 5 and parts[2:4] == ["members", "all"]:
            level = self.members.get(int(parts[4]))
            return (
                (200, {"id": int(parts[4]), "access_level": level}) if level is not None else (404, {"message": "404 Not found"})
            )
        if parts[0] == "projects" and len(parts) == 3 and parts[2] == "pipelines":
            sha = (call.query.get("sha") or [""])[0]
            if sha in self.pushed() and sha not in self.pipelines:
                self.pipelines.append(sha)
            listed = [
                {"id": i + 1, "iid": i + 1, "sha": made, "ref": "branch", "status": _pipeline_status(self.checker(made))}
                for i, made in enumerate(self.pipelines)
                if made == sha
            ]
            return 200, listed[::-1]
        if parts[0] == "repos" and len(parts) == 6 and parts[3] == "commits" and parts[5] == "check-runs":
            sha = parts[4]
            runs = []
            for check in self.checker(sha):
                run_id = zlib.crc32(f"{sha}:{check.name}".encode())
                self.logs[run_id] = check.log
                runs.append(
                    {
                        "id": run_id,
                        "name": check.name,
                        "head_sha": sha,
                        "status": "in_progress" if check.conclusion is None else "completed",
                        "conclusion": check.conclusion,
                        "output": {"title": f"{check.name}: {check.conclusion}", "summary": "", "text": None},
                    }
                )
            return 200, {"total_count": len(runs), "check_runs": runs}
        if parts[0] == "repos" and len(parts) == 6 and parts[3] == "commits" and parts[5] == "status":
            statuses = self.statuses(parts[4])
            states = {s["state"] for s in statuses}
            state = (
                "failure" if states & {"failure", "error"} else "pending" if "pending" in states or not statuses else "success"
            )
            return 200, {"state": state, "sha": parts[4], "total_count": len(statuses), "statuses": statuses}
        if parts[0] == "repos" and len(parts) == 7 and parts[3:5] == ["actions", "jobs"] and parts[6] == "logs":
            if int(parts[5]) not in self.logs:
                return 404, {"message": "Not Found"}
            return 302, Raw(302, location=f"{self.url}/_logs/{parts[5]}")
        if parts[0] == "projects" and len(parts) == 5 and parts[2] == "merge_requests" and parts[4] == "pipelines":
            head = self.head()
            if head and head not in self.pipelines:
                self.pipelines.append(head)
            listed = [
                {"id": i + 1, "iid": i + 1, "sha": sha, "ref": "branch", "status": _pipeline_status(self.checker(sha))}
                for i, sha in enumerate(self.pipelines)
            ]
            return 200, listed[::-1]
        if parts[0] == "projects" and len(parts) == 5 and parts[2] == "pipelines" and parts[4] == "jobs":
            pid = int(parts[3])
            if not 0 < pid <= len(self.pipelines):
                return 404, {"message": "404 Not found"}
            jobs = []
            for i, check in enumerate(self.checker(self.pipelines[pid - 1])):
                job_id = pid * 1000 + i
                self.logs[job_id] = check.log
                status = "running" if check.conclusion is None else "success" if check.conclusion == "success" else "failed"
                jobs.append({"id": job_id, "name": check.name, "stage": "test", "status": status, "allow_failure": False})
            return 200, jobs
        if parts[0] == "projects" and len(parts) == 5 and parts[2] == "jobs" and parts[4] == "trace":
            job_id = int(parts[3])
            return (200, Raw(200, self.logs[job_id])) if job_id in self.logs else (404, {"message": "404 Not found"})
        return None


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
            self.send_response(status)
            if isinstance(answer, Raw):
                data = answer.text.encode()
                self.send_header("Content-Type", "text/plain")
                if answer.location:
                    self.send_header("Location", answer.location)
            else:
                data = json.dumps(answer).encode()
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
