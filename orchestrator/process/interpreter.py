"""How a child process runs the orchestrator's own Python and package: a worker kind built on it
(simulated, anthropic), the workers' supervisor, the helpers' interpreter."""

from __future__ import annotations

import sys
from pathlib import Path


def python_executable() -> str:
    """The interpreter running us: children start with it, not a PATH shim."""
    return sys.executable


PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent.parent)  # the folder holding this package


def package_argv(module: str, entry: str, args: list[str]) -> list[str]:
    """argv running ``sys.exit(module.entry())`` on the orchestrator's own interpreter and package,
    whatever the worker's PATH, PYTHONPATH and cwd are: those are the user's (their ``python``, their
    project's modules), so the interpreter ignores PYTHON* variables (-E) and the package folder
    takes the cwd's place on sys.path (a worktree may hold a copy of this package)."""
    launch = f"import sys; sys.path[:1] = [sys.argv.pop(1)]; from {module} import {entry}; sys.exit({entry}())"
    return [python_executable(), "-E", "-c", launch, PACKAGE_PARENT, *args]
