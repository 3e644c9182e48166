"""The best-of-N benchmarks in one run: (a) one task on 3 candidates against 3 sequential runs (wall and
cost), (b) listing 10,000 jobs page by page from the job index against scanning the workspace,
(c) per-worker prompt bytes with and without the shared context block for a 7-worker job.

    .venv/bin/python bench/bench_best_of_n.py [--quick]

Runs bench_candidates.py, bench_index.py and bench_context.py one after the other with their
defaults (``--quick``: small sizes, for a smoke run), each measuring its own baseline in the same
run, and prints their RESULT lines together at the end. (a) needs the real claude CLI
(tests/install_cli.sh); without it (a) is reported as skipped. Exit 1 when a part fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PARTS = {
    "a": ("bench_candidates.py", [], ["--candidates", "2", "--think", "0.2"]),
    "b": ("bench_index.py", [], ["--jobs", "500", "--scan-pages", "3"]),
    "c": ("bench_context.py", [], ["--workers", "3", "--files", "20"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not the figures)")
    args = parser.parse_args(argv)
    results: dict[str, str] = {}
    failed = False
    for part, (script, full, quick) in PARTS.items():
        print(f"== ({part}) {script}", flush=True)
        done = subprocess.run(
            [sys.executable, str(BENCH / script), *(quick if args.quick else full)], text=True, capture_output=True
        )
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
        if done.returncode != 0 or not lines:
            skipped = part == "a" and "not installed" in done.stdout
            results[part] = "skipped: the claude CLI is not installed" if skipped else f"failed (exit {done.returncode})"
            failed = failed or not skipped
        else:
            results[part] = lines[-1]
    print("\n== candidates, job index and shared context benchmarks")
    for part, line in results.items():
        print(f"({part}) {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
