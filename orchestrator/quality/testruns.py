"""Whether a test command ran no test: its runner's own words, read from its plain output.

A gate whose test runner found nothing to run (a wrong folder, a missing PYTHONPATH, a worker
that deleted the tests) used to pass, or fail as a bare "exit code 5". ``ran_no_tests`` tells it
apart, so the gate can say "ran no tests" (quality/gates.py), closed unless the gate allows it.

Each runner that shows up in the output says either "zero" or "some"; the output ran no tests
only when at least one runner said zero and none said some (a shell gate may run several).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class NoTests:
    """The runners that ran nothing, the words they said, and the exit codes they give for it."""

    runners: tuple[str, ...]
    said: tuple[str, ...]
    codes: frozenset[int]

    @property
    def text(self) -> str:
        """``pytest: "no tests ran"``."""
        return "; ".join(f'{r}: "{s}"' for r, s in zip(self.runners, self.said, strict=True))


@dataclass(frozen=True)
class _Runner:
    name: str
    zero: re.Pattern[str]  # the runner ran nothing (its words: the group that matched, else the match)
    some: re.Pattern[str]  # it ran at least one test
    codes: frozenset[int]  # its exit codes when it ran nothing


_M = re.MULTILINE
RUNNERS = (
    _Runner(
        "pytest",
        re.compile(r"\bno tests ran\b|\bcollected 0 items\b", _M),
        re.compile(r"\bcollected [1-9]\d* items?\b|\b[1-9]\d* (?:passed|failed|errors?|xfailed|xpassed)\b.* in [\d.]+s", _M),
        frozenset({0, 5}),
    ),
    _Runner("unittest", re.compile(r"^Ran 0 tests\b", _M), re.compile(r"^Ran [1-9]\d* tests?\b", _M), frozenset({0, 5})),
    _Runner(
        "go test",
        re.compile(r"^\?\s+\S+\s+(\[no test files\])|^ok\s+\S+.*(\[no tests to run\])", _M),
        re.compile(r"^(?:ok\s+\S+(?!.*\[no tests to run\])|FAIL\s|--- (?:PASS|FAIL))", _M),
        frozenset({0}),
    ),
    _Runner("cargo test", re.compile(r"^running 0 tests$", _M), re.compile(r"^running [1-9]\d* tests?$", _M), frozenset({0})),
    _Runner(
        "jest",
        re.compile(r"^No tests found\b", _M),
        re.compile(r"^Tests:\s+.*\b[1-9]\d* (?:passed|failed)\b", _M),
        frozenset({0, 1}),
    ),
    _Runner(
        "vitest",
        re.compile(r"^No test files found\b", _M),
        re.compile(r"^\s*Tests\s+.*\b[1-9]\d* (?:passed|failed)\b", _M),
        frozenset({0, 1}),
    ),
)


def ran_no_tests(output: str) -> NoTests | None:
    """The evidence that ``output`` (plain text: plaintext.plain) ran no test, or None."""
    runners: list[str] = []
    said: list[str] = []
    codes: set[int] = set()
    for runner in RUNNERS:
        if runner.some.search(output):
            return None
        found = runner.zero.search(output)
        if found:
            runners.append(runner.name)
            said.append(next((g for g in found.groups() if g), found.group(0)).strip())
            codes |= runner.codes
    return NoTests(tuple(runners), tuple(said), frozenset(codes)) if runners else None
