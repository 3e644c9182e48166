"""RQ's own cost per job on a node: its forking ``Worker`` (what a node's pool runs: a work horse
forked per attempt) against the non-forking ``SimpleWorker``, in one run.

    .venv/bin/python bench/bench_rq_worker.py [--jobs 200]

A redis-server of the bench's own (bench_cluster_protocol.py's ``Redis``: 127.0.0.1, a password,
stopped at the end). Each worker class drains ``--jobs`` trivial JSON jobs (``os.getpid``) in burst
mode; the figure is wall time and CPU (this process and the horses it reaped) per job. It says how
much of a node's CPU per attempt (bench_cluster.py) is RQ's process-per-job model rather than the
attempt protocol. A measurement: exit 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rq import Queue, SimpleWorker, Worker  # noqa: E402

from bench.bench_cluster_protocol import Redis  # noqa: E402
from orchestrator.cluster.connect import connect  # noqa: E402
from orchestrator.cluster.leases import SERIALIZER  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per worker class (default 200)")
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 100_000:
        parser.error("--jobs: 1 to 100000")
    folder = Path(tempfile.mkdtemp(prefix="bench-rq-worker-"))
    redis = Redis(folder, "no")
    try:
        client = connect(redis.url)
        print(f"bench_rq_worker: {args.jobs} trivial jobs per worker class; {redis.version}")
        for cls in (Worker, SimpleWorker):
            queue = Queue(f"bench-{cls.__name__}", connection=client, serializer=SERIALIZER)
            for _ in range(args.jobs):
                queue.enqueue_call("os.getpid", timeout=-1, result_ttl=0)
            worker = cls([queue], connection=client, serializer=SERIALIZER)
            wall, cpu = time.monotonic(), time.process_time()
            reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
            worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = time.process_time() - cpu + (after.ru_utime - reaped.ru_utime) + (after.ru_stime - reaped.ru_stime)
            per = 1000 / args.jobs
            print(f"{cls.__name__:12}: {(time.monotonic() - wall) * per:.1f} ms wall, {used * per:.1f} ms CPU per job")
    finally:
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
