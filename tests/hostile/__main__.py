"""``python -m tests.hostile --attacks 1000 --seed 7 [--backend bubblewrap] [--backend landlock]``: the
generated hostile suite outside CI, printing its table (docs/sandbox.md). ``--defences-off`` adds a run
per defence, that defence off, one attack of each primitive it stops, each of which must get out."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from orchestrator.process.backends import probe

from . import generator, runner, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile", description=__doc__)
    parser.add_argument("--attacks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--backend", action="append", choices=["bubblewrap", "landlock"])
    parser.add_argument("--defences-off", action="store_true")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table summed over contexts, as docs/sandbox.md shows it"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (its server.log, workspace) and print it")
    args = parser.parse_args(argv)
    trees = generator.trees(args.attacks, args.seed)
    runs, off_runs = [], []
    kept = tempfile.mkdtemp(prefix="hostile-") if args.keep else None
    if kept:
        print(f"the run's folder: {kept}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        folder = kept or scratch
        for backend in args.backend or ["bubblewrap", "landlock"]:
            found = probe(backend=backend)
            if not found.available:
                print(f"{backend}: not here ({found.reason})", file=sys.stderr)
                continue
            if trees:
                runs.append(runner.run(trees, Path(folder) / backend, backend))
            if args.defences_off:
                off_runs += runner.defences_off_runs(Path(folder) / f"{backend}-off", backend, args.seed)
    print(table.render(runs, off_runs))
    if args.markdown:
        print("\n" + table.markdown(runs, off_runs))
    return 1 if any(r.escape for run in runs for r in run.results) or any(b for run in runs for b in run.checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
