"""bench/probe_netns.py runs end to end at a small size (its figures are bench/README.md's): a
sandboxed command reaches 127.0.0.1:3128 in its own network namespace, listened on from outside
by a helper that joined that namespace, and each way gets a row."""

from __future__ import annotations

import pytest

from orchestrator.process import backends, shim

from .helpers.bench import run_bench

pytestmark = pytest.mark.slow


@pytest.mark.skipif(backends.probe().bwrap is None or shim.PERL is None, reason="this machine cannot sandbox workers")
def test_the_namespace_probe_listens_inside_the_sandbox_from_outside_and_prints_each_way(tmp_path):
    out = run_bench("probe_netns.py", ["--starts", "3", "--repeat", "1"], tmp_path)
    assert "check: a sandboxed command reached 127.0.0.1:3128 in its own namespace, listened on from outside" in out, out
    for way in ("bubblewrap alone", "shim + bridge", "held + joined", "held + shim"):
        assert f"\n{way:<20}" in out, out
    assert "RESULT held + shim/shim + bridge = " in out, out
    assert list(tmp_path.iterdir()) == []  # its folder and sockets are removed
