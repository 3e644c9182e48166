"""bench/probe_landlock.py runs end to end at a small size (its figures are bench/README.md's): its
check that a Landlock-confined child writes only its folder passes, and each way gets a row."""

from __future__ import annotations

import sys

import pytest

from .helpers.bench import BENCH, run_bench

sys.path.insert(0, str(BENCH))
import probe_landlock  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.skipif(probe_landlock.abi() < 1, reason="this kernel has no Landlock")
def test_the_landlock_probe_checks_the_confinement_and_prints_each_way(tmp_path):
    out = run_bench("probe_landlock.py", ["--spawns", "5", "--repeat", "1"], tmp_path)
    assert "check: a child started either Landlock way writes its folder and nothing outside it" in out, out
    for way in ("posix_spawn", "fork + Landlock + exec", "thread + Landlock + posix_spawn", "plain fork + exec"):
        assert f"\n{way:<34}" in out, out
    assert "RESULT Landlock start (thread + posix_spawn)/posix_spawn = " in out, out
    assert "cannot create" not in out and list(tmp_path.iterdir()) == []  # quiet, and nothing left behind
