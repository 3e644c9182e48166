"""Chaos suite helpers: one METRIC line per test, and the orphan check.

Every chaos test prints exactly one ``METRIC name=value unit`` line and asserts
bounds on both sides of it: not better than physically possible, not worse
than the target allows. The lines are repeated in the terminal summary so a
plain ``pytest -m chaos -q`` shows them all.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from ..conftest import fake_command

METRICS: list[str] = []
TAG_VAR = b"ORCHESTRATOR_TAG="


def metric(name: str, value: float, unit: str) -> float:
    """Print the test's one METRIC line (and keep it for the summary); returns ``value``."""
    line = f"METRIC {name}={value:.4g} {unit}"
    print(line)
    METRICS.append(line)
    return value


def pytest_terminal_summary(terminalreporter):
    if METRICS:
        terminalreporter.section("chaos metrics")
        for line in METRICS:
            terminalreporter.write_line(line)


def command_worker(**orchestrator):
    """The ``orchestrator`` section for workers running the fake CLI with their subtask as its mode."""
    return {"worker": "command", "command": fake_command(), **orchestrator}


def tagged_alive(prefix: str) -> list[int]:
    """Live (non-zombie) processes whose ORCHESTRATOR_TAG starts with ``prefix`` (a root id
    covers a whole tree), read straight from /proc: what an orphan would look like."""
    needle = TAG_VAR + prefix.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if (b"\0" + needle in environ or environ.startswith(needle)) and alive(int(name)):
            found.append(int(name))
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped by whoever adopted it) is gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def running(proc: psutil.Process) -> bool:
    """True while ``proc`` runs (that very process: one that took its pid since is not it); a zombie,
    or a process that ends between the two reads (reaped after ``is_running``), is gone."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
