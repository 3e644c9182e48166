"""The simulated worker process: ``python -m orchestrator.workers.simulated_worker [--goal GOAL] -- "subtask"``.

Deterministic and offline. It prints a few progress lines over
``ORCHESTRATOR_SIM_DURATION`` seconds, writes one deliverable file named after
its subtask (and the goal it is part of, when the planner found one) into its
working directory, and prints a one-line result. When
its subtask is compound, recursion is on, depth allows and an API is
reachable, it starts a child job with ``orchestrator-spawn --wait``
exactly as an AI worker would, and reports the child's results instead.

Knobs (environment): ORCHESTRATOR_SIM_DURATION (seconds),
ORCHESTRATOR_SIM_FAIL_MATCHING (regex: matching subtasks fail),
ORCHESTRATOR_SIM_FAIL_ATTEMPTS (fail the first N attempts),
ORCHESTRATOR_SIM_RECURSE (0 to never recurse). Standard library only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from .. import protocol

EXIT_INJECTED_FAILURE = 1


def slugify(text: str, limit: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:limit].rstrip("_") or "task"


def should_fail(task: str, attempt: int) -> str | None:
    pattern = os.environ.get(protocol.SIM_FAIL_MATCHING, "")
    if pattern and re.search(pattern, task, re.IGNORECASE):
        return f"injected failure: subtask matches {protocol.SIM_FAIL_MATCHING}={pattern!r}"
    fail_attempts = int(os.environ.get(protocol.SIM_FAIL_ATTEMPTS, "0") or 0)
    if attempt <= fail_attempts:
        return f"injected failure: attempt {attempt} of the first {fail_attempts} that fail"
    return None


def wants_child_job(task: str) -> bool:
    """Recurse only when it is allowed, possible and worth it (the subtask splits)."""
    if os.environ.get(protocol.SIM_RECURSE, "1") != "1" or not os.environ.get(protocol.API_URL):
        return False
    if os.environ.get(protocol.ENABLE_RECURSION, "1") != "1":
        return False
    depth = int(os.environ.get(protocol.DEPTH, "0"))
    max_recursion_depth = int(os.environ.get(protocol.MAX_RECURSION_DEPTH, "0"))
    if depth >= max_recursion_depth:
        return False
    from orchestrator.planner import is_compound

    return is_compound(task)


def run_child_job(task: str) -> int:
    print(f"subtask is compound; starting a child job at depth {int(os.environ.get(protocol.DEPTH, '0')) + 1}", flush=True)
    argv = ["orchestrator-spawn", "--wait", "--request", task]  # on the worker's PATH, as an AI worker runs it
    code = subprocess.call(argv, stdin=subprocess.DEVNULL)
    print(f"child job finished with exit code {code}", flush=True)
    return code


def write_deliverable(task: str, goal: str | None = None) -> str:
    name = f"{slugify(task)}.md"
    worker = os.environ.get(protocol.WORKER_ID, "worker")
    depth = os.environ.get(protocol.DEPTH, "0")
    body = (
        f"# {task}\n\n"
        + (f"Part of: {goal}\n\n" if goal else "")
        + f"Deliverable written by the simulated worker {worker} at depth {depth}.\n"
        "The simulated worker is a stand-in used when no AI CLI is configured: it proves the\n"
        "orchestration (planning, processes, logs, recursion, reports) and does no real work.\n"
    )
    with open(name, "w", encoding="utf-8") as handle:
        handle.write(body)
    return name


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    goal = None
    if args[:1] == ["--goal"] and len(args) > 1:
        goal, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if len(args) != 1 or not args[0].strip():
        print('usage: python -m orchestrator.workers.simulated_worker [--goal GOAL] -- "subtask"', file=sys.stderr)
        return 2
    task = args[0]
    attempt = int(os.environ.get(protocol.ATTEMPT, "1"))
    duration = float(os.environ.get(protocol.SIM_DURATION, "0.3") or 0)
    print(f"simulated worker: {task}", flush=True)
    steps = 3
    for step in range(1, steps + 1):
        time.sleep(duration / steps)
        print(f"step {step}/{steps}", flush=True)
    failure = should_fail(task, attempt)
    if failure:
        print(failure, file=sys.stderr, flush=True)
        return EXIT_INJECTED_FAILURE
    if wants_child_job(task):
        code = run_child_job(task)
        if code != 0:
            print(f"child job did not complete (exit code {code})", file=sys.stderr, flush=True)
            return code
        print(f"RESULT: {task}: done by a child job", flush=True)
        return 0
    name = write_deliverable(task, goal)
    print(f"RESULT: wrote {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
