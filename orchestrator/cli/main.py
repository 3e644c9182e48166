"""``python -m orchestrator``: run, status, watch, logs, diff, spawn, serve, config, doctor, prune, merge, conflicts, mcp, node,
and the job commands of cli/commands.py (jobs, cancel, delete, approve, reject).

Heavy modules are imported inside the commands that need them, so ``spawn``
(run by workers, often) starts without Flask, Jinja or psutil.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, EXIT_UNREACHABLE, EXIT_USAGE

if TYPE_CHECKING:
    from ..config import Settings

RET_OK = EXIT_OK
RET_FAILED = EXIT_FAILED
RET_USAGE = EXIT_USAGE
RET_PARTIAL = EXIT_PARTIAL
RET_CANCELLED = EXIT_CANCELLED
RET_UNREACHABLE = EXIT_UNREACHABLE
RET_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool whose reader left
# status's and check-status's exit codes (scripts.status_exit_code), as their --help says them.
STATUS_EXITS = (
    "Exit 0 completed, 3 partial, 1 failed, 4 cancelled, 6 completed or partial but no worker changed a file, "
    "7 waiting for approval, 8 still pending or running (quick-start's codes, and 8); 2 bad input or an unknown job."
)


class ConfigAction(str, Enum):
    """``config``'s optional action (cli/configure.py): without one it prints the settings."""

    GET = "get"  # print one value
    SET = "set"  # change config.yaml (checked first)


def main(argv: Sequence[str] | None = None) -> int:
    from ..process.arenas import limit_arenas
    from ..reports.terminal import VisibleStream

    limit_arenas()  # before any thread: a long run's records are not spread over an arena per thread

    # Whatever a command prints, a worker's text among it, reaches the terminal with its control
    # characters shown, never obeyed (reports/terminal.py); restored after (main is called in tests).
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = VisibleStream(out), VisibleStream(err)
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a reader that went away (`| head`) is met here, not at interpreter exit
    except BrokenPipeError:
        _drop_stdout()
        return RET_BROKEN_PIPE
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: Sequence[str] | None) -> int:
    """Parse and run one command. Every command's failure is met here, once: its text on stderr,
    and with ``--json`` its JSON object on stdout (cli/failures.py)."""
    from ..errors import OrchestratorError
    from .failures import report

    words = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in words  # until the parser has read it: a usage error answers in JSON too
    try:
        parser = _parser()
        args = parser.parse_args(words)
        if not getattr(args, "command", None):
            parser.print_help()
            return RET_USAGE
        as_json = bool(getattr(args, "json", False))
        return int(args.func(args) or 0)
    except (OrchestratorError, KeyboardInterrupt) as exc:
        return report(exc, as_json)
    except BrokenPipeError:
        raise
    except Exception as exc:
        if as_json:  # a bug: the script still reads an object; the traceback follows on stderr
            report(exc, as_json)
        raise


