"""Helpers of tests/test_nesting.py, used by other test files too: a server on a host
repository's orchestrator folder whose ``command`` workers start child jobs (WORKER)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from orchestrator.cli.server import start_in_thread
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine

from ..conftest import API_KEY, ROOT, Live
from .worktree import make_host

# The worker every test runs (argv: orchestrator-python WORKER TASK: it uses the Python client, in its cwd, its worktree). The parent
# ("parent: A | B | ...") commits nothing itself, starts one child job per "|"-separated subtask
# with orchestrator-spawn, then writes in marker.json what its own checkout held when spawn returned.
# A child ("write PATH=TEXT") writes TEXT to PATH, and says whether it saw the parent's file.
WORKER = r"""
import json, os, subprocess, sys
from pathlib import Path

task = sys.argv[1]
if os.environ.get("PLANT"):  # a hostile worker's plantings first (tests/test_no_deputy.py)
    subprocess.run(["sh", os.environ["PLANT"]], check=True)
if task.startswith("slow "):
    import time
    time.sleep(2)
    task = task.removeprefix("slow ")
if task.startswith("nowait:"):  # spawn, edit while the child runs, then wait for it
    Path("before_spawn.txt").write_text("the parent's work before its spawn\n")
    subtasks = [part.strip() for part in task.removeprefix("nowait:").split("|")]
    started = subprocess.run(["orchestrator-spawn", "--json", *subtasks], capture_output=True, text=True, check=True)
    job_id = json.loads(started.stdout)["job_id"]
    Path("after_spawn.txt").write_text("written while the child ran\n")
    Path("app.py").write_text(Path("app.py").read_text() + "# the parent's edit\n")
    from orchestrator.api.calls import SpawnClient
    doc = SpawnClient().wait(job_id)
    seen = {name: Path(name).read_text() if Path(name).exists() else None for name in ("a.txt", "after_spawn.txt", "app.py")}
    status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout
    Path("marker.json").write_text(json.dumps({"seen": seen, "exit": 0, "status": status, "merge": doc["merge"]}))
elif task.startswith("exit:"):  # spawn and exit at once: the child ends after its parent's process
    Path("before_spawn.txt").write_text("the parent's work before its spawn\n")
    subprocess.run(["orchestrator-spawn", *[p.strip() for p in task.removeprefix("exit:").split("|")]], check=True)
    Path("marker.json").write_text(json.dumps({"exit": 0}))
elif task.startswith("parent:"):
    Path("before_spawn.txt").write_text("the parent's work before its spawn\n")
    if os.environ.get("LOCK_INDEX"):  # another git holds this worktree's index: the commit must fail
        lock = subprocess.run(["git", "rev-parse", "--git-path", "index.lock"], capture_output=True, text=True).stdout.strip()
        Path(lock).write_text("")
    if os.environ.get("DETACH"):  # the worker leaves its branch: the merge must not follow it
        subprocess.run(["git", "checkout", "-q", "--detach"], check=True)
    subtasks = [part.strip() for part in task.removeprefix("parent:").split("|")]
    done = subprocess.run(["orchestrator-spawn", "--wait", *subtasks], capture_output=True, text=True)
    if os.environ.get("LOCK_INDEX"):
        os.remove(lock)
    seen = {}
    for name in ("a.txt", "b.txt", "c.txt", "app.py"):
        seen[name] = Path(name).read_text() if Path(name).exists() else None
    status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout
    Path("marker.json").write_text(json.dumps({"seen": seen, "exit": done.returncode, "out": done.stdout,
                                                "err": done.stderr, "status": status}))
elif task.startswith("mid "):  # a child that starts its own child job: "mid NAME" -> NAME and NAME.2
    name = task.removeprefix("mid ")
    subprocess.run(["orchestrator-spawn", "--wait", f"write {name}=deep", f"write {name}.2=deeper"], check=True)
    Path(name + ".mid").write_text(Path(name).read_text())  # the grandchild's file, in its own checkout
elif task.startswith("write "):
    path, _, text = task.removeprefix("write ").partition("=")
    Path(path).write_text(text + "\n")
    Path(path + ".saw").write_text(str(Path("before_spawn.txt").exists()))
"""


@pytest.fixture
def served(tmp_path):
    """A host repository with the orchestrator's folder in it, and a real server on that folder."""
    host, folder = make_host(tmp_path)
    script = tmp_path / "worker.py"  # outside the repository
    script.write_text(WORKER)
    started = []

    def start(env: dict[str, str] | None = None, sandbox: str = "auto", sections: dict | None = None, **git_settings) -> Live:
        workers = {"retry_backoff": 0.05, "kill_grace": 0.5, "default_timeout": 120, "max_retries": 0, "sandbox": sandbox}
        overrides = {
            "workers": {**workers, "env": env or {}},
            "orchestrator": {
                "worker": "command",
                "command": [str(ROOT / "orchestrator" / "bin" / "orchestrator-python"), str(script), "{task}"],
            },
            "api": {"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
            "git": git_settings,
        }
        for name, values in (sections or {}).items():  # more of a section's settings
            overrides[name] = {**overrides.get(name, {}), **values}
        settings = load_settings(base_dir=folder, environ={}, overrides=overrides)
        engine = Engine(settings)
        server = start_in_thread(settings, engine, port=0)
        started.append((server, engine))
        return Live(server.url, API_KEY, engine)

    yield host, folder, start
    for server, engine in started:
        engine.shutdown(timeout=10)
        server.close()


def run_tree(live: Live, parent_task: str, depth: int = 1, **config: Any) -> tuple[dict, dict, dict]:
    """The root job (one parent worker; ``config``: more of its request's config) run to its end:
    its status, the parent's marker, its child job."""
    request = {"max_recursion_depth": depth, **config}
    root_id = live.submit(request="tree", tasks=[parent_task], config=request).json()["job_id"]
    doc = wait(live, root_id)
    wt = live.engine.workspace.worker_dir(root_id, 0, "worker_1")
    marker = json.loads((wt / "marker.json").read_text())
    child = live.call("GET", f"/api/v1/jobs/{root_id}-c1/status").json() if marker["exit"] != 1 else {}
    return doc, marker, child


def wait(live: Live, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = live.call("GET", f"/api/v1/jobs/{job_id}/wait?timeout=20").json()
        if doc["status"] in ("completed", "partial", "failed", "cancelled"):
            return doc
    raise AssertionError(f"job {job_id} still {doc['status']} after {timeout}s")
