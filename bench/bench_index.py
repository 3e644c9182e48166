"""Job-index benchmark (benchmark (b)): listing 10,000 jobs page by page from the index against
scanning the workspace, and the index's rebuild.

    .venv/bin/python bench/bench_index.py [--jobs 10000] [--page 50] [--status failed] [--seed 14] [--scan-pages 10] [--keep]

The workspace: ``--jobs`` root jobs written as records (not run: a job record and its workers'
records per tree, as a finished tree leaves them), each with 1-4 workers, a status drawn from
completed, partial, failed and cancelled (the same ``--seed`` gives the same workspace), created
one second apart. Writing them is not measured.

Rebuild: the SQLite index opened on that workspace with no database file, until it is ready
(every tree read from its records and written in the index): what a first start, or a start
after the file was deleted or found corrupt, costs.

Listing, the figure: every page of ``--page`` jobs filtered by ``--status``, newest first, as
``GET /api/v1/jobs?status=...&limit=...&offset=...`` asks for it. Through the index:
``JobIndex.page`` (which first catches up with the writer and checks the workspace folder, as
it does for the route). The baseline, measured in the same run on the same workspace, is what
the route did before the index: ``Queries(workspace).list_jobs()`` (every root job's record read
and sorted), filtered and sliced. Every scanned page costs the same full scan, so the baseline
measures ``--scan-pages`` pages spread over the listing and its total is their mean times the
page count (said as an estimate). Per-page latency p50 and p99, total and the ratio.

Checks (exit 1 when one fails): both answer the same jobs in the same order with the same
total on every measured page. A measurement, not a test: exit 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.queries import Queries  # noqa: E402
from orchestrator.index import JobIndex, open_index  # noqa: E402
from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus  # noqa: E402
from orchestrator.workspace.layout import Workspace  # noqa: E402

TARGET_P99 = 0.05  # seconds: an index page at p99, whatever the workspace's size
STATUSES = (JobStatus.COMPLETED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED)
WORKER_OF = {
    JobStatus.COMPLETED: (WorkerStatus.SUCCESS,),
    JobStatus.PARTIAL: (WorkerStatus.SUCCESS, WorkerStatus.FAILED),
    JobStatus.FAILED: (WorkerStatus.FAILED,),
    JobStatus.CANCELLED: (WorkerStatus.CANCELLED,),
}


class CheckFailed(Exception):
    """The index and the scan disagreed."""


def write_jobs(workspace: Workspace, count: int, seed: int, start: float = 1_700_000_000.0) -> list[JobRecord]:
    """``count`` finished root jobs with their workers' records, as a run leaves them (seeded)."""
    rng = random.Random(seed)
    jobs = []
    for i in range(count):
        status = rng.choice(STATUSES)
        root = f"{seed % 256:02x}{i:010x}"
        created = start + i
        names = [f"worker_{n}" for n in range(1, rng.randint(1, 4) + 1)]
        job = JobRecord(
            id=root, root_id=root, request=f"benchmark job {i}: " + "x" * rng.randint(0, 400), status=status,
            tasks=[f"part {n}" for n in range(len(names))], worker_names=names, planner="explicit",
            created_at=created, started_at=created, ended_at=created + rng.uniform(1, 60),
        )  # fmt: skip
        workspace.create_job_tree(root)
        workspace.save_job(job)
        for n, name in enumerate(names, 1):
            worker = WorkerRecord(
                job_id=root, root_id=root, name=name, index=n, depth=0, task=job.tasks[n - 1], kind="simulated",
                status=rng.choice(WORKER_OF[status]), created_at=created, started_at=created,
                ended_at=created + rng.uniform(1, 30), cost_usd=round(rng.uniform(0, 0.2), 4),
            )  # fmt: skip
            workspace.save_worker(worker)
        jobs.append(job)
    return jobs


def rebuild(workspace: Workspace) -> tuple[JobIndex, float]:
    settings = load_settings(base_dir=workspace.root.parent, environ={}, overrides={})
    started = time.perf_counter()
    index = open_index(settings, workspace)
    index.flush(timeout=3600)
    return index, time.perf_counter() - started