def _drop_stdout() -> None:
    """The reader of our output closed it (`status JOB | head -4`): end quietly, as a shell
    tool killed by SIGPIPE does, instead of printing a traceback at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _parser() -> argparse.ArgumentParser:
    from .failures import Parser

    parser = Parser(prog="orchestrator", description="Split a request into parallel worker subprocesses, recursively.")
    parser.add_argument("--config", help="config file (default: config.yaml beside the orchestrator, if present)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a job in this process and show its progress")
    run.add_argument("request", help="what to do, in plain words")
    run.add_argument("--tasks", nargs="+", metavar="TASK", help="explicit subtasks (skip the planner)")
    run.add_argument(
        "--plan",
        metavar="FILE",
        help="a task graph file (JSON or YAML): subtasks as strings or {id, task, depends_on, role, owns} (skip the planner)",
    )
    run.add_argument(
        "--on-failure", choices=("skip", "continue", "stop"), help="what a failed task does to those that wait on it"
    )
    run.add_argument("--workers", type=int, help="workers at once (max_workers)")
    run.add_argument("--timeout", type=float, help="seconds per worker attempt (default_timeout)")
    run.add_argument("--retries", type=int, help="extra attempts after a failure (max_retries)")
    run.add_argument("--worker", help="worker kind: auto, simulated, command, claude, ...")
    run.add_argument("--depth", type=int, help="max_recursion_depth")
    run.add_argument("--no-recursion", action="store_true", help="workers may not start child jobs")
    run.add_argument("--json", action="store_true", help="print the final status as JSON")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="a job's status, read from the workspace", description=STATUS_EXITS)
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    logs = sub.add_parser(
        "logs",
        help="a worker's log (worker_2, or depth_1_worker_2_1): a readable transcript of a CLI's JSON events",
    )
    logs.add_argument("job_id")
    logs.add_argument("worker")
    logs.add_argument("-n", "--lines", type=_non_negative, default=0, help="only the last N lines (of the raw log)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the worker ends")
    logs.add_argument("--raw", action="store_true", help="the log's lines as the CLI wrote them (its JSON events)")
    logs.add_argument("--gate", metavar="NAME", help="that quality gate's whole output instead of the worker's log")
    logs.set_defaults(func=cmd_logs)

    config = sub.add_parser(
        "config",
        help="print the effective settings (and where they came from); get SECTION.KEY; set SECTION.KEY VALUE ...",
    )
    config.add_argument(
        "action",
        nargs="?",
        choices=[a.value for a in ConfigAction],
        help="get: print one value; set: change config.yaml (checked first)",
    )
    config.add_argument("items", nargs="*", metavar="KEY [VALUE]", help="SECTION.KEY (get), SECTION.KEY VALUE pairs (set)")
    config.add_argument("--template", action="store_true", help="print config.template.yaml (every key, its default and comment)")
    config.add_argument(
        "--reference",
        nargs="?",
        const="-",
        metavar="PAGE",
        help="print the settings reference of docs/configuration.md; with PAGE, rewrite that page's reference part",
    )
    config.set_defaults(func=cmd_config)

    _add_late_commands(sub)
    from .commands import register as register_job_commands  # light: its imports are inside its commands

    register_job_commands(sub)
    return parser


def _add_late_commands(sub: Any) -> None:
    """Commands whose code lives elsewhere. Their modules are imported only when the command
    runs, so ``spawn`` (run by workers, often) does not pay for the server's imports."""
    from .spawn import register as register_spawn  # cli/spawn.py itself is light

    register_spawn(sub)
    _add_server_commands(sub)
    _add_doctor_command(sub)
    _add_job_commands(sub)
    _add_result_commands(sub)
    _add_client_commands(sub)


def _add_server_commands(sub: Any) -> None:
    """The folder's own server: serve it, start, stop and restart it, run a request through it and follow
    a job."""
    serve = sub.add_parser("serve", help="serve the REST API (what api_server.py runs)")
    serve.add_argument("--host", help="address to bind (api.host)")
    serve.add_argument("--port", type=int, help="port (api.port)")
    serve.set_defaults(func=_lazy("orchestrator.cli.server", "cmd_serve"))
    quick = sub.add_parser("quick-start", help="start the server if needed, run a request, follow it to the end")
    quick.add_argument("request")
    quick.add_argument("max_workers", nargs="?", type=int)
    quick.add_argument("timeout", nargs="?", type=float, help="seconds per worker attempt")
    quick.add_argument(
        "--task",
        action="append",
        dest="tasks",
        metavar="TASK",
        help="an explicit subtask, one worker each, used instead of the planner's (repeat it: --task A --task B)",
    )
    quick.set_defaults(func=_lazy("orchestrator.cli.scripts", "cmd_quick_start"))
    watch = sub.add_parser("watch", help="follow a job live as a tree (from the API, or from the workspace files)")
    watch.add_argument("job_id")
    watch.add_argument("api_url", nargs="?", help="default: this folder's own server (its .server.json record)")
    watch.set_defaults(func=_lazy("orchestrator.cli.scripts", "cmd_watch"))
    check = sub.add_parser(
        "check-status",
        help="a job's status table, from the API or from the workspace",
        description="A job's status table: from this folder's server, or from the workspace files when no server "
        "answers. " + STATUS_EXITS,
    )
    check.add_argument("job_id", nargs="?", help="default: the newest job in this folder's workspace")
    check.add_argument("api_url", nargs="?", help="default: this folder's own server (its .server.json record)")
    check.set_defaults(func=_lazy("orchestrator.cli.scripts", "cmd_check_status"))
    start = sub.add_parser("start-server", help="start this folder's API server in the background, unless it runs")
    start.add_argument(
        "--url", action="store_true", help="print only the server's URL (API=$(./orchestrator.sh start-server --url))"
    )
    start.set_defaults(func=_lazy("orchestrator.cli.scripts", "cmd_start_server"))
    stop = sub.add_parser("stop-server", help="stop this folder's API server (however it was started)")
    stop.set_defaults(func=_lazy("orchestrator.cli.scripts", "cmd_stop_server"))
    restart = sub.add_parser("restart-server", help="stop this folder's API server and start it again, on the same port")
    restart.set_defaults(func=_lazy("orchestrator.cli.scripts", "cmd_restart_server"))


