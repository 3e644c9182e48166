"""What ``quick-start.sh``, ``check-status.sh`` and ``watch`` run: a client of the API, plus a
fallback to the workspace files when the server is down."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EXIT_BY_STATUS = {"completed": 0, "partial": 3, "failed": 1, "cancelled": 4}
RET_UNREACHABLE = 5
SERVER_START_TIMEOUT = 20.0
TREE_REFRESH = 0.5  # seconds between two pictures of the tree when following a job


def _settings(args: argparse.Namespace) -> Any:
    from .config import load_settings

    return load_settings(args.config)


def local_url(settings: Any) -> str:
    host = settings.api.host
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::", "localhost") else host
    return f"http://{host}:{settings.api.port}"


def healthy(url: str, timeout: float = 1.0) -> bool:
    import requests

    try:
        return requests.get(f"{url}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def ensure_server(settings: Any) -> str:
    """The URL of a running server, starting one in the background when none answers."""
    from .errors import ServerUnreachable

    url = local_url(settings)
    if healthy(url):
        return url
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    out_path = settings.log_dir / "server.out"
    api_server = Path(__file__).resolve().parent.parent / "api_server.py"
    with open(out_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, str(api_server)], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, cwd=settings.base_dir,
                                env={**os.environ, "ORCHESTRATOR_NO_VENV_REEXEC": "1"})
    (Path(settings.base_dir) / ".server.pid").write_text(str(proc.pid))
    print(f"started the API server at {url} (pid {proc.pid}; log {out_path})", flush=True)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if healthy(url, 0.5):
            return url
        if proc.poll() is not None:
            tail = out_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise ServerUnreachable(f"the API server exited with code {proc.returncode}: " + " | ".join(tail) + f" (full log: {out_path})")
        time.sleep(0.1)
    proc.terminate()
    raise ServerUnreachable(f"the API server did not answer {url}/health within {SERVER_START_TIMEOUT:.0f}s; see {out_path}")


def cmd_quick_start(args: argparse.Namespace) -> int:
    from .api.client import OrchestratorClient
    from .progress import ProgressView

    settings = _settings(args)
    url = ensure_server(settings)
    client = OrchestratorClient(api_url=url, api_key=settings.api.api_key)
    config: dict[str, Any] = {}
    if args.max_workers is not None:
        config["max_workers"] = args.max_workers
    if args.timeout is not None:
        config["default_timeout"] = args.timeout
    job = client.orchestrate(request=args.request, config=config or None)
    job_id = job["job_id"]
    print(f"job {job_id}: {len(job['tasks'])} subtask(s), worker kind {job['worker_kind']}")
    for i, task in enumerate(job["tasks"], 1):
        print(f"  {i}. {task}")
    for note in job["notes"]:
        print(f"note: {note}")
    print(f"follow a worker: tail -f {job['workspace']}/logs/depth_0_worker_1.log", flush=True)
    view = ProgressView()
    doc = follow_api(client, job_id, view)
    view.finish(doc, table=True)
    print(f"status again:    ./check-status.sh {job_id}")
    print(f"watch it live:   .venv/bin/python -m orchestrator watch {job_id}")
    print(f"in a browser:    {url}/jobs/{job_id} (sign in with api.api_key from config.yaml)")
    print(f"the API server keeps running at {url}; stop it with ./quick-start.sh --stop")
    return EXIT_BY_STATUS.get(doc["status"], 1)


def follow_api(client: Any, job_id: str, view: Any) -> dict[str, Any]:
    """Follow a job through the API until it ends; returns its final status document. On a
    terminal the tree is redrawn from short long-polls; otherwise each event of the SSE
    stream is printed as a line."""
    if view.tty:
        doc = client.status(job_id)
        while doc["status"] not in EXIT_BY_STATUS:
            view.update_doc(doc)
            asked = time.monotonic()
            doc = client.wait(job_id, timeout=TREE_REFRESH, poll=TREE_REFRESH)
            if doc["status"] not in EXIT_BY_STATUS:
                # A server that answers at once (the job runs in another process) is not hammered.
                time.sleep(max(0.0, TREE_REFRESH - (time.monotonic() - asked)))
        return doc
    for event in client.events(job_id):
        if event["event"] == "end":
            break
        view.event(event["data"])
    return client.wait(job_id)


def follow_files(settings: Any, job_id: str, view: Any) -> dict[str, Any]:
    """Follow a job from its workspace files (no server answering) until it ends."""
    from .status import job_status
    from .workspace import Workspace, root_of

    workspace = Workspace(settings.workspace_root)
    workspace.load_job(job_id)  # JobNotFound, with its message, when there is no such job
    root = root_of(job_id)
    while True:
        jobs, workers = workspace.load_tree(root)
        view.update(jobs, workers, job_id)
        if next(j for j in jobs if j.id == job_id).status.terminal:
            return job_status(job_id, jobs, workers, workspace.job_dir(root))
        time.sleep(TREE_REFRESH)


def cmd_watch(args: argparse.Namespace) -> int:
    """A job's tree, live, until it ends: from the API when a server answers, else from the files."""
    from .api.client import OrchestratorClient
    from .errors import ServerUnreachable
    from .progress import ProgressView
    from .workspace import validate_job_id

    settings = _settings(args)
    job_id = validate_job_id(args.job_id)
    url = args.api_url or local_url(settings)
    key = settings.api.api_key or "-"
    view = ProgressView()
    try:
        OrchestratorClient(api_url=url, api_key=key, retries=0, timeout=5).status(job_id)
    except ServerUnreachable:
        doc = follow_files(settings, job_id, view)
        source = f"from the workspace files (no server answering at {url})"
    else:
        doc = follow_api(OrchestratorClient(api_url=url, api_key=key), job_id, view)
        source = f"from {url}"
    view.finish(doc, table=True)
    print(f"({source})")
    return EXIT_BY_STATUS.get(doc["status"], 1)


def cmd_check_status(args: argparse.Namespace) -> int:
    from .api.client import OrchestratorClient
    from .errors import ServerUnreachable
    from .status import job_status, status_table
    from .workspace import Workspace, root_of, validate_job_id

    settings = _settings(args)
    job_id = validate_job_id(args.job_id)
    url = args.api_url or local_url(settings)
    try:
        doc = OrchestratorClient(api_url=url, api_key=settings.api.api_key or "-", retries=0, timeout=5).status(job_id)
        source = f"from {url}"
    except ServerUnreachable:
        workspace = Workspace(settings.workspace_root)
        workspace.load_job(job_id)
        jobs, workers = workspace.load_tree(root_of(job_id))
        doc = job_status(job_id, jobs, workers, workspace.job_dir(root_of(job_id)))
        source = f"from the workspace files (no server answering at {url})"
    print(status_table(doc))
    print(f"({source})")
    return 0


def cmd_stop_server(args: argparse.Namespace) -> int:
    """SIGTERM the server quick-start started (it cancels running jobs), and wait for it."""
    import signal

    from .config import default_base_dir

    pid_file = default_base_dir() / ".server.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        print("no server started by quick-start.sh is recorded (.server.pid); nothing to stop")
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"server pid {pid} was not running")
        pid_file.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    print(f"stopped the API server (pid {pid})")
    return 0
