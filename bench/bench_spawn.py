"""The process layer's cost per worker: how a server starts, waits on and releases one no-op worker,
the supervisor's way against the per-worker shim's, with the engine left out.

    .venv/bin/python bench/bench_spawn.py [--workers 1000] [--concurrency 16] [--repeat 3] [--ballast-mb 150]

Each method starts ``--workers`` ``true`` workers from ``--concurrency`` threads, each with an exit
file and (``limits``) the server's default caps (a cgroup per worker where the machine allows, and
RLIMIT_FSIZE), then waits for it, reads its status and sweeps it, as an attempt does:

* ``Popen``: bare ``subprocess.Popen(["true"]).wait()``, the floor;
* ``shim``: ProcessRunner without a supervisor (a cluster node's way when its supervisor fails):
  the caller forks (a preexec step joins the cgroup, which rules out vfork) and the Perl shim runs
  the worker;
* ``supervisor``: ProcessRunner with the workspace's supervisor (the server's way): no fork of the
  server, no shim;
* ``node``: the same with a parent-death signal, as a cluster node starts an unconfined attempt: the
  supervisor holds its lifeline and the worker dies with the supervisor (``setpriv --pdeathsig``).

``--ballast-mb`` makes this process hold that much memory in many objects first, as a server
holding a large tree does (a fork copies its page tables); the ratios are against Popen from the
same process. The methods are interleaved ``--repeat`` times; medians are printed. A measurement,
not a test: exit 0 whatever the figures, 1 when a worker's status was wrong.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.process.cgroups import Limits  # noqa: E402
from orchestrator.process.runner import ProcessRunner  # noqa: E402
from orchestrator.process.supervisor import SupervisorClient, supported  # noqa: E402

TARGET = 4.0  # issue 26 item 1: the supervisor's per-worker wall over the Popen floor
MB = 1 << 20
DEFAULT_LIMITS = Limits.from_mb(8192, 512, 200, 4096)  # config.yaml's workers.max_* defaults


def run(method: str, workers: int, concurrency: int, folder: Path, runner: ProcessRunner | None) -> float:
    """Wall seconds for ``workers`` workers started ``concurrency`` at a time."""
    env = {"PATH": os.environ.get("PATH", os.defpath)}

    def popen(i: int) -> None:
        if subprocess.Popen(["true"], stdin=subprocess.DEVNULL).wait() != 0:
            raise SystemExit(f"{method}: true failed")

    def attempt(i: int) -> None:
        assert runner is not None
        tag = f"bench-spawn-{os.getpid()}.{method}.{i}"
        handle = runner.spawn(
            ["true"],
            cwd=folder,
            env=env,
            log_path=folder / "log",
            tag=tag,
            exit_file=folder / f"exit.{i}",
            limits=DEFAULT_LIMITS,
            parent_death_signal=signal.SIGKILL if method == "node" else None,
        )
        code = runner.wait(handle, 60)
        runner.release(handle)
        runner.sweep(tag, handle.started_at)
        if code != 0:
            raise SystemExit(f"{method}: worker {i} ended {code}")

    one: Callable[[int], None] = popen if runner is None else attempt
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(workers)))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--ballast-mb", type=int, default=150, help="memory this process holds first, as a server does (default 150)"
    )
    args = parser.parse_args(argv)
    if not supported():
        print("bench_spawn: the supervisor needs Linux pidfds; nothing to compare")
        return 1
    ballast = [[i] * 30 for i in range(args.ballast_mb * MB // 400)]  # many small objects, ~400 B each
    folder = Path(tempfile.mkdtemp(prefix="bench-spawn-"))
    runners = {
        "Popen": None,
        "shim": ProcessRunner(sweep_gather=0.0),
        "supervisor": ProcessRunner(sweep_gather=0.0, supervisor=SupervisorClient(folder / "supervisor")),
        "node": ProcessRunner(sweep_gather=0.0, supervisor=SupervisorClient(folder / "node-supervisor")),
    }
    print(
        f"bench_spawn: {args.workers} no-op workers, {args.concurrency} at a time, {args.repeat} round(s); "
        f"this process holds {len(ballast)} ballast lists; nproc={os.cpu_count()}, uid {os.geteuid()}"
    )
    walls: dict[str, list[float]] = {name: [] for name in runners}
    try:
        for r in range(1, args.repeat + 1):
            for name, runner in runners.items():
                wall = run(name, args.workers, args.concurrency, folder, runner)
                walls[name].append(wall)
                print(f"  round {r} {name:11} {wall:7.3f} s  {wall / args.workers * 1000:6.3f} ms/worker", flush=True)
    finally:
        for runner in runners.values():
            if runner is not None:
                runner.close()
    floor = statistics.median(walls["Popen"])
    print(f"\nmethod        wall s   ms/worker   x Popen   (median of {args.repeat})")
    for name, times in walls.items():
        wall = statistics.median(times)
        print(f"{name:11} {wall:8.3f}   {wall / args.workers * 1000:9.3f}   {wall / floor:6.2f}x")
    ratio = statistics.median(walls["supervisor"]) / floor
    shim = statistics.median(walls["shim"]) / floor
    print(
        f"RESULT supervisor/Popen per worker = {ratio:.2f}x (target <= {TARGET:.2f}x) {'met' if ratio <= TARGET else 'not met'}"
    )
    node = statistics.median(walls["node"]) / floor
    print(f"RESULT shim/Popen per worker = {shim:.2f}x (the per-worker shim, for comparison)")
    print(f"RESULT node/Popen per worker = {node:.2f}x (a node's unconfined attempt, for comparison)")
    del ballast
    return 0


if __name__ == "__main__":
    sys.exit(main())