def scan_page(queries: Queries, status: str, limit: int, offset: int) -> tuple[list[str], int]:
    """What GET /api/v1/jobs did before the index (routes.list_jobs over Queries.list_jobs)."""
    jobs = [j for j in queries.list_jobs() if j.status.value == status]
    return [j.id for j in jobs[offset : offset + limit]], len(jobs)


def timed(fn, *args):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    found = fn(*args)
    return found, time.perf_counter() - started


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=50)
    parser.add_argument("--status", default="failed", choices=[s.value for s in STATUSES])
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--scan-pages", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the workspace")
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="bench-index-"))
    print(f"bench_index: {args.jobs} root jobs, pages of {args.page} filtered by status={args.status} (seed {args.seed})")
    print(f"machine: nproc={os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    index = None
    try:
        workspace = Workspace(base / "workspace", durable=False)
        started = time.perf_counter()
        write_jobs(workspace, args.jobs, args.seed)
        print(f"  wrote {args.jobs} job trees' records in {time.perf_counter() - started:.1f} s (not measured)")
        index, rebuilt = rebuild(workspace)
        print(f"  rebuild: {rebuilt:.2f} s ({rebuilt / max(args.jobs, 1) * 1e6:.0f} us per tree)", flush=True)
        index_times, scan_times, pages = measure(index, Queries(workspace), args)
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}")
        args.keep = True
        return 1
    finally:
        if index is not None:
            index.close()
        if args.keep:
            print(f"kept workspace {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    report(index_times, scan_times, pages, rebuilt)
    return 0


def measure(index: JobIndex, queries: Queries, args: argparse.Namespace) -> tuple[list[float], list[float], int]:
    """Every page through the index; ``--scan-pages`` of them, spread out, by scanning; the same answers."""
    index_times: list[float] = []
    answers: dict[int, tuple[list[str], int]] = {}
    offset = 0
    while True:
        (found, total), took = timed(index.page, args.status, args.page, offset)
        index_times.append(took)
        answers[offset] = ([j["job_id"] for j in found], total)
        offset += args.page
        if offset >= total:
            break
    pages = len(index_times)
    chosen = sorted({(pages - 1) * k // max(args.scan_pages - 1, 1) for k in range(min(args.scan_pages, pages))})
    scan_times = []
    for number in chosen:
        scanned, took = timed(scan_page, queries, args.status, args.page, number * args.page)
        scan_times.append(took)
        if scanned != answers[number * args.page]:
            raise CheckFailed(f"page {number + 1}: the index and the scan list different jobs")
    print(f"  listed {pages} page(s) through the index, {len(scan_times)} by scanning; the same jobs on each", flush=True)
    return index_times, scan_times, pages


def report(index_times: list[float], scan_times: list[float], pages: int, rebuilt: float) -> None:
    ms = 1000.0
    scan_total = statistics.mean(scan_times) * pages
    print()
    print(f"{'figure':<36}{'index':>12}{'workspace scan':>18}")
    print(f"{'page p50 (ms)':<36}{p(index_times, 0.5) * ms:>12.2f}{p(scan_times, 0.5) * ms:>18.1f}")
    print(f"{'page p99 (ms)':<36}{p(index_times, 0.99) * ms:>12.2f}{p(scan_times, 0.99) * ms:>18.1f}")
    print(f"{f'all {pages} pages (s)':<36}{sum(index_times):>12.3f}{scan_total:>17.1f}*")
    print(f"{'rebuild from the workspace (s)':<36}{rebuilt:>12.2f}{'-':>18}")
    print("  * the scan's mean page times the page count (every scanned page is one full scan)")
    ratio = p(scan_times, 0.5) / max(p(index_times, 0.5), 1e-9)
    met = "met" if p(index_times, 0.99) <= TARGET_P99 else "not met"
    print(
        f"RESULT index page p50 {p(index_times, 0.5) * ms:.2f} ms vs scan {p(scan_times, 0.5) * ms:.1f} ms = {ratio:.0f}x faster; "
        f"rebuild {rebuilt:.2f} s; target index p99 <= {TARGET_P99 * ms:.0f} ms: {met}"
    )


if __name__ == "__main__":
    sys.exit(main())
