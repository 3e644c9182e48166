"""The sandbox's per-worker cost: no-op workers through the real engine with
``workers.sandbox: on`` against ``off``, in the same run, and where bubblewrap's own start goes.

    .venv/bin/python bench/bench_sandbox.py [--workers 1000] [--concurrency 16] [--repeat 3] [--starts 200]

(a) ``--workers`` no-op workers (kind ``command``, command ``true``, folder isolation, as
    bench_engine.py runs them) in one job, sandbox on and off interleaved ``--repeat`` times: the
    median wall per worker, the CPU per worker (this process and its reaped children: bubblewrap,
    the shim, ``true``) and the ratio. Target: the sandbox adds at most 25 % to the per-worker wall.
(b) ``--starts`` bare starts of ``bwrap ... -- true`` one after another with flag sets from nothing
    to the orchestrator's own (sandbox.SandboxSpec.argv), against ``true`` alone: what each
    protection costs (``--proc`` a new procfs, ``--dev`` a tmpfs of device nodes, each namespace).

A measurement, not a test: exit 0 whatever the figures; 1 when a check failed (a worker not
``success``) or the machine cannot sandbox.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_engine import CheckFailed, check_orchestrator_workspace, filesystem_of  # noqa: E402
from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402
from orchestrator.process import backends, landlock  # noqa: E402
from orchestrator.process.backends import probe  # noqa: E402
from orchestrator.process.sandbox import Backend, SandboxSpec, runtime_view  # noqa: E402

TARGET = 1.25  # sandboxed per-worker wall / unconfined per-worker wall


def cpu_now() -> float:
    """User + system seconds of this process and its reaped children (bwrap, the shim, true)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_engine(sandbox: str, workers: int, concurrency: int, parent: Path) -> tuple[float, float]:
    """One job of ``workers`` no-op workers; (wall s, CPU s) from submit to the job's end."""
    base = Path(tempfile.mkdtemp(prefix=f"bench-sandbox-{sandbox}-", dir=parent))
    settings = load_settings(
        base_dir=base,
        environ={},
        overrides={
            "orchestrator": {"worker": "command", "command": ["true"], "max_tasks": max(workers, 100)},
            "workers": {
                "sandbox": sandbox,
                "max_workers": concurrency,
                "max_workers_limit": max(concurrency, 16),
                "global_max_workers": concurrency,
                "max_retries": 0,
            },
            "recursion": {"max_workers_per_root": max(workers, 100)},
            "git": {"isolation": "folder"},
        },
    )
    engine = Engine(settings)
    try:
        cpu, start = cpu_now(), time.perf_counter()
        job = engine.submission.submit(
            "benchmark: no-op workers", {"max_workers": concurrency}, [f"noop {i}" for i in range(workers)]
        )
        done = engine.queries.wait(job.id, timeout=max(600.0, workers * 1.0))
        wall, cpu = time.perf_counter() - start, cpu_now() - cpu
        if not done.status.terminal:
            raise CheckFailed(f"sandbox {sandbox}: job {job.id} still {done.status.value}")
        check_orchestrator_workspace(engine, job.id, workers, done.status.value)
        if sandbox == "on" and engine.confinement.decision.spec is None:
            raise CheckFailed("sandbox on, but the engine decided to run unconfined")
    finally:
        engine.shutdown(timeout=30)
    return wall, cpu


