"""Helpers of tests/test_worktree.py, used by other test files too."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from orchestrator.config import load_settings
from orchestrator.engine.core import Engine

PREFIX = "refs/heads/orchestrator/"


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env).stdout


def user_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_AUTHOR_NAME": "U",
        "GIT_AUTHOR_EMAIL": "u@x",
        "GIT_COMMITTER_NAME": "U",
        "GIT_COMMITTER_EMAIL": "u@x",
    }


def make_host(tmp_path: Path) -> tuple[Path, Path]:
    """A host repository (a path with spaces) with commits, a .gitignore and an ignored .env,
    and the orchestrator's folder inside it with its own .gitignore, committed; a pre-commit
    hook that fails, which the orchestrator must never run."""
    host = tmp_path / "my host repo"
    folder = host / "tools" / "orch"
    folder.mkdir(parents=True)
    git(host, "init", "-q", "-b", "main")
    (host / "app.py").write_text("print('v1')\n")
    (host / ".gitignore").write_text(".env\n")
    (host / ".env").write_text("SECRET=1\n")
    git(host, "add", "-A")
    git(host, "commit", "-qm", "one", env=user_env())
    (host / "app.py").write_text("print('v2')\nline2\n")
    (folder / ".gitignore").write_text("/workspace/*\n")
    (folder / "config.yaml").write_text("# the folder's own\n")
    git(host, "add", "-A")
    git(host, "commit", "-qm", "two", env=user_env())
    hook = host / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho hook ran >&2\nexit 1\n")
    hook.chmod(0o755)
    return host, folder


def snapshot(host: Path, folder: Path) -> dict[str, object]:
    """What a job must never change in the host."""
    workspace = folder / "workspace"
    files = {}
    for base, dirs, names in os.walk(host):
        dirs[:] = [d for d in dirs if d != ".git" and Path(base, d) != workspace]
        for name in names:
            path = Path(base, name)
            files[str(path.relative_to(host))] = hashlib.sha256(path.read_bytes()).hexdigest()
    refs = [
        line
        for line in git(host, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
        if not line.startswith(PREFIX)
    ]
    return {
        "head": git(host, "rev-parse", "--symbolic-full-name", "HEAD") + git(host, "rev-parse", "HEAD"),
        "status": git(host, "status", "--porcelain=v2", "--branch", "--untracked-files=all"),
        "index": git(host, "ls-files", "-s"),
        "files": files,
        "stash": git(host, "stash", "list"),
        "refs": refs,
    }


def host_engine(folder: Path, **sections: dict) -> Engine:
    overrides = {
        "workers": {"retry_backoff": 0.05, "retry_backoff_max": 0.2, "kill_grace": 0.5, "default_timeout": 30},
        "orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]},
        "simulated": {"duration": 0.05},
    }
    folder = Path(folder)
    if folder.name == "orch" and folder.parent.name == "tools":  # make_host's: the checkouts a sandbox without a
        # project view (Landlock) places outside the orchestrator's folder go to the test's own folder, not ~/.local/state
        overrides["git"] = {"checkouts_root": str(folder.parents[2] / "checkouts")}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return Engine(load_settings(base_dir=folder, environ={}, overrides=overrides))


def workers(engine, job):
    return {w.name: w for w in engine.queries.snapshot(job.root_id)[1]}
