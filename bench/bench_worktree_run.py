"""Worktree-run benchmark: N no-op workers in worktree isolation against a plain ``git worktree
add`` + ``git worktree remove`` loop on the same repository (issue 26 item 2).

    .venv/bin/python bench/bench_worktree_run.py [--workers 200,1000] [--files 200] [--concurrency 16]

For each count in ``--workers``: a fresh git repository of ``--files`` small files (one commit,
the workspace folder ignored), then

(a) orchestrator (after (b)): one job of N explicit subtasks, worker kind ``command`` running ``true``,
    ``isolation: worktree`` (a worktree and a branch per worker), at most ``--concurrency`` at once,
    through the real Engine, from ``submit`` until ``wait`` returns the job terminal. The live
    worktrees of the repository are sampled during the run (``git worktree list``, every 0.5 s):
    their peak is printed, with the count left when the job ended.
(b) the floor, in the same repository just before (a): N x (``git worktree add -b <branch> <dir>
    <base>``, then ``git worktree remove <dir>``), one after the other.

Per worker = wall / N. ``RESULT workers=N per worker orchestrator/loop = X.XXx`` for each count;
the target is <= 1.2x, the same at 200 and at 1,000. A measurement, not a test: exit 0 whatever
the figures, 1 when the job did not complete. No network. Keep it short on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.checkouts.retiring import flush_retired  # noqa: E402
from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402

GIT_IDENT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}


def make_repo(base: Path, files: int) -> None:
    env = {**os.environ, **GIT_IDENT}
    subprocess.run(["git", "init", "-q", "-b", "main", str(base)], check=True, env=env)
    for i in range(files):
        folder = base / "src" / f"d{i // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.txt").write_text(f"file {i}\n")
    (base / ".gitignore").write_text("workspace/\nloop/\n")
    subprocess.run(["git", "-C", str(base), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(base), "commit", "-q", "-m", "base"], check=True, env=env)


def live_worktrees(repo: Path) -> int:
    out = subprocess.run(["git", "-C", str(repo), "worktree", "list", "--porcelain"], capture_output=True, text=True)
    return sum(1 for line in out.stdout.splitlines() if line.startswith("worktree ")) - 1  # not the main one


def run_orchestrator(base: Path, workers: int, concurrency: int, remove: bool) -> tuple[float, int, int]:
    settings = load_settings(
        base_dir=base,
        environ={},
        overrides={
            "orchestrator": {"worker": "command", "command": ["true"], "max_tasks": max(workers, 100)},
            "workers": {
                "max_workers": concurrency,
                "max_workers_limit": max(concurrency, 16),
                "global_max_workers": concurrency,
                "max_retries": 0,
            },
            "recursion": {"max_workers_per_root": max(workers, 100)},
            "git": {"isolation": "worktree", "repo": ".", "remove_worker_worktrees": remove},
        },
    )
    engine = Engine(settings)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.5):
            peak = max(peak, live_worktrees(base))

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        tasks = [f"noop {i}" for i in range(workers)]
        sampler.start()
        start = time.perf_counter()
        job = engine.submission.submit("benchmark: no-op workers in worktrees", {"max_workers": concurrency}, tasks)
        done = engine.queries.wait(job.id, timeout=max(600.0, workers * 2.0))
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
        left = live_worktrees(base)
        if done.status.value != "completed":
            raise SystemExit(f"job {job.id} ended {done.status.value}")
    finally:
        stop.set()
        engine.shutdown(timeout=30)
        flush_retired(base)  # the removals still queued, before the caller deletes the folder
    return wall, max(peak, left), left


def run_loop(base: Path, workers: int) -> float:
    env = {**os.environ, **GIT_IDENT}
    loop = base / "loop"
    loop.mkdir()
    start = time.perf_counter()
    for i in range(workers):
        target = loop / f"w{i}"
        subprocess.run(
            ["git", "-C", str(base), "worktree", "add", "-q", "-b", f"loop/w{i}", str(target), "main"], check=True, env=env
        )
        subprocess.run(["git", "-C", str(base), "worktree", "remove", str(target)], check=True, env=env)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="200,1000", help="worker counts, comma-separated (default 200,1000)")
    parser.add_argument("--files", type=int, default=200, help="files in the repository (default 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="workers alive at once (default 16)")
    parser.add_argument(
        "--modes",
        default="remove",
        help="remove (git.remove_worker_worktrees: a finished worker's worktree goes) and/or keep (the default "
        "setting: worktrees stay until the job lands), comma-separated (default remove)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folders")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    print(f"bench_worktree_run: no-op workers in worktree isolation, {args.files} files, {args.concurrency} at a time")
    print(f"machine: nproc={os.cpu_count()}, load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= {"remove", "keep"}:
        parser.error("--modes takes remove and/or keep")
    for workers in counts:
        for mode in modes:
            base = Path(tempfile.mkdtemp(prefix="bench-wtrun-"))
            try:
                make_repo(base, args.files)
                floor = run_loop(base, workers)  # first: none of the job's worktrees or branches yet
                wall, peak, left = run_orchestrator(base, workers, args.concurrency, mode == "remove")
                per, per_floor = wall / workers * 1000, floor / workers * 1000
                print(
                    f"  workers {workers:5d} ({mode})  orchestrator {wall:8.3f} s ({per:6.2f} ms a worker)  "
                    f"add+remove loop {floor:8.3f} s ({per_floor:6.2f} ms)  live worktrees: peak {peak}, at the end {left}"
                )
                print(
                    f"RESULT workers={workers} mode={mode} per worker orchestrator/loop = {per / per_floor:.2f}x "
                    f"({per:.2f} ms / {per_floor:.2f} ms)"
                )
            finally:
                if not args.keep:
                    shutil.rmtree(base, ignore_errors=True)
    print(f"load average now {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
