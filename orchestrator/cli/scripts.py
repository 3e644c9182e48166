"""What ``quick-start.sh``, ``check-status.sh`` and ``watch`` run: a client of the API, plus a
fallback to the workspace files when the server is down."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..errors import EXIT_BY_STATUS, EXIT_UNREACHABLE
from ..events import EventType
from ..models import JobStatus
from ..outcomes import ChecksState
from ..reports import terminal

if TYPE_CHECKING:
    from ..config import Settings
    from ..workspace.layout import Workspace

RET_UNREACHABLE = EXIT_UNREACHABLE
RET_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT (128 + 2)
RET_WAITING = 7  # the job waits for approval: nothing failed, someone must decide
RET_NO_CHANGES = 6  # a worktree job that ended completed or partial, but no worker changed anything
RET_RUNNING = 8  # the job has not ended: pending or running (check-status and status, which do not wait)
SERVER_START_TIMEOUT = 20.0
TREE_REFRESH = 0.5  # seconds between two pictures of the tree when following a job
SERVER_LOOK = 2.0  # seconds between two looks for a server that answers again, while ``watch`` reads the files


def _settings(args: argparse.Namespace) -> Any:
    from ..config import load_settings

    return load_settings(args.config)


FOLDER = Path(__file__).resolve().parent.parent.parent  # the orchestrator folder (its scripts live here)
START_LOCK = ".server.start.lock"
START_LOCK_WAIT = SERVER_START_TIMEOUT + 40.0


def shown(path: Path | str) -> str:
    """A path as a hint prints it: relative to where the user stands when it is below, else
    absolute; quoted for a POSIX shell when it holds spaces or other special characters."""
    import shlex

    target = Path(path)
    try:
        text = "./" + str(target.relative_to(Path.cwd()))
    except (ValueError, OSError):  # not below, or the current folder is gone
        text = str(target)
    return shlex.quote(text)


def script(name: str) -> str:
    """How to run one of the folder's scripts from where the user stands."""
    return shown(FOLDER / name)


def folder_url(settings: Settings) -> str | None:
    """The URL of this folder's own running server (verified through its record), or None."""
    from .server import folder_server

    record = folder_server(settings.base_dir)
    return record.url if record else None


def _start_lock(base_dir: Path) -> Any:
    """Wait for the folder's start lock: two quick-starts at once start one server."""
    from ..errors import ServerUnreachable
    from .server import try_lock

    deadline = time.monotonic() + START_LOCK_WAIT
    while True:
        handle = try_lock(base_dir / START_LOCK)
        if handle is not None:
            return handle
        if time.monotonic() > deadline:
            raise ServerUnreachable(
                f"another quick-start in {base_dir} has been starting its server for over {START_LOCK_WAIT:.0f}s; "
                f"see {base_dir / 'logs' / 'server.out'}"
            )
        time.sleep(0.1)


def ensure_server(settings: Settings, config: str | None = None) -> str:
    """The URL of this folder's server, starting one in the background when none runs. Another
    folder's server, or any other program on the configured port, is never used: this folder's
    server then listens on the port it keeps (ports.choose_port), and every hint names it."""
    base = Path(settings.base_dir)
    url = folder_url(settings)
    if url:
        return url
    with _start_lock(base):
        url = folder_url(settings)
        if url:
            return url
        return _start_server(settings, config)


def _start_server(settings: Settings, config: str | None) -> str:
    from .server import folder_lock_held, read_record

    base = Path(settings.base_dir)
    out_path = settings.log_dir / "server.out"
    if folder_lock_held(base):  # a server of this folder that is still starting (say, by hand)
        return _wait_for_record(base, None, out_path)
    # The server runs in the folder, the caller anywhere: config paths travel absolute.
    argv = [sys.executable, str(FOLDER / "api_server.py"), *(["--config", str(Path(config).resolve())] if config else [])]
    env = {**os.environ, protocol.NO_VENV_REEXEC: "1"}
    if env.get(protocol.CONFIG):
        env[protocol.CONFIG] = str(Path(env[protocol.CONFIG]).resolve())
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    with open(out_path, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, cwd=base, env=env)
    url = _wait_for_record(base, proc, out_path)
    record = read_record(base)
    if record is not None and record.note:
        print(record.note, flush=True)
    print(
        f"started this folder's API server at {url} (pid {record.pid if record else proc.pid}; log {shown(out_path)})", flush=True
    )
    return url


