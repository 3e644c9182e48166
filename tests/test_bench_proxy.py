"""bench/bench_proxy.py runs end to end at a tiny size (its figures are bench/README.md's): both
ways stream their chunks and download, and it prints its RESULT lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

pytestmark = pytest.mark.slow


def test_the_proxy_bench_measures_both_ways_and_prints_its_results():
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_proxy.py"), "--chunks", "10", "--rounds", "2", "--mb", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "streamed chunks: 20 each way (2 requests of 10)" in out, out
    assert "the listener allowed 4 connections" in out, out
    assert "RESULT proxy added latency p50 = " in out and "(target <= 2 ms)" in out, out
    assert "RESULT proxy throughput = " in out, out
