"""Spawn-overhead benchmark: the orchestrator against a bare Popen pool and GNU parallel.

    bash bench/setup.sh && .venv/bin/python bench/bench_engine.py [--jobs 1000] [--concurrency 16] [--repeat 3]

Each method runs ``--jobs`` no-op processes (``true``), at most ``--concurrency``
at once, ``--repeat`` times interleaved (orchestrator, Popen, parallel, then
again); the table shows each method's median wall time.

* orchestrator: one job of ``jobs`` explicit subtasks on the ``command`` worker
  kind with command ``["true"]``, on a fresh temp workspace. Wall time runs from
  ``Engine.submit`` until ``Engine.wait`` returns the job terminal, so it covers
  everything the orchestrator does for a job: state records written with fsync,
  a log per worker, orchestrator.log, the LEVEL and FINAL reports. After each
  run the workspace is checked (FINAL_RESULT.md, ``jobs`` worker records and
  logs, every worker ``success``); a failed check exits 1.
* bare Popen: ``jobs`` x ``subprocess.Popen(["true"]).wait()`` on a
  ThreadPoolExecutor of ``concurrency`` threads: the floor for spawning from Python.
* GNU parallel: ``parallel -jN true`` fed ``jobs`` lines on stdin.
* orch. no sandbox: the orchestrator run with ``workers.sandbox: off``: the engine's own cost
  over the Popen floor, with no bubblewrap.
* sandbox floor: the Popen pool again, each process what a sandboxed worker's start is
  (bubblewrap with the orchestrator's protections, process/sandbox.py's argv, around the shim
  that records the exit status, around ``true``), started bare: the floor of any sandboxed run.
  When it is above 4x Popen by itself, the 4x target cannot be met with the sandbox on, and
  ``orchestrator/sandbox floor`` says what the orchestrator adds to it.
* bubblewrap alone: the sandbox floor without the shim (bubblewrap around ``true``): what the
  namespaces and mounts cost by themselves, whatever records the exit status.
* tmpfs (diagnostic, when /dev/shm is a tmpfs): the orchestrator run again with
  its workspace there, to tell the file system's share of its time apart from the
  engine's. The RESULT line is never about it.

It is a measurement, not a test: the exit code is 0 whatever the ratios, 1 only
when a correctness check failed. ``RESULT orchestrator/parallel = X.XXx`` is
the figure the target (<= 1.00x) is about; ``RESULT orchestrator/Popen`` the
one the second target (<= 4.00x, the engine's overhead over bare Popen) is about, with the
default settings (the sandbox on where the machine has bubblewrap) and without the sandbox.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402
from orchestrator.process import backends, sandbox, shim  # noqa: E402

TARGET = 1.00  # orchestrator wall / GNU parallel wall
TARGET_POPEN = 4.00  # orchestrator wall / bare Popen pool wall
TARGET_ALLOW = 1.10  # sandbox_network allow / host, the sandboxed default row


class CheckFailed(Exception):
    """A method did not do what it was asked (a worker failed, a report is missing, ...)."""


# -- the three methods ------------------------------------------------------------
def orchestrator_settings(base_dir: Path, jobs: int, concurrency: int, sandbox: str = "auto", network: str = "allow"):
    return load_settings(
        base_dir=base_dir,
        environ={},
        overrides={
            "orchestrator": {"worker": "command", "command": ["true"], "max_tasks": max(jobs, 100)},
            "workers": {
                "max_workers": concurrency,
                "max_workers_limit": max(concurrency, 16),
                "global_max_workers": concurrency,
                "max_retries": 0,
                "sandbox": sandbox,
                "sandbox_network": network,
            },
            "recursion": {"max_workers_per_root": max(jobs, 100)},
        },
    )


def run_orchestrator(
    jobs: int,
    concurrency: int,
    workspaces: list[Path],
    parent: str | None = None,
    sandbox: str = "auto",
    network: str = "allow",
) -> float:
    """One timed job; its temp folder is appended to ``workspaces`` for the caller to remove.

    The folders are removed only after the last run: deleting ~7000 files right
    before the next run slows that run's file creation on some file systems (ext4
    without a journal skips recently deleted inodes one by one), which would charge
    the benchmark's own clean-up to the orchestrator."""
    base = Path(tempfile.mkdtemp(prefix="bench-orch-", dir=parent))
    workspaces.append(base)
    engine = Engine(orchestrator_settings(base, jobs, concurrency, sandbox, network))
    try:
        tasks = [f"noop {i}" for i in range(jobs)]
        start = time.perf_counter()
        job = engine.submit("benchmark: no-op workers", {"max_workers": concurrency}, tasks)
        done = engine.wait(job.id, timeout=max(600.0, jobs * 1.0))
        wall = time.perf_counter() - start
        if not done.status.terminal:
            raise CheckFailed(f"orchestrator: job {job.id} still {done.status.value} after the wait timeout")
        check_orchestrator_workspace(engine, job.id, jobs, done.status.value)
    finally:
        engine.shutdown(timeout=30)
    return wall


