"""The cgroup lifecycle's cost per worker attempt (process/cgroups.py), against the kernel's floor.

    .venv/bin/python bench/bench_cgroups.py [--attempts 300] [--repeat 3]

Per attempt, as the process runner does it (``Confined.start``, then ``end`` once it has ended):
make the attempt's cgroup with its limits, open the ``cgroup.procs`` descriptors a child joins
through, and remove it at the end. Two sets of caps: none (every cap 0: a cgroup is still made,
to list and kill the attempt's processes) and the defaults (8192 MB of memory, 512 processes).
Three shapes, each against its own floor measured in the same run, interleaved ``--repeat`` times
(the median is printed):

(a) empty: the lifecycle without a process, against a bare ``mkdir`` + ``rmdir`` of one directory
    in each hierarchy (v1: memory and pids; v2: one): the kernel's cost of a cgroup, nothing read or written;
(b) joined: a forked child writes "0" to the descriptors (it joins, as a worker's preexec does)
    and exits; the end comes after it is reaped. Floor: the same fork, exit and reap, plus (a)'s floor;
(c) one monitor reading (``Cgroup.usage``: members, memory.stat, the kernel's counts) of a
    cgroup holding one sleeping process, against reading ``/proc/<pid>/stat`` of it.

A measurement, not a test: exit 0 whatever the figures; 1 when a check failed (a cgroup left
behind, a process not killed) and 2 where this user may make no cgroup (nothing to measure).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.process.cgroups import Confined, Limits, cgroup_name, hierarchies  # noqa: E402

CAPS = {"no caps": Limits(), "default caps": Limits.from_mb(8192, 512, 0, 0)}


class CheckFailed(Exception):
    pass


def floor_dirs(name: str) -> list[Path]:
    """One directory in each hierarchy this process may make cgroups in (v2: one for both controllers)."""
    return [base / cgroup_name(name + "-floor") for base in sorted({base for _, base in hierarchies().bases.values()})]


def reap(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise CheckFailed(f"child {pid} failed: {status}")


def joined_child(fds: list[int]) -> None:
    pid = os.fork()
    if pid == 0:  # the child: join (as ChildSetup does) and exit
        try:
            for fd in fds:
                os.write(fd, b"0")
        except OSError:
            os._exit(1)
        os._exit(0)
    reap(pid)


def plain_child() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    reap(pid)


def lifecycle(confined: Confined, tag: str, limits: Limits, join: bool) -> None:
    cgroup, setup, _ = confined.start(tag, limits, 1)
    if cgroup is None:
        raise CheckFailed("no cgroup could be made")
    try:
        if join:
            joined_child(setup.fds)
    finally:
        for fd in setup.fds:
            os.close(fd)
    confined.end(tag)


def floor(dirs: list[Path], fork: bool) -> None:
    for directory in dirs:
        directory.mkdir()
    if fork:
        plain_child()
    for directory in dirs:
        directory.rmdir()


def timed(n: int, step: Callable[[int], None]) -> float:
    """Milliseconds per call of ``step(i)`` over ``n`` calls."""
    start = time.perf_counter()
    for i in range(n):
        step(i)
    return (time.perf_counter() - start) / n * 1000


def reading(limits: Limits, n: int, tag: str) -> tuple[float, float]:
    """(ms per Cgroup.usage, ms per /proc/<pid>/stat read) of a cgroup holding one sleeping child."""
    confined = Confined()
    cgroup, setup, _ = confined.start(tag, limits, 1)
    if cgroup is None:
        raise CheckFailed("no cgroup could be made")
    pid = os.fork()
    if pid == 0:
        for fd in setup.fds:
            os.write(fd, b"0")
        os.execv("/bin/sleep", ["sleep", "60"])
    for fd in setup.fds:
        os.close(fd)
    try:
        deadline = time.monotonic() + 5
        while pid not in cgroup.members():
            if time.monotonic() > deadline:
                raise CheckFailed("the child did not join its cgroup")
            time.sleep(0.001)
        per_usage = timed(n, lambda _: cgroup.usage())
        stat = Path(f"/proc/{pid}/stat")
        per_stat = timed(n, lambda _: stat.read_bytes())
    finally:
        confined.end(tag)  # kills the sleeping child (it is in the cgroup)
        os.waitpid(pid, 0)
    return per_usage, per_stat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not hierarchies().bases:
        print("no writable memory or pids cgroup for this user: nothing to measure")
        return 2
    bases = ", ".join(f"{c}: {v.value} {b}" for c, (v, b) in hierarchies().bases.items())
    print(f"hierarchies: {bases}")
    prefix = f"bench-cg-{os.getpid()}"
    confined = Confined()
    rows: dict[tuple[str, str], list[float]] = {}
    try:
        for caps, limits in CAPS.items():
            dirs = floor_dirs(prefix)
            for rep in range(args.repeat):
                for shape, join in (("empty", False), ("joined", True)):

                    def attempt(i: int, limits: Limits = limits, join: bool = join, rep: int = rep) -> None:
                        lifecycle(confined, f"{prefix}.{rep}.{i}", limits, join)

                    def bare(_: int, dirs: list[Path] = dirs, join: bool = join) -> None:
                        floor(dirs, join)

                    rows.setdefault((caps, shape), []).append(timed(args.attempts, attempt))
                    rows.setdefault((caps, shape + " floor"), []).append(timed(args.attempts, bare))
            usage = [reading(limits, args.attempts, f"{prefix}.read.{rep}") for rep in range(args.repeat)]
            rows[(caps, "reading")] = [u for u, _ in usage]
            rows[(caps, "reading floor")] = [s for _, s in usage]
        left = [c.name for c in hierarchies().find_prefix(cgroup_name(prefix))]
        if left:
            raise CheckFailed(f"cgroups left behind: {left}")
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}")
        return 1
    finally:
        confined.end_prefix(prefix, frozenset())
    median = {key: statistics.median(values) for key, values in rows.items()}
    print(f"\n{args.attempts} attempts per set, median of {args.repeat}; ms per attempt (per reading for (c))")
    print(f"{'caps':14} {'shape':10} {'lifecycle':>10} {'floor':>8} {'ratio':>7}")
    for caps in CAPS:
        for shape in ("empty", "joined", "reading"):
            cost, bare = median[(caps, shape)], median[(caps, shape + " floor")]
            print(f"{caps:14} {shape:10} {cost:10.3f} {bare:8.3f} {cost / bare:6.2f}x")
    for caps in CAPS:
        for shape, what in (("empty", "create+end"), ("joined", "create+join+end")):
            cost, bare = median[(caps, shape)], median[(caps, shape + " floor")]
            print(
                f"RESULT cgroup lifecycle per attempt ({caps}, {shape}: {what}) = {cost:.3f} ms, "
                f"{cost / bare:.2f}x its floor ({bare:.3f} ms); the cgroup's own work {cost - bare:+.3f} ms"
            )
    for caps in CAPS:
        cost, bare = median[(caps, "reading")], median[(caps, "reading floor")]
        print(f"RESULT monitor reading per sample ({caps}) = {cost:.3f} ms, {cost / bare:.2f}x one /proc/<pid>/stat read")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
