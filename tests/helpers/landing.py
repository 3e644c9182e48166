"""Helpers of tests/test_landing.py, used by other test files too."""

from __future__ import annotations

import subprocess
from pathlib import Path


def result_of(host: Path, job_id: str) -> str | None:
    done = subprocess.run(
        ["git", "-C", str(host), "rev-parse", "--verify", "-q", f"refs/heads/orchestrator/{job_id}/result"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or None
