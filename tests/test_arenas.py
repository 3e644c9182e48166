"""process/arenas.py: the server's threads share at most two malloc arenas (glibc), so a long
run's freed memory is not left in an arena per thread; the user's MALLOC_ARENA_MAX wins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.process.arenas import limit_arenas

ROOT = Path(__file__).resolve().parent.parent

# A child that allocates from 8 threads at once (each holds its block until all have one) and
# then has glibc print its arenas (malloc_stats: one "Arena N:" line each, on stderr).
CHILD = """
import ctypes, sys, threading
sys.path.insert(0, sys.argv[1])
from orchestrator.process.arenas import limit_arenas
if sys.argv[2] == "limit":
    print("took", limit_arenas(), flush=True)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
barrier = threading.Barrier(8)
def allocate():
    libc.malloc(4096)
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc.malloc_stats()
"""


def arenas_used(mode: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), mode], env={**base, **(env or {})}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena ")), done.stdout


pytestmark = [
    pytest.mark.slow,  # real child processes
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas (Linux)"),
]


def test_threads_share_two_arenas_once_limited() -> None:
    """Given 8 threads allocating at once, when the arenas are limited first, then glibc has made
    at most 2 (without the limit the same child makes one per thread: the check can fail)."""
    unlimited, _ = arenas_used("plain")
    limited, said = arenas_used("limit")
    assert said.strip() == "took True"
    assert unlimited > 2, f"the child did not make an arena per thread ({unlimited}): the test proves nothing"
    assert limited <= 2


def test_the_users_setting_wins() -> None:
    """Given MALLOC_ARENA_MAX in the environment, limit_arenas leaves glibc's setting alone."""
    count, said = arenas_used("limit", {"MALLOC_ARENA_MAX": "4"})
    assert said.strip() == "took False"
    assert 2 < count <= 4


def test_not_taken_where_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process: an explicit MALLOC_ARENA_MAX means no mallopt call at all."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_arenas() is False
