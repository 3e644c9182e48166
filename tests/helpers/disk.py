"""A real small file system for tests of a full disk: a tmpfs the test mounts (root only)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "1m") -> Iterator[Path]:
    """``path`` as a tmpfs of ``size`` while the block runs; the test is skipped, with the reason,
    where this user may not mount one (an ordinary user)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"mount exited {done.returncode}"])[0]
        pytest.skip(f"a full file system is made by mounting a small tmpfs, which this user may not: {why}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


FILL = "import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\ntry:\n    while os.write(fd, b'x' * 4096):\n        pass\nexcept OSError:\n    pass\n"


def fill_command(path: Path) -> list[str]:
    """A python3 command that writes ``path`` until its file system is full, then exits 0."""
    return ["python3", "-c", FILL, str(path)]
