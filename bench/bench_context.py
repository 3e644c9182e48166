"""Shared context benchmark (benchmark (c)): per-worker prompt bytes of a 7-worker
job with the job's shared context block first, against the same information inline.

    .venv/bin/python bench/bench_context.py [--workers 7] [--files 120] [--conventions 3000] [--keep] [--json OUT]

The bench makes a real git repository (``--files`` source files under ``src/``, ``tests/`` and
``docs/``, a README, a pyproject.toml, an AGENTS.md and a CONTRIBUTING.md of about
``--conventions`` characters each) and runs one job of ``--workers`` explicit subtasks through the
real Engine in worktree isolation (worker kind ``command``: each worker copies the prompt file it
was given out of its worktree, and ends). So every prompt is the orchestrator's real rendering:
the shipped template, the job's block (sharedcontext.py) read at the job's base commit.

**With the block**: the prompts as the workers received them: the block first, byte-identical,
then each worker's own part. **Without** (the baseline, from the same texts in the same run): each
worker's prompt carrying the same information inline, as before the shared block existed: its own part first
(subtask, identity, folder), then the request, the subtasks, the repository and the conventions.

Figures: the bytes per worker and in total; the bytes a prompt cache could reuse (a provider's
cache matches a prompt's *prefix*: for every worker after the first, the longest prefix it shares
with a prompt sent before it); the bytes the model must read afresh (total minus reusable); and the
measure of Kage Bunshin's SharedContextStore (a sibling orchestrator's): the bytes to store once
the common part is kept once (block + each worker's own part) against every whole prompt. Checks (exit 1 when one fails): the job
completed, every prompt starts with the block, and the engine recorded each prompt's bytes and
the block's. A measurement, not a test: exit 0 whatever the figures. Stops by itself (the job has a
60 s deadline); the workspace and repository are removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402
from orchestrator.models import JobStatus  # noqa: E402
from orchestrator.workers.sharedcontext import block_path  # noqa: E402

GIT_IDENT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}
REQUEST = (
    "Add order history to the shop: a table for past orders, an API to list and fetch them, a page in the web UI, "
    "e-mail receipts, an export to CSV, documentation, and end-to-end tests of the whole flow."
)
TASKS = [
    "Add the order_history table and its migration (src/shop/db)",
    "Add GET /orders and GET /orders/{id} to the API (src/shop/api), paginated",
    "Add the order history page to the web UI (src/shop/web)",
    "Send an e-mail receipt when an order is paid (src/shop/mail)",
    "Export a customer's orders as CSV (src/shop/export)",
    "Document order history in docs/orders.md",
    "Write end-to-end tests of the order history flow (tests/e2e)",
]
# Copies the prompt file it was given to <out>/<worker>.prompt, outside its worktree.
COPY = 'cp "$1" "$2/$ORCHESTRATOR_WORKER_ID.prompt"'


class CheckFailed(Exception):
    """The run did not do what the figures assume."""


def make_repo(base: Path, files: int, conventions: int) -> None:
    """A git repository with a project's usual top level and ``files`` source files, committed."""
    env = {**os.environ, **GIT_IDENT}
    subprocess.run(["git", "init", "-q", "-b", "main", str(base)], check=True, env=env)
    (base / "README.md").write_text("# Shop\n\nA small web shop.\n")
    (base / "pyproject.toml").write_text("[project]\nname = 'shop'\nversion = '1.0'\n")
    (base / ".gitignore").write_text("workspace/\nseen/\n")
    rule = "- Keep functions short; every public function has a docstring and a test.\n"
    (base / "AGENTS.md").write_text("# How to work here\n\n" + rule * max(1, conventions // len(rule)))
    guide = "- Run `make test` and `make lint` before you finish; commit messages say why.\n"
    (base / "CONTRIBUTING.md").write_text("# Contributing\n\n" + guide * max(1, conventions // len(guide)))
    folders = ["src/shop/api", "src/shop/db", "src/shop/web", "src/shop/mail", "tests", "docs"]
    for n in range(files):
        path = base / folders[n % len(folders)] / f"module_{n}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""Module {n}."""\n')
    subprocess.run(["git", "-C", str(base), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(base), "commit", "-q", "-m", "base"], check=True, env=env)


def common_prefix(a: bytes, b: bytes) -> int:
    """The length of the longest common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def reusable(prompts: Sequence[bytes]) -> int:
    """Bytes a prefix cache could reuse when the prompts are sent in order: for each after the
    first, the longest prefix it shares with any prompt sent before it."""
    return sum(max(common_prefix(p, q) for q in prompts[:i]) for i, p in enumerate(prompts) if i)


@dataclass
class Figures:
    workers: int
    block: int  # the shared block's bytes
    own: list[int]  # each worker's own part's bytes
    with_total: int
    with_reusable: int
    without_total: int
    without_reusable: int
    stored_once: int  # SharedContextStore's measure: the block once plus every own part

    @property
    def with_fresh(self) -> int:
        return self.with_total - self.with_reusable

    @property
    def without_fresh(self) -> int:
        return self.without_total - self.without_reusable


def measure(prompts: Sequence[bytes], block: bytes) -> Figures:
    """The figures of one job's prompts (every one starting with ``block``) and of the baseline
    built from the same texts: the worker's own part first, then the shared information."""
    own = [p[len(block) :] for p in prompts]
    inline = [part.lstrip(b"\n") + b"\n\n" + block for part in own]  # as before: the subtask first
    return Figures(
        workers=len(prompts),
        block=len(block),
        own=[len(o) for o in own],
        with_total=sum(len(p) for p in prompts),
        with_reusable=reusable(prompts),
        without_total=sum(len(p) for p in inline),
        without_reusable=reusable(inline),
        stored_once=len(block) + sum(len(o) for o in own),
    )


def run_job(base: Path, workers: int) -> tuple[list[bytes], bytes]:
    """One job of ``workers`` subtasks through the Engine in ``base``'s worktrees: the prompts as
    the workers received them (plan order) and the job's block."""
    out = base / "seen"
    out.mkdir()
    settings = load_settings(
        base_dir=base,
        environ={},
        overrides={
            "orchestrator": {"worker": "command", "command": ["sh", "-c", COPY, "sh", "{prompt_file}", str(out)]},
            # the workers copy their prompts to ``out``, outside their worktrees: a sandboxed worker may write it only so
            "workers": {
                "max_workers": workers,
                "max_workers_limit": max(workers, 16),
                "max_retries": 0,
                "sandbox_writable": [str(out)],
            },
            "git": {"isolation": "worktree", "repo": "."},  # the bench's repository is this folder itself
            "recursion": {"tree_deadline": 60},
        },
    )
    engine = Engine(settings)
    try:
        tasks = [
            {"id": f"t{i}", "task": TASKS[(i - 1) % len(TASKS)] + (f" (part {i})" if i > len(TASKS) else "")}
            for i in range(1, workers + 1)
        ]
        job = engine.queries.wait(engine.submission.submit(REQUEST, None, tasks).id, 90)
        if job.status is not JobStatus.COMPLETED:
            raise CheckFailed(f"the job ended {job.status.value}: {job.error}")
        records = sorted(engine.queries.snapshot(job.id)[1], key=lambda w: w.index)
        block = block_path(engine.workspace, job).read_bytes()
        prompts = [(out / f"{w.name}.prompt").read_bytes() for w in records]
        for w, prompt in zip(records, prompts):
            if not prompt.startswith(block):
                raise CheckFailed(f"{w.name}'s prompt does not start with the block")
            if (w.prompt_bytes, w.shared_prompt_bytes) != (len(prompt), len(block)):
                raise CheckFailed(
                    f"{w.name}'s record says {w.prompt_bytes}/{w.shared_prompt_bytes} bytes, not {len(prompt)}/{len(block)}"
                )
        return prompts, block
    finally:
        engine.shutdown(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=7)
    parser.add_argument("--files", type=int, default=120, help="source files in the repository")
    parser.add_argument("--conventions", type=int, default=3000, help="characters of AGENTS.md and of CONTRIBUTING.md")
    parser.add_argument("--keep", action="store_true", help="keep the repository and workspace")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers must be at least 2 (one worker shares with nobody)")
    base = Path(tempfile.mkdtemp(prefix="bench-context-"))
    print(
        f"bench_context: {args.workers} workers in one worktree job; a repository of {args.files} files, conventions of ~{args.conventions} characters each"
    )
    try:
        make_repo(base, args.files, args.conventions)
        prompts, block = run_job(base, args.workers)
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}")
        args.keep = True
        return 1
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    f = measure(prompts, block)
    n = f.workers
    print()
    print(f"{'figure':<58}{'with block':>14}{'without':>12}")
    rows = [
        ("prompt bytes per worker (mean)", f.with_total / n, f.without_total / n),
        ("prompt bytes, all workers", f.with_total, f.without_total),
        ("bytes a prompt cache could reuse (prefix)", f.with_reusable, f.without_reusable),
        ("bytes read afresh (total - reusable)", f.with_fresh, f.without_fresh),
    ]
    for label, ours, theirs in rows:
        print(f"{label:<58}{ours:>14,.0f}{theirs:>12,.0f}")
    print()
    print(f"shared block: {f.block:,} bytes; own parts: {min(f.own):,} to {max(f.own):,} bytes")
    print(
        f"reusable share of all prompt bytes: {f.with_reusable / f.with_total:.1%} with the block, {f.without_reusable / f.without_total:.1%} without"
    )
    print(
        f"SharedContextStore's measure (common part stored once): {f.stored_once:,} of {f.without_total:,} bytes, "
        f"{1 - f.stored_once / f.without_total:.1%} less"
    )
    ratio = f.without_fresh / f.with_fresh
    print(
        f"RESULT {n} workers: a prompt cache could reuse {f.with_reusable:,} of {f.with_total:,} prompt bytes with the shared block "
        f"({f.with_reusable / f.with_total:.0%}) against {f.without_reusable:,} inline; bytes read afresh {f.with_fresh:,} vs "
        f"{f.without_fresh:,} = {ratio:.2f}x fewer"
    )
    if args.json:
        doc = {**asdict(f), "with_fresh": f.with_fresh, "without_fresh": f.without_fresh, "fresh_ratio": ratio}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