def _add_doctor_command(sub: Any) -> None:
    """``doctor``: what this machine has for real workers, and a configuration that uses it."""
    doctor = sub.add_parser(
        "doctor",
        help="check this machine for real AI workers (CLIs, logins, git, sandbox, ...) and propose a configuration",
        description="Finds the AI CLIs and whether they are logged in (no model call), checks git, isolation, "
        "the sandbox, cgroups, the API port and config.yaml's mode, and prints a working configuration. "
        "Exit 0: nothing blocks real workers; 1: something does (each with its fix); 2: bad usage.",
    )
    doctor.add_argument("--write", action="store_true", help="merge the proposed configuration into config.yaml (comments kept)")
    doctor.add_argument("--json", action="store_true", help="the whole report as JSON")
    doctor.add_argument(
        "--worker",
        metavar="KIND",
        help="the AI CLI to check and propose (claude, codex, gemini, aider, ollama, opencode); "
        "default: the configured worker, else the first logged-in CLI found",
    )
    doctor.add_argument(
        "--fix",
        action="store_true",
        help="where Ubuntu's AppArmor rule keeps bubblewrap from starting: install and load the AppArmor profile "
        "that lets bwrap create its namespaces (as root; shows what changes and asks first)",
    )
    doctor.add_argument("--yes", action="store_true", help="with --fix: make the change without asking (for scripts)")
    doctor.set_defaults(func=_lazy("orchestrator.cli.doctor", "cmd_doctor"))


def _add_job_commands(sub: Any) -> None:
    """Finished jobs read and cleaned up: their diff, and ``prune``."""
    prune = sub.add_parser(
        "prune",
        help="clean up finished jobs' worktrees and branches, and old job trees (lists them only, unless --yes)",
        description="A dry run by default: lists the job trees, worktrees, branches and bytes it would remove. "
        "Worktrees of finished jobs go once their result is in the branch you named (merge_into) or "
        "git.keep_worktrees_days after they ended (their branches stay); with --older-than, finished job trees "
        "that ended that long ago go whole (their worker branches too; result branches stay); with --results, the "
        "result branches of finished jobs and of job trees deleted before go too (one merged nowhere else is "
        "listed with a warning). Each tree's sandboxed object store goes with its tree; the folder sandboxes show "
        "your store at (.git/orchestrator-host-objects) and the store all trees shared before "
        "(.git/orchestrator-objects) go once no job uses them. "
        "A running tree, your checkout, a branch a job names as merge_into and any ref outside the branch prefix "
        "are never touched.",
    )
    prune.add_argument(
        "--older-than", metavar="AGE", help="also delete finished job trees that ended this long ago: 0s, 30m, 12h, 7d, 2w"
    )
    prune.add_argument(
        "--results",
        action="store_true",
        help="also delete the result branches (<prefix><job>/result) of finished jobs and of job trees already deleted",
    )
    prune.add_argument("--status", metavar="LIST", help="comma-separated: completed,partial,failed,cancelled (default: all)")
    prune.add_argument("--yes", action="store_true", help="do it (without it: a dry run that only lists)")
    prune.set_defaults(func=_lazy("orchestrator.cli.prune", "cmd_prune"))
    diff = sub.add_parser(
        "diff",
        help="a job's unified diff (its result, or its workers' branches), or one worker's",
        description="Plain diff text by default, so it pipes into less or git apply; capped at --max-bytes "
        "(a note on stderr says when it was cut). From this folder's server when one answers, else read "
        "from the workspace and the repository.",
    )
    diff.add_argument("job_id")
    diff.add_argument("--worker", help="one worker's diff (worker_2, or depth_1_worker_2_1)")
    diff.add_argument("--max-bytes", type=int, metavar="N", help="at most N bytes of diff (default 1 MiB)")
    diff.add_argument("--json", action="store_true", help="the whole answer as JSON (from, to, truncated, bytes, ...)")
    diff.set_defaults(func=_lazy("orchestrator.cli.scripts", "cmd_diff"))


