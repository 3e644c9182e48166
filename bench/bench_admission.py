"""Memory admission under a simulated fleet: does ``workers.memory_reserve_mb`` keep a machine's
free memory above the reserve, where a fixed-count run would not?

    .venv/bin/python bench/bench_admission.py [--workers 8] [--hold-mb 50] [--fit 3] [--reserve-mb 100] [--seconds 3]

Every worker is a real process (the ``command`` kind) that allocates and touches ``--hold-mb`` MB,
then sleeps ``--seconds`` s. A warm-up worker first measures what one such worker peaks at (P, its
record's ``peak_rss``, sampled by the resource monitor).

The machine is simulated, its tenants are real: the engine's memory reading (its ``memory`` seam)
reports a machine of reserve + (fit + 0.5) x P in all, whose available memory is that less the RSS
this benchmark's descendant processes (the workers, their shims) really hold, read from /proc at
each reading. So only ``--fit`` workers fit above the reserve, and other processes on this shared
machine (whose free memory moves by tens to hundreds of MB a second) do not blur the figures. Two
runs of one job of ``--workers`` workers, ``max_workers`` = ``--workers`` (the count limits let
every one start):

* admission: ``memory_reserve_mb`` = ``--reserve-mb`` (its engine learns P from its own warm-up
  worker first, as a server learns a kind from its first attempts);
* fixed count: ``memory_reserve_mb`` = 0 (admission off: the count alone decides).

A sampler thread reads the simulated machine every 20 ms during each run, and the engine's count of
workers holding (more than half of) their memory. Printed per run: the lowest free memory, its margin
above the reserve (negative: below it), the most workers holding their memory at once and the wall time; then the ratios, and the real
machine's available memory before and after for reference. At most ``--workers`` x ``--hold-mb``
MB is held at once (400 MB by default). A measurement, not a test: exit 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402
from orchestrator.models import JobStatus  # noqa: E402
from orchestrator.process.procscan import Memory, machine_memory  # noqa: E402

MB = 1 << 20
# Allocates and touches N MB (bytes filled with one value: every page written), then sleeps S seconds.
HOLD = "import sys, time; n, s = sys.argv[1].split(); held = b'x' * (int(n) << 20); time.sleep(float(s))"


def settings(base: Path, workers: int, reserve_mb: int):
    return load_settings(
        base_dir=base,
        environ={},
        overrides={
            "orchestrator": {"worker": "command", "command": [sys.executable, "-c", HOLD, "{task}"]},
            "workers": {
                "max_workers": workers,
                "max_workers_limit": workers,
                "global_max_workers": workers,
                "max_retries": 0,
                "memory_reserve_mb": reserve_mb,
                "monitor_interval": 0.1,
            },
            "git": {"isolation": "folder"},
        },
    )


def tenants() -> list[int]:
    """The RSS in bytes of each process this benchmark started (the workers and their shims), now."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found.append(proc.memory_info().rss)
    return found


@dataclass
class SmallMachine:
    """The engine's memory seam: a machine of ``total`` bytes whose only tenants are our workers."""

    total: int

    def free(self) -> int:
        return self.total - sum(tenants())

    def __call__(self) -> list[Memory]:
        return [Memory(self.total, self.free())]


@dataclass
class Run:
    lowest: int  # bytes free at the lowest sample
    most_holding: int  # the most worker processes seen holding (more than half of) their memory at once
    wall: float


