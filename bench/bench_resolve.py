"""Conflict-resolution benchmark: ``merge_strategy: resolve`` with a ``command`` resolver against ``auto``.

    .venv/bin/python bench/bench_resolve.py [--repeat 3] [--sandbox auto|on|off] [--gate] [--keep] [--tmp DIR]

A fresh host repository in a temp folder (removed at the end): 8 files ``f1.txt`` .. ``f8.txt``
(``one``/``two``/``three``), the orchestrator's folder inside it (``tools/orch``, its workspace
ignored) as a user installs it, and a remote ``bench``: a local bare repository whose
``post-receive`` hook writes the time (``date +%s.%N``) and the refs it received. One Engine
(``git.push: bench``, so a root's result branch is pushed when the root ends;
``workers.sandbox``: ``--sandbox``, default ``auto`` as users run it) runs, each round
``--repeat`` times (the order of the two alternates between rounds), the same job twice:

16 ``command`` workers (``sh -c "{task}"``, at most 16 at once, no retries); worker 2k-1 and
worker 2k both rewrite line 2 of ``fk.txt`` (``sed -i s/two/wNN/ fk.txt``): 8 pairs that
conflict on the same line, merged in plan order into the job's result branch,

(a) with ``merge_strategy: auto`` (it merges worker 1 and stops at the first conflict: the
    other 15 are skipped), and
(b) with ``merge_strategy: resolve``, the resolver ``git.resolver_kind: command`` running
    ``git.resolver_command``: a Python script that keeps both sides of each conflict hunk
    (tests/test_resolving.py's BOTH_SIDES), in the worker sandbox, ``resolver_retries`` 1.

"Published" is the moment the remote has the result branch: the hook's time. The job's own
``ended_at`` cannot stand for it: the engine stamps it when the last worker settles, before
the merge (engine/ending.py end_job; conclude then lands, renders the reports, writes
RECORD.json and pushes, and only then tells anyone the job ended). Per job, from the last
worker's ``ended_at`` (its process seen exited):

* to the merge's start (``merge.at``), the merge itself (``merging.merge_branches``' wall, every
  resolution inside it), to the push's start (``publish.at``: the merge, the reports and
  RECORD.json before it) and to the remote having it (the headline: ``resolve``/``auto``);
* to ``Queries.wait`` returning the job ended;
* how many workers are in the result and how many of the 8 conflicts ended in it: both sides'
  lines in ``fk.txt`` of the branch as the remote holds it;
* for ``resolve``: resolver attempts, each conflict's wall in the resolver
  (``ConflictResolver.__call__``: worktree, ``git merge --no-commit``, the sandboxed resolver,
  ``git add``/``write-tree``, the marker check, the worktree's removal) and the resolver process's
  own seconds (``ResolverAttempt.seconds``).

The two walls are timed by wrapping ``merging.merge_branches`` and ``ConflictResolver.__call__``
with a clock (nothing else changes). Medians of the rounds; RESULT lines. The host repository's
HEAD, index and work tree are checked unchanged at the end. A measurement, not a test: exit 0
whatever the figures, 1 when a job did not complete or was not published. No network.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.config import load_settings  # noqa: E402
from orchestrator.delivery import resolving  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402
from orchestrator.git import merging, repository  # noqa: E402
from orchestrator.models import JobRecord, JobStatus  # noqa: E402
from tests.helpers.resolving import BOTH_SIDES  # noqa: E402  (the tests' resolver: both sides of each hunk)

IDENT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}
PAIRS = 8
WORKERS = 2 * PAIRS
STRATEGIES = ("auto", "resolve")
PARTS = ("prepare", "run", "take", "gate", "remove")
GATE = {"name": "check", "run": ["sh", "-c", "grep -q one f1.txt"], "required": True}

# Appended to it here: a write outside its worktree, which the sandbox refuses (a confined resolver).
PROBE = """
try:
    open(sys.argv[2], "a").close()
except OSError as exc:
    print("confined:", exc)
