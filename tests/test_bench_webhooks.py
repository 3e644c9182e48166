"""bench/bench_webhooks.py (the webhook benchmark; its figures are bench/README.md's): the
percentile it reports, and a small run end to end (its checks pass, its workspaces removed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
from bench_webhooks import percentile  # noqa: E402


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0 and percentile(values, 0.99) == 99.0 and percentile(values, 1.0) == 100.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0 and percentile([7.0], 0.99) == 7.0


@pytest.mark.slow
def test_the_webhook_benchmark_runs_end_to_end_and_removes_its_workspaces(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, str(BENCH / "bench_webhooks.py"), "--events", "10", "--workers", "10", "--repeat", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for way in ("no webhooks", "hanging receiver", "answering receiver"):
        assert re.search(rf"round 1/1 {way} +wall +[\d.]+ s", out), out
    assert "delivery latency (event to receiver), 10 deliveries:" in out
    assert re.search(
        r"RESULT latency p50 [\d.]+ ms p99 [\d.]+ ms \(target p99 <= 50 ms: (met|not met)\); "
        r"wall with a hanging receiver / without webhooks = [\d.]+x\n",
        out,
    )
    assert not list(tmp_path.glob("bench-webhooks-*")), "the workspaces are removed"
