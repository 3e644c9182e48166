"""The served API under a fuzzer: schemathesis against the real app's own OpenAPI document."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.skipif(not SCHEMATHESIS.exists() and not shutil.which("schemathesis"),
                    reason="schemathesis is not installed (./install.sh --dev installs it)")
def test_schemathesis_finds_no_server_error_and_no_failure(make_live):
    # Given a real server whose long-polls are short, so generated waits come back fast
    live = make_live(api={"long_poll_max": 1, "rate_limit_failed_auth": 0}, simulated={"duration": 0.01})
    # When schemathesis runs every check over every operation
    out = subprocess.run(
        [str(SCHEMATHESIS if SCHEMATHESIS.exists() else shutil.which("schemathesis")), "run", f"{live.url}/openapi.json",
         "--url", live.url, "-H", f"X-API-Key: {live.key}", "--checks", "all", "--max-examples", "25", "--seed", "1"],
        capture_output=True, text=True, timeout=600,
    )
    summary = out.stdout[out.stdout.find("SUMMARY"):]
    # Then it generated cases, every one passed, and it says so
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    print(summary[-800:])
    print(f"METRIC schemathesis_cases={cases.group(1) if cases else 0} cases")
    assert out.returncode == 0, summary[-3000:]
    assert cases and int(cases.group(1)) >= 300 and cases.group(1) == cases.group(2)