def _wait_for_record(base: Path, proc: Any, out_path: Path) -> str:
    """Wait until the folder's server has written its record and answers /health as itself."""
    from ..errors import ServerUnreachable
    from .server import check_record, folder_lock_held, read_record

    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        record = read_record(base)
        if record is not None and (proc is None or record.pid == proc.pid) and check_record(record, 0.5) is None:
            return record.url
        if proc is not None and proc.poll() is not None:
            if folder_lock_held(base):  # lost the folder to a server started another way meanwhile: use that one
                return _wait_for_record(base, None, out_path)
            tail = out_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise ServerUnreachable(
                f"the API server exited with code {proc.returncode}: " + " | ".join(tail) + f" (full log: {shown(out_path)})"
            )
        if proc is None and not folder_lock_held(base):
            raise ServerUnreachable(f"this folder's API server stopped while it started; see {shown(out_path)}")
        time.sleep(0.1)
    if proc is not None:
        proc.terminate()
    raise ServerUnreachable(f"the API server did not answer within {SERVER_START_TIMEOUT:.0f}s; see {shown(out_path)}")


USAGE = 'usage: ./quick-start.sh "request" [max_workers] [timeout_seconds] [--task TASK ...]'


def cmd_quick_start(args: argparse.Namespace) -> int:
    from ..api.client import OrchestratorClient
    from ..errors import ServerUnreachable
    from .progress import ProgressView

    if not args.request.strip():
        print(USAGE, file=sys.stderr)
        print(
            '  e.g. ./quick-start.sh "Build a REST API with authentication, user management, and data CRUD operations"',
            file=sys.stderr,
        )
        return 2
    settings = _settings(args)
    url = ensure_server(settings, args.config)
    client = OrchestratorClient(api_url=url, api_key=settings.api.api_key)
    config: dict[str, Any] = {}
    if args.max_workers is not None:
        config["max_workers"] = args.max_workers
    if args.timeout is not None:
        config["default_timeout"] = args.timeout
    job = client.orchestrate(request=args.request, tasks=args.tasks, config=config or None)
    job_id = job["job_id"]
    view = ProgressView()
    try:  # from here on a Ctrl-C leaves a job running: said, with its commands
        print(f"job {job_id}: {len(job['tasks'])} subtask(s), worker kind {job['worker_kind']}")
        if job.get("goal"):
            print(f"  goal: {job['goal']}")
        for i, task in enumerate(job["tasks"], 1):
            print(f"  {i}. {task}")
        for note in job["notes"]:
            print(f"note: {note}")
        print(f"follow a worker: tail -f {shown(Path(job['workspace']) / 'logs' / 'depth_0_worker_1.log')}", flush=True)
        doc = follow_api(client, job_id, view)
    except KeyboardInterrupt:
        # Ctrl-C stops this follower only: the job runs in the folder's server, which keeps it going.
        print(
            f"\ninterrupted: stopped following job {job_id}; the job keeps running in this folder's API server.\n"
            f"  follow it again: {script('orchestrator.sh')} watch {job_id}\n"
            f"  stop it:         {script('orchestrator.sh')} cancel {job_id}",
            file=sys.stderr,
        )
        return RET_INTERRUPTED
    except ServerUnreachable:
        print(
            f"\nerror: this folder's API server at {url} stopped answering while job {job_id} ran.\n"
            f"  The job is not lost: its records are in {shown(job['workspace'])}.\n"
            f"  Start the server again (it takes the job back, no new job): {script('quick-start.sh')} --start\n"
            f"  then follow job {job_id}: {script('orchestrator.sh')} watch {job_id}\n"
            f"  its status from the files now: {script('check-status.sh')} {job_id}",
            file=sys.stderr,
        )
        return RET_UNREACHABLE
    view.finish(doc, table=True)
    print(f"status again:    {script('check-status.sh')} {job_id}")
    print(f"watch it live:   {script('orchestrator.sh')} watch {job_id}")
    print(
        f"in a browser:    {url}/jobs/{job_id} (sign in with api.api_key from {shown(Path(settings.base_dir) / 'config.yaml')})"
    )
    print(f"this folder's API server keeps running at {url}; stop it with {script('quick-start.sh')} --stop")
    return exit_code(doc)


