"""bench/bench_cluster_protocol.py (the cluster's Redis figures, bench/README.md): a small run end to
end on a real redis-server it starts and stops itself (its checks pass, its folder removed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT
from .redisserver import RedisServer


@pytest.mark.slow
def test_the_protocol_benchmark_runs_end_to_end_and_stops_its_redis(tmp_path):
    RedisServer(tmp_path)  # skips (fails under CI) when redis-server is not installed
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, str(ROOT / "bench" / "bench_cluster_protocol.py"), "--attempts", "40", "--threads", "4"]
    done = subprocess.run([*command, "--renew-seconds", "0.5"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for name, unit in [
        ("attempts per second, single client", "attempts/s"),
        ("attempts per second, 4 threads", "attempts/s"),
        ("redis-server CPU per attempt", "us"),
        ("renewals per second, 4 threads", "renewals/s"),
        ("concurrent attempts leased, one Redis core saturated", "attempts"),
    ]:
        assert re.search(rf"^ *{re.escape(name)}: [\d,.]+ {unit}$", out, flags=re.M), (name, out)
    assert re.search(r"^  evalsha +6\.00 calls", out, flags=re.M), out  # claim, started, 3 renews, finish
    assert re.search(r"^  exec +1\.00 calls", out, flags=re.M), out  # the enqueue: hash, RQ's job and index in one transaction
    assert "127.0.0.1:" in out and not list(tmp_path.glob("bench-cluster-*")), "its Redis folder is removed"
