"""Proof that a real CLI talks to nothing but 127.0.0.1: run it under ``strace -f -e trace=connect``
and read every AF_INET/AF_INET6 connect(2) it (or any child) made. A DNS lookup is a connect to a
resolver, so it counts as leaving. Used by tests/test_real_gemini.py, test_real_aider.py and
test_real_opencode.py, directly (``traced``) and through the orchestrator (``traced_program``:
a wrapper set as the kind's ``<kind>_command``)."""

from __future__ import annotations

import re
import shutil
import stat
import sys
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
    """An executable that runs ``program`` under strace, each run logging to its own
    ``folder/connect.<pid>.<random>`` (sandboxed workers each have a PID namespace: the same pids).
    It is Python, not a shell script: a shell replaces an inherited ``$PWD`` that is not its cwd,
    and the CLI must start with the environment the orchestrator gave it (opencode takes its
    directory from ``$PWD``). A sandboxed worker needs ``folder`` in ``workers.sandbox_writable``."""
    assert STRACE, "strace not installed (Debian package strace; .ci/run installs it)"
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "traced-cli"
    argv = [STRACE, "-f", "-qq", "-e", "trace=connect", "-o"]
    wrapper.write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        f"os.execv({STRACE!r}, {argv!r} + [{str(folder)!r} + f'/connect.{{os.getpid()}}.{{os.urandom(4).hex()}}', {program!r}, *sys.argv[1:]])\n"
    )
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
