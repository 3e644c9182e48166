"""``orchestrator-spawn`` (= ``python -m orchestrator spawn``): start a child job from inside a worker.

    orchestrator-spawn --wait "subtask A" "subtask B"     # explicit subtasks
    orchestrator-spawn --wait "Build auth, orders and payments"   # a request to split

It reads the worker protocol from the environment (ORCHESTRATOR_API_URL,
ORCHESTRATOR_API_KEY), waits by long-poll, prints the child's results
(Markdown, or ``--json``) and exits non-zero unless the child completed.
Every AI worker runs it for each child job, so it starts fast: ``python -m
orchestrator spawn`` comes straight here (``__main__``, not the full command
line), and it imports only the standard library, ``errors`` and ``calls`` (its
HTTP path) - never ``requests``.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

TYPE_CHECKING = False  # typing's import costs the helper's start-up; annotations are strings here
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any


def register(sub: Any) -> None:
    """The ``spawn`` entry of the full command line (``python -m orchestrator --help`` lists it)."""
    parser = sub.add_parser("spawn", help="start a child job from inside a worker (and wait for it)")
    _arguments(parser)
    parser.set_defaults(func=cmd_spawn)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tasks", nargs="*", metavar="TASK", help="subtasks; a single one is a request the planner splits")
    parser.add_argument("--request", help="the child job's request (default: the subtasks joined)")
    parser.add_argument("--wait", action="store_true", help="wait for the child job and print its results")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--workers", type=int, help="max_workers for the child job")
    parser.add_argument("--timeout", type=float, help="default_timeout for the child's workers, seconds")
    parser.add_argument("--wait-timeout", type=float, default=None, help="give up waiting after this many seconds")
    parser.add_argument(
        "--plan",
        metavar="FILE",
        help='a task graph as JSON ("-": stdin): a list of subtasks, strings or {"id", "task", "depends_on", "role", "owns"}',
    )


# The options as _arguments() declares them, for quick_parse: flags, and options taking a value.
_FLAGS = {"--wait": "wait", "--json": "json"}
_VALUES = {
    "--request": ("request", str),
    "--workers": ("workers", int),
    "--timeout": ("timeout", float),
    "--wait-timeout": ("wait_timeout", float),
    "--plan": ("plan", str),
}


def quick_parse(argv: list[str]) -> SimpleNamespace | None:
    """What argparse makes of the usual command lines (options, then the subtasks), without
    importing argparse: it and its help formatter's imports (re, gettext, shutil) cost the helper
    more than everything else it imports. Anything else (help, an abbreviated or unknown option,
    a bad value, an option after a subtask) returns None, and argparse decides, as always."""
    found: dict[str, Any] = {
        "tasks": [],
        "request": None,
        "wait": False,
        "json": False,
        "workers": None,
        "timeout": None,
        "wait_timeout": None,
        "plan": None,
    }
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--" and not found["tasks"]:
            rest = argv[index + 1 :]
            if any(item.startswith("-") for item in rest):
                return None
            found["tasks"] = rest
            break
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if found["tasks"] or not (name in _FLAGS or name in _VALUES):
                return None
            if name in _FLAGS:
                if eq:
                    return None
                found[_FLAGS[name]] = True
            else:
                if not eq:
                    index += 1
                    if index >= len(argv) or argv[index].startswith("-"):
                        return None
                    value = argv[index]
                key, convert = _VALUES[name]
                try:
                    found[key] = convert(value)
                except ValueError:
                    return None
        else:
            found["tasks"].append(arg)
        index += 1
    return SimpleNamespace(**found)


def parse(argv: list[str]) -> Any:
    """The helper's arguments: quick_parse, else argparse (help, usage errors: exit 2)."""
    quick = quick_parse(argv)
    if quick is not None:
        return quick
    import argparse

    def formatter(prog: str) -> argparse.HelpFormatter:
        # argparse sizes help with shutil.get_terminal_size, whose import (shutil, bz2, lzma...)
        # costs more than argparse itself; os gives the same width.
        try:
            columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(sys.stdout.fileno()).columns
        except (ValueError, OSError):
            columns = 80
        return argparse.HelpFormatter(prog, width=max(columns - 2, 20))

    from .failures import Parser  # its usage errors are raised, for main to answer (--json: as JSON)

    parser = Parser(
        prog="orchestrator-spawn",
        description="Start a child job from inside a worker (and wait for it).",
        formatter_class=formatter,
    )
    _arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """The fast path: ``orchestrator-spawn ARGS`` (and ``python -m orchestrator spawn ARGS``)
    without the full command line's imports. A failure is said as the full command line says it
    (cli/failures.py, imported only then): with ``--json``, as one JSON object on stdout."""
    from ..errors import OrchestratorError, exit_code_of

    as_json = "--json" in argv  # until the arguments are read: a usage error answers in JSON too
    try:
        args = parse(argv)
        as_json = bool(args.json)
        return cmd_spawn(args)
    except (OrchestratorError, KeyboardInterrupt) as exc:
        if as_json or not isinstance(exc, OrchestratorError) or hasattr(exc, "exit_code"):
            from .failures import report  # (a CommandFailed, or a usage error, came from there: loaded)

            return report(exc, as_json)
        print(f"error: {exc.message}", file=sys.stderr)  # (without failures' imports: the common refusal stays light)
        return exit_code_of(exc)