def check_orchestrator_workspace(engine: Engine, job_id: str, jobs: int, status: str) -> None:
    ws = engine.workspace
    job_dir = ws.job_dir(job_id)
    problems = []
    if status != "completed":
        problems.append(f"job status is {status}, expected completed")
    for path in (ws.final_report(job_id), ws.level_report(job_id, 0), ws.orchestrator_log(job_id), ws.job_record_path(job_id)):
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"missing or empty: {path.relative_to(job_dir)}")
    records = sorted((ws.state_dir(job_id) / "workers").glob("depth_0_worker_*.json"))
    logs = sorted(ws.logs_dir(job_id).glob("depth_0_worker_*.log"))
    if len(records) != jobs:
        problems.append(f"{len(records)} worker records on disk, expected {jobs}")
    if len(logs) != jobs:
        problems.append(f"{len(logs)} worker logs on disk, expected {jobs}")
    not_ok = []
    for path in records:
        data = json.loads(path.read_bytes())
        if data.get("status") != "success":
            not_ok.append(f"{path.stem}={data.get('status')}")
    if not_ok:
        problems.append(f"{len(not_ok)} worker(s) not success: {', '.join(not_ok[:5])}")
    if problems:
        raise CheckFailed("orchestrator: " + "; ".join(problems) + f" (workspace {job_dir})")


def run_popen(jobs: int, concurrency: int) -> float:
    """A minimal Python pool: ``concurrency`` threads, each doing Popen + wait.

    (A single-threaded loop reaping with os.wait measured ~15% slower on 2 cores:
    the threads let two forks proceed at once.)"""

    def one(_: int) -> int:
        return subprocess.Popen(["true"]).wait()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        codes = list(pool.map(one, range(jobs)))
    wall = time.perf_counter() - start
    failed = sum(1 for c in codes if c != 0)
    if failed:
        raise CheckFailed(f"bare Popen: {failed} of {jobs} processes failed")
    return wall


def sandbox_floor_argv(folder: Path, i: int, *, shimmed: bool = True) -> list[str] | None:
    """What a sandboxed worker's start is, started bare: bubblewrap with the orchestrator's own
    protections (process/sandbox.py builds the argv) around the shim that records the exit
    status (without ``shimmed``: none), around ``true``; None when this machine cannot sandbox."""
    support = backends.probe()
    if support.bwrap is None or shim.PERL is None:
        return None
    exit_file = folder / f"exit.{i}"
    spec = sandbox.SandboxSpec(bwrap=support.bwrap, writable=(str(folder),), chdir=str(folder))
    return spec.bubblewrap_argv(
        [shim.PERL, "-e", shim.PERL_SHIM, shim.SHIM_NAME, str(exit_file), "true"] if shimmed else ["true"]
    )


