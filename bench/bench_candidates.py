"""Candidates benchmark (a): one task on N candidates at once against N sequential runs of it.

    .venv/bin/python bench/bench_candidates.py [--candidates 3] [--think 1.0] [--repeat 1] [--kind claude]

Each run is a real AI CLI worker (``--kind claude``: the real ``claude`` CLI from tests/install_cli.sh)
in a real git worktree of a repository the bench makes, talking to the loopback mock of the
Anthropic Messages API (tests/mock_model_server.py) whose every answer takes ``--think`` seconds
(a model's latency): the model writes ``feature.txt`` with the CLI's Write tool, then says it is
done. Its cost is what the CLI reports from the mock's token usage.

- candidates: one job, its one task with ``config.attempts: N`` (select ``cheapest``): N workers at
  once from the same base, then the selection, then the winner merged into the result branch.
- sequential: N jobs one after the other, each the same task once (what a person comparing N runs
  by hand would start).

Printed: wall time and total cost of each way, and the ratios (candidates / sequential). The
candidates' wall includes the selection and the merge. A measurement, not a test: exit 1 only when
a run did not complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402
from orchestrator.models import JobStatus  # noqa: E402
from tests.conftest import find_cli  # noqa: E402
from tests.mock_model_server import MockModelServer, Text, ToolUse, tool_results, working_directory  # noqa: E402

GIT_IDENT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}
TASK = "Write feature.txt saying hello"


def make_repo(base: Path) -> None:
    env = {**os.environ, **GIT_IDENT}
    subprocess.run(["git", "init", "-q", "-b", "main", str(base)], check=True, env=env)
    (base / "README.md").write_text("bench\n")
    (base / ".gitignore").write_text("workspace/\nhome/\n")
    subprocess.run(["git", "-C", str(base), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(base), "commit", "-q", "-m", "base"], check=True, env=env)


def script(think: float):
    """Every conversation: Write feature.txt in the CLI's folder, then "done"; each answer takes ``think`` s."""

    def turn(body: dict[str, Any]):
        if tool_results(body):
            return Text("feature.txt written", delay=think)
        folder = working_directory(body) or "."
        return ToolUse("Write", {"file_path": f"{folder}/feature.txt", "content": "hello\n"}, delay=think)

    return turn


def engine_for(base: Path, cli: str, candidates: int) -> Engine:
    overrides = {
        "orchestrator": {"worker": "claude", "claude_command": cli, "planner": "heuristic"},
        "workers": {"max_workers": max(candidates, 1), "default_timeout": 300, "max_retries": 0},
        "git": {"isolation": "worktree", "repo": "."},  # the bench's repository is this folder itself
        "candidates": {"select": "cheapest"},
    }
    return Engine(load_settings(base_dir=base, environ={}, overrides=overrides))


def run_job(engine: Engine, config: dict[str, Any]) -> tuple[float, float, int]:
    """(wall seconds, total cost, workers) of one job through the engine."""
    started = time.perf_counter()
    job = engine.submission.submit("bench", config, [{"id": "feat", "task": TASK}])
    done = engine.queries.wait(job.id, 600)
    wall = time.perf_counter() - started
    if done.status is not JobStatus.COMPLETED:
        raise SystemExit(f"job {job.id} ended {done.status.value}: {done.error}")
    _, workers = engine.queries.snapshot(job.root_id)
    return wall, sum(w.cost_usd or 0.0 for w in workers), len(workers)


def one_round(cli: str, candidates: int, think: float) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="bench-cand-"))
    try:
        make_repo(base)
        home = base / "home"
        home.mkdir()
        with MockModelServer(script(think), lifetime=3600) as mock:
            saved = {k: os.environ.get(k) for k in ("HOME", "CLAUDE_CONFIG_DIR", *mock.client_env())}
            os.environ.update({**mock.client_env(), "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude")})
            engine = engine_for(base, cli, candidates)
            try:
                par_wall, par_cost, par_n = run_job(engine, {"attempts": candidates})
                seq_wall = seq_cost = 0.0
                for _ in range(candidates):
                    wall, cost, _ = run_job(engine, {})
                    seq_wall, seq_cost = seq_wall + wall, seq_cost + cost
            finally:
                engine.shutdown(timeout=30)
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        assert par_n == candidates
        return {"cand_wall": par_wall, "cand_cost": par_cost, "seq_wall": seq_wall, "seq_cost": seq_cost}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=3, help="candidates, and sequential runs (default 3)")
    parser.add_argument("--think", type=float, default=1.0, help="seconds each model answer takes (default 1.0)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median is the result (default 1)")
    parser.add_argument("--kind", default="claude", choices=["claude"], help="the AI CLI (default claude)")
    args = parser.parse_args(argv)
    if not 1 <= args.candidates <= 16 or args.repeat < 1 or args.think < 0:
        parser.error("--candidates must be 1..16, --repeat at least 1, --think at least 0")
    cli = find_cli(args.kind)
    if cli is None:
        print(f"bench_candidates: the {args.kind} CLI is not installed (run tests/install_cli.sh)")
        return 1
    print(
        f"bench_candidates: one task on {args.candidates} {args.kind} candidates vs {args.candidates} sequential runs; "
        f"each model answer takes {args.think:g} s (loopback mock); nproc={os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    rounds = []
    for r in range(1, args.repeat + 1):
        one = one_round(cli, args.candidates, args.think)
        rounds.append(one)
        print(
            f"  round {r}: candidates wall {one['cand_wall']:6.2f} s cost ${one['cand_cost']:.4f} | "
            f"sequential wall {one['seq_wall']:6.2f} s cost ${one['seq_cost']:.4f}",
            flush=True,
        )
    mid = sorted(rounds, key=lambda o: o["cand_wall"] / o["seq_wall"])[len(rounds) // 2]
    wall_ratio = mid["cand_wall"] / mid["seq_wall"]
    cost_ratio = mid["cand_cost"] / mid["seq_cost"] if mid["seq_cost"] else float("nan")
    print(
        f"RESULT candidates={args.candidates} cand_wall={mid['cand_wall']:.2f}s seq_wall={mid['seq_wall']:.2f}s "
        f"wall_ratio={wall_ratio:.2f}x cand_cost=${mid['cand_cost']:.4f} seq_cost=${mid['seq_cost']:.4f} "
        f"cost_ratio={cost_ratio:.2f}x (median of {len(rounds)}; walls "
        f"{statistics.median(o['cand_wall'] for o in rounds):.2f}/{statistics.median(o['seq_wall'] for o in rounds):.2f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
