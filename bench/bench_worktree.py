"""Worktree benchmark: 16 workers' worktrees, their commits and their merge, on a big repository.

    .venv/bin/python bench/bench_worktree.py [--files 20000] [--megabytes 200] [--workers 16] [--repeat 3]

Generates a repository of ``--files`` files (``--megabytes`` in all; 100 files per folder, text
lines of random hex, the same bytes every run: a seeded generator) in one commit with
``git fast-import``, in a temp folder removed at the end. Then, each round ``--repeat`` times
(the order of the two sides alternates between rounds, so neither always meets the disk right
after the other's deletions; medians shown):

(a) worktrees: the orchestrator's ``Checkout.prepare`` for ``--workers`` worker records of one
    job whose ``isolation`` is ``worktree``, made by ``isolated.make_checkout`` as the engine makes
    it, called on that many threads at once (the engine starts each worker on its own thread,
    which calls ``prepare`` first), against a plain loop of ``git worktree add -b <branch> <dir>
    <base>``. Target <= 1.2x.
(a') commits: each worker then edits 5 files no other worker touches and adds one; the
    orchestrator's after-attempt ``Checkout.changes`` (commit everything, then the branch, its
    commit, the changed files and the diffstat) per worker, one after the other, against
    ``git add -A && git commit`` in the plain worktrees.
(b) disk: ``du`` of one worktree folder, and the growth of the repository's ``.git`` per worktree
    (its admin folder and index under ``.git/worktrees``, the commits' objects).
(c) merge: ``merging.merge_branches(repo, MergeRequest(base, the workers' branches, "auto", ...))`` into the
    job's result branch, against a plain loop of ``git merge-tree --write-tree <base> <branch>``.
    Target <= 1.2x.

Each timed phase starts after an ``os.sync()``: the previous phase's gigabytes of checkout are
on disk first, so their writeback is not charged to the next phase. RESULT lines give the
ratios and whether the targets are met. A measurement, not a test: exit
0 whatever the figures. No network. The machine's load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.checkouts.checkout import Changes  # noqa: E402
from orchestrator.checkouts.isolated import make_checkout  # noqa: E402
from orchestrator.config import JobConfig, load_settings  # noqa: E402
from orchestrator.git import merging, repository  # noqa: E402
from orchestrator.models import JobRecord, WorkerRecord  # noqa: E402
from orchestrator.workspace.layout import Workspace  # noqa: E402

IDENT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}
PER_FOLDER = 100
EDITED = 5  # files each worker modifies (disjoint between workers), plus one it adds


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(cwd), *args], input=input, capture_output=True, env={**os.environ, **IDENT}, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode()


def file_path(n: int) -> str:
    return f"src/d{n // PER_FOLDER:04d}/f{n:05d}.txt"


def generate(repo: Path, files: int, megabytes: float) -> str:
    """One commit of ``files`` files, ``megabytes`` in all, through ``git fast-import``; its id."""
    git(repo, "init", "-q", "-b", "main")
    size = max(64, int(megabytes * 1_000_000 / files))
    rng = random.Random(12)
    proc = subprocess.Popen(["git", "-C", str(repo), "fast-import", "--quiet"], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    out = proc.stdin
    out.write(b"commit refs/heads/main\ncommitter bench <b@x> 1700000000 +0000\ndata 9\ngenerated\n")
    out.write(b"M 100644 inline .gitignore\ndata 7\n*.log\n\n")
    for n in range(files):
        data = rng.randbytes(size // 2).hex("\n", 40).encode() + b"\n"  # lines of 80 hex digits
        out.write(b"M 100644 inline %s\ndata %d\n%s\n" % (file_path(n).encode(), len(data), data))
    out.write(b"\n")
    out.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    return git(repo, "rev-parse", "main").strip()


def du_kib(path: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def edit(worktree: Path, worker: int, files: int) -> None:
    """What worker ``worker`` changes in its worktree: 5 files no other worker touches, one new file."""
    stride = max(1, files // (EDITED * 64))
    for j in range(EDITED):
        n = ((worker * EDITED + j) * stride) % files
        with open(worktree / file_path(n), "a", encoding="utf-8") as f:
            f.write(f"changed by worker {worker}\n")
    (worktree / f"src/new_{worker}.txt").write_text(f"added by worker {worker}\n", encoding="utf-8")


def timed(fn: Callable[[], object]) -> float:
    os.sync()  # the last phase's dirty pages (GBs of checkouts) are written before, not during
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Bench:
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.repo = root / "repo"
        self.repo.mkdir()
        folder = root / "orch"
        folder.mkdir()
        self.settings = load_settings(base_dir=folder, environ={}, overrides={"git": {"repo": "../repo"}})
        self.workspace = Workspace(folder / "workspace")
        self.checkout = make_checkout(self.settings, self.workspace)
        self.times: dict[str, list[float]] = {}
        self.disk: dict[str, list[int]] = {}

    def note(self, name: str, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)

    def git_size(self) -> int:
        return du_kib(self.repo / ".git")

    # -- the orchestrator ------------------------------------------------------------------------
    def orchestrator_round(self, run: int, base: str) -> None:
        n = self.args.workers
        root_id = f"{run:012x}"
        job = JobRecord(id=root_id, root_id=root_id, request="bench", config=JobConfig(isolation="worktree"))
        records = [
            WorkerRecord(job_id=root_id, root_id=root_id, name=f"worker_{k}", index=k, depth=0, task=f"task {k}", kind="command")
            for k in range(1, n + 1)
        ]
        git_before = self.git_size()
        start = threading.Barrier(n + 1)

        def prepare(record: WorkerRecord) -> Path:
            start.wait()
            return self.checkout.prepare(record, job)

        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(prepare, record) for record in records]
            os.sync()
            started = time.perf_counter()
            start.wait()
            dirs = [f.result() for f in futures]
            self.note("prepare orchestrator", time.perf_counter() - started)
        self.disk.setdefault("worktree orchestrator", []).append(du_kib(dirs[0]))
        self.disk.setdefault(".git per worktree orchestrator", []).append((self.git_size() - git_before) // n)
        for k, d in enumerate(dirs):
            edit(d, k, self.args.files)
        changes: list[Changes] = []
        self.note("commit orchestrator", timed(lambda: changes.extend(self.checkout.changes(r) for r in records)) / n)
        assert all(c.commit and len(c.files_changed) == EDITED + 1 for c in changes), changes[:1]
        branches = [(r.name, c.branch or "") for r, c in zip(records, changes)]
        self.merge_round(run, base, branches)
        for r in records:
            self.checkout.cleanup(r, True)
        subprocess.run(["rm", "-rf", str(self.workspace.job_dir(root_id))], check=True)
        git(self.repo, "worktree", "prune")

    def merge_round(self, run: int, base: str, branches: list[tuple[str, str]]) -> None:
        def orchestrator() -> None:
            outcome = merging.merge_branches(
                self.repo, merging.MergeRequest(base, branches, "auto", prefix="orchestrator/", root_id=f"{run:012x}")
            )
            assert outcome.merged == tuple(w for w, _ in branches) and not outcome.conflicts, outcome

        def loop() -> None:
            for _worker, branch in branches:
                git(self.repo, "merge-tree", "--write-tree", base, branch)

        pair = [("merge orchestrator", orchestrator), ("merge plain", loop)]
        for name, fn in pair if run % 2 == 0 else pair[::-1]:
            self.note(name, timed(fn))

    # -- the baseline ----------------------------------------------------------------------------
    def plain_round(self, run: int, base: str) -> None:
        n = self.args.workers
        folder = self.root / f"plain{run}"
        folder.mkdir()
        git_before = self.git_size()
        dirs = [folder / f"w{k}" for k in range(1, n + 1)]

        def loop() -> None:
            for k, d in enumerate(dirs, 1):
                git(self.repo, "worktree", "add", "-q", "--no-track", "-b", f"plain/{run}/w{k}", str(d), base)

        self.note("prepare plain", timed(loop))
        self.disk.setdefault("worktree plain", []).append(du_kib(dirs[0]))
        self.disk.setdefault(".git per worktree plain", []).append((self.git_size() - git_before) // n)
        for k, d in enumerate(dirs):
            edit(d, k, self.args.files)

        def commit() -> None:
            for d in dirs:
                git(d, "add", "-A")
                git(d, "commit", "-q", "-m", "the worker's work")

        self.note("commit plain", timed(commit) / n)
        subprocess.run(["rm", "-rf", str(folder)], check=True)
        git(self.repo, "worktree", "prune")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def ratio_line(name: str, ratio: float, target: float | None) -> str:
    verdict = "" if target is None else f" (target <= {target:.2f}x) {'met' if ratio <= target else 'NOT met'}"
    return f"RESULT {name} = {ratio:.2f}x{verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--megabytes", type=float, default=200.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmp", help="where the temp folder goes (default: the system's temp folder)")
    args = parser.parse_args(argv)
    print(f"{load()}; nproc {os.cpu_count()}; {repository.git_version()}")
    root = Path(tempfile.mkdtemp(prefix="bench-worktree-", dir=args.tmp))
    try:
        bench = Bench(root, args)
        started = time.perf_counter()
        base = generate(bench.repo, args.files, args.megabytes)
        print(
            f"generated {args.files} files, {args.megabytes:g} MB in {time.perf_counter() - started:.1f} s "
            f"(pack {du_kib(bench.repo / '.git') / 1024:.0f} MiB)"
        )
        for run in range(args.repeat):
            rounds = [bench.orchestrator_round, bench.plain_round]
            for fn in rounds if run % 2 == 0 else rounds[::-1]:
                fn(run, base)
            t = bench.times
            print(
                f"round {run + 1}: prepare {t['prepare orchestrator'][-1]:.2f} s / {t['prepare plain'][-1]:.2f} s, "
                f"commit {t['commit orchestrator'][-1] * 1000:.0f} / {t['commit plain'][-1] * 1000:.0f} ms per worker, "
                f"merge {t['merge orchestrator'][-1] * 1000:.0f} / {t['merge plain'][-1] * 1000:.0f} ms; {load()}"
            )
        report(bench, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def report(bench: Bench, args: argparse.Namespace) -> None:
    med = {name: statistics.median(values) for name, values in bench.times.items()}
    disk = {name: statistics.median(values) for name, values in bench.disk.items()}
    n = args.workers
    print(f"\n{'figure (median of ' + str(args.repeat) + ')':44} {'orchestrator':>13} {'plain git':>13} {'ratio':>7}")
    rows = [
        (f"(a)  {n} worktrees, s", "prepare", 1.0, "{:.3f}"),
        ("(a') commit after an attempt, ms per worker", "commit", 1000.0, "{:.1f}"),
        (f"(c)  merge {n} branches, ms", "merge", 1000.0, "{:.1f}"),
    ]
    for label, key, scale, fmt in rows:
        o, p = med[f"{key} orchestrator"], med[f"{key} plain"]
        print(f"{label:44} {fmt.format(o * scale):>13} {fmt.format(p * scale):>13} {o / p:6.2f}x")
    for label, key in (("(b)  du of one worktree, MiB", "worktree"), ("(b)  .git growth per worktree, MiB", ".git per worktree")):
        o, p = disk[f"{key} orchestrator"], disk[f"{key} plain"]
        print(f"{label:44} {o / 1024:13.1f} {p / 1024:13.1f} {o / p if p else float('nan'):6.2f}x")
    print()
    print(
        ratio_line(
            f"(a) {n} worktrees orchestrator/git worktree add loop", med["prepare orchestrator"] / med["prepare plain"], 1.2
        )
    )
    print(ratio_line("(a') commit orchestrator changes()/git add+commit", med["commit orchestrator"] / med["commit plain"], None))
    print(ratio_line(f"(c) merge {n} branches orchestrator/merge-tree loop", med["merge orchestrator"] / med["merge plain"], 1.2))
    print(
        f"RESULT (b) disk per worktree: {disk['worktree orchestrator'] / 1024:.1f} MiB of files, "
        f"{disk['.git per worktree orchestrator'] / 1024:.1f} MiB of .git; {load()}"
    )


if __name__ == "__main__":
    sys.exit(main())
