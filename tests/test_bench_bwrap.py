"""bench/probe_bwrap.py runs end to end at a small size (its figures are bench/README.md's): every
way starts and exits 0, each gets a row, and the RESULT line names the least sandbox's ratio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.process.backends import probe

BENCH = Path(__file__).resolve().parent.parent / "bench"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(probe().bwrap is None, reason="no working bubblewrap here")]


def test_the_bubblewrap_probe_prints_each_way_against_posix_spawn():
    done = subprocess.run(
        [sys.executable, str(BENCH / "probe_bwrap.py"), "--spawns", "5", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    for way in ("posix_spawn", "bwrap --ro-bind / /", "  + --dev /dev", "  + --proc, --unshare-pid", "the orchestrator's argv"):
        assert f"\n{way:<30} " in out, out
    assert "RESULT bwrap --ro-bind / / (the least bubblewrap sandbox)/posix_spawn = " in out, out
