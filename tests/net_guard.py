"""Proof that a real CLI talks to nothing but 127.0.0.1: run it under ``strace -f -e trace=connect``
and read every AF_INET/AF_INET6 connect(2) it (or any child) made. A DNS lookup is a connect to a
resolver, so it counts as leaving. Used by tests/test_real_gemini.py, test_real_aider.py and
test_real_opencode.py, directly (``traced``) and through the orchestrator (``traced_program``:
a wrapper set as the kind's ``<kind>_command``)."""

from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

STRACE = shutil.which("strace")
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
_INET = re.compile(
    r'connect\(\d+, \{sa_family=AF_INET6?, .*?(?:sin_addr=inet_addr\("(?P<v4>[^"]+)"\)'
    r'|inet_pton\(AF_INET6, "(?P<v6>[^"]+)"\))'
)


def traced(argv: list[str], log: Path) -> list[str]:
    """``argv`` run under strace, every process's connect(2) written to ``log``."""
    assert STRACE, "strace not installed (Debian package strace; .ci/run installs it)"
    return [STRACE, "-f", "-qq", "-e", "trace=connect", "-o", str(log), *argv]


def traced_program(program: str, folder: Path) -> str:
    """An executable that runs ``program`` under strace, each run logging to ``folder/connect.<pid>``."""
    assert STRACE, "strace not installed (Debian package strace; .ci/run installs it)"
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "traced-cli"
    wrapper.write_text(f'#!/bin/sh\nexec "{STRACE}" -f -qq -e trace=connect -o "{folder}/connect.$$" "{program}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


def inet_connects(*logs: Path) -> list[str]:
    """The address of every AF_INET/AF_INET6 connect in the logs."""
    found = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            match = _INET.search(line)
            if match:
                found.append(match["v4"] or match["v6"])
    return found


def assert_only_loopback(*logs: Path) -> None:
    assert logs, "no strace log: the CLI did not run under strace"
    addresses = inet_connects(*logs)
    assert addresses, f"no AF_INET connect seen in {[str(p) for p in logs]}: the trace did not work"
    outside = sorted({a for a in addresses if a not in LOOPBACK})
    assert not outside, f"the CLI connected outside 127.0.0.1: {outside}"