def exit_code(doc: Mapping[str, Any]) -> int:
    """quick-start's exit status for a job's final status document (the README's exit codes)."""
    if doc.get("no_changes") and doc["status"] in (JobStatus.COMPLETED, JobStatus.PARTIAL):
        return RET_NO_CHANGES
    if doc["status"] == JobStatus.WAITING:
        return RET_WAITING
    return EXIT_BY_STATUS.get(doc["status"], 1)


def status_exit_code(doc: Mapping[str, Any]) -> int:
    """The exit status of a command that shows a job as it is now (check-status, status): quick-start's
    for a job at rest (``exit_code``), 8 for one still pending or running, or whose pull request's
    checks are still watched (its result branch may still move: engine/pr_checks.py)."""
    if doc["status"] in (JobStatus.PENDING, JobStatus.RUNNING):
        return RET_RUNNING
    if (doc.get("checks") or {}).get("state") == ChecksState.WATCHING:
        return RET_RUNNING
    return exit_code(doc)


def cmd_start_server(args: argparse.Namespace) -> int:
    """Start this folder's server in the background unless it runs; print its URL."""
    settings = _settings(args)
    if getattr(args, "url", False):  # stdout holds the URL alone; what starting it says goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            url = ensure_server(settings, args.config)
        print(url)
        return 0
    url = ensure_server(settings, args.config)
    print(f"this folder's API server is running at {url}; stop it with {script('quick-start.sh')} --stop")
    return 0


def follow_api(client: Any, job_id: str, view: Any) -> dict[str, Any]:
    """Follow a job through the API until it ends; returns its final status document. On a
    terminal the tree is redrawn from short long-polls; otherwise each event of the SSE
    stream is printed as a line. A job waiting for approval is at rest too: following it stops
    there, so the caller can say who must decide and how (nothing would change until then)."""
    if view.tty:
        doc = client.status(job_id)
        while not _at_rest(doc):
            view.update_doc(doc)
            asked = time.monotonic()
            doc = client.wait(job_id, timeout=TREE_REFRESH, poll=TREE_REFRESH)
            if not _at_rest(doc):
                # A server that answers at once (the job runs in another process) is not hammered.
                time.sleep(max(0.0, TREE_REFRESH - (time.monotonic() - asked)))
        return doc
    doc = client.status(job_id)
    if doc["status"] == JobStatus.WAITING:  # its stream would end only once someone decides
        return doc
    for event in client.events(job_id, view.last_event):
        if event["event"] == EventType.END:
            break
        view.last_event = event["id"]
        view.event(event["data"])
        data = event["data"]
        if data.get("job_id") == job_id and data.get("status") == JobStatus.WAITING:
            break
    return client.wait(job_id)


def _at_rest(doc: dict[str, Any]) -> bool:
    return doc["status"] in EXIT_BY_STATUS or doc["status"] == JobStatus.WAITING


def follow_files(
    settings: Settings, job_id: str, view: Any, server_back: Callable[[], str | None] | None = None
) -> Mapping[str, Any] | str:
    """Follow a job from its workspace files (no server answering) until it ends: its final status
    document. ``server_back``, asked every SERVER_LOOK seconds: the URL of a server that answers
    for the job again; returned as soon as there is one (the caller follows it instead)."""
    from ..reports.status_document import Silence, job_status
    from ..workspace.ids import root_of
    from ..workspace.layout import Workspace

    workspace = Workspace(settings.workspace_root)
    workspace.load_job(job_id)  # JobNotFound, with its message, when there is no such job
    root = root_of(job_id)
    view.silence = Silence(workspace.job_dir(root), settings.workers.quiet_after).words
    looked = time.monotonic()
    while True:
        jobs, workers = workspace.load_tree(root)
        view.update(jobs, workers, job_id)
        if next(j for j in jobs if j.id == job_id).status.at_rest:
            return job_status(job_id, jobs, workers, workspace.job_dir(root))
        if server_back is not None and time.monotonic() - looked >= SERVER_LOOK:
            looked = time.monotonic()
            url = server_back()
            if url:
                return url
        time.sleep(TREE_REFRESH)


def _server_for(args: argparse.Namespace, settings: Settings) -> tuple[str | None, str]:
    """The URL to ask (the one given, else this folder's own server) and, when there is none,
    why the workspace files are read instead."""
    if args.api_url:
        return args.api_url, ""
    url = folder_url(settings)
    return url, "" if url else "this folder's API server is not running"


