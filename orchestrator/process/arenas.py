"""How many malloc arenas this process's threads share (glibc's ``M_ARENA_MAX``).

glibc gives each thread that allocates an arena of its own, up to 8 per CPU; memory freed in
one stays there, in pieces between what is still held, and a server whose thread pool hands
each worker to whichever thread is free spreads its records over all of them. A 10,000-worker
run through ``run`` grew 6-8 KB of resident memory per finished worker that way, against 2 KB
of Python objects; with two arenas it grew 2 KB (bench/bench_scale.py, bench/README.md). The
threads take the GIL to allocate Python objects, so they seldom wait for each other's arena.

Set once, before the process starts its threads; ``MALLOC_ARENA_MAX`` in the environment (the
user's own choice) wins, and another C library than glibc is left as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys

ARENAS = 2
_M_ARENA_MAX = -8  # malloc.h


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Ask glibc for at most ``arenas`` malloc arenas; whether it took the setting."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): its own allocator stays
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