def flag_sets(bwrap: str, folder: Path) -> list[tuple[str, list[str] | None]]:
    """From no sandbox to the orchestrator's own argv, one protection added at a time."""
    pid = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid"]
    real = SandboxSpec(bwrap=bwrap, writable=(str(folder), str(folder / "tmp"))).bubblewrap_argv(["true"])
    return [
        ("true alone (no bwrap)", None),
        ("--ro-bind / / (mount namespace)", [bwrap, "--ro-bind", "/", "/"]),
        ("+ --dev /dev", [bwrap, "--ro-bind", "/", "/", "--dev", "/dev"]),
        ("+ --proc /proc", [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]),
        ("+ --unshare-pid", [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid"]),
        ("--unshare-pid without --proc", [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--unshare-pid"]),
        ("+ --unshare-ipc --unshare-uts", [*pid, "--unshare-ipc", "--unshare-uts"]),
        ("+ --cap-drop ALL", [*pid, "--unshare-ipc", "--unshare-uts", "--cap-drop", "ALL"]),
        ("the orchestrator's (+ ipc, uts, cap-drop, binds)", real[: real.index("--")]),
        *_landlock(folder),
    ]


def _landlock(folder: Path) -> list[tuple[str, list[str] | None]]:
    """The Landlock launcher (process/landlock.py) with the same grants, where the kernel has it: what a
    worker's start costs where bubblewrap cannot start (its argv ends in "--", as the bwrap rows do)."""
    version = landlock.abi()
    if version < 1:
        return []
    spec = SandboxSpec(bwrap="", backend=Backend.LANDLOCK, landlock_abi=version, writable=(str(folder), str(folder / "tmp")))
    spec = replace(spec, emptied=runtime_view()[0])
    return [(f"Landlock launcher (ABI {version}, perl)", backends.argv(spec, [])[:-1])]


def time_starts(sets: list[tuple[str, list[str] | None]], starts: int) -> dict[str, float]:
    """Median ms of one start of each ``prefix -- true`` (or ``true``), the sets taken in turn
    (round-robin: a machine that slows down mid-run slows every set alike)."""
    took: dict[str, list[float]] = {label: [] for label, _ in sets}
    for _ in range(starts):
        for label, prefix in sets:
            argv = ["true"] if prefix is None else [*prefix, "--", "true"]
            start = time.perf_counter()
            code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
            took[label].append(time.perf_counter() - start)
            if code != 0:
                raise CheckFailed(f"{' '.join(argv)} exited {code}")
    return {label: statistics.median(times) * 1000 for label, times in took.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000, help="no-op workers per run (default 1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="workers at once (default 16)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode, interleaved (default 3)")
    parser.add_argument("--starts", type=int, default=200, help="bare bwrap starts per flag set in (b) (default 200)")
    parser.add_argument("--tmp", type=Path, default=None, help="where the workspaces go (default: the system's temp)")
    args = parser.parse_args(argv)
    support = probe()
    if support.bwrap is None:
        print(f"bench_sandbox: this machine cannot sandbox: {support.reason}")
        return 1
    parent = Path(tempfile.mkdtemp(prefix="bench-sandbox-", dir=args.tmp))
    version = subprocess.run([support.bwrap, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"bench_sandbox: {args.workers} no-op workers, {args.concurrency} at a time, {args.repeat} run(s) per mode; {version}")
    print(f"machine: nproc={os.cpu_count()}, uid {os.geteuid()}; workspaces: {filesystem_of(str(parent))}")
    walls: dict[str, list[float]] = {"off": [], "on": []}
    cpus: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for r in range(1, args.repeat + 1):
            for mode in ("off", "on"):
                wall, cpu = run_engine(mode, args.workers, args.concurrency, parent)
                walls[mode].append(wall)
                cpus[mode].append(cpu)
                per = wall / args.workers * 1000
                print(
                    f"  run {r}/{args.repeat} sandbox {mode:<3} {wall:8.3f} s  {per:7.3f} ms/worker  CPU {cpu:7.3f} s", flush=True
                )
        print(f"\n(a) {'sandbox':<8}{'wall s':>10}{'ms/worker':>11}{'CPU ms/worker':>15}   (median of {args.repeat})")
        median = {m: statistics.median(walls[m]) for m in walls}
        cpu = {m: statistics.median(cpus[m]) for m in cpus}
        for mode in ("off", "on"):
            print(
                f"    {mode:<8}{median[mode]:>10.3f}{median[mode] / args.workers * 1000:>11.3f}{cpu[mode] / args.workers * 1000:>15.3f}"
            )
        extra = (median["on"] - median["off"]) / args.workers * 1000
        print(
            f"    the sandbox adds {extra:.3f} ms of wall and {(cpu['on'] - cpu['off']) / args.workers * 1000:.3f} ms of CPU per worker"
        )

        print(f"\n(b) one start, one after another, the sets in turn: median of {args.starts}")
        starts = time_starts(flag_sets(support.bwrap, parent), args.starts)
        floor = starts["true alone (no bwrap)"]
        for label, ms in starts.items():
            print(f"    {label:<50}{ms:8.3f} ms  (+{ms - floor:.3f})")
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}")
        return 1
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    result = median["on"] / median["off"]
    verdict = "met" if result <= TARGET else "not met"
    print(f"\nRESULT sandbox/no sandbox per-worker wall = {result:.2f}x (target <= {TARGET:.2f}x) {verdict}")
    print(f"RESULT sandbox/no sandbox per-worker CPU = {cpu['on'] / cpu['off']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
