"""What bubblewrap's start costs by itself, option by option (a probe for issue 26 item 1: how
far below 4x a bare spawn any bubblewrap sandbox can go).

    .venv/bin/python bench/probe_bwrap.py [--spawns 300] [--repeat 3]

One process starts ``true`` ``--spawns`` times, one at a time, with ``posix_spawn`` (no thread
pool, no shim, no orchestrator), each way below, ``--repeat`` rounds interleaved; the median per
start is printed against the bare ``posix_spawn`` of ``true``:

* ``--ro-bind / /``: the least sandbox bubblewrap makes (a mount namespace with the root
  read-only, and under an ordinary user a user namespace);
* then ``--dev /dev`` (a private /dev), ``--proc /proc`` with ``--unshare-pid`` (a PID namespace
  and its /proc), and the orchestrator's own argv for a worker with no paths (process/sandbox.py:
  every protection above, IPC and UTS namespaces, no capabilities).

Every start must exit 0, or the probe stops and says which. Linux with a working bubblewrap only;
without it the probe says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.process import backends, sandbox  # noqa: E402

TRUE = "/usr/bin/true" if os.path.exists("/usr/bin/true") else "/bin/true"


def ways(bwrap: str) -> dict[str, list[str]]:
    least = [bwrap, "--ro-bind", "/", "/"]
    full = sandbox.SandboxSpec(bwrap=bwrap).bubblewrap_argv([TRUE])
    return {
        "posix_spawn": [TRUE],
        "bwrap --ro-bind / /": [*least, "--", TRUE],
        "  + --dev /dev": [*least, "--dev", "/dev", "--", TRUE],
        "  + --proc, --unshare-pid": [*least, "--proc", "/proc", "--unshare-pid", "--", TRUE],
        "the orchestrator's argv": full,
    }


def per_start(argv: list[str], spawns: int) -> float:
    """Median seconds of one start (posix_spawn, then waitpid), each checked to exit 0."""
    times = []
    for _ in range(spawns):
        began = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ)
        _, status = os.waitpid(pid, 0)
        times.append(time.perf_counter() - began)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"probe_bwrap: {' '.join(argv)} exited {os.waitstatus_to_exitcode(status)}")
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spawns", type=int, default=300, help="starts per way and round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, the ways interleaved")
    args = parser.parse_args(argv)
    support = backends.probe()
    if support.bwrap is None:
        print(f"probe_bwrap: no sandbox here ({support.reason}): nothing to measure")
        return 0
    table = ways(support.bwrap)
    rounds: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(args.repeat):
        for name, command in table.items():
            rounds[name].append(per_start(command, args.spawns))
    floor = statistics.median(rounds["posix_spawn"])
    print(f"uid {os.getuid()}, {args.spawns} starts a way, median of {args.repeat} rounds")
    print(f"{'way':<30} {'ms/start':>9} {'x posix_spawn':>14}")
    for name, values in rounds.items():
        median = statistics.median(values)
        print(f"{name:<30} {median * 1000:>9.3f} {median / floor:>13.2f}x")
    least = statistics.median(rounds["bwrap --ro-bind / /"]) / floor
    full = statistics.median(rounds["the orchestrator's argv"]) / floor
    print(
        f"RESULT bwrap --ro-bind / / (the least bubblewrap sandbox)/posix_spawn = {least:.2f}x; the orchestrator's "
        f"argv {full:.2f}x (issue 26 item 1 allows 4x for the whole worker, the engine's own work included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
