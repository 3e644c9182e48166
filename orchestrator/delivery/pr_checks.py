"""A pull request's checks as the forge reports them for one pushed commit, with each failed
check's log tail, through each forge's documented REST endpoints (delivery/forge.py's calls).

GitHub: ``GET /repos/{o}/{r}/commits/{sha}/check-runs`` (``check_runs[]``: ``name``, ``status``
queued / in_progress / completed, ``conclusion``, ``output.title/summary/text``) and ``GET
/repos/{o}/{r}/commits/{sha}/status`` (the combined ``state`` failure / pending / success and its
``statuses[]``: ``context``, ``state``, ``description``); a failed check run's log is its job's
(``GET .../actions/jobs/{id}/logs``, a redirect to the text) when the forge has one, else its output.
GitLab: ``GET /projects/{id}/merge_requests/{iid}/pipelines`` (the newest one of the commit),
``GET .../pipelines/{pid}/jobs`` and ``GET .../jobs/{jid}/trace`` (text). A commit with no check
yet is pending: the forge has not started them. Whatever the forge answers that cannot be read
(an error status, no JSON, JSON of another shape) is a ``ForgeError`` naming the call; the token is
in a header only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from ..config import Settings, schema
from ..config.keys import StrEnum
from ..models import JobRecord
from ..outcomes import ChecksRecord, ChecksState, PublishRecord
from ..workspace.layout import Workspace
from .forge import TIMEOUT, ForgeError, ForgeProject, _call, session

LOG_TAIL_CHARS = 4000  # what a worker is sent of a failed check's log: its end, where the failure is
LOGS_FETCHED = 3  # failed checks whose logs are read per reading (the rest: their names and outputs)
_PASSING = {"success", "neutral", "skipped"}  # a check run's conclusions that do not block (GitHub's docs)
WATCHED_DIR = "checks_watched"  # in the workspace: a file per root whose checks are watched (read at start)
_GITLAB_RUNNING = {"created", "waiting_for_resource", "preparing", "pending", "running", "scheduled", "manual"}


def marker(workspace: Workspace, root_id: str) -> Path:
    return workspace.root / WATCHED_DIR / root_id


def begin(job: JobRecord, found: PublishRecord, settings: Settings, workspace: Workspace, now: float) -> None:
    """Inside the lock, once a root's result was pushed and its pull request opened or updated:
    watch the pushed commit's checks (git.check_rounds above 0). The rounds so far are kept (the
    bound is per job), and the review comments answered; a round waiting for its push names the commit pushed after it."""
    if settings.git.check_rounds <= 0 or not found.pushed or found.pull_request is None or not found.commit:
        return
    old = job.checks
    if old is not None and old.commit == found.commit:
        return  # the same commit pushed again: its watch (or its verdict) stands
    rounds = list(old.rounds) if old is not None else []
    if rounds and rounds[-1].pushed is None:
        rounds[-1].pushed = found.commit
    answered = list(old.answered) if old is not None else []  # review comments read once stay read
    job.checks = ChecksRecord(ChecksState.WATCHING.value, found.commit, now, settings.git.check_rounds, rounds, answered=answered)
    path = marker(workspace, job.root_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


@dataclass(frozen=True)
class FailedCheck:
    name: str
    log_tail: str  # the end of its log (or what it reported when it has no log)


class ReadingState(StrEnum):
    """How one reading of a commit's checks stands (``ChecksReading.state``)."""

    PASSED = "passed"  # all finished, none failed
    FAILED = "failed"  # one failed; those still running do not change that
    PENDING = "pending"  # none failed, some not finished or none yet


@dataclass(frozen=True)
class ChecksReading:
    """The checks of one commit: ``state`` passed (all finished, none failed), failed (one failed;
    those still running do not change that) or pending (none failed, some not finished or none yet)."""

    state: ReadingState
    total: int
    failed: tuple[FailedCheck, ...] = ()
    pending: tuple[str, ...] = ()


def read(project: ForgeProject, commit: str, number: int | None, http: requests.Session | None = None) -> ChecksReading:
    """The checks of ``commit`` on the pull request numbered ``number`` (GitLab needs it; None: the
    commit's own pipelines, ``GET /projects/{id}/pipelines?sha=``, for a commit pushed to a branch
    of no merge request, such as a bisection's candidate)."""
    http = http or session(retries=1)  # the watch polls again anyway: its reading is not held up by retries
    if project.forge == schema.PullRequestForge.GITHUB:
        return _github(http, project, commit)
    if project.forge == schema.PullRequestForge.GITLAB:
        return _gitlab(http, project, commit, number)
    raise ForgeError(f"unknown forge {project.forge!r}: github or gitlab")


def gitlab_base(project: ForgeProject) -> str:
    repo = project.repo
    return f"{project.api}/projects/{quote(repo, safe='') if not repo.isdigit() else repo}"


def _verdict(total: int, failed: list[FailedCheck], pending: list[str]) -> ChecksReading:
    state = ReadingState.FAILED if failed else ReadingState.PENDING if pending or total == 0 else ReadingState.PASSED
    return ChecksReading(state, total, tuple(failed), tuple(pending))


