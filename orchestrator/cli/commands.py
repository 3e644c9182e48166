"""The job commands a person runs against this folder's server: ``jobs``, ``cancel``, ``delete``,
``approve`` and ``reject``, each the API route of that name, so a person needs
neither curl nor the dashboard. ``merge`` and ``conflicts`` (cli/main.py) go the same way.

Each talks to the server given by ``--api-url``, else this folder's own (its ``.server.json``
record), else the configured address, with this folder's ``api.api_key``. ``--json`` prints the
API's document as it came. Exit codes are the other commands' (errors.exit_code_of): 0 done,
1 refused (a 409: the job is not in a state that allows it) or failed, 2 bad input or an unknown
job, 5 no server answered.

This module is imported when the parser is built: the heavy imports stay inside the commands.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

REQUEST_CHARS = 60  # of a job's request in the ``jobs`` table


def register(sub: Any) -> None:
    """Add the commands to ``orchestrator``'s subparsers."""
    jobs = sub.add_parser("jobs", help="list root jobs, newest first (GET /api/v1/jobs)")
    jobs.add_argument("--status", help="only jobs with this status: running, waiting, completed, failed, ...")
    jobs.add_argument("--limit", type=int, default=50, help="at most N jobs (1-500, default 50)")
    jobs.add_argument("--offset", type=int, default=0, help="skip the first N (paging)")
    _common(jobs, cmd_jobs)

    cancel = sub.add_parser("cancel", help="cancel a running job and its child jobs (POST /api/v1/jobs/ID/cancel)")
    cancel.add_argument("job_id")
    _common(cancel, cmd_cancel)

    delete = sub.add_parser(
        "delete",
        help="delete a finished job tree: its folder, worktrees and worker branches (DELETE /api/v1/jobs/ID)",
        description="Only a finished root job's tree can go (cancel a running one first). Its result branch "
        "<prefix><id>/result stays unless --branches all. Nothing outside the orchestrator's branch prefix is touched.",
    )
    delete.add_argument("job_id")
    delete.add_argument(
        "--branches",
        choices=("workers", "all"),
        default="workers",
        help="workers (default): keep the result branch; all: remove it too",
    )
    _common(delete, cmd_delete)

    approve = sub.add_parser("approve", help="land a job waiting for approval (POST /api/v1/jobs/ID/approve)")
    approve.add_argument("job_id")
    approve.add_argument("--note", help="a note kept with the decision")
    _common(approve, cmd_approve)

    reject = sub.add_parser("reject", help="end a job waiting for approval, nothing merged (POST /api/v1/jobs/ID/reject)")
    reject.add_argument("job_id")
    reject.add_argument("--reason", required=True, help="why (kept with the decision and in the job's error)")
    _common(reject, cmd_reject)


def _common(parser: argparse.ArgumentParser, func: Any) -> None:
    parser.add_argument("--api-url", help="default: this folder's own server")
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    parser.set_defaults(func=func)


def client_for(args: argparse.Namespace) -> Any:
    """A client of the server given (--api-url), else of this folder's own server."""
    from ..api.client import OrchestratorClient
    from ..config import load_settings
    from .scripts import folder_url

    settings = load_settings(args.config)
    url = args.api_url or folder_url(settings) or settings.api.local_url()
    return OrchestratorClient(api_url=url, api_key=settings.api.api_key or "-")


def _job_id(text: str) -> str:
    """The id checked here, so a malformed one is refused (exit 2) before any server is asked."""
    from ..workspace.ids import validate_job_id

    return validate_job_id(text)


def _print_json(doc: Any) -> int:
    print(json.dumps(doc, indent=2))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    page = client_for(args).list_jobs(status=args.status, limit=args.limit, offset=args.offset)
    if args.json:
        return _print_json(page)
    rows = page["jobs"]
    if not rows:
        which = f" with status {args.status}" if args.status else ""
        print(f"no jobs{which} (total {page['total']})")
        return 0
    print(JOBS_HEADER)
    for job in rows:
        print(job_line(job))
    shown = f"{page['offset'] + 1}-{page['offset'] + len(rows)}"
    more = f"; next page: --offset {page['offset'] + len(rows)}" if page["offset"] + len(rows) < page["total"] else ""
    print(f"jobs {shown} of {page['total']}{more}")
    return 0


JOBS_HEADER = f"{'JOB':<12}  {'STATUS':<9}  {'WORKERS':>7}  {'CREATED':<16}  REQUEST"


def job_line(job: dict[str, Any]) -> str:
    """One row of GET /api/v1/jobs as a line under ``JOBS_HEADER`` (the ``jobs`` command, the MCP ``list_jobs`` tool)."""
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(job["created_at"])) if job.get("created_at") else "-"
    request = " ".join(str(job.get("request") or "").split())
    if len(request) > REQUEST_CHARS:
        request = request[: REQUEST_CHARS - 1] + "…"
    return f"{job['job_id']:<12}  {job['status']:<9}  {job['workers']:>7}  {created:<16}  {request}"


def cmd_cancel(args: argparse.Namespace) -> int:
    answer = client_for(args).cancel(_job_id(args.job_id))
    if args.json:
        return _print_json(answer)
    print(f"job {answer['job_id']}: {answer['status']}; {answer['message']}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    job_id = _job_id(args.job_id)
    client_for(args).delete(job_id, branches=args.branches)
    kept = "its result branch too" if args.branches == "all" else "its result branch kept"
    if args.json:  # the route answers 204 with no body: this says what was asked and done
        return _print_json({"job_id": job_id, "deleted": True, "branches": args.branches})
    print(f"job {job_id} deleted: its folder, worktrees and worker branches ({kept})")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _decided(args, client_for(args).approve(_job_id(args.job_id), args.note), "approved")


def cmd_reject(args: argparse.Namespace) -> int:
    return _decided(args, client_for(args).reject(_job_id(args.job_id), args.reason), "rejected")


def _decided(args: argparse.Namespace, doc: dict[str, Any], what: str) -> int:
    if args.json:
        return _print_json(doc)
    print(f"job {doc['job_id']} {what}: now {doc['status']}")
    merge = doc.get("merge") or {}
    if merge.get("result_ref"):
        print(f"  result: {merge['result_ref'].removeprefix('refs/heads/')} ({merge.get('result_commit') or 'no commit'})")
    return 0
