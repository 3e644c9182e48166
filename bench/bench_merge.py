"""Merge benchmark: the orchestrator's merge of N worker branches against plain loops of git.

    .venv/bin/python bench/bench_merge.py [--files 2000] [--branches 16] [--repeat 5]

Generates a repository of ``--files`` files (100 per folder, ~1 KB each) in a temp folder, and
``--branches`` branches from its one commit, each changing 5 files no other branch touches
(disjoint changes: every merge is clean). Then, each timed ``--repeat`` times (median shown):

* orchestrator: ``merging.merge_branches(repo, MergeRequest("main", branches, "auto", ...))``: every merge in
  the object store, a merge commit per branch, the result ref moved by ``update-ref``. Disjoint
  branches take its fast path (no merge: the trees and commits written by Python as loose
  objects in a plain repository; elsewhere branch by branch, as below);
* orchestrator per branch: the same with ``fast_path=False``, the general path any overlap takes
  (a ``merge-tree`` per branch, each commit written by Python as a loose object in a plain
  repository, else by one ``hash-object`` process for all);
* merge-tree loop: ``git merge-tree --write-tree main <branch>`` once per branch, the issue's
  baseline (it merges each branch with the base only: it makes no commit, so it cannot chain);
* merge-tree + commit-tree loop: the least a shell script runs for the same result (each branch
  merged into the result so far, a commit per merge, one ``update-ref`` at the end).

RESULT lines: orchestrator / merge-tree loop (target <= 1.2x) and orchestrator per branch /
merge-tree loop (target <= 1.5x). A measurement, not a test: exit 0 whatever the figures. No network; the temp folder is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.git import merging, repository  # noqa: E402
from orchestrator.git.invocation import run_git  # noqa: E402

IDENT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}


def generate(repo: Path, files: int, branches: int) -> list[tuple[str, str]]:
    run_git(repo, "init", "-q", "-b", "main")
    for n in range(files):
        path = repo / f"d{n // 100:04d}" / f"f{n:05d}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(f"file {n} line {k}: some text to merge\n" for k in range(30)))
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-qm", "generated", env=IDENT)
    base = run_git(repo, "rev-parse", "main").stdout.strip()
    made = []
    for b in range(branches):
        index = {"GIT_INDEX_FILE": str(repo.parent / f"index{b}")}
        run_git(repo, "read-tree", base, env=index)
        for k in range(5):
            n = (b * 5 + k) * (files // (branches * 5) or 1) % files
            blob = run_git(repo, "hash-object", "-w", "--stdin", input=f"changed by branch {b}\n").stdout.strip()
            run_git(repo, "update-index", "--cacheinfo", f"100644,{blob},d{n // 100:04d}/f{n:05d}.txt", env=index)
        tree = run_git(repo, "write-tree", env=index).stdout.strip()
        commit = run_git(repo, "commit-tree", tree, "-p", base, input=f"branch {b}", env=IDENT).stdout.strip()
        name = f"orchestrator/bench/w{b}"
        run_git(repo, "update-ref", f"refs/heads/{name}", commit)
        made.append((f"w{b}", name))
    return made


def git(repo: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], input=input, capture_output=True, text=True, env={**os.environ, **IDENT}
    ).stdout


def loop_merge_tree(repo: Path, branches: list[tuple[str, str]], _: int) -> None:
    for _worker, branch in branches:
        git(repo, "merge-tree", "--write-tree", "main", branch)


def loop_with_commits(repo: Path, branches: list[tuple[str, str]], run: int) -> None:
    head = git(repo, "rev-parse", "main").strip()
    for worker, branch in branches:
        tree = git(repo, "merge-tree", "--write-tree", head, branch).split()[0]
        head = git(repo, "commit-tree", tree, "-p", head, "-p", branch, input=f"merge {worker}").strip()
    git(repo, "update-ref", f"refs/heads/loop{run}", head)


def orchestrator(repo: Path, branches: list[tuple[str, str]], run: int, fast_path: bool = True) -> None:
    root_id = f"run{run}" if fast_path else f"slow{run}"
    outcome = merging.merge_branches(
        repo, merging.MergeRequest("main", branches, "auto", prefix="orchestrator/", root_id=root_id, fast_path=fast_path)
    )
    assert outcome.merged == tuple(w for w, _ in branches) and not outcome.conflicts, outcome


def orchestrator_per_branch(repo: Path, branches: list[tuple[str, str]], run: int) -> None:
    orchestrator(repo, branches, run, fast_path=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--branches", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as folder:
        repo = Path(folder) / "repo"
        repo.mkdir()
        started = time.perf_counter()
        branches = generate(repo, args.files, args.branches)
        print(
            f"generated {args.files} files, {args.branches} branches in {time.perf_counter() - started:.1f} s; git {repository.git_version()}"
        )
        methods = {
            "orchestrator": orchestrator,
            "orchestrator per branch": orchestrator_per_branch,
            "merge-tree loop": loop_merge_tree,
            "merge-tree + commit-tree": loop_with_commits,
        }
        times: dict[str, list[float]] = {name: [] for name in methods}
        for run in range(args.repeat):
            for name, method in methods.items():  # interleaved: a slow moment hits every method
                started = time.perf_counter()
                method(repo, branches, run)
                times[name].append(time.perf_counter() - started)
        floor = statistics.median(times["merge-tree loop"])
        print(f"{'method':28} {'median s':>9} {'ms/branch':>10} {'x loop':>7}   (median of {args.repeat})")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:28} {median:9.3f} {median / args.branches * 1000:10.2f} {median / floor:6.2f}x")
        for name, target in (("orchestrator", 1.2), ("orchestrator per branch", 1.5)):
            ratio = statistics.median(times[name]) / floor
            verdict = "met" if ratio <= target else "NOT met"
            print(f"RESULT {name}/merge-tree loop = {ratio:.2f}x (target <= {target:.2f}x) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
