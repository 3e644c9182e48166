"""How the server's CPU per worker grows with how many workers run at once, and why: the context
switches its threads make (a diagnostic for bench_engine.py's server CPU target, no target of its own).

    .venv/bin/python bench/probe_switches.py [--jobs 500] [--at-once 1,4,16] [--sandbox off] [--repeat 2]

For each ``--at-once`` value, ``--repeat`` jobs of ``--jobs`` no-op workers run through the engine
exactly as bench_engine.py runs them (``run_orchestrator``, after one warm-up job), and
``getrusage`` of this process around each prints the server's CPU per worker split into user and
system time, and its voluntary and involuntary context switches per worker. Every system call
releases the GIL; while other worker threads wait for it, the caller waits to get it back, so the
switches (and the system time) per worker grow with the workers that run at once, while the Python
(user time) does not. Temp workspaces are removed at the end; exit 1 only when a job's check fails.

Then the file system's share: the inodes (files and folders) each job left in its workspace per
worker, and the CPU one new inode costs on the workspaces' file system (``--creates`` files and as
many folders made in a fresh folder beside them by one thread; the same on /dev/shm when it is a
tmpfs). On ext4 without a journal an inode freed in the last minutes is stepped over by every later
creation (the kernel's recently-deleted check), so after other runs' deletions one creation there
can cost half a millisecond of system time, against microseconds on a tmpfs: their product is the
server's system time per worker that no change of its threads removes.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_engine import CheckFailed, run_orchestrator  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="no-op workers per job (default 500)")
    parser.add_argument("--at-once", default="1,4,16", help="comma-separated concurrencies (default 1,4,16)")
    parser.add_argument("--sandbox", default="off", choices=("off", "auto"), help="workers.sandbox (default off)")
    parser.add_argument("--network", default="allow", choices=("allow", "host"), help="workers.sandbox_network")
    parser.add_argument("--repeat", type=int, default=2, help="jobs per concurrency (default 2)")
    parser.add_argument("--creates", type=int, default=500, help="files and folders made to time a new inode (0: none)")
    args = parser.parse_args(argv)
    try:
        levels = [int(part) for part in args.at_once.split(",") if part.strip()]
    except ValueError:
        parser.error(f"--at-once takes comma-separated whole numbers, not {args.at_once!r}")
    if args.jobs < 1 or args.repeat < 1 or args.creates < 0 or not levels or min(levels) < 1:
        parser.error("--jobs, --repeat and each --at-once value must be at least 1 (--creates at least 0)")
    workspaces: list[Path] = []
    try:
        run_orchestrator(min(100, args.jobs), max(levels), workspaces, sandbox=args.sandbox, network=args.network)
        print(
            f"{'at once':>7}  {'server CPU':>10}  {'user':>6}  {'system':>6}  {'voluntary':>9}  {'involuntary':>11}  (per worker)"
        )
        for level in levels:
            for _ in range(args.repeat):
                before = resource.getrusage(resource.RUSAGE_SELF)
                run_orchestrator(args.jobs, level, workspaces, sandbox=args.sandbox, network=args.network)
                after = resource.getrusage(resource.RUSAGE_SELF)
                user = (after.ru_utime - before.ru_utime) / args.jobs * 1000
                system = (after.ru_stime - before.ru_stime) / args.jobs * 1000
                voluntary = (after.ru_nvcsw - before.ru_nvcsw) / args.jobs
                involuntary = (after.ru_nivcsw - before.ru_nivcsw) / args.jobs
                print(
                    f"{level:>7}  {user + system:>7.2f} ms  {user:>6.2f}  {system:>6.2f}  {voluntary:>9.1f}  {involuntary:>11.1f}",
                    flush=True,
                )
        if args.creates:
            inodes = _inodes(workspaces[-1]) / args.jobs
            print(f"inodes each job left in its workspace: {inodes:.1f} per worker")
            for where in _file_systems(workspaces[-1].parent):
                file_us, folder_us = _new_inode(where, args.creates)
                print(
                    f"a new inode in {where}: file {file_us:.0f} us, folder {folder_us:.0f} us of CPU;"
                    f" {inodes:.1f} of them: {inodes * (file_us + folder_us) / 2 / 1000:.2f} ms per worker"
                )
    except CheckFailed as exc:
        print(f"probe_switches: {exc}", file=sys.stderr)
        return 1
    finally:
        for path in workspaces:
            shutil.rmtree(path, ignore_errors=True)
    return 0


def _inodes(workspace: Path) -> int:
    """Files and folders (not links) under ``workspace``."""
    return sum(not os.path.islink(os.path.join(top, name)) for top, dirs, files in os.walk(workspace) for name in dirs + files)


def _file_systems(beside: Path) -> list[Path]:
    """Where a new inode is timed: beside the workspaces, and /dev/shm when it is a tmpfs."""
    found = [beside]
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            if any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts):
                found.append(Path("/dev/shm"))
    except OSError:
        pass
    return found


def _new_inode(where: Path, count: int) -> tuple[float, float]:
    """CPU microseconds (this process's user and system time) one new file, and one new folder, cost
    in a fresh folder under ``where``, made by this thread alone; the folder removed after."""
    folder = Path(tempfile.mkdtemp(prefix="probe-inodes-", dir=where))
    try:
        costs = []
        for make in (
            lambda i: os.close(os.open(folder / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)),
            lambda i: os.mkdir(folder / f"d{i}"),
        ):
            before = time.process_time()
            for i in range(count):
                make(i)
            costs.append((time.process_time() - before) / count * 1e6)
        return costs[0], costs[1]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