def read_plan(path: str, parse: Callable[[str], Any] | None = None, errors: tuple[type[Exception], ...] = ()) -> list[Any]:
    """A task graph from a file ("-": stdin): a list of subtasks, or {"tasks": [...]}; JSON
    unless ``parse`` (and the ``errors`` it raises) says otherwise (``run --plan``: YAML too)."""
    import json

    from ..errors import ValidationError

    caught: tuple[type[Exception], ...] = (OSError, ValueError, *errors)
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
        data = (parse or json.loads)(text)
    except caught as exc:
        raise ValidationError(f"--plan {path}: cannot read a task graph from it: {exc}") from None
    if isinstance(data, dict):
        data = data.get("tasks")
    if not isinstance(data, list):
        raise ValidationError(f'--plan {path}: expected a list of subtasks, or {{"tasks": [...]}}')
    return data


def cmd_spawn(args: Any) -> int:
    from ..api.calls import KEY_ENV, TERMINAL, URL_ENV, SpawnClient, dumps, worker_key
    from ..errors import EXIT_BY_STATUS, EXIT_FAILED, ValidationError

    plan = read_plan(args.plan) if args.plan else None
    if plan is not None:  # a graph: its subtasks are the plan's; the request defaults to their texts
        if args.tasks:
            raise ValidationError("give the subtasks either as arguments or in --plan, not both")
        texts = [t if isinstance(t, str) else str(t.get("task", "")) for t in plan]
        args.request = args.request or "; ".join(texts)
    if not args.tasks and not args.request:
        raise ValidationError('nothing to spawn: give subtasks ("A" "B") or --request "what to do"')
    if not os.environ.get(URL_ENV) or not worker_key():
        raise ValidationError(
            f"spawn runs inside a worker: {URL_ENV} and {KEY_ENV} are set by the orchestrator "
            "for each worker (outside a worker, use the API or `python -m orchestrator run`)"
        )
    tasks: list[Any] | None
    if plan is not None:
        request, tasks = args.request, plan
    elif args.request:
        request, tasks = args.request, (args.tasks or None)
    elif len(args.tasks) == 1:
        request, tasks = args.tasks[0], None
    else:
        request, tasks = "; ".join(args.tasks), args.tasks
    config: dict[str, Any] = {}
    if args.workers is not None:
        config["max_workers"] = args.workers
    if args.timeout is not None:
        config["default_timeout"] = args.timeout
    client = SpawnClient()
    submitted = client.orchestrate(request=request, tasks=tasks, config=config or None)
    job_id = submitted["job_id"]
    reused = submitted.get("reused")
    said = (  # a retry's spawn of its earlier attempt's request: that child job, not a new one
        f"child job {job_id} reused, not started again: an earlier attempt of this worker started it for the same "
        f"request ({submitted.get('reused_note') or submitted['status']})"
        if reused
        else f"child job {job_id} started at depth {submitted['depth']}"
    )
    if not args.wait:
        print(dumps(submitted) if args.json else said)
        return 0
    if reused and not args.json:
        print(said + "\n")
    doc = client.wait(job_id, timeout=args.wait_timeout)
    if reused:
        doc = {**doc, "reused": True, "reused_note": submitted.get("reused_note")}
    if doc["status"] not in TERMINAL:
        from .failures import ClientCode, CommandFailed

        if not args.json:
            print(markdown(doc))
        raise CommandFailed(
            ClientCode.TIMEOUT,
            f"gave up waiting: job {job_id} is still {doc['status']} (--wait-timeout {args.wait_timeout}); "
            f"its status later: GET /api/v1/jobs/{job_id}",
            EXIT_FAILED,
            job_id=job_id,
            job_status=doc["status"],
        )
    if args.json:
        import json  # only here: its import (re, enum) would cost every hand-off

        print(json.dumps(doc, indent=1))
    else:
        print(markdown(doc))
    return EXIT_BY_STATUS.get(doc["status"], 1)