def _add_result_commands(sub: Any) -> None:
    """A finished root job's result acted on again: merge, continue a worker, publish, verify the record,
    show the conflicts."""
    merge = sub.add_parser("merge", help="merge a finished root job's workers' branches into its result branch (again)")
    merge.add_argument("job_id")
    merge.add_argument("--strategy", choices=("auto", "theirs", "manual", "resolve"), help="default: the job's merge_strategy")
    merge.add_argument(
        "--into", metavar="BRANCH", help="fast-forward this branch of yours to the result (default: the job's merge_into)"
    )
    merge.add_argument("--api-url", help="default: this folder's own server")
    merge.add_argument("--json", action="store_true")
    merge.set_defaults(func=cmd_merge)
    resume = sub.add_parser(
        "continue",
        help="continue a finished worker with your feedback: the same CLI in the same checkout and branch, re-gated, "
        "its work added to the job's result as a new commit",
    )
    resume.add_argument("job_id", help="a finished root job")
    resume.add_argument("worker", help="its worker (worker_1)")
    resume.add_argument("feedback", help='what it should do next: "good, now also handle the empty case"')
    resume.add_argument("--no-wait", action="store_true", help="start the round and return")
    resume.add_argument(
        "--timeout", type=float, default=3600.0, metavar="S", help="how long to wait for the round (default 3600)"
    )
    resume.add_argument("--api-url", help="default: this folder's own server")
    resume.add_argument("--json", action="store_true", help="the round's record as JSON")
    resume.set_defaults(func=cmd_continue)
    publish = sub.add_parser(
        "publish", help="push a finished root job's result branch and open or update its pull request (again)"
    )
    publish.add_argument("job_id")
    publish.add_argument("--api-url", help="default: this folder's own server")
    publish.add_argument("--json", action="store_true")
    publish.set_defaults(func=cmd_publish)
    verify = sub.add_parser(
        "verify",
        help="check a root job's signed RECORD.json: its signature, every log's digest, the result branch",
        description="Exit 0 when everything matches; else 1, naming each thing that changed. --key prints "
        "this workspace's public key (made if there is none), for checking records elsewhere.",
    )
    verify.add_argument("job_id", nargs="?")
    verify.add_argument("--key", action="store_true", help="print this folder's public key and exit")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_verify)
    conflicts = sub.add_parser("conflicts", help="what conflicts between a root job's workers' branches, and its last merge")
    conflicts.add_argument("job_id")
    conflicts.add_argument("--api-url", help="default: this folder's own server")
    conflicts.add_argument("--json", action="store_true")
    conflicts.set_defaults(func=cmd_conflicts)


def _add_client_commands(sub: Any) -> None:
    """Other programs' ways in: an AI assistant over MCP, and a cluster node taking attempts from Redis."""
    mcp = sub.add_parser(
        "mcp",
        help="serve the orchestrator's tools to an AI assistant over MCP (stdio)",
        description="A Model Context Protocol server on stdin/stdout: orchestrate, status, wait, logs, cancel, "
        "list_jobs, diff, merge, continue_worker (and spawn inside a worker). Register it with an MCP client, e.g. "
        "claude mcp add orchestrator -- <folder>/.venv/bin/python -m orchestrator mcp",
    )
    mcp.set_defaults(func=_lazy("orchestrator.cli.mcpserver", "cmd_mcp"))
    node = sub.add_parser(
        "node",
        help="run worker attempts for a server whose distributed.executor is rq (a cluster node)",
        description="Take worker attempts from Redis (RQ) and run them on this machine, which must mount the "
        "server's workspace at the same path. Stops cleanly on SIGTERM or Ctrl+C (its running attempts end).",
    )
    node.add_argument("--redis", metavar="URL", help="Redis URL (default: distributed.redis_url)")
    node.add_argument("--slots", type=int, help="attempts at once (default: the number of CPUs)")
    node.add_argument("--kinds", default="claude,codex,command", help="worker kinds to take, comma-separated")
    node.add_argument("--name", help="this node's name (default: HOST-PID)")
    node.add_argument("--prefix", help="queue and key prefix (default: distributed.queue_prefix)")
    node.add_argument("--lease", type=float, help="seconds of a lease (default: distributed.lease)")
    node.set_defaults(func=_lazy("orchestrator.cluster.node", "cmd_node"))


