"""Proof that a real CLI talks to nothing but 127.0.0.1: run it under ``strace -f -e trace=connect``
and read every AF_INET/AF_INET6 connect(2) it (or any child) made. A DNS lookup is a connect to a
resolver, so it counts as leaving. Used by tests/test_real_gemini.py, test_real_aider.py,
test_real_opencode.py and test_anthropic_worker.py, directly (``traced``) and through the
orchestrator (``trace_launches``).

Through the orchestrator strace runs outside the sandbox: it starts the sandbox's launcher
(bubblewrap, or Landlock's) or the unconfined worker, and follows it, the shim, the bridge and the
CLI from there. The worker's own seccomp filter refuses ptrace inside the sandbox (issue 48, item
6), so a tracer started in there could not attach; one attached before the filter goes on keeps
seeing every process the filter holds. tests/test_net_guard.py shows that a connect outside
127.0.0.1 made inside either sandbox is caught."""

from __future__ import annotations

import itertools
import os
import re
import shutil
from pathlib import Path

import pytest

STRACE = shutil.which("strace")
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
_INET = re.compile(
    r'connect\(\d+, \{sa_family=AF_INET6?, .*?(?:sin_addr=inet_addr\("(?P<v4>[^"]+)"\)'
    r'|inet_pton\(AF_INET6, "(?P<v6>[^"]+)"[,)])'  # strace writes ``inet_pton(AF_INET6, "::1", &sin6_addr)``
)


def traced(argv: list[str], log: Path) -> list[str]:
    """``argv`` run under strace, every process's connect(2) written to ``log``."""
    assert STRACE, "strace not installed (Debian package strace; .ci/run installs it)"
    return [STRACE, "-f", "-qq", "-e", "trace=connect", "-e", "signal=none", "-o", str(log), *argv]


def trace_launches(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    """Every process an engine's workspace supervisor starts from now on (a sandbox's launcher, or
    an unconfined worker) started under strace instead, each logging to its own
    ``folder/connect.<n>.<random>``; ``folder``, outside every sandbox (the workers never see it).
    The engines of these tests start their workers through the supervisor (engine/core.py); one that
    did not would leave no log, which :func:`assert_only_loopback` refuses."""
    from orchestrator.process.supervisor import SupervisorClient

    assert STRACE, "strace not installed (Debian package strace; .ci/run installs it)"
    folder.mkdir(parents=True, exist_ok=True)
    spawn = getattr(SupervisorClient.spawn, "untraced", SupervisorClient.spawn)  # called twice: one strace, the last folder
    count = itertools.count()

    def spawn_traced(self: SupervisorClient, argv: list[str], **options):  # type: ignore[no-untyped-def]
        log = folder / f"connect.{next(count)}.{os.urandom(4).hex()}"
        return spawn(self, traced(argv, log), **options)

    spawn_traced.untraced = spawn  # type: ignore[attr-defined]
    monkeypatch.setattr(SupervisorClient, "spawn", spawn_traced)
    return folder


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
