"""What a worker's start would cost confined by Landlock instead of bubblewrap (a probe for issue
26 item 1: bubblewrap alone is about 7x a bare spawn, so no sandboxed run can meet 4x with it).

    .venv/bin/python bench/probe_landlock.py [--spawns 500] [--repeat 3]

One process starts ``true`` ``--spawns`` times, one at a time, five ways, ``--repeat`` rounds
interleaved; the median per start is printed against ``posix_spawn``:

* posix_spawn: the floor (what the workers' supervisor does for an unsandboxed worker);
* bubblewrap: ``posix_spawn`` of bubblewrap with process/sandbox.py's protections around ``true``;
* fork + Landlock + exec: the child applies a write allow-list (a folder of its own and
  ``/dev/null``) and execs;
* thread + Landlock + posix_spawn: a throwaway thread restricts itself (Landlock binds the
  calling thread, and a child inherits the domain of the thread that started it) and spawns;
  the process's other threads stay unconfined;
* plain fork + exec: what Python's ``fork`` costs by itself.

Before timing, it checks the confinement holds: a child started each Landlock way cannot create
a file outside its folder, can inside it, and the main thread still can. Nothing here is in the
product yet: it measures a mechanism. Linux with Landlock (ABI >= 1) only; without it the probe
says so and exits 0.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.process import backends, sandbox  # noqa: E402

CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446  # the syscall numbers (the same on every architecture)
PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38
# Every access that changes the file system (write, remove, make, rename across folders, truncate).
WRITES = 2 | 16 | 32 | 64 | 128 | 256 | 512 | 1024 | 2048 | 4096 | 8192 | 16384
TRUE = "/usr/bin/true" if os.path.exists("/usr/bin/true") else "/bin/true"

libc = ctypes.CDLL(None, use_errno=True)


def abi() -> int:
    """The kernel's Landlock ABI version (0: none)."""
    if not sys.platform.startswith("linux"):
        return 0
    version = libc.syscall(CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    return max(0, int(version))


def ruleset(folder: str) -> int:
    """A ruleset that allows writes only beneath ``folder`` and to /dev/null."""
    attr = struct.pack("=QQ", WRITES, 0)
    fd = int(libc.syscall(CREATE_RULESET, ctypes.create_string_buffer(attr), len(attr), 0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    for path, allowed in ((folder, WRITES), ("/dev/null", 2 | 16384)):
        target = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, target))
            if libc.syscall(ADD_RULE, fd, PATH_BENEATH, rule, 0) < 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
        finally:
            os.close(target)
    return fd


def restrict(fd: int) -> bool:
    """Confine the calling thread (and what it starts from now on) to the ruleset."""
    return libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 and libc.syscall(RESTRICT_SELF, fd, 0) == 0


def wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def forked(argv: list[str], folder: str | None) -> int:
    """fork; the child (confined when ``folder``) execs ``argv``; its exit code."""
    fd = ruleset(folder) if folder else -1
    pid = os.fork()
    if pid == 0:
        try:
            if fd < 0 or restrict(fd):
                os.execv(argv[0], argv)
        finally:
            os._exit(127)
    if fd >= 0:
        os.close(fd)
    return wait(pid)


def threaded(argv: list[str], folder: str) -> int:
    """A throwaway thread confines itself and posix_spawns ``argv``; its exit code."""
    fd = ruleset(folder)
    started: list[int] = []

    def spawn() -> None:
        if restrict(fd):
            started.append(os.posix_spawn(argv[0], argv, os.environ))

    thread = threading.Thread(target=spawn)
    thread.start()
    thread.join()
    os.close(fd)
    return wait(started[0]) if started else 126


def spawned(argv: list[str]) -> int:
    return wait(os.posix_spawn(argv[0], argv, os.environ))


def check(folder: Path) -> list[str]:
    """The confinement holds each Landlock way; what failed (empty: it holds)."""
    problems = []
    outside = Path(tempfile.mkdtemp(prefix="probe-landlock-outside-"))
    try:
        for name, start in (("fork", forked), ("thread", threaded)):
            for target, allowed in ((outside / name, False), (folder / name, True)):
                code = start(["/bin/sh", "-c", f': 2>/dev/null > "{target}"'], str(folder))
                if (code == 0) != allowed or target.exists() != allowed:
                    problems.append(f"{name}: writing {target} gave exit {code} ({'allowed' if allowed else 'refused'} expected)")
        (outside / "main").write_text("ok")  # the main thread is not confined
    finally:
        for path in outside.iterdir():
            path.unlink()
        outside.rmdir()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spawns", type=int, default=500, help="starts per way per round (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, interleaved; the median is printed (default 3)")
    args = parser.parse_args(argv)
    if not (1 <= args.spawns <= 100_000 and 1 <= args.repeat <= 50):
        parser.error("out of range: spawns 1-100000, repeat 1-50")
    version = abi()
    if version < 1:
        print("probe_landlock: this kernel has no Landlock: nothing to measure")
        return 0
    support = backends.probe()
    print(f"probe_landlock: {args.spawns} starts of `true` per way, {args.repeat} round(s); Landlock ABI {version}")
    with tempfile.TemporaryDirectory(prefix="probe-landlock-") as tmp:
        folder = Path(tmp)
        problems = check(folder)
        if problems:
            print("CHECK FAILED: " + "; ".join(problems))
            return 1
        print("check: a child started either Landlock way writes its folder and nothing outside it; the main thread stays free")
        ways: dict[str, Callable[[], int]] = {
            "posix_spawn": lambda: spawned([TRUE]),
            "fork + Landlock + exec": lambda: forked([TRUE], tmp),
            "thread + Landlock + posix_spawn": lambda: threaded([TRUE], tmp),
            "plain fork + exec": lambda: forked([TRUE], None),
        }
        if support.bwrap is not None:
            bwrap = sandbox.SandboxSpec(bwrap=support.bwrap, writable=(tmp,), chdir=tmp).bubblewrap_argv([TRUE])
            ways["bubblewrap"] = lambda: spawned(bwrap)
        times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.repeat):
            for way, start in ways.items():
                began = time.perf_counter()
                for _ in range(args.spawns):
                    if start() != 0:
                        print(f"CHECK FAILED: {way}: `true` did not exit 0")
                        return 1
                times[way].append((time.perf_counter() - began) / args.spawns * 1000)
    floor = statistics.median(times["posix_spawn"])
    print(f"\n{'way':<34}{'ms/start':>10}{'x posix_spawn':>16}   (median of {args.repeat})")
    for way, values in times.items():
        print(f"{way:<34}{statistics.median(values):>10.3f}{statistics.median(values) / floor:>15.2f}x")
    best = statistics.median(times["thread + Landlock + posix_spawn"])
    line = f"RESULT Landlock start (thread + posix_spawn)/posix_spawn = {best / floor:.2f}x"
    if "bubblewrap" in times:
        line += f"; bubblewrap {statistics.median(times['bubblewrap']) / floor:.2f}x"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