def _lazy(module: str, name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return run


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give a count of lines, 0 or more")
    return value


def _settings(args: argparse.Namespace) -> Any:
    from ..config import load_settings

    return load_settings(args.config)


def _plan_file(path: str) -> list[Any]:
    """``run --plan``: a task graph from a JSON or YAML file (JSON is YAML)."""
    import yaml

    from .spawn import read_plan

    return read_plan(path, yaml.safe_load, (yaml.YAMLError,))


def cmd_run(args: argparse.Namespace) -> int:
    from ..engine.core import Engine
    from .progress import ProgressView
    from .scripts import shown

    settings = _settings(args)
    config: dict[str, Any] = {}
    for key, value in (
        ("max_workers", args.workers),
        ("default_timeout", args.timeout),
        ("max_retries", args.retries),
        ("worker", args.worker),
        ("max_recursion_depth", args.depth),
        ("on_failure", args.on_failure),
    ):
        if value is not None:
            config[key] = value
    if args.no_recursion:
        config["enable_recursion"] = False
    engine = Engine(settings)
    server = _start_embedded_api(engine, settings)
    try:
        job = engine.submission.submit(args.request, config, _plan_file(args.plan) if args.plan else args.tasks)
        if not args.json:
            print(f"job {job.id}: {len(job.tasks)} subtask(s) ({job.planner} planner), worker kind {job.config.worker}")
            if job.goal:
                print(f"goal: {job.goal}")
            for note in job.notes:
                print(f"note: {note}")
            print(f"workspace: {engine.workspace.job_dir(job.root_id)}")
            print(f"follow a worker: tail -f {shown(engine.workspace.logs_dir(job.root_id) / 'depth_0_worker_1.log')}")
        view = ProgressView(sys.stderr if args.json else sys.stdout)
        final: tuple[list[Any], list[Any]] | None = None
        try:
            final = _follow(engine, job.id, view)
        except KeyboardInterrupt:
            print("\ninterrupted: cancelling the job (its workers get SIGTERM, then SIGKILL)", file=sys.stderr)
            engine.cancel(job.id)
            engine.queries.wait(job.id, settings.workers.kill_grace + 10)
        doc: Mapping[str, Any] = engine.queries.status_document(job.id) if final is None else {}
    finally:
        engine.shutdown()
        if server is not None:
            server.close()
    if final is not None:
        # The job is at rest and the engine stopped: its status document is built from the copy
        # the view's last update read, after the engine let go of its own records (a 10,000-worker
        # tree was held twice, the engine's and the copy, while the document was built over them).
        from ..reports.status_document import job_status

        engine.release(job.root_id)
        # Without --json or a terminal only the closing lines are shown, which read no worker's entry.
        doc = job_status(job.id, *final, engine.workspace.job_dir(job.root_id), with_tasks=args.json or view.tty)
        del final
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        view.finish(doc)
    from .scripts import exit_code

    return exit_code(doc)


def _follow(engine: Any, job_id: str, view: Any) -> tuple[list[Any], list[Any]]:
    """Show the job's tree until the job ends, at a cost per change rather than per worker, and
    return the tree's records as they ended (copies):
    re-reading the whole tree at each event made a 10,000-worker run quadratic (the copy
    also holds the engine's lock). Without a terminal, only the workers (and new jobs) the
    events name are read; on a terminal the tree is re-read only when a redraw is due."""
    root = engine.queries.get_job(job_id).root_id
    view.update(*engine.queries.snapshot(root), job_id)
    seq = 0
    while not engine.queries.status_of(job_id).at_rest:  # (not get_job: a copy of a record that lists every worker)
        events = engine.events.wait(root, seq, 1.0)
        if events:
            seq = events[-1].seq
        if view.tty:
            view.refresh(lambda: engine.queries.snapshot(root), job_id)
        elif events:
            view.changed(_changed_workers(engine, root, events))
    final = engine.queries.snapshot(root)  # the tree at rest: the caller's status document is built from it
    view.update(*final, job_id)  # the end, and whatever the bus dropped (it keeps 20,000 events)
    return final


def _changed_workers(engine: Any, root: str, events: list[Any]) -> list[Any]:
    """The current records of the workers ``events`` name, in the order they were named; a
    job's event brings its subtree's workers (a new child job's pending workers)."""
    from ..errors import OrchestratorError
    from ..events import EventType

    found: dict[str, Any] = {}
    jobs_read: set[str] = (
        set()
    )  # a job's subtree once per batch: at a 10,000-worker root's end its few events each copied the tree
    for event in events:
        try:
            if event.type == EventType.WORKER:
                key = f"depth_{event.depth}_{event.worker}"
                if key not in found:
                    found[key] = engine.queries.find_worker(event.job_id, event.depth, event.worker)
            elif event.job_id not in jobs_read:
                jobs_read.add(event.job_id)
                for worker in engine.queries.snapshot(root, event.job_id)[1]:
                    found.setdefault(worker.key, worker)
        except OrchestratorError:  # gone meanwhile (deleted): the last full read shows what is left
            continue
    return list(found.values())


def _start_embedded_api(engine: Any, settings: Settings) -> Any:
    """With recursion on, ``run`` serves the API on an ephemeral loopback port so workers can
    start child jobs exactly as they do under ``api_server.py``."""
    try:
        from .server import embedded_server
    except ModuleNotFoundError:
        return None
    if not settings.recursion.enable:
        return None
    return embedded_server(engine, settings)


def cmd_status(args: argparse.Namespace) -> int:
    from ..engine.queries import Queries
    from ..reports.status_document import status_table
    from ..workspace.ids import validate_job_id
    from ..workspace.layout import Workspace

    settings = _settings(args)
    workspace = Workspace(settings.workspace_root)
    job_id = validate_job_id(args.job_id)
    workspace.load_job(job_id)  # JobNotFound, with its message, when there is no such job
    doc = Queries(workspace, quiet_after=settings.workers.quiet_after).status_document(job_id)
    held = _held(settings, workspace, job_id)
    if args.json:
        print(json.dumps(doc if held is None else {**doc, "held": held}, indent=2))
    else:
        print(status_table(doc))
        if held is not None:
            from ..retention.lifetime import lines

            print("\n".join(lines(held)))
    from .scripts import status_exit_code

    return status_exit_code(doc)


def _held(settings: Settings, workspace: Any, job_id: str) -> dict[str, Any] | None:
    """The root job's worktrees and branches now, and when they go (retention/lifetime.py); None when it has none."""
    from ..errors import OrchestratorError
    from ..git.invocation import GitFailed
    from ..retention.lifetime import shown

    try:
        return shown(settings, workspace, workspace.load_job(job_id))
    except (GitFailed, OrchestratorError):
        return None  # git unavailable now: the status itself still shows


def cmd_logs(args: argparse.Namespace) -> int:
    from ..engine.queries import Queries
    from ..workers.adapters import ADAPTERS
    from ..workspace.ids import parse_worker_ref
    from ..workspace.layout import Workspace

    settings = _settings(args)
    workspace = Workspace(settings.workspace_root)
    reader = Queries(workspace)  # the records on disk: a server may or may not be running
    job = reader.get_job(args.job_id)
    depth, name = parse_worker_ref(args.worker)
    record = reader.find_worker(job.id, depth, name)
    path = reader.log_path(record, args.gate)
    adapter = None if args.gate else ADAPTERS.get(record.kind)  # a gate's output is plain text already
    out = _LogPrinter(None if args.raw or adapter is None else adapter().readable)
    if args.lines:
        offset = _tail_from(path, args.lines, out)
    else:
        offset = _copy_from(path, 0, out)
    while args.follow:
        offset = _copy_from(path, offset, out)
        if reader.find_worker(job.id, record.depth, name).status.terminal:
            _copy_from(path, offset, out)
            break
        time.sleep(0.2)
    out.end()
    return RET_OK


class _LogPrinter:
    """Writes a log to stdout as it grows: as written, or each complete line through its kind's
    ``readable`` (workers/adapters/transcript.py), a partial line held until it ends."""

    def __init__(self, readable: Callable[[str], str | None] | None) -> None:
        self.readable = readable
        self.partial = b""
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> None:
        if self.readable is None and sys.stdout.isatty():  # the worker's bytes, shown (reports/terminal.py)
            sys.stdout.write(self.decoder.decode(data))
        elif self.readable is None:  # piped or to a file: the log as it is
            sys.stdout.buffer.write(data)
        else:
            *lines, self.partial = (self.partial + data).split(b"\n")
            for line in lines:
                self._line(line)
        sys.stdout.flush()

    def end(self) -> None:
        if self.partial:
            self._line(self.partial)
            self.partial = b""
            sys.stdout.flush()

    def _line(self, raw: bytes) -> None:
        assert self.readable is not None
        shown = self.readable(raw.decode("utf-8", errors="replace"))
        if shown is not None:
            sys.stdout.write(shown + "\n")


def _tail_from(path: Path, lines: int, out: _LogPrinter, max_bytes: int = 64 * 1024) -> int:
    """The log's last ``lines`` (of its last ``max_bytes``) to ``out``; the offset after them."""
    from ..workspace.filesystem import open_regular

    handle = open_regular(path)  # a link planted in the log's place is refused (RefusedPath), never followed
    if handle is None:
        return 0
    with handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - max_bytes))
        data = handle.read(size - handle.tell())
    out.feed(b"\n".join(data.splitlines()[-lines:]) + b"\n")
    return size


