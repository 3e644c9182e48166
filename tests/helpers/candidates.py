"""Helpers of tests/test_candidates.py, used by other test files too."""

from __future__ import annotations

# Candidate 1 fails the tests gate (it breaks check.txt); candidate 2 passes with a large diff;
# candidate 3 passes with a small one. Each candidate knows itself by ORCHESTRATOR_WORKER_ID.
THREE = (
    'case "$ORCHESTRATOR_WORKER_ID" in '
    "worker_1) echo broken > check.txt; echo one > feature.txt;; "
    "worker_2) seq 1 200 > feature.txt; seq 1 100 > extra.txt;; "
    "worker_3) sleep 0.3; echo small > feature.txt;; esac"
)

TESTS_GATE = {"name": "tests", "run": ["sh", "-c", "! grep -q broken check.txt 2>/dev/null"]}
