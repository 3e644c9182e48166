"""bench/bench_egress.py runs end to end at a small size: a client in a real sandbox reads a stream
through its bridge and the proxy, and the RESULT line is printed (its figures are bench/README.md's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.process.backends import probe

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not probe(backend="bubblewrap").available, reason="no bubblewrap here")]
BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_egress.py"


def test_the_egress_benchmark_reads_a_stream_through_the_sandboxs_way_out_and_prints_its_result():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--chunks", "20", "--rounds", "2"], capture_output=True, text=True, timeout=300
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "streamed chunks: 40 each way" in out and "RESULT sandbox egress added latency p50 = " in out, out