def run_sandbox_floor(jobs: int, concurrency: int, *, shimmed: bool = True) -> float:
    """The Popen pool of run_popen, each process a sandboxed start (``sandbox_floor_argv``)."""
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-floor-") as tmp:
        folder = Path(tmp)
        argvs = [sandbox_floor_argv(folder, i, shimmed=shimmed) for i in range(jobs)]

        def one(i: int) -> int:
            argv = argvs[i]
            assert argv is not None
            return subprocess.Popen(argv).wait()

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            codes = list(pool.map(one, range(jobs)))
        wall = time.perf_counter() - start
        written = sum(1 for i in range(jobs) if shimmed and (folder / f"exit.{i}").read_text().strip() == "exit 0")
    if any(codes) or written != (jobs if shimmed else 0):
        raise CheckFailed(f"sandbox floor: {sum(1 for c in codes if c)} failed, {written} of {jobs} exit files say exit 0")
    return wall


def run_parallel(jobs: int, concurrency: int) -> float:
    lines = "".join(f"{i}\n" for i in range(1, jobs + 1)).encode()
    start = time.perf_counter()
    proc = subprocess.run(["parallel", f"-j{concurrency}", "true"], input=lines, capture_output=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise CheckFailed(f"GNU parallel exited {proc.returncode}: {err}")
    return wall


def parallel_available() -> str | None:
    """GNU parallel's version line, or None (missing, or moreutils' different `parallel`)."""
    if not shutil.which("parallel"):
        return None
    try:
        out = subprocess.run(["parallel", "--version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.decode(errors="replace").splitlines()[:1]
    return first[0] if first and "GNU parallel" in first[0] else None


def tmpfs_dir() -> str | None:
    """/dev/shm when it is a tmpfs and the default workspaces are not on one already: the
    diagnostic run that tells the file system's share of the orchestrator's time."""
    shm = "/dev/shm"
    if not os.path.isdir(shm) or not os.access(shm, os.W_OK):
        return None
    if " on tmpfs " not in filesystem_of(shm) or " on tmpfs " in filesystem_of(tempfile.gettempdir()):
        return None
    return shm


def filesystem_of(path: str) -> str:
    """``/tmp on ext4 (/dev/vda)`` from /proc/mounts (longest matching mount point), or just the path."""
    try:
        mounts = [line.split()[:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return path
    real = os.path.realpath(path)
    best = max(
        (m for m in mounts if len(m) == 3 and (real == m[1] or real.startswith(m[1].rstrip("/") + "/"))),
        key=lambda m: len(m[1]),
        default=None,
    )
    return f"{path} on {best[2]} ({best[0]}, mounted at {best[1]})" if best else path


# -- reporting -----------------------------------------------------------------------
def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="no-op processes per method (default 1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="processes alive at once (default 16)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each method, interleaved; the median is reported (default 3)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument(
        "--only",
        choices=("orchestrator", "popen", "parallel", "tmpfs", "host-network", "unsandboxed", "sandbox-floor", "bwrap-alone"),
        action="append",
        help="run only this method (repeatable; for profiling)",
    )
    parser.add_argument(
        "--no-tmpfs", action="store_true", help="skip the diagnostic orchestrator run with its workspace on /dev/shm"
    )
    parser.add_argument("--keep", action="store_true", help="keep the orchestrator's temp workspaces")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.repeat < 1:
        parser.error("--jobs, --concurrency and --repeat must be at least 1")
    if args.concurrency > 1024 or args.jobs > 10_000:
        parser.error("the orchestrator accepts at most 1024 workers at once and 10000 tasks per job")

    shm = tmpfs_dir()
    can_sandbox = sandbox_floor_argv(Path(tempfile.gettempdir()), 0) is not None
    default = [
        "orchestrator",
        "popen",
        "parallel",
        *(["host-network", "unsandboxed", "sandbox-floor", "bwrap-alone"] if can_sandbox else []),
    ]
    methods = args.only or [*default, *(["tmpfs"] if shm and not args.no_tmpfs else [])]
    version = parallel_available() if "parallel" in methods else None
    nproc = os.cpu_count()
    print(f"bench_engine: {args.jobs} no-op jobs (`true`), {args.concurrency} at a time, {args.repeat} run(s) each, interleaved")
    print(f"machine: nproc={nproc}, {platform.system()} {platform.release()}, Python {platform.python_version()}")
    if "orchestrator" in methods:
        print(f"orchestrator workspaces: {filesystem_of(tempfile.gettempdir())} (set TMPDIR to move them)")
    if "parallel" in methods:
        print(f"GNU parallel: {version or 'not found'}")

    walls: dict[str, list[float]] = {m: [] for m in methods}
    skipped: dict[str, str] = {}
    if "parallel" in methods and version is None:
        skipped["parallel"] = "GNU parallel not installed (run: bash bench/setup.sh)"
    if "tmpfs" in methods and shm is None:
        skipped["tmpfs"] = "no writable tmpfs at /dev/shm, or the workspaces are on tmpfs already"
    elif "tmpfs" in methods:
        print(f"diagnostic run: the same orchestrator job with its workspace on {filesystem_of(shm)}")
    runners = {
        "orchestrator": lambda: run_orchestrator(args.jobs, args.concurrency, workspaces),
        "popen": lambda: run_popen(args.jobs, args.concurrency),
        "parallel": lambda: run_parallel(args.jobs, args.concurrency),
        "tmpfs": lambda: run_orchestrator(args.jobs, args.concurrency, workspaces, parent=shm),
        "host-network": lambda: run_orchestrator(args.jobs, args.concurrency, workspaces, network="host"),
        "unsandboxed": lambda: run_orchestrator(args.jobs, args.concurrency, workspaces, sandbox="off"),
        "sandbox-floor": lambda: run_sandbox_floor(args.jobs, args.concurrency),
        "bwrap-alone": lambda: run_sandbox_floor(args.jobs, args.concurrency, shimmed=False),
    }
    if not can_sandbox:
        for method in ("host-network", "unsandboxed", "sandbox-floor", "bwrap-alone"):
            if method in methods:
                skipped[method] = "this machine cannot sandbox workers (bubblewrap or perl missing): every run is unsandboxed"
    workspaces: list[Path] = []
    try:
        for r in range(1, args.repeat + 1):
            for method in methods:
                if method in skipped:
                    continue
                wall = runners[method]()
                walls[method].append(wall)
                print(f"  run {r}/{args.repeat} {method:<12} {wall:8.3f} s  {wall / args.jobs * 1000:7.3f} ms/job", flush=True)
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}")
        args.keep = True  # leave the evidence
        return 1
    finally:
        for base in workspaces:
            if args.keep:
                print(f"kept orchestrator workspace {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)

    median = {m: statistics.median(v) if v else None for m, v in walls.items()}
    par, pop = median.get("parallel"), median.get("popen")
    labels = {
        "orchestrator": "orchestrator",
        "popen": "bare Popen",
        "parallel": "GNU parallel",
        "tmpfs": "orch. on tmpfs",
        "host-network": "orch. host net",
        "unsandboxed": "orch. no sandbox",
        "sandbox-floor": "sandbox floor",
        "bwrap-alone": "bubblewrap alone",
    }
    print()
    print(f"{'method':<17}{'wall s':>10}{'ms/job':>10}{'x parallel':>12}{'x Popen':>10}   (median of {args.repeat})")
    for method in methods:
        if method in skipped:
            print(f"{labels[method]:<17}  SKIPPED: {skipped[method]}")
            continue
        wall = median[method]
        print(f"{labels[method]:<17}{wall:>10.3f}{wall / args.jobs * 1000:>10.3f}{ratio(wall, par):>12}{ratio(wall, pop):>10}")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak_mb = peak_kb / (1024 * 1024) if sys.platform == "darwin" else peak_kb / 1024
    print()
    print(f"peak RSS of this process: {peak_mb:.1f} MiB; nproc: {nproc}")
    orch = median.get("orchestrator")
    if orch is not None and par:
        verdict = "met" if orch / par <= TARGET else "not met"
        print(f"RESULT orchestrator/parallel = {orch / par:.2f}x (target <= {TARGET:.2f}x) {verdict}")
    else:
        why = "GNU parallel skipped" if "parallel" in skipped or "parallel" not in methods else "orchestrator not run"
        print(f"RESULT orchestrator/parallel = n/a ({why}) (target <= {TARGET:.2f}x)")
    if orch is not None and pop:
        verdict = "met" if orch / pop <= TARGET_POPEN else "not met"
        print(f"RESULT orchestrator/Popen = {orch / pop:.2f}x (target <= {TARGET_POPEN:.2f}x) {verdict}")
    else:
        print(f"RESULT orchestrator/Popen = n/a (bare Popen or orchestrator not run) (target <= {TARGET_POPEN:.2f}x)")
    hostnet = median.get("host-network")
    if orch is not None and hostnet:
        verdict = "met" if orch / hostnet <= TARGET_ALLOW else "not met"
        print(
            f"RESULT orchestrator (sandbox_network allow)/(host) = {orch / hostnet:.2f}x "
            f"(target <= {TARGET_ALLOW:.2f}x: the proxy's listeners, the namespace and the bridge per worker) {verdict}"
        )
    bare_off, floor = median.get("unsandboxed"), median.get("sandbox-floor")
    if bare_off is not None and pop:
        verdict = "met" if bare_off / pop <= TARGET_POPEN else "not met"
        print(f"RESULT orchestrator without the sandbox/Popen = {bare_off / pop:.2f}x (target <= {TARGET_POPEN:.2f}x) {verdict}")
    if floor is not None and pop:
        print(
            f"RESULT sandbox floor/Popen = {floor / pop:.2f}x: a sandboxed start alone (bubblewrap, its init, the shim), "
            f"started bare{'; above the target, so no orchestrator can meet it with the sandbox on' if floor / pop > TARGET_POPEN else ''}"
        )
        if median.get("bwrap-alone") is not None:
            alone = median["bwrap-alone"] / pop
            print(
                f"RESULT bubblewrap alone/Popen = {alone:.2f}x: the sandbox's namespaces and mounts around `true`, no shim"
                f"{'; above the target, so no shim, however cheap, brings a sandboxed run under it' if alone > TARGET_POPEN else ''}"
            )
        if orch is not None:
            print(f"RESULT orchestrator/sandbox floor = {orch / floor:.2f}x (what the orchestrator adds to a sandboxed start)")
    on_tmpfs = median.get("tmpfs")
    if on_tmpfs is not None and par:
        share = f"; the file system took {1 - on_tmpfs / orch:.0%} of the orchestrator's wall" if orch else ""
        print(
            f"DIAGNOSTIC orchestrator on tmpfs/parallel = {on_tmpfs / par:.2f}x{share} (not the result: "
            "the result is the workspace where users keep it)"
        )

    if args.json:
        doc = {
            "jobs": args.jobs,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "nproc": nproc,
            "python": platform.python_version(),
            "parallel_version": version,
            "runs_s": walls,
            "median_s": median,
            "ms_per_job": {m: (w / args.jobs * 1000 if w is not None else None) for m, w in median.items()},
            "ratio_to_parallel": {m: (w / par if w is not None and par else None) for m, w in median.items()},
            "ratio_to_popen": {m: (w / pop if w is not None and pop else None) for m, w in median.items()},
            "skipped": skipped,
            "peak_rss_mib": round(peak_mb, 1),
            "target": TARGET,
            "target_popen": TARGET_POPEN,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
