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
# The user's config still applies (it is theirs), but no hook, fsmonitor or submodule command runs for
# the orchestrator's own git, whatever a config says: a relative ``core.hooksPath`` or a ``python -m``
# fsmonitor resolves from the folder git runs in, and git runs in folders a worker wrote.
PINNED_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "submodule.recurse=false")
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


def command(repo: str | Path | None, *args: str) -> list[str]:
    """The argv of every git the orchestrator starts outside a sandbox: ``git -C repo`` (none: where
    it runs) with the pinned settings, then ``args``."""
    where = ["-C", str(repo)] if repo is not None else []
    return ["git", *where, *PINNED_CONFIG, *args]


def text(raw: bytes) -> str:
    """git's output as text: UTF-8, a byte that is not shown as ``\\xNN`` (a file name need not be
    UTF-8, and what is read must go into JSON), and a carriage return kept as one (no newline
    translation: a ``\\r`` in a name is part of the name)."""
    return raw.decode("utf-8", "backslashreplace")


def run_git(
    repo: str | Path,
    *args: str,
    input: str | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """``git -C repo args...``; text in and out (``text``). Raises GitFailed on a non-zero exit when
    ``check`` (FileNotFoundError without git, subprocess.TimeoutExpired past ``timeout``)."""
    argv = ["-C", str(repo), *args]
    done = subprocess.run(
        command(repo, *args),
        input=input.encode("utf-8", "surrogateescape") if input is not None else None,
        capture_output=True,
        env=git_env(env),
        stdin=None if input is not None else subprocess.DEVNULL,
        timeout=timeout,
    )
    out, err = text(done.stdout), text(done.stderr)
    if check and done.returncode != 0:
        raise GitFailed(argv, done.returncode, err)
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def git_bytes(repo: str | Path, *args: str, input: bytes | None = None) -> bytes:
    """``git -C repo args...`` returning stdout as bytes (blob contents need not be text)."""
    argv = ["-C", str(repo), *args]
    stdin = None if input is not None else subprocess.DEVNULL
    done = subprocess.run(command(repo, *args), input=input, capture_output=True, env=git_env(), stdin=stdin)
    if done.returncode != 0:
        raise GitFailed(argv, done.returncode, done.stderr.decode("utf-8", "replace"))
    return done.stdout


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from ``git --version``'s output, or None when it names none."""
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return (int(found[1]), int(found[2]), int(found[3] or 0)) if found else None