def cmd_watch(args: argparse.Namespace) -> int:
    """A job's tree, live, until it ends: from the API when a server answers, else from the files.
    A server that stops answering meanwhile (killed, stopped, restarting) is said once, and the
    files are followed instead; once a server answers for the job again, it is followed again."""
    from ..api.client import OrchestratorClient
    from ..errors import JobNotFound, ServerUnreachable, Unavailable
    from ..workspace.ids import validate_job_id
    from .progress import ProgressView

    settings = _settings(args)
    job_id = validate_job_id(args.job_id)
    key = settings.api.api_key or "-"

    def answering() -> tuple[str | None, str]:
        url, why = _server_for(args, settings)
        if url and not _answers(OrchestratorClient(api_url=url, api_key=key, retries=0, timeout=5), job_id):
            return None, f"no server answering at {url}"
        return url, why

    def back() -> str | None:  # asked while the files are followed
        try:
            return answering()[0]
        except JobNotFound:  # another server on that port, which knows nothing of the job
            return None

    view = ProgressView()
    url, why = answering()
    doc: Mapping[str, Any]
    while True:
        if url:
            try:
                doc = follow_api(OrchestratorClient(api_url=url, api_key=key), job_id, view)
                source = f"from {url}"
                break
            except (ServerUnreachable, Unavailable):
                why = f"the server at {url} stopped answering"
                view.note(f"{why}; following the workspace files")
        try:
            found = follow_files(settings, job_id, view, server_back=back)
        except JobNotFound:
            if not url:
                raise
            raise ServerUnreachable(
                f"{why}, and {settings.workspace_root} holds no job {job_id} to follow instead "
                "(the job ran in another folder's server): follow it again once that server answers"
            ) from None
        if isinstance(found, str):
            view.note(f"the server at {found} answers{' again' if url == found else ''}; following it")
            url = found
            continue
        doc, source = found, f"from the workspace files ({why})"
        break
    view.finish(doc, table=True)
    print(f"({source})")
    return exit_code(doc)


def _answers(client: Any, job_id: str) -> bool:
    """Whether the server behind ``client`` answers for ``job_id`` now (one try, no retries)."""
    from ..errors import ServerUnreachable, Unavailable

    try:
        client.status(job_id)
    except (ServerUnreachable, Unavailable):
        return False
    return True


def cmd_check_status(args: argparse.Namespace) -> int:
    from ..api.client import OrchestratorClient
    from ..engine.queries import Queries
    from ..errors import ServerUnreachable
    from ..reports.status_document import status_table
    from ..workspace.ids import validate_job_id
    from ..workspace.layout import Workspace

    settings = _settings(args)
    newest = args.job_id is None
    job_id = validate_job_id(args.job_id) if not newest else _newest_job(Workspace(settings.workspace_root))
    url, why = _server_for(args, settings)
    doc: Mapping[str, Any] | None = None
    if url:
        try:
            doc = OrchestratorClient(api_url=url, api_key=settings.api.api_key or "-", retries=0, timeout=5).status(job_id)
            source = f"from {url}"
        except ServerUnreachable:
            why = f"no server answering at {url}"
    if doc is None:
        workspace = Workspace(settings.workspace_root)
        workspace.load_job(job_id)  # JobNotFound, with its message, when there is no such job
        doc = Queries(workspace, quiet_after=settings.workers.quiet_after).status_document(job_id)
        source = f"from the workspace files ({why})"
    print(status_table(doc))
    print(f"({source})")
    if newest:
        print(f"(the newest job in {settings.workspace_root}; give a JOB_ID for another)")
    return status_exit_code(doc)