def _copy_from(path: Path, offset: int, out: _LogPrinter) -> int:
    from ..workspace.filesystem import open_regular

    handle = open_regular(path)  # a link planted in the log's place is refused (RefusedPath), never followed
    if handle is None:
        return offset
    with handle:
        handle.seek(offset)
        data = handle.read()
    out.feed(data)
    return offset + len(data)


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    if args.action is not None:
        from .configure import cmd_config_get, cmd_config_set

        return (cmd_config_get if args.action == ConfigAction.GET else cmd_config_set)(args)
    if args.template:
        from ..config import render_template

        print(render_template(), end="")
        return RET_OK
    if args.reference:
        from ..config.reference import render_reference, splice

        if args.reference == "-":
            print(render_reference(), end="")
        else:
            page = Path(args.reference)
            page.write_text(splice(page.read_text(encoding="utf-8")), encoding="utf-8")
            print(f"wrote the settings reference into {page}")
        return RET_OK
    settings = _settings(args)
    data = settings.public_dict()  # secrets masked: api.api_key, workers.env values
    print(f"# applied: {settings.source}")
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return RET_OK


def _client(args: argparse.Namespace) -> Any:
    from .commands import client_for

    return client_for(args)


def cmd_merge(args: argparse.Namespace) -> int:
    from ..config import MergeStrategy

    answer = _client(args).merge(args.job_id, strategy=args.strategy, into=args.into)
    if args.json:
        print(json.dumps(answer, indent=2))
        return RET_OK
    merge = answer["merge"] or {}
    if "error" in merge:
        print(f"job {answer['job_id']}: the merge failed: {merge['error']}")
        return RET_FAILED
    print(_merge_lines(answer["job_id"], merge))
    return RET_OK if not merge.get("skipped") or merge.get("strategy") == MergeStrategy.MANUAL else RET_PARTIAL


