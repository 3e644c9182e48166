"""Run git with an argv list: the one place that builds git's environment.

No shell, ``-C repo`` instead of a changed cwd, no terminal prompt (a credential helper that
asks would hang a server thread), ``LC_ALL=C`` so messages parse the same everywhere. Callers
never pass user text where git could read it as an option: resolve names with
``rev-parse --verify --end-of-options`` first, then pass object ids, or put paths after ``--``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

# Who git names in what it writes for the orchestrator when nothing else says (a ``stash create``
# needs someone); the commits of a job are by the user instead, where they have an identity
# (commits.identity_of), this one being the fallback.
IDENTITY_ENV = {
    "GIT_AUTHOR_NAME": "orchestrator",
    "GIT_AUTHOR_EMAIL": "orchestrator@localhost",
    "GIT_COMMITTER_NAME": "orchestrator",
    "GIT_COMMITTER_EMAIL": "orchestrator@localhost",
}
# Config and hooks of the machine still apply (they are the user's); only these are pinned.
_PINNED = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}


class GitFailed(Exception):
    """git exited non-zero where the caller needed success; carries argv, code and stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"git {' '.join(argv)} exited {returncode}: {stderr.strip()[:2000]}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **_PINNED}
    # A GIT_DIR / GIT_INDEX_FILE inherited from a hook or a parent git would redirect every call.
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def run_git(
    repo: str | Path,
    *args: str,
    input: str | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """``git -C repo args...``; text in and out. Raises GitFailed on a non-zero exit when ``check``
    (FileNotFoundError without git, subprocess.TimeoutExpired past ``timeout``)."""
    argv = ["-C", str(repo), *args]
    done = subprocess.run(
        ["git", *argv],
        input=input,
        capture_output=True,
        text=True,
        env=git_env(env),
        stdin=None if input is not None else subprocess.DEVNULL,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise GitFailed(argv, done.returncode, done.stderr)
    return done


def git_bytes(repo: str | Path, *args: str, input: bytes | None = None) -> bytes:
    """``git -C repo args...`` returning stdout as bytes (blob contents need not be text)."""
    argv = ["-C", str(repo), *args]
    stdin = None if input is not None else subprocess.DEVNULL
    done = subprocess.run(["git", *argv], input=input, capture_output=True, env=git_env(), stdin=stdin)
    if done.returncode != 0:
        raise GitFailed(argv, done.returncode, done.stderr.decode("utf-8", "replace"))
    return done.stdout


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from ``git --version``'s output, or None when it names none."""
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return (int(found[1]), int(found[2]), int(found[3] or 0)) if found else None
