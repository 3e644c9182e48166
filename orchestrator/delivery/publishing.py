"""Publishing a root job's result: push its result branch to ``git.push``'s remote, then open (or
update) a draft pull request on ``git.pull_request``'s forge with the run's summary as its body.

It runs when a root job lands its result and after each ``merge``, and again on ``publish``. It
never raises and never fails the job: what happened (pushed, the pull request opened or updated,
or why not) is the job's ``publish`` record. The push goes to the remote's push URL (by name,
git would also move the user's remote-tracking ref), ``--force-with-lease`` on the commit this job
pushed last (none: the branch must not exist on the remote yet), so it never overwrites work it
did not push, and it runs no hook. Credentials in a remote's URL never reach a message. Running it
again is safe (a server killed while publishing does, engine/results.py): the same commit pushed
again changes nothing, and the pull request open for the branch is updated, not opened twice.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from .. import failpoints
from ..config import PullRequestForge, Settings
from ..git.invocation import run_git
from ..models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from ..outcomes import CostBasis, PublishRecord, PullRequestRecord
from ..workspace.layout import Workspace
from . import forge, pull_requests
from .landing import repository

PUSH_TIMEOUT = 120.0  # each of ls-remote and push: the tree's end waits for them, as for its merge
NO_PROMPT = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true"}  # a server has no one to ask
_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")  # https://user:token@host -> https://***@host
REQUEST_CHARS = 2000
_TRAILING = " \t:;,.-"  # what a title does not end with


def configured(settings: Settings) -> bool:
    return bool(settings.git.push)


def publish(
    job: JobRecord,
    workers: Sequence[WorkerRecord],
    *,
    settings: Settings,
    workspace: Workspace,
    environ: Mapping[str, str],
    now: float,
    status: JobStatus | None = None,
) -> PublishRecord:
    """The job's new ``publish`` record (see models.JobRecord.publish). ``status``: the job's final
    status when it is published as it ends (its record still says running then)."""
    g = settings.git
    merge = job.merge
    previous = job.publish
    record = PublishRecord(now, g.push, pull_request=previous.pull_request if previous is not None else None)
    if merge is None or not merge.result_commit or not merge.result_ref:
        return replace(record, error="nothing to publish: the job has no result commit (merge it first)")
    branch = merge.result_ref.removeprefix("refs/heads/")
    record = replace(record, branch=branch, commit=merge.result_commit)
    try:
        repo = repository(settings, workspace)
    except Exception as exc:  # no repository any more: said, not raised
        return replace(record, error=f"no repository to push from: {exc}")
    error = _push(repo, g.push, branch, merge.result_commit, previous)
    if error:
        return replace(record, error=error)
    record = replace(record, pushed=True)
    failpoints.hit("publish_pushed")  # the chaos tests' stop between the push and the pull request
    if g.pull_request == PullRequestForge.NONE:
        return record
    return _propose(record, branch, job, workers, settings, environ, repo, status)


def _push(repo: Path, remote: str, branch: str, commit: str, previous: PublishRecord | None) -> str:
    """``commit`` pushed to ``branch`` of the ``remote``, leased: "" when pushed, else why not."""
    # Pushed to the remote's push URL, not its name: a push by name also moves the user's
    # remote-tracking ref (refs/remotes/<remote>/...), a ref outside the job's prefix.
    url = push_url(repo, remote)
    if not url:
        return f"git push {remote} failed: no remote named {remote!r} in {repo} (git.push)"
    ours = previous.commit if previous is not None and previous.pushed and previous.branch == branch else None
    # The lease: the branch as this job left it on the remote, or absent (a branch deleted there, say
    # after its pull request was merged, is made again); anything else there is someone else's work.
    there = remote_git(repo, "ls-remote", "--end-of-options", url, f"refs/heads/{branch}")
    if there.returncode != 0:
        return f"git push {remote} {branch} failed: {_clean(there.stderr) or 'the remote did not answer'}"
    remote_tip = there.stdout.split()[0] if there.stdout.split() else ""
    lease = remote_tip if remote_tip and remote_tip in (ours, commit) else ""
    done = remote_git(
        repo,
        "push",
        "--porcelain",
        "--no-verify",
        f"--force-with-lease=refs/heads/{branch}:{lease}",
        "--end-of-options",
        url,
        f"{commit}:refs/heads/{branch}",
    )
    if done.returncode != 0:
        # --porcelain: a refused ref is a "!" line on stdout with git's reason ("[rejected] (stale info)").
        refused = [line.split("\t")[-1] for line in done.stdout.splitlines() if line.startswith("!")]
        why = _CREDENTIALS.sub(r"\1***@", "; ".join(refused)) or _clean(done.stderr) or f"exit code {done.returncode}"
        return f"git push {remote} {branch} failed: {why}"
    return ""


def _propose(
    record: PublishRecord,
    branch: str,
    job: JobRecord,
    workers: Sequence[WorkerRecord],
    settings: Settings,
    environ: Mapping[str, str],
    repo: Path,
    status: JobStatus | None,
) -> PublishRecord:
    """The pushed branch's pull request opened or updated on the configured forge (none:
    ``record`` as it is), or the record with why not."""
    g = settings.git
    chosen = pull_requests.forge_of(g.pull_request)  # loaded at the server's start
    kind = chosen.name
    token_env = pull_requests.token_env(settings)
    token = environ.get(token_env, "")
    if not token:
        return replace(record, error=f"no pull request: {token_env} is not set in the server's environment (git.forge_token_env)")
    if not g.forge_repo:
        return replace(record, error="no pull request: set git.forge_repo (OWNER/NAME on GitHub, the project's path on GitLab)")
    base = g.pull_request_base or g.merge_into or _checked_out(repo)
    if not base:
        return replace(
            record, error="no pull request: no base branch (set git.pull_request_base; the repository's HEAD is detached)"
        )
    known = record.pull_request
    try:
        made = chosen.propose(
            pull_requests.project_of(settings, token),
            forge.Proposal(
                head=branch,
                base=base,
                title=title(job.request),
                body=summary(job, workers, status),
                number=known.number if known is not None and known.forge == kind else None,
            ),
        )
    except forge.ForgeError as exc:
        return replace(record, error=f"{kind} pull request: {_clean(str(exc)).replace(token, '***')}")
    return replace(record, pull_request=PullRequestRecord(kind, made.number, made.url, made.action, base))


def title(request: str) -> str:
    """The pull request's title: the request's first line, without the colon or stop a sentence
    that introduced a list ends with ("Add a CLI:")."""
    return f"orchestrator: {_first_line(request)[:100].rstrip(_TRAILING)}"


def incomplete_children(workers: Sequence[WorkerRecord]) -> str:
    """``", 1 child_incomplete (exited 0, a child job it started did not complete)"``, or "" when none."""
    n = sum(1 for w in workers if w.status is WorkerStatus.CHILD_INCOMPLETE)
    return f", {n} child_incomplete (exited 0, a child job it started did not complete)" if n else ""


def summary(job: JobRecord, workers: Sequence[WorkerRecord], status: JobStatus | None = None) -> str:
    """The pull request's body: the run as FINAL_RESULT.md sums it up (status, workers, gates, merge,
    cost); ``status``: the job's final one (None: its record's)."""
    done = [w for w in workers if w.status.terminal]
    gates = [g for w in workers for g in w.gates]
    merge = job.merge
    costs = [w.cost_usd for w in workers if w.cost_usd is not None]
    # The root's own AI calls: its planner, its candidates' judge, its merge's conflict resolvers.
    costs += [c for c in (job.planner_cost_usd, job.judge_cost_usd, job.resolver_cost_usd) if c is not None]
    estimated = sum(1 for w in workers if w.cost_basis == CostBasis.ESTIMATED)
    unknown = sum(1 for w in workers if w.cost_usd is None and w.cost_note)
    lines = [
        f"## orchestrator job `{job.id}`: {(status or job.status).value}",
        "",
        "> " + job.request[:REQUEST_CHARS].replace("\n", "\n> "),
        "",
        f"- Workers: {sum(1 for w in done if w.status.complete)} of {len(workers)} succeeded" + incomplete_children(done),
        f"- Gates: {sum(1 for g in gates if g.passed)} passed, {sum(1 for g in gates if not g.passed)} not passed"
        if gates
        else "- Gates: none",
    ]
    if merge is not None:
        left = f", {len(merge.left_out)} left out" if merge.left_out else ""
        resolved = merge.outcome.resolutions if merge.outcome is not None else ()
        shown = f", {sum(r.accepted for r in resolved)} of {len(resolved)} resolved by a resolver" if resolved else ""
        lines.append(f"- Merge: {merge.strategy}, {len(merge.merged)} merged, {len(merge.conflicts)} conflicts{shown}{left}")
    cost = f"${sum(costs):,.4f}" if costs else "no cost known"
    notes = [f"estimated for {estimated}"] * bool(estimated) + [f"unknown for {unknown}"] * bool(unknown)
    lines.append(f"- Cost: {cost}" + (f" ({', '.join(notes)} of {len(workers)} workers)" if notes else ""))
    if job.record_digest:
        lines.append(f"- Record: `RECORD.json` {job.record_digest} (`./orchestrator.sh verify {job.id}`)")
    lines += ["", "Opened by the orchestrator as a draft: review it, then mark it ready."]
    return "\n".join(lines)


def push_url(repo: Path, remote: str) -> str:
    """The push URL of ``remote`` (git.push) in ``repo``; "" when there is no such remote."""
    found = run_git(repo, "remote", "get-url", "--push", "--end-of-options", remote, check=False)
    return found.stdout.strip() if found.returncode == 0 else ""


def remote_git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A git call that talks to the remote: bounded in time, never asking for a password."""
    return run_git(repo, *args, check=False, timeout=PUSH_TIMEOUT, env=NO_PROMPT)


def _checked_out(repo: Path) -> str:
    done = run_git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def _clean(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not line.startswith("To ")]
    return _CREDENTIALS.sub(r"\1***@", "; ".join(lines[-3:]))[:500]


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]