def markdown(doc: dict[str, Any]) -> str:
    """The child's results as Markdown an AI worker can read back."""
    progress = doc["progress"]
    lines = [
        f"## Child job {doc['job_id']}: {doc['status']}",
        "",
        f"{progress['succeeded']}/{progress['total']} workers succeeded at depth {doc['depth']}"
        + (
            f"; {n} child_incomplete (exited 0, but a child job it started did not complete)."
            if (n := progress.get("child_incomplete"))
            else "."
        ),
        f"Workspace: {doc['results']['workspace']}",
        "",
    ]
    lines += merged(doc.get("merge"))
    for task in doc["results"]["tasks"]:
        lines.append(f"### {task['worker_id']}: {task['status']}")
        lines.append(f"Task: {task['task']}")
        if task["files_created"]:
            lines.append(f"Files ({task['dir']}): " + ", ".join(task["files_created"][:50]))
        if task.get("error"):  # its first line, then the end of its output (indented: a failed command's)
            first, *rest = task["error"].splitlines() or [""]
            lines.append(f"Error: {first}")
            lines += ["    " + line for line in rest]
        elif task["status"] == "child_incomplete":  # its exit reason names the child job that did not complete
            lines.append(f"Incomplete: {task.get('exit_reason')}")
        if task.get("gates") and task["status"] != "success":  # which gate failed it, and its output's end
            from ..gate_output import failing_gate, output_lines  # only here: a child that failed a gate

            gate = failing_gate(task["gates"], task.get("exit_reason"))
            if gate is not None:
                lines += output_lines(gate)
                ref = f"depth_{task['depth']}_{task['worker_id']}"
                lines.append(f"Its whole output: GET /api/v1/jobs/{doc['job_id']}/workers/{ref}/log?gate={gate['name']}")
        if task.get("output"):
            lines.append("Output (tail):")
            lines.append("\n".join("    " + line for line in task["output"].strip().splitlines()[-10:]))
        lines.append("")
    return "\n".join(lines)


def merged(merge: dict[str, Any] | None) -> list[str]:
    """What of the child job was merged into the caller's branch (a worktree worker's), and
    what conflicted: the lines of the Markdown's "Merged into your branch" section."""
    if not merge or not merge.get("target"):
        return []
    lines = [f"### Merged into your branch {merge['target']}", ""]
    if merge.get("error"):
        lines += [f"Nothing was merged: {merge['error']}", ""]
        return lines
    if merge.get("strategy") == "manual":
        lines += [f"Nothing was merged (merge_strategy manual). To merge: {merge.get('command', '')}", ""]
        return lines
    new = [w for w in merge.get("merged", []) if w not in merge.get("unchanged", [])]
    if new:
        lines.append(f"Merged ({merge['strategy']}), now in your checkout: " + ", ".join(new))
    if merge.get("unchanged"):
        lines.append("No changes from: " + ", ".join(merge["unchanged"]))
    for conflict in merge.get("conflicts", []):
        if conflict.get("resolved_by") or not conflict.get("predicted"):
            from ..git.conflicts import describe  # only here: a child's merge that told of a conflict

            text = describe(conflict)
            lines.append(text[:1].upper() + text[1:])
    for resolved in merge.get("resolutions", []):  # merge_strategy resolve: what its resolver did, or why not
        from ..git.conflicts import resolution

        text = resolution(resolved)
        lines.append(text[:1].upper() + text[1:])
    if merge.get("skipped"):
        where = merge["target"].rsplit("/", 1)[0]
        branches = ", ".join(f"{where}/{w}" for w in merge["skipped"])
        lines.append("Not merged (their work stays on their branches; merge or redo it yourself): " + branches)
    if merge.get("left_out"):  # kept out: it failed or its gates did not pass, or it broke the combination
        said = "; ".join(f"{w.get('worker')} ({w.get('reason')})" for w in merge["left_out"])
        lines.append("Left out (not in your branch; its work stays on its branch): " + said)
    lines.append("")
    return lines
