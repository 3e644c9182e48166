"""A pull request's review comments on lines, and the worker ``git blame`` names for each line.

GitHub: ``GET /repos/{o}/{r}/pulls/{n}/comments`` (``id``, ``user.login``, ``author_association``,
``path``, ``line`` of ``commit_id`` (None once the line is outdated: then ``original_line`` of
``original_commit_id``), ``body``). GitLab: ``GET /projects/{id}/merge_requests/{iid}/discussions``
(each ``notes[]``: ``id``, ``type`` DiffNote, ``author``, ``body``, ``resolved``, ``position``:
``new_path``, ``new_line``, ``head_sha``), and whether its author may write to the project, ``GET
/projects/{id}/members/all/{user_id}`` (``access_level`` 30, Developer, or more).

Whose comments are read: those of the repository's writers only (GitHub's ``author_association``
OWNER, MEMBER or COLLABORATOR; a GitLab member with Developer access or more), since anyone may
comment on a public pull request and a comment is sent to a worker; the token's own user is one
of them (the orchestrator writes no comment). A comment is data: its text is quoted in the
worker's feedback, capped at ``COMMENT_CHARS``, and nothing it says is run or taken as a path
outside ``git blame``'s argument after ``--``. A resolved GitLab discussion, a comment on a removed
line (no new line) and one that is not on a line are not read.

Which worker: the result's commits name their worker in an ``Orchestrator-Worker:`` trailer
(git/commits.py: the squashed commit of each worker's work and of each continue round), so the
commit ``git blame`` names for the line, read in the orchestrator's repository on objects only,
names the worker; a line of the job's base names none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from ..config import schema
from ..git.commits import WORKER_TRAILER
from ..git.invocation import run_git
from .forge import ForgeError, ForgeProject, _call, session
from .pr_checks import gitlab_base

COMMENT_CHARS = 2000  # what a worker is sent of a comment's text
GITHUB_WRITERS = {"OWNER", "MEMBER", "COLLABORATOR"}
GITLAB_DEVELOPER = 30  # GitLab's access level that may push


@dataclass(frozen=True)
class ReviewComment:
    id: str  # "github 123", "gitlab 45": the forge's id, remembered once answered
    author: str
    path: str
    line: int
    commit: str | None  # the commit the line is of (None: not said)
    body: str  # capped at COMMENT_CHARS


def read(project: ForgeProject, number: int, http: requests.Session | None = None) -> list[ReviewComment]:
    """The line comments of the repository's writers on pull request ``number``, oldest first."""
    http = http or session(retries=1)
    if project.forge == schema.PullRequestForge.GITHUB:
        return _github(http, project, number)
    if project.forge == schema.PullRequestForge.GITLAB:
        return _gitlab(http, project, number)
    raise ForgeError(f"unknown forge {project.forge!r}: github or gitlab")


def _cap(text: object) -> str:
    said = str(text or "").strip()
    return said if len(said) <= COMMENT_CHARS else said[: COMMENT_CHARS - 1] + "…"


def _line(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _github(http: requests.Session, project: ForgeProject, number: int) -> list[ReviewComment]:
    headers = {
        "Authorization": f"Bearer {project.token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    url = f"{project.api}/repos/{project.repo}/pulls/{number}/comments"
    found = _call(http, "GET", url, headers, params={"per_page": 100})
    if not isinstance(found, list) or not all(isinstance(c, dict) for c in found):
        raise ForgeError(f"GET {url}: the answer is not a list of comments")
    comments = []
    for c in found:
        if str(c.get("author_association") or "") not in GITHUB_WRITERS:
            continue
        line, commit = _line(c.get("line")), c.get("commit_id")
        if line is None:  # outdated: the line as it was when commented on
            line, commit = _line(c.get("original_line")), c.get("original_commit_id")
        path, user = c.get("path"), c.get("user")
        if line is None or not isinstance(path, str) or not path or c.get("id") is None:
            continue
        author = str(user.get("login") or "") if isinstance(user, dict) else ""
        comments.append(ReviewComment(f"github {c['id']}", author, path, line, _sha(commit), _cap(c.get("body"))))
    return comments


def _gitlab(http: requests.Session, project: ForgeProject, number: int) -> list[ReviewComment]:
    headers = {"PRIVATE-TOKEN": project.token}
    base = gitlab_base(project)
    url = f"{base}/merge_requests/{number}/discussions"
    found = _call(http, "GET", url, headers, params={"per_page": 100})
    if not isinstance(found, list) or not all(isinstance(d, dict) for d in found):
        raise ForgeError(f"GET {url}: the answer is not a list of discussions")
    writers: dict[int, bool] = {}
    comments = []
    for discussion in found:
        notes = discussion.get("notes")
        for note in notes if isinstance(notes, list) else []:
            if not isinstance(note, dict) or note.get("system") or note.get("resolved") or note.get("id") is None:
                continue
            position, author = note.get("position"), note.get("author")
            if not isinstance(position, dict) or not isinstance(author, dict):
                continue
            line, path = _line(position.get("new_line")), position.get("new_path")
            if line is None or not isinstance(path, str) or not path:
                continue
            user_id = author.get("id")
            if not isinstance(user_id, int):
                continue
            if user_id not in writers:
                writers[user_id] = _gitlab_writer(http, base, headers, user_id)
            if writers[user_id]:
                said = _cap(note.get("body"))
                comments.append(
                    ReviewComment(
                        f"gitlab {note['id']}",
                        str(author.get("username") or ""),
                        path,
                        line,
                        _sha(position.get("head_sha")),
                        said,
                    )
                )
    return comments


def _gitlab_writer(http: requests.Session, base: str, headers: dict[str, str], user_id: int) -> bool:
    """Whether the user may push to the project (a member, inherited too, with Developer or more)."""
    try:
        member = _call(http, "GET", f"{base}/members/all/{user_id}", headers)
    except ForgeError as exc:
        if " answered 404" in str(exc):
            return False  # not a member
        raise
    level = member.get("access_level") if isinstance(member, dict) else None
    return isinstance(level, int) and level >= GITLAB_DEVELOPER


def _sha(value: object) -> str | None:
    text = str(value or "")
    return text if len(text) in (40, 64) and all(ch in "0123456789abcdef" for ch in text) else None


def blamed_worker(repo: Path, commit: str, path: str, line: int) -> str | None:
    """The worker whose commit ``git blame`` names for ``line`` of ``path`` in ``commit`` (objects only,
    no textconv: the files are the workers'); None: a line of no worker's (the base's, or no such line)."""
    done = run_git(repo, "blame", "--porcelain", "--no-textconv", "-L", f"{line},{line}", commit, "--", path, check=False)
    first = done.stdout.split(maxsplit=1)
    if done.returncode != 0 or not first or len(first[0]) not in (40, 64):
        return None
    fmt = f"--format=%(trailers:key={WORKER_TRAILER},valueonly,separator=%x20)"
    said = run_git(repo, "log", "-1", fmt, first[0], "--", check=False).stdout.split()
    return said[-1] if said else None
