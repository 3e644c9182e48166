"""Keeps this folder's tests out of a host repository's test run.

When the orchestrator folder sits inside another project, a bare ``pytest`` at that project's
root would otherwise collect the folder's tests (without its markers and settings). They are
collected only when pytest runs with this folder as its root directory, as
``.venv/bin/python -m pytest`` here (or ``pytest path/to/this/folder``) does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path: Path, config: Any) -> bool | None:
    if Path(str(config.rootpath)).resolve() != HERE:
        return True  # a host's run: not ours to collect
    return None  # our own run: pytest's usual rules
