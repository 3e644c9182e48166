"""A scratch copy of this folder as a user gets it (a clone's files: no ``.cli/``, no config.yaml,
no workspace), and a user's shell for it with no AI CLI on PATH, or with a fake one.

The copy takes the files git would give a clone, as they are in this working tree (changes not yet
committed included); ``.venv`` is linked, as ./install.sh would make the same one. Tests run the
copy's own scripts, so the commands a README shows run as written, on the copy's own config.yaml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from orchestrator.workers.clis import login_kinds

from ..conftest import ROOT

VENV = ROOT / ".venv"
# What a user's shell has that a test's may not: a git identity for the commits a README block makes.
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "U", "GIT_AUTHOR_EMAIL": "u@x", "GIT_COMMITTER_NAME": "U", "GIT_COMMITTER_EMAIL": "u@x"}
# The variables of this test run that a fresh user's shell does not have.
NOT_A_USERS = ("ORCHESTRATOR", "ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_", "GEMINI_", "GOOGLE_", "PYTEST_", "COV_")


def copy_folder(dest: Path) -> Path:
    """This folder's files as a clone has them, copied to ``dest``, with ``.venv`` linked."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree, not committed yet
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (dest / ".venv").symlink_to(VENV)
    return dest


def path_without_ai_clis(path: str | None = None) -> str:
    """``PATH`` without the folders that hold an AI CLI (claude, codex, ...): a machine with none."""
    names = login_kinds()
    folders = (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep)
    kept = [d for d in folders if d and not any(os.access(Path(d, name), os.X_OK) for name in names)]
    return os.pathsep.join(kept)


def user_shell(home: Path, path: str, **extra: str) -> dict[str, str]:
    """A user's environment: this one without the test run's and the AI services' variables, its own
    HOME, ``path`` as PATH, a git identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_A_USERS)}
    home.mkdir(parents=True, exist_ok=True)
    return {**env, **GIT_IDENTITY, "HOME": str(home), "PATH": path, **extra}


def fake_cli(folder: Path, kind: str = "claude") -> Path:
    """An executable named ``kind`` in ``folder`` that answers ``--version`` (and claude's ``auth
    status``, logged in with an API key) as the real CLI does, and nothing else: enough for doctor
    and ``auto`` to find it, never to run a worker."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / kind
    program.write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        '  "--version "*) echo "2.1.0 (Claude Code)" ;;\n'
        '  "auth status") echo \'{"loggedIn": true, "authMethod": "api_key", "apiKeySource": "ANTHROPIC_API_KEY"}\' ;;\n'
        '  *) echo "a fake $0 for tests: it runs no worker" >&2; exit 2 ;;\n'
        "esac\n"
    )
    program.chmod(0o755)
    return program


def run(folder: Path, argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``argv`` (a script of the copy, e.g. ``["./orchestrator.sh", "doctor"]``) in ``folder``."""
    return subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