def cmd_continue(args: argparse.Namespace) -> int:
    """Start a continue round, then (unless --no-wait) wait for its end and say what it did."""
    from ..models import WorkerStatus  # a round's state: running, then its worker status

    client = _client(args)
    started = client.continue_worker(args.job_id, args.worker, args.feedback)
    number = started["round"]["number"]
    how = (
        f"resuming its session {started['round']['resumed_session']}"
        if started["round"].get("resumed_session")
        else "a new session with its previous outcome and your feedback"
    )
    if not args.json:
        print(f"job {started['job_id']}: {started['worker']} round {number} started ({how})")
    if args.no_wait:
        if args.json:
            print(json.dumps(started, indent=2))
        else:
            print(f"follow it: ./orchestrator.sh watch {started['job_id']}")
        return RET_OK
    deadline = time.monotonic() + args.timeout
    found: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        doc = client.status(started["job_id"])
        entry = next((w for w in (doc.get("results") or {}).get("tasks") or [] if w.get("worker_id") == started["worker"]), None)
        rounds = (entry or {}).get("rounds") or []
        found = next((r for r in rounds if r.get("number") == number), None)
        if found is not None and found.get("state") != WorkerStatus.RUNNING:
            break
        time.sleep(1.0)
    else:
        from .failures import ClientCode, CommandFailed

        raise CommandFailed(
            ClientCode.TIMEOUT,
            f"round {number} still runs after {args.timeout:g}s: ./orchestrator.sh watch {started['job_id']}",
            RET_FAILED,
            job_id=started["job_id"],
            worker=started["worker"],
            round=number,
        )
    assert found is not None
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        cost = f", ${found['cost_usd']:.4f}" if found.get("cost_usd") is not None else ""
        took = f" in {found['duration']:.1f}s" if found.get("duration") is not None else ""  # the round's own time
        print(f"round {number}: {found['state']}{took} ({found.get('exit_reason')}{cost})")
        print(found.get("merge_note") or "")
    return RET_OK if found["state"] == WorkerStatus.SUCCESS and found.get("result_commit") else RET_FAILED


