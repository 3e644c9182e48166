"""Running-worker benchmark: the server's CPU while its workers run, on a large repository.

    .venv/bin/python bench/bench_running.py [--files 20000] [--workers 8] [--seconds 30] [--warmup 0]

A real worker runs for minutes, so what it costs the server is mostly what the server does while it
runs: the resource monitor's samples every ``workers.monitor_interval`` (its processes' memory and
CPU, its cgroup's counts, its log's size, and its disk use: a walk of its checkout). In a fresh git
repository of ``--files`` small files, one job of ``--workers`` workers in worktree isolation, each
running ``sleep``, through the real Engine; once all have started (and ``--warmup`` seconds more),
the engine process's CPU time (every thread) over ``--seconds`` of wall time, in ms a second. The
window is long: the first walks of every checkout come at once, the next ones seconds apart.

(a) the default settings (``workers.max_disk_mb`` 4096: the disk cap read by walking each checkout);
(b) the same with ``workers.max_disk_mb: 0`` (no disk cap, nothing walked): the baseline, measured
    in the same run, in another job on the same repository.

Also the CPU of one reading of a worker's disk use (the monitor's own, the median of 5 after the
window) and so how often the pacing lets each worker be read.

``RESULT running: server CPU with the disk cap / without = X.XXx`` (no target: it says what the
disk cap's walks cost; before they were paced (process/monitor.DiskPacer), 8 workers on 20,000
files took 686 ms a second against some 40 without). A measurement, not a test: exit 0 whatever
the figures, 1 when a job did not complete. No network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from bench_worktree_run import make_repo  # noqa: E402

from orchestrator.checkouts.retiring import flush_retired  # noqa: E402
from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402
from orchestrator.process.monitor import DISK_SHARE, Watched  # noqa: E402


def server_cpu(base: Path, workers: int, seconds: float, warmup: float, disk_mb: int | None) -> tuple[float, float, float]:
    """The engine's CPU in ms a second while ``workers`` sleeping workers run (``disk_mb``: the cap;
    None: the default), and the CPU in ms of one reading of a worker's disk use (the median of
    WALKS, after the window: the monitor's own reading, its footprint's walk), and workers.monitor_interval."""
    caps = {} if disk_mb is None else {"max_disk_mb": disk_mb}
    settings = load_settings(
        base_dir=base,
        environ={},
        overrides={
            "orchestrator": {"worker": "command", "command": ["sleep", str(int(warmup + seconds + 60))], "max_tasks": 100},
            "workers": {"max_workers": workers, "max_workers_limit": max(workers, 16), "global_max_workers": workers, **caps},
            "git": {"isolation": "worktree", "repo": ".", "remove_worker_worktrees": True},
        },
    )
    engine = Engine(settings)
    try:
        job = engine.submission.submit(
            "benchmark: sleeping workers", {"max_workers": workers}, [f"sleep {i}" for i in range(workers)]
        )
        deadline = time.monotonic() + 300
        while len(engine.worker_threads.watched()) < workers:  # the monitor's own view: their processes run
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job.id}: its {workers} workers' processes did not all start within 300 s")
            time.sleep(0.2)
        time.sleep(warmup)
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        used = (time.process_time() - cpu) / (time.perf_counter() - wall) * 1000
        walk = statistics.median(_walk_cpu(engine.worker_threads.watched()[0]) for _ in range(WALKS))
        engine.cancel(job.id)
        done = engine.queries.wait(job.id, timeout=120)
        if not done.status.terminal:
            raise SystemExit(f"job {job.id} still {done.status.value} after its cancel")
        return used, walk * 1000, settings.workers.monitor_interval
    finally:
        engine.shutdown(timeout=30)
        flush_retired(base)


WALKS = 5


def _walk_cpu(worker: Watched) -> float:
    started = time.thread_time()
    worker.disk_bytes()
    return time.thread_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000, help="files in the repository (default 20000)")
    parser.add_argument("--workers", type=int, default=8, help="workers running at once (default 8)")
    parser.add_argument("--seconds", type=float, default=30.0, help="wall time measured while they run (default 30)")
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="seconds after the last start before it is measured (default 0)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    print(f"bench_running: {args.workers} sleeping workers in worktree isolation, {args.files} files, {args.seconds:g} s")
    print(f"machine: nproc={os.cpu_count()}, load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    base = Path(tempfile.mkdtemp(prefix="bench-running-"))
    try:
        make_repo(base, args.files)
        capped, walk, interval = server_cpu(base, args.workers, args.seconds, args.warmup, None)
        uncapped, _, _ = server_cpu(base, args.workers, args.seconds, args.warmup, 0)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"  with the disk cap (default)   {capped:8.1f} ms of server CPU a second ({capped / args.workers:.1f} a worker)")
    print(f"  without (max_disk_mb: 0)      {uncapped:8.1f} ms of server CPU a second ({uncapped / args.workers:.1f} a worker)")
    spacing = max(interval, args.workers * walk / 1000 / DISK_SHARE)
    print(
        f"  one reading of a worker's disk use (a walk of its checkout and git dirs): {walk:.1f} ms of CPU; "
        f"so each worker's is read every {spacing:.2f} s (DISK_SHARE {DISK_SHARE:g} of a CPU for {args.workers})"
    )
    print(
        f"RESULT running: server CPU with the disk cap / without = {capped / max(uncapped, 1e-6):.2f}x ({capped:.1f} / {uncapped:.1f} ms a second)"
    )
    print(f"load average now {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
