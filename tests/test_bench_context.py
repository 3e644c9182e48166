"""bench/bench_context.py (the shared context benchmark (c); its figures are bench/README.md's): the prefix
a cache could reuse is measured as it should be, and a small job runs end to end through the real
Engine, printing its figures and RESULT line and removing its repository."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from bench_context import common_prefix, measure, reusable  # noqa: E402


def test_the_reusable_bytes_are_each_prompts_longest_prefix_shared_with_one_sent_before():
    assert common_prefix(b"abcd", b"abxy") == 2 and common_prefix(b"", b"a") == 0 and common_prefix(b"ab", b"ab") == 2
    assert reusable([b"AAAA-one", b"AAAA-two", b"AAAB", b"AAAA-onex"]) == 5 + 3 + 8
    assert reusable([b"only"]) == 0


def test_the_baseline_carries_the_same_text_with_the_workers_own_part_first():
    block = b"# Job: shared\n" * 10
    prompts = [block + b"\n# Your subtask\n\nA\n", block + b"\n# Your subtask\n\nB, longer\n"]
    f = measure(prompts, block)
    assert f.block == len(block) and f.own == [len(p) - len(block) for p in prompts]
    assert f.with_reusable == len(block) + len(b"\n# Your subtask\n\n")
    assert f.without_reusable == len(b"# Your subtask\n\n"), "inline, only the heading is common"
    assert f.stored_once == len(block) + sum(f.own) and f.with_total == sum(len(p) for p in prompts)


@pytest.mark.slow
def test_the_context_benchmark_runs_end_to_end_and_removes_its_repository(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = tmp_path / "figures.json"
    command = [sys.executable, str(BENCH / "bench_context.py"), "--workers", "3", "--files", "12", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    assert "bench_context: 3 workers in one worktree job" in text
    for label in (
        "prompt bytes per worker (mean)",
        "bytes a prompt cache could reuse (prefix)",
        "bytes read afresh",
        "shared block: ",
    ):
        assert label in text, text
    assert re.search(r"RESULT 3 workers: a prompt cache could reuse [\d,]+ of [\d,]+ prompt bytes .* = [\d.]+x fewer\n", text)
    figures = json.loads(out.read_text())
    assert figures["with_reusable"] >= 2 * figures["block"] > figures["without_reusable"]
    assert abs(figures["with_total"] - figures["without_total"]) <= 3 * 2, "the same information either way"
    assert not list(tmp_path.glob("bench-context-*")), "the repository and workspace are removed"
