"""The package's modules that run code for one request, from ``POST /api/v1/orchestrate`` to the
job's terminal status with its result branch: ``python tests/request_path.py [-v]`` from the root.

A real engine and API (Flask's test client) on a repository made in a temp folder, the default
settings (the simulated worker, a worktree each, the sandbox where the machine has one) and the
README's request. A profiler hook counts each module whose function is called from the request on,
in this thread and in the threads started after it (the engine's and the API's own construction
is left out: it is the same for every request). ``-v`` lists them. For before/after figures of a
change of layout, as ``tests/layout_counts.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.config.settings import load_settings  # noqa: E402

REQUEST = "Build a REST API with authentication, user management, and data CRUD operations"
KEY = "k" * 32
ENDED = ("completed", "partial", "failed", "cancelled")


def main() -> int:
    ran: set[str] = set()

    def profiler(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            name = frame.f_globals.get("__name__", "")
            if name.startswith("orchestrator"):
                ran.add(name)

    tmp = Path(tempfile.mkdtemp(prefix="request-path-"))
    try:
        host = tmp / "host"
        host.mkdir()
        for argv in (
            ["init", "-q"],
            ["add", "-A"],
            ["-c", "user.name=u", "-c", "user.email=u@example.com", "commit", "-qm", "init"],
        ):
            if argv[0] == "add":
                (host / "README.md").write_text("a project\n")
            subprocess.run(["git", *argv], cwd=host, check=True, capture_output=True)
        base = host / "tools" / "orchestrator"
        base.mkdir(parents=True)
        settings = load_settings(base_dir=base, environ={}, overrides={"api": {"api_key": KEY}})
        from orchestrator.api.app import create_app
        from orchestrator.engine.core import Engine

        engine = Engine(settings)
        try:
            client = create_app(settings, engine).test_client()
            headers = {"X-API-Key": KEY}
            threading.setprofile(profiler)
            sys.setprofile(profiler)
            reply = client.post("/api/v1/orchestrate", json={"request": REQUEST}, headers=headers)
            if reply.status_code != 202:
                print(f"the request was refused: {reply.status_code} {reply.get_data(as_text=True)}", file=sys.stderr)
                return 1
            job = reply.get_json()["job_id"]
            deadline = time.monotonic() + 120
            status: dict[str, Any] = {}
            while time.monotonic() < deadline and status.get("status") not in ENDED:
                time.sleep(0.1)
                status = client.get(f"/api/v1/jobs/{job}/status", headers=headers).get_json()
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
            engine.shutdown(timeout=10)
        package = [p for p in (ROOT / "orchestrator").rglob("*.py") if "_folder" not in p.parts]
        print(f"job {job}: {status.get('status', 'not ended in 120 s')}")
        print(f"modules that ran code for the request: {len(ran)} of {len(package)} in the package")
        if "-v" in sys.argv:
            print("\n".join(sorted(ran)))
        return 0 if status.get("status") == "completed" else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
