"""bench/bench_candidates.py (the candidates benchmark (a)) runs end to end with the real claude CLI and
the loopback mock model server: candidates and sequential runs both complete, and it prints its
RESULT line with both walls and costs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import find_cli

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.real_cli,
    pytest.mark.skipif(find_cli("claude") is None, reason="claude CLI not installed (run tests/install_cli.sh)"),
]


def test_the_candidates_bench_runs_and_prints_its_figures():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_candidates.py"), "--candidates", "2", "--think", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(
        r"RESULT candidates=2 cand_wall=([\d.]+)s seq_wall=([\d.]+)s .* cand_cost=\$([\d.]+) seq_cost=\$([\d.]+)", done.stdout
    )
    assert found, done.stdout
    assert float(found.group(1)) > 0 and float(found.group(2)) > 0
    assert float(found.group(3)) > 0 and float(found.group(3)) == pytest.approx(float(found.group(4)), rel=0.01)
