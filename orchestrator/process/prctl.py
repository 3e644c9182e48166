"""Linux's prctl, the two uses this package makes of it: a parent-death signal (a cluster node's
processes, a worker's launcher) and the supervisor's subreaping of its workers' trees.

Kept to the standard library (the supervisor imports it in a fresh interpreter per server). Each
call is False where it is not supported (not Linux, no C library's prctl)."""

from __future__ import annotations

import functools
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


@functools.lru_cache(maxsize=1)
def libc_prctl() -> Any:
    """The C library's prctl, loaded once (load it before a fork whose child calls it: a child of a
    threaded process must not take the loader's locks)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def set_parent_death_signal(signum: int) -> bool:
    """Have the kernel send ``signum`` to this process when the thread that started it ends
    (PR_SET_PDEATHSIG), so a cluster node's processes die with it."""
    return _call(_PR_SET_PDEATHSIG, int(signum))


def become_subreaper() -> bool:
    """This process, not the machine's init, inherits the orphans of its descendants and reaps them
    (PR_SET_CHILD_SUBREAPER)."""
    return _call(_PR_SET_CHILD_SUBREAPER, 1)


def _call(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return int(libc_prctl()(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
