"""A draft pull request on GitHub or a draft merge request on GitLab, through each forge's
documented REST endpoints (requests, with urllib3's retries of 429 and 5xx answers).

GitHub: ``POST /repos/{owner}/{repo}/pulls`` (``draft: true``), ``PATCH .../pulls/{number}``, and
``GET .../pulls?head=OWNER:BRANCH`` to find one opened before. GitLab: ``POST
/projects/{id}/merge_requests`` (a ``Draft:`` title), ``PUT .../merge_requests/{iid}``, and ``GET
.../merge_requests?source_branch=BRANCH&state=opened``. The token goes in a header only; no error
message, record or log line carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..config import schema

DEFAULT_API = {"github": "https://api.github.com", "gitlab": "https://gitlab.com/api/v4"}
TIMEOUT = 30.0


class ForgeError(Exception):
    """The forge refused or could not be reached: the message names the call and its answer."""


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    action: str  # "opened" or "updated"


def session(retries: int = 3) -> requests.Session:
    s = requests.Session()
    retry = Retry(
        total=retries,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # a create retried after a 5xx finds the first one (422 / 409), never a second
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.mount("https://", HTTPAdapter(max_retries=retry))
    return s


@dataclass(frozen=True)
class ForgeProject:
    """Where a pull request goes: the forge, its API (empty: the public one), the project
    (OWNER/NAME on GitHub, its path or id on GitLab) and the token that may write there."""

    forge: str  # git.pull_request: a shipped forge's name, a plugin's name or dotted path
    api_url: str
    repo: str
    token: str = field(repr=False)

    @property
    def api(self) -> str:
        return (self.api_url or DEFAULT_API.get(self.forge, "")).rstrip("/")


@dataclass(frozen=True)
class Proposal:
    """A draft pull request from ``head`` into ``base``; ``number``: the one to update (None: the
    one found open for ``head``, or a new one)."""

    head: str
    base: str
    title: str
    body: str
    number: int | None = None


def propose(project: ForgeProject, proposal: Proposal, http: requests.Session | None = None) -> PullRequest:
    """Open a draft pull request, or update the one numbered ``proposal.number`` (or found open for
    its head) with this title and body."""
    http = http or session()
    if project.forge == schema.PullRequestForge.GITHUB:
        return _github(http, project, proposal)
    if project.forge == schema.PullRequestForge.GITLAB:
        return _gitlab(http, project, proposal)
    raise ForgeError(f"unknown forge {project.forge!r}: github or gitlab")


def _call(http: requests.Session, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Any:
    shown = url.split("?", 1)[0]
    try:
        answer = http.request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise ForgeError(f"{method} {shown}: {type(exc).__name__}: {_first_line(str(exc))}") from None
    if answer.status_code >= 400:
        raise ForgeError(f"{method} {shown} answered {answer.status_code}: {_message(answer)}")
    try:
        return answer.json()
    except ValueError:
        raise ForgeError(f"{method} {shown} answered {answer.status_code} without JSON") from None


def _github(http: requests.Session, project: ForgeProject, p: Proposal) -> PullRequest:
    headers = {
        "Authorization": f"Bearer {project.token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    pulls = f"{project.api}/repos/{project.repo}/pulls"
    number = p.number
    if number is None:
        owner = project.repo.split("/", 1)[0]
        found = _call(http, "GET", pulls, headers, params={"head": f"{owner}:{p.head}", "state": "open"})
        number = found[0]["number"] if isinstance(found, list) and found else None
    if number is not None:
        done = _call(http, "PATCH", f"{pulls}/{number}", headers, json={"title": p.title, "body": p.body})
        return PullRequest(int(done["number"]), str(done.get("html_url") or ""), "updated")
    made = {"title": p.title, "head": p.head, "base": p.base, "body": p.body, "draft": True}
    done = _call(http, "POST", pulls, headers, json=made)
    return PullRequest(int(done["number"]), str(done.get("html_url") or ""), "opened")


def _gitlab(http: requests.Session, project: ForgeProject, p: Proposal) -> PullRequest:
    headers = {"PRIVATE-TOKEN": project.token}
    repo = project.repo
    requests_url = f"{project.api}/projects/{quote(repo, safe='') if not repo.isdigit() else repo}/merge_requests"
    draft = p.title if p.title.startswith("Draft:") else f"Draft: {p.title}"
    number = p.number
    if number is None:
        found = _call(http, "GET", requests_url, headers, params={"source_branch": p.head, "state": "opened"})
        number = found[0]["iid"] if isinstance(found, list) and found else None
    if number is not None:
        done = _call(http, "PUT", f"{requests_url}/{number}", headers, json={"title": draft, "description": p.body})
        return PullRequest(int(done["iid"]), str(done.get("web_url") or ""), "updated")
    made = {"source_branch": p.head, "target_branch": p.base, "title": draft, "description": p.body}
    done = _call(http, "POST", requests_url, headers, json=made)
    return PullRequest(int(done["iid"]), str(done.get("web_url") or ""), "opened")


def _message(answer: requests.Response) -> str:
    try:
        data = answer.json()
    except ValueError:
        return _first_line(answer.text) or answer.reason
    if isinstance(data, dict):
        parts = [str(data.get("message") or data.get("error") or "")]
        errors = data.get("errors")
        if isinstance(errors, list):
            parts += [str(e.get("message") if isinstance(e, dict) else e) for e in errors[:3]]
        return "; ".join(p for p in parts if p) or answer.reason
    return answer.reason


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]