def _github(http: requests.Session, project: ForgeProject, commit: str) -> ChecksReading:
    headers = {
        "Authorization": f"Bearer {project.token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    base = f"{project.api}/repos/{project.repo}"
    runs_url = f"{base}/commits/{commit}/check-runs"
    runs = _field(_call(http, "GET", runs_url, headers, params={"per_page": 100}), "check_runs", list, runs_url)
    status_url = f"{base}/commits/{commit}/status"
    statuses = _field(_call(http, "GET", status_url, headers), "statuses", list, status_url)
    failed: list[FailedCheck] = []
    pending: list[str] = []
    for run in runs:
        if not isinstance(run, dict):
            raise ForgeError(f"GET {runs_url}: a check run is not an object")
        name = str(run.get("name") or f"check run {run.get('id')}")
        if run.get("status") != "completed":
            pending.append(name)
        elif run.get("conclusion") not in _PASSING:
            log = _github_log(http, base, headers, run) if len(failed) < LOGS_FETCHED else ""
            failed.append(FailedCheck(name, _tail(log or _output_of(run))))
    for status in statuses:
        if not isinstance(status, dict):
            raise ForgeError(f"GET {status_url}: a status is not an object")
        name = str(status.get("context") or "status")
        if status.get("state") == "pending":
            pending.append(name)
        elif status.get("state") in ("failure", "error"):
            failed.append(FailedCheck(name, _tail(f"{status.get('state')}: {status.get('description') or ''}")))
    return _verdict(len(runs) + len(statuses), failed, pending)


def _github_log(http: requests.Session, base: str, headers: dict[str, str], run: dict[str, Any]) -> str:
    """A GitHub Actions check run's job log (its id is the job's); "" when the forge has none (a
    check run of another app) or will not give it: its output stands for it then."""
    try:
        answer = http.get(f"{base}/actions/jobs/{run.get('id')}/logs", headers=headers, timeout=TIMEOUT)
    except requests.RequestException:
        return ""
    return answer.text if answer.status_code == 200 else ""


def _output_of(run: dict[str, Any]) -> str:
    found = run.get("output")
    output: dict[str, Any] = found if isinstance(found, dict) else {}
    parts = [str(output.get(k) or "") for k in ("title", "summary", "text")]
    said = "\n".join(p for p in parts if p)
    return said or f"{run.get('conclusion')}"


def _gitlab(http: requests.Session, project: ForgeProject, commit: str, number: int | None) -> ChecksReading:
    headers = {"PRIVATE-TOKEN": project.token}
    base = gitlab_base(project)
    if number is None:
        pipes_url = f"{base}/pipelines"
        pipelines = _call(http, "GET", pipes_url, headers, params={"sha": commit})
    else:
        pipes_url = f"{base}/merge_requests/{number}/pipelines"
        pipelines = _call(http, "GET", pipes_url, headers)
    if not isinstance(pipelines, list) or not all(isinstance(p, dict) for p in pipelines):
        raise ForgeError(f"GET {pipes_url}: the answer is not a list of pipelines")
    mine = [p for p in pipelines if p.get("sha") == commit]
    if not mine:
        return _verdict(0, [], [])
    pipeline = max(mine, key=lambda p: int(p.get("id") or 0))
    if pipeline.get("status") in _GITLAB_RUNNING:
        return _verdict(1, [], [f"pipeline {pipeline.get('id')}"])
    if pipeline.get("status") != "failed":
        failed = (
            []
            if pipeline.get("status") in ("success", "skipped")
            else [FailedCheck(f"pipeline {pipeline.get('id')}", str(pipeline.get("status")))]
        )
        return _verdict(1, failed, [])
    jobs_url = f"{base}/pipelines/{pipeline.get('id')}/jobs"
    jobs = _call(http, "GET", jobs_url, headers)
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        raise ForgeError(f"GET {jobs_url}: the answer is not a list of jobs")
    failed = []
    for job in jobs:
        if job.get("status") == "failed" and not job.get("allow_failure"):
            trace = _text(http, f"{base}/jobs/{job.get('id')}/trace", headers) if len(failed) < LOGS_FETCHED else ""
            failed.append(FailedCheck(str(job.get("name") or f"job {job.get('id')}"), _tail(trace or "failed")))
    if not failed:
        failed.append(FailedCheck(f"pipeline {pipeline.get('id')}", "failed"))
    return _verdict(len(jobs), failed, [])


def _text(http: requests.Session, url: str, headers: dict[str, str]) -> str:
    try:
        answer = http.get(url, headers=headers, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise ForgeError(f"GET {url}: {type(exc).__name__}") from None
    if answer.status_code >= 400:
        raise ForgeError(f"GET {url} answered {answer.status_code}")
    return answer.text


def _field(data: Any, name: str, kind: type, url: str) -> Any:
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, kind):
        raise ForgeError(f"GET {url}: the answer has no {name!r} {kind.__name__}")
    return value


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= LOG_TAIL_CHARS else "…" + text[-LOG_TAIL_CHARS:]