"""

# The remote's clock: when a ref arrived (after git updated it), one line per ref.
HOOK = '#!/bin/sh\nnow=$(date +%s.%N)\nwhile read old new ref; do echo "$now $new $ref" >> published.log; done\n'


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env={**os.environ, **IDENT})
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def make_host(root: Path) -> tuple[Path, Path, Path]:
    """The host repository (with the orchestrator's folder inside, committed), its bare remote
    ``bench`` with the timing hook: (host, folder, bare)."""
    host = root / "host repo"
    folder = host / "tools" / "orch"
    folder.mkdir(parents=True)
    git(host, "init", "-q", "-b", "main")
    for k in range(1, PAIRS + 1):
        (host / f"f{k}.txt").write_text("one\ntwo\nthree\n")
    (folder / ".gitignore").write_text("/workspace/*\n")
    (folder / "config.yaml").write_text("# the bench's own\n")
    git(host, "add", "-A")
    git(host, "commit", "-qm", "base")
    bare = root / "published.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    hook = bare / "hooks" / "post-receive"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    git(host, "remote", "add", "bench", str(bare))
    return host, folder, bare


def tasks() -> list[str]:
    """Worker 2k-1 and 2k rewrite line 2 of fk.txt, each with its own number."""
    return [f"sed -i s/two/w{w:02d}/ f{(w + 1) // 2}.txt" for w in range(1, WORKERS + 1)]


# What is timed: (owner, attribute, label). A resolution's parts (ConflictResolver's own steps),
# each timed without the parts it calls: prepare (a worktree of the result so far, ``git merge
# --no-commit``), run (the sandboxed resolver, spawn to swept), take (``git add -A``,
# ``write-tree``, the marker check), gate (the required gates), remove (``git worktree remove``
# when there is a tree: called by prepare first, and once at the end).
TIMED: tuple[tuple[Any, str, str], ...] = (
    (merging, "merge_branches", "merge"),
    (resolving.ConflictResolver, "__call__", "resolution"),
    *((resolving.ConflictResolver, f"_{part}", part) for part in PARTS),
)


class Timings:
    """Walls of the engine's own calls (the merge, each resolution and its parts) by a clock around
    them: nothing else changes. ``take`` hands over what one job's landing timed."""

    def __init__(self) -> None:
        self.walls: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._nested = threading.local()  # per thread: the timed calls in progress, each its timed callees' wall

    def install(self) -> Callable[[], None]:
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in TIMED]
        for (owner, name, label), (_, _, original) in zip(TIMED, originals):
            setattr(owner, name, self._timed(original, label))

        def uninstall() -> None:
            for owner, name, original in originals:
                setattr(owner, name, original)

        return uninstall

    def _timed(self, original: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack: list[float] = self._nested.__dict__.setdefault("stack", [])
            stack.append(0.0)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - started
                callees = stack.pop()
                if stack:
                    stack[-1] += seconds
                with self._lock:  # a part: its own time; the merge and a resolution: all of it
                    self.walls.setdefault(label, []).append(seconds - callees if label in PARTS else seconds)

        return timed

    def take(self) -> dict[str, list[float]]:
        with self._lock:
            taken, self.walls = self.walls, {}
        return taken


@dataclass
class Run:
    """One job's figures (seconds, counts)."""

    strategy: str
    to_merge: float  # last worker's end -> merge.at
    merge: float  # merge_branches' wall
    to_push: float  # last worker's end -> publish.at
    published: float  # last worker's end -> the remote's hook
    reported: float  # last worker's end -> Queries.wait returned
    merged: int
    conflicts_in: int
    attempts: int = 0
    accepted: int = 0
    resolutions: list[float] = field(default_factory=list)  # each conflict's wall in the resolver
    parts: dict[str, float] = field(default_factory=dict)  # a resolution's parts: their sum in the job
    resolver_runs: list[float] = field(default_factory=list)  # each attempt's process seconds
    sandbox: str = ""


def received(bare: Path, branch: str, commit: str) -> float:
    """When the remote's hook saw ``branch`` arrive at ``commit``."""
    for line in reversed((bare / "published.log").read_text().splitlines()):
        at, new, ref = line.split()
        if ref == f"refs/heads/{branch}" and new == commit:
            return float(at)
    raise RuntimeError(f"the remote never received {branch} at {commit}")


def conflicts_in(bare: Path, commit: str) -> tuple[int, int]:
    """In the published commit: (pairs with both sides' lines, workers whose line is there)."""
    pairs = lines = 0
    for k in range(1, PAIRS + 1):
        text = subprocess.run(
            ["git", "--git-dir", str(bare), "show", f"{commit}:f{k}.txt"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        have = [f"w{w:02d}" in text for w in (2 * k - 1, 2 * k)]
        pairs += all(have)
        lines += sum(have)
    return pairs, lines


def run_job(engine: Engine, bare: Path, timings: Timings, strategy: str, gate: bool) -> Run:
    config: dict[str, Any] = {"merge_strategy": strategy, "max_workers": WORKERS}
    if gate:
        config["gates"] = [GATE]
    job = engine.submission.submit(f"bench: {PAIRS} conflicting pairs, {strategy}", config, tasks())
    done: JobRecord = engine.queries.wait(job.id, 300)
    returned = time.time()
    if done.status is not JobStatus.COMPLETED:
        raise SystemExit(f"job {job.id} ({strategy}) ended {done.status.value}: {done.notes[-3:]}")
    _, workers = engine.queries.snapshot(job.root_id)
    ends = [w.ended_at for w in workers if w.ended_at is not None]
    if len(ends) != WORKERS:
        raise SystemExit(f"job {job.id}: {len(ends)} of {WORKERS} workers have an end time")
    last = max(ends)
    merge, publish = done.merge, done.publish.to_dict() if done.publish is not None else {}
    if merge is None or merge.outcome is None or merge.at is None:
        raise SystemExit(f"job {job.id} ({strategy}) has no merge: {done.notes[-3:]}")
    if not publish.get("pushed"):
        raise SystemExit(f"job {job.id} ({strategy}) was not published: {publish.get('error')}")
    there = git(bare, "rev-parse", f"refs/heads/{publish['branch']}").strip()
    if there != publish["commit"] or there != merge.result_commit:
        raise SystemExit(f"job {job.id}: the remote holds {there}, the job published {publish['commit']}")
    walls = timings.take()
    parts = {part: sum(walls.get(part, [])) for part in PARTS}
    parts["rest"] = sum(walls.get("resolution", [])) - sum(parts.values())  # the prompt, the diffs, the notes
    pairs, _ = conflicts_in(bare, there)
    attempts = [a for r in merge.outcome.resolutions for a in r.attempts]
    return Run(
        strategy=strategy,
        to_merge=merge.at - last,
        merge=sum(walls.get("merge", [])),
        to_push=float(publish["at"]) - last,
        published=received(bare, publish["branch"], there) - last,
        reported=returned - last,
        merged=len(merge.outcome.merged),
        conflicts_in=pairs,
        attempts=len(attempts),
        accepted=sum(r.accepted for r in merge.outcome.resolutions),
        resolutions=walls.get("resolution", []),
        parts=parts,
        resolver_runs=[a.seconds for a in attempts],
        sandbox=",".join(sorted({w.sandbox or "?" for w in workers})),
    )


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def host_state(host: Path) -> str:
    """What a job must never change in the host: its HEAD, its index and work tree's status."""
    return git(host, "rev-parse", "HEAD") + git(host, "status", "--porcelain=v2", "--branch", "--untracked-files=all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the two jobs (default 3); medians shown")
    parser.add_argument(
        "--sandbox", choices=("auto", "on", "off"), default="auto", help="workers.sandbox (default auto, as users run it)"
    )
    parser.add_argument("--gate", action="store_true", help="a required gate on every worker and on each resolution")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--tmp", help="where the temp folder goes (default: the system's temp folder)")
    args = parser.parse_args(argv)
    version = ".".join(map(str, repository.git_version() or ()))
    print(f"{load()}; nproc {os.cpu_count()}; git {version}; workers.sandbox {args.sandbox}")
    root = Path(tempfile.mkdtemp(prefix="bench-resolve-", dir=args.tmp))
    timings = Timings()
    uninstall = timings.install()
    engine: Engine | None = None
    runs: list[Run] = []
    try:
        host, folder, bare = make_host(root)
        script = root / "both_sides.py"
        script.write_text(BOTH_SIDES + PROBE)
        escaped = root / "resolver escaped"
        before = host_state(host)
        settings = load_settings(
            base_dir=folder,
            environ={},
            overrides={
                "orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]},
                "workers": {"sandbox": args.sandbox, "max_retries": 0, "default_timeout": 60, "max_workers": WORKERS},
                "git": {
                    "push": "bench",
                    "resolver_kind": "command",
                    "resolver_command": [sys.executable, str(script), "{prompt_file}", str(escaped)],
                },
            },
        )
        engine = Engine(settings)
        for n in range(args.repeat):
            order = STRATEGIES if n % 2 == 0 else STRATEGIES[::-1]
            done = {s: run_job(engine, bare, timings, s, args.gate) for s in order}
            runs += done.values()
            a, r = done["auto"], done["resolve"]
            print(
                f"round {n + 1}: end -> published auto {a.published * 1000:.0f} ms, resolve {r.published * 1000:.0f} ms "
                f"({r.published / a.published:.2f}x); conflicts in the result {a.conflicts_in}/{PAIRS} and "
                f"{r.conflicts_in}/{PAIRS}; resolver attempts {r.attempts}; sandbox {r.sandbox}; {load()}",
                flush=True,
            )
        changed = host_state(host) != before
        confined = "no: it wrote outside its worktree" if escaped.exists() else "yes"
    finally:
        if engine is not None:
            engine.shutdown(timeout=30)
        uninstall()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(runs, args)
    print(f"resolver confined: {confined}")
    if changed:
        print("the host repository's HEAD, index or work tree CHANGED")
        return 1
    return 0


def report(runs: list[Run], args: argparse.Namespace) -> None:
    by = {s: [r for r in runs if r.strategy == s] for s in STRATEGIES}

    def med(strategy: str, fn: Callable[[Run], float]) -> float:
        return statistics.median(fn(r) for r in by[strategy])

    ms = 1000.0
    rows: list[tuple[str, Callable[[Run], float], float, str]] = [
        ("last worker's end -> merge starts, ms", lambda r: r.to_merge, ms, "{:.0f}"),
        ("the merge (merge_branches), ms", lambda r: r.merge, ms, "{:.0f}"),
        ("last worker's end -> push starts, ms", lambda r: r.to_push, ms, "{:.0f}"),
        ("  of which the merge's end -> push starts, ms", lambda r: r.to_push - r.to_merge - r.merge, ms, "{:.0f}"),
        ("push starts -> published, ms", lambda r: r.published - r.to_push, ms, "{:.0f}"),
        ("last worker's end -> published, ms", lambda r: r.published, ms, "{:.0f}"),
        ("last worker's end -> job reported ended, ms", lambda r: r.reported, ms, "{:.0f}"),
        (f"workers in the result (of {WORKERS})", lambda r: r.merged, 1.0, "{:.0f}"),
        (f"conflicts in the result (of {PAIRS})", lambda r: r.conflicts_in, 1.0, "{:.0f}"),
    ]
    print(f"\n{'figure (median of ' + str(args.repeat) + ')':46} {'auto':>9} {'resolve':>9} {'ratio':>7}")
    for label, fn, scale, fmt in rows:
        a, r = med("auto", fn), med("resolve", fn)
        ratio = f"{r / a:6.2f}x" if a > 0 and scale == ms else ""
        print(f"{label:46} {fmt.format(a * scale):>9} {fmt.format(r * scale):>9} {ratio:>7}")
    res = by["resolve"]
    per_conflict = statistics.median(s for r in res for s in r.resolutions) if any(r.resolutions for r in res) else 0.0
    per_run = statistics.median(s for r in res for s in r.resolver_runs) if any(r.resolver_runs for r in res) else 0.0
    added = (med("resolve", lambda r: r.published) - med("auto", lambda r: r.published)) / PAIRS
    resolved = [r for r in res if r.resolutions]
    if resolved:
        each = {p: statistics.median(x.parts[p] / len(x.resolutions) for x in resolved) * ms for p in (*PARTS, "rest")}
        print("resolve: a resolution's parts, ms per conflict: " + ", ".join(f"{p} {v:.0f}" for p, v in each.items()))
    print(
        f"resolve: resolver attempts per job {statistics.median(r.attempts for r in res):.0f} "
        f"({statistics.median(r.accepted for r in res):.0f} accepted) for {PAIRS} conflicts; per conflict "
        f"{per_conflict * ms:.0f} ms in the resolver (median of {sum(len(r.resolutions) for r in res)}), of which the "
        f"resolver process {per_run * ms:.0f} ms; workers sandboxed: {', '.join(sorted({r.sandbox for r in runs}))}"
    )
    a, r = med("auto", lambda x: x.published), med("resolve", lambda x: x.published)
    print(
        f"RESULT last worker's end -> published: resolve {r * ms:.0f} ms, auto {a * ms:.0f} ms = {r / a:.2f}x; "
        f"conflicts in the result: resolve {med('resolve', lambda x: x.conflicts_in):.0f}/{PAIRS}, "
        f"auto {med('auto', lambda x: x.conflicts_in):.0f}/{PAIRS}"
    )
    print(
        f"RESULT resolve: {per_conflict * ms:.0f} ms per resolution (median), {added * ms:.0f} ms per conflict "
        f"beyond auto's latency; {load()}"
    )


if __name__ == "__main__":
    sys.exit(main())