class Sampler:
    """Reads the machine's free memory, and how many workers hold their memory, every 20 ms until stopped."""

    def __init__(self, machine: SmallMachine, hold: int) -> None:
        self.machine, self.hold = machine, hold
        self.lowest = machine.free()
        self.most_holding = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            found = tenants()
            self.lowest = min(self.lowest, self.machine.total - sum(found))
            self.most_holding = max(self.most_holding, sum(1 for rss in found if rss > self.hold // 2))

    def stop(self) -> Sampler:
        self._stop.set()
        self._thread.join()
        return self


def run_job(engine: Engine, workers: int, hold_mb: int, seconds: float) -> str:
    tasks = [f"{hold_mb} {seconds}" for _ in range(workers)]
    job = engine.submission.submit(f"hold {hold_mb} MB x {workers}", {"max_workers": workers}, tasks)
    done = engine.queries.wait(job.id, timeout=600)
    if done.status is not JobStatus.COMPLETED:
        raise SystemExit(f"job {job.id} ended {done.status.value}: {done.notes}")
    return job.id


def warm_up(engine: Engine, hold_mb: int, seconds: float) -> int:
    """One worker, measured: its tree's peak RSS (its kind's need from now on in this engine)."""
    job_id = run_job(engine, 1, hold_mb, seconds)
    peak = engine.queries.snapshot(job_id)[1][0].peak_rss
    if not peak:
        raise SystemExit("the warm-up worker was never sampled: give it more --seconds")
    return peak


def fleet(base: Path, args: argparse.Namespace, machine: SmallMachine, reserve_mb: int, warm: bool) -> Run:
    engine = Engine(settings(base, args.workers, reserve_mb), memory=machine)
    try:
        if warm:
            warm_up(engine, args.hold_mb, args.seconds)
        sampler = Sampler(machine, args.hold_mb * MB)
        started = time.perf_counter()
        run_job(engine, args.workers, args.hold_mb, args.seconds)
        wall = time.perf_counter() - started
        sampler.stop()
    finally:
        engine.shutdown(timeout=30)
    return Run(sampler.lowest, sampler.most_holding, wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--hold-mb", type=int, default=50)
    parser.add_argument("--fit", type=int, default=3, help="workers that fit above the reserve")
    parser.add_argument("--reserve-mb", type=int, default=100, help="workers.memory_reserve_mb of the admission run")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each worker holds its memory")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-admission-"))
    real_before = machine_memory()
    try:
        probe = Engine(settings(base / "probe", 1, 0))
        try:
            peak = warm_up(probe, args.hold_mb, args.seconds)
        finally:
            probe.shutdown(timeout=30)
        reserve = args.reserve_mb * MB
        machine = SmallMachine(int(reserve + (args.fit + 0.5) * peak))
        print(
            f"one worker (holds {args.hold_mb} MB) peaks at {peak / MB:.1f} MB (P); simulated machine: "
            f"{machine.total / MB:.0f} MB = reserve {args.reserve_mb} MB + {args.fit + 0.5} x P; "
            f"the fleet: {args.workers} workers, {args.workers * peak / MB:.0f} MB"
        )
        admitted = fleet(base / "admission", args, machine, args.reserve_mb, warm=True)
        fixed = fleet(base / "fixed", args, machine, 0, warm=False)
        print()
        print(f"{'run':<12} {'lowest free MB':>15} {'vs reserve MB':>14} {'most holding':>13} {'wall s':>8}")
        for name, run in (("admission", admitted), ("fixed count", fixed)):
            print(
                f"{name:<12} {run.lowest / MB:>15.0f} {(run.lowest - reserve) / MB:>+14.0f} {run.most_holding:>13} {run.wall:>8.2f}"
            )
        print()
        above, below = admitted.lowest >= reserve, fixed.lowest < reserve
        print(
            f"RESULT admission kept free memory above the reserve: {'yes' if above else 'NO'} "
            f"({(admitted.lowest - reserve) / MB:+.0f} MB); fixed count went below it: {'yes' if below else 'no'} "
            f"({(fixed.lowest - reserve) / MB:+.0f} MB)"
        )
        taken_a, taken_f = machine.total - admitted.lowest, machine.total - fixed.lowest
        print(
            f"RESULT memory taken at the worst moment, admission/fixed = {taken_a / max(taken_f, 1):.2f}x "
            f"({taken_a / MB:.0f} MB against {taken_f / MB:.0f} MB); most holding at once {admitted.most_holding}/{fixed.most_holding}; "
            f"wall admission/fixed = {admitted.wall / fixed.wall:.2f}x"
        )
        real_after = machine_memory()
        print(
            f"the real machine: {real_before.total / MB:.0f} MB, available {real_before.available / MB:.0f} MB before, "
            f"{real_after.available / MB:.0f} MB after (other tenants move it)"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
