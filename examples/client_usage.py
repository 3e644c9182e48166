#!/usr/bin/env python3
"""Submit a request with the Python client, follow it, and print every worker's result.

    .venv/bin/python examples/client_usage.py "Build a REST API with auth, users and orders"
    .venv/bin/python examples/client_usage.py --task "Auth API" --task "Data API" "Two APIs"

The API URL and key come from --url/--key, else ORCHESTRATOR_API_URL/ORCHESTRATOR_API_KEY, else
config.yaml beside the orchestrator (api.host, api.port, api.api_key). Start the server first
(`python api_server.py`, or `./quick-start.sh` once). Exit code: 0 completed, 3 partial,
1 failed, 4 cancelled, 2 the server refused the request.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the orchestrator folder

from orchestrator.api.client import OrchestratorClient  # noqa: E402
from orchestrator.errors import OrchestratorError  # noqa: E402

EXIT_BY_STATUS = {"completed": 0, "partial": 3, "failed": 1, "cancelled": 4}


def connection(args: argparse.Namespace) -> tuple[str, str]:
    """URL and key: flags, then the worker-protocol variables, then config.yaml."""
    url = args.url or os.environ.get("ORCHESTRATOR_API_URL")
    key = args.key or os.environ.get("ORCHESTRATOR_API_KEY")
    if not (url and key):
        from orchestrator.cli.scripts import folder_url
        from orchestrator.config import load_settings

        settings = load_settings()  # this folder's running server (its .server.json), else the configured port
        url, key = url or folder_url(settings) or settings.api.local_url(), key or settings.api.api_key
    return url, key


def rows(tasks: list[dict[str, Any]], indent: int = 0) -> list[str]:
    """One line per worker, child jobs' workers indented under the worker that started them."""
    lines = []
    for task in tasks:
        duration = "-" if task["duration"] is None else f"{task['duration']:.1f}s"
        files = ", ".join(task["files_created"][:3]) or "-"
        name = "  " * indent + task["worker_id"]
        lines.append(f"{name:<16} {task['status']:<18} {duration:>7}  {files:<30} {task['task'][:50]}")
        lines.extend(rows(task.get("child_results", []), indent + 1))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "request", nargs="?", default="Create a machine learning pipeline with data preprocessing, training, and evaluation"
    )
    parser.add_argument("--task", action="append", dest="tasks", help="an explicit subtask (repeat the flag)")
    parser.add_argument("--workers", type=int, default=4, help="max_workers")
    parser.add_argument("--url", help="API URL, e.g. http://localhost:8000")
    parser.add_argument("--key", help="API key (api.api_key in config.yaml)")
    parser.add_argument("--quiet", action="store_true", help="do not print live events")
    args = parser.parse_args(argv)

    url, key = connection(args)
    with OrchestratorClient(api_url=url, api_key=key) as client:
        try:
            job = client.orchestrate(request=args.request, tasks=args.tasks, max_workers=args.workers)
        except OrchestratorError as exc:
            print(f"refused ({getattr(exc, 'status_code', None)}): {exc.message}", file=sys.stderr)
            return 2
        print(f"Job ID: {job['job_id']}  ({len(job['tasks'])} subtasks, worker kind {job['worker_kind']})")
        if not args.quiet:
            for event in client.events(job["job_id"]):  # Server-Sent Events until "end"
                data = event["data"]
                who = f"depth_{data['depth']}_{data['worker']}" if data.get("worker") else f"job {data['job_id']}"
                print(f"  {event['event']:<6} {who:<28} {data['status']:<18} {data.get('message', '')}".rstrip())
        doc = client.wait(job["job_id"])  # long-poll: returns once the job is terminal
    print(
        f"Status: {doc['status']}  ({doc['tree']['succeeded']}/{doc['tree']['workers']} workers succeeded, "
        f"{doc['tree']['jobs']} job(s) in the tree)"
    )
    print(f"{'WORKER':<16} {'STATUS':<18} {'TIME':>7}  {'FILES':<30} TASK")
    print("\n".join(rows(doc["results"]["tasks"])))
    print(f"Workspace: {doc['results']['workspace']}")
    print(f"FINAL_RESULT.md: {doc['results']['final_report']}")
    return EXIT_BY_STATUS.get(doc["status"], 1)


if __name__ == "__main__":
    sys.exit(main())
