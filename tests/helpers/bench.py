"""Running a bench/ script end to end at a small size, as the test_bench_*.py files do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT

BENCH = ROOT / "bench"


def run_bench(script: str, args: list[str], tmp_path: Path, *, timeout: float = 120) -> str:
    """``bench/<script>`` with ``args``, its temp folders in ``tmp_path``, a minimal PATH; asserts it
    exited 0 and returns what it printed (stdout, then stderr)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out
