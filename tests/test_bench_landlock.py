"""bench/probe_landlock.py runs end to end at a small size (its figures are bench/README.md's): its
check that a Landlock-confined child writes only its folder passes, and each way gets a row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import probe_landlock  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.skipif(probe_landlock.abi() < 1, reason="this kernel has no Landlock")
def test_the_landlock_probe_checks_the_confinement_and_prints_each_way(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCH / "probe_landlock.py"), "--spawns", "5", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "check: a child started either Landlock way writes its folder and nothing outside it" in out, out
    for way in ("posix_spawn", "fork + Landlock + exec", "thread + Landlock + posix_spawn", "plain fork + exec"):
        assert f"\n{way:<34}" in out, out
    assert "RESULT Landlock start (thread + posix_spawn)/posix_spawn = " in out, out
    assert "cannot create" not in out and list(tmp_path.iterdir()) == []  # quiet, and nothing left behind