def cmd_publish(args: argparse.Namespace) -> int:
    answer = _client(args).publish(args.job_id)
    if args.json:
        print(json.dumps(answer, indent=2))
        return RET_OK
    done = answer["publish"] or {}
    pr = done.get("pull_request") or {}
    if done.get("pushed"):
        print(f"job {answer['job_id']}: pushed {done['branch']} ({str(done['commit'])[:12]}) to {done['remote']}")
    if pr and not done.get("error"):
        print(f"pull request {pr.get('action')}: {pr.get('url') or '#' + str(pr.get('number'))}")
    if done.get("error"):
        print(f"job {answer['job_id']}: not published: {done['error']}")
        return RET_FAILED
    return RET_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from ..audit import signing_key as keys
    from ..audit.verify import verify
    from ..delivery.landing import repository
    from ..errors import OrchestratorError
    from ..git.job_refs import ref_value
    from ..workspace.ids import validate_job_id
    from ..workspace.layout import Workspace
    from .failures import ClientCode, CommandFailed

    settings = _settings(args)
    if args.key:
        try:
            print(keys.public_text(keys.load_or_create(settings.workspace_root).public_key()))
        except keys.KeyUnusable as exc:
            raise CommandFailed(ClientCode.NOT_FOUND, f"verify: {exc.message}", RET_FAILED) from None
        return RET_OK
    if not args.job_id:
        raise CommandFailed(
            ClientCode.INVALID_ARGUMENT,
            "verify: name a root job (./orchestrator.sh verify JOB_ID), or --key for this folder's public key",
            RET_USAGE,
        )
    workspace = Workspace(settings.workspace_root)
    job = workspace.load_job(validate_job_id(args.job_id))  # JobNotFound, with its message
    if not job.is_root:
        raise CommandFailed(
            ClientCode.INVALID_ARGUMENT,
            f"verify: job {job.id} is a child job; its tree's record is its root's: verify {job.root_id}",
            RET_USAGE,
        )
    try:
        public = keys.load(keys.key_path(settings.workspace_root)).public_key()
    except FileNotFoundError:
        raise CommandFailed(
            ClientCode.NOT_FOUND,
            f"verify: no signing key at {keys.key_path(settings.workspace_root)}: this folder never signed a record",
            RET_FAILED,
        ) from None
    except keys.KeyUnusable as exc:
        raise CommandFailed(ClientCode.NOT_FOUND, f"verify: {exc.message}", RET_FAILED) from None
    try:
        repo = repository(settings, workspace)
    except OrchestratorError:
        repo = None
    reader = (lambda ref: ref_value(repo, ref)) if repo is not None else None
    record, problems = verify(workspace.job_dir(job.id), public, reader)
    if args.json:
        print(
            json.dumps(
                {
                    "job_id": job.id,
                    "verified": not problems,
                    "problems": problems,
                    "digest": (record or {}).get("signature", {}).get("digest"),
                },
                indent=2,
            )
        )
    elif problems:
        print(f"job {job.id}: RECORD.json NOT verified:")
        print("\n".join(f"  - {p}" for p in problems))
    else:
        assert record is not None
        result = record.get("result") or {}
        where = f"; {result['ref']} still at {result['commit'][:12]}" if result.get("commit") else ""
        print(
            f"job {job.id}: RECORD.json verified: signed by this workspace's key, {len(record.get('logs') or [])} logs "
            f"unchanged{where} ({record['signature'].get('digest')})"
        )
    return RET_OK if not problems else RET_FAILED


def cmd_conflicts(args: argparse.Namespace) -> int:
    from ..git.conflicts import describe
    from ..reports.status_document import resolution_lines

    answer = _client(args).conflicts(args.job_id)
    if args.json:
        print(json.dumps(answer, indent=2))
        return RET_OK
    found = answer["conflicts"]
    print(f"job {answer['job_id']}: {len(found)} predicted conflict(s) between its workers' branches")
    for c in found:
        print(f"  {describe(c)}")
    if answer["merge"]:
        print(_merge_lines(answer["job_id"], answer["merge"]))
    else:
        print("not merged yet")
    for line in resolution_lines(answer):  # merge_strategy resolve: each resolver's work (older servers: none)
        print(f"  {line}")
    return RET_OK


def _merge_lines(job_id: str, merge: dict[str, Any]) -> str:
    """A merge record (delivery/landing.py's shape) as a few lines for a person."""
    from ..git.conflicts import describe

    if "error" in merge:
        return f"last merge failed: {merge['error']}"
    lines = [f"merge ({merge['strategy']}) of job {job_id}: result {merge['result_ref'].removeprefix('refs/heads/')}"]
    lines.append(f"  commit: {merge['result_commit'] or 'none (manual: nothing merged)'}")
    lines.append(f"  merged: {', '.join(merge['merged']) or 'none'}; skipped: {', '.join(merge['skipped']) or 'none'}")
    lines += [f"  left out: {w['worker']} ({w['reason']})" for w in merge.get("left_out") or []]
    lines += [f"  {describe(c)}" for c in merge["conflicts"]]
    into = merge.get("into")
    if into:
        lines.append(
            f"  {into['branch']}: {into['message']}" if into["moved"] else f"  {into['refused']}; run: {into['command']}"
        )
    lines.append(f"  take it with: {merge['command']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