# -- diff ---------------------------------------------------------------------------------
def cmd_diff(args: argparse.Namespace) -> int:
    """A job's or a worker's unified diff, as plain text (pipe it to less or git apply) or JSON:
    from this folder's server when one answers, else read from the records and the repository."""
    import json

    from ..engine.queries import Queries
    from ..errors import ValidationError
    from ..git import diffs
    from ..workspace.ids import parse_worker_ref, validate_job_id
    from ..workspace.layout import Workspace

    settings = _settings(args)
    job_id = validate_job_id(args.job_id)
    worker = None if args.worker is None else parse_worker_ref(args.worker)
    if args.max_bytes is not None and not 1 <= args.max_bytes <= diffs.MAX_BYTES_CEILING:
        raise ValidationError(f"--max-bytes {args.max_bytes} must be a whole number from 1 to {diffs.MAX_BYTES_CEILING}")
    client = server_client(settings)
    if client is not None:
        doc = client.diff(job_id, args.worker, args.max_bytes)
    else:
        workspace = Workspace(settings.workspace_root)
        reader = Queries(workspace)
        cap = diffs.DEFAULT_MAX_BYTES if args.max_bytes is None else args.max_bytes
        if worker is None:
            doc = diffs.job_diff(reader, settings, workspace, job_id, cap)
        else:
            doc = diffs.worker_diff(reader, settings, workspace, job_id, worker, cap)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    # A patch piped on (to git apply, a file) goes as it is; on a terminal, its control characters are shown.
    (sys.stdout if sys.stdout.isatty() else terminal.raw(sys.stdout)).write(doc["diff"])
    if doc["truncated"]:
        print(
            f"diff truncated: {len(doc['diff'].encode())} of {doc['bytes']} bytes shown; "
            f"--max-bytes N (up to {diffs.MAX_BYTES_CEILING}) shows more",
            file=sys.stderr,
        )
    return 0


def _newest_job(workspace: Workspace) -> str:
    """The root job created last in this folder's workspace (check-status.sh with no JOB_ID)."""
    from ..errors import JobNotFound

    created = []
    for root_id in workspace.root_ids():
        try:
            created.append((workspace.load_job(root_id).created_at, root_id))
        except (JobNotFound, OSError, ValueError):
            continue  # a folder being created or removed: not a job to show
    if not created:
        raise JobNotFound(f'no job in {workspace.root} yet: run ./quick-start.sh "your request" first')
    return max(created)[1]


def cmd_stop_server(args: argparse.Namespace) -> int:
    """SIGTERM this folder's server (it cancels running jobs) and wait for it to exit. Only a
    process the folder's record names, whose start time and /health instance id match, is
    signalled; a bare pid file is never trusted."""
    import signal

    from .server import check_record, folder_lock_held, read_record, record_path

    settings = _settings(args)
    base = Path(settings.base_dir)
    record = read_record(base)
    if record is None:
        print(f"no API server is recorded for this folder ({shown(record_path(base))} is missing); nothing to stop")
        return 0
    why = check_record(record, timeout=5.0)  # a busy server (recovering jobs) may answer slowly
    if why is not None:
        if not folder_lock_held(base):  # no server of this folder runs: the record is stale
            record_path(base).unlink(missing_ok=True)
            print(f"this folder's API server is not running (stale record removed: {why}); nothing to stop")
            return 0
        print(f"not stopping pid {record.pid}: {why}. Nothing was signalled.", file=sys.stderr)
        return 1
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _alive(record) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(record):
        print(
            f"this folder's API server (pid {record.pid}) is still stopping after 60s; its running jobs are being cancelled",
            file=sys.stderr,
        )
        return 1
    print(f"stopped this folder's API server at {record.url} (pid {record.pid})")
    return 0


def cmd_restart_server(args: argparse.Namespace) -> int:
    """Stop this folder's server (when one runs) and start it again: on the port it kept while
    that is free (ports.choose_port)."""
    stopped = cmd_stop_server(args)
    return stopped if stopped != 0 else cmd_start_server(args)


def _alive(record: Any) -> bool:
    import psutil

    from .server import process_start_time

    started = process_start_time(record.pid)
    if started is None or abs(started - record.started_at) > 0.05:
        return False
    try:  # a zombie (a test's own child) has ended
        return psutil.Process(record.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def running_server(base_dir: Path) -> Any:
    """The record of this folder's server when its process still runs, else None."""
    from .server import read_record

    record = read_record(base_dir)
    return record if record is not None and _alive(record) else None


def server_client(settings: Settings) -> Any:
    """A client of this folder's server when one answers, else None."""
    from ..api.client import OrchestratorClient
    from .server import health_instance

    # This folder's own server (verified through its record); else whatever answers on the
    # configured address, which must then accept this folder's key (see cli/prune.py, _delete_via_server).
    url = folder_url(settings) or settings.api.local_url()
    return OrchestratorClient(api_url=url, api_key=settings.api.api_key) if health_instance(url, 1.0) else None
