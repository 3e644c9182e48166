"""A worker's text reaches the user's terminal with its control characters shown, never obeyed
(reports/terminal.py): a child task a worker wrote holding OSC 52 (a clipboard write), a window
title, a bell and a screen clear, printed by each command that shows it, as a user runs them (real
processes on a real job's workspace)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

import pytest

from orchestrator.reports.terminal import visible

from .conftest import API_KEY, ROOT
from .helpers import nesting as nesting_helpers
from .helpers.scripts import free_port
from .helpers.worktree import host_engine, make_host

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
served = nesting_helpers.served

# What a hostile worker writes: the clipboard (OSC 52), the window title (OSC 0), a bell, a screen
# clear (CSI 2J), a colour, a carriage return that would hide what came before, a right-to-left override.
NASTY = "\x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m\rhidden\u202eevil"
SHOWN = "\\x1b]52;c;cHduZWQ=\\x07\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred\\x1b[0m\\rhidden\\u202eevil"
RAW = ("\x1b", "\x07", "\r", "\u202e")


def test_visible_shows_every_control_character_and_keeps_lines():
    assert visible(NASTY) == SHOWN
    assert visible("a\tb\nc") == "a\tb\nc"
    assert visible("\x00\x7f\x9b\u2028") == "\\x00\\x7f\\x9b\\u2028"


def cli(folder, *argv: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRATOR_HOME": str(folder)}
    env.pop("ORCHESTRATOR_CONFIG", None)
    command = [str(ROOT / script)] if script else [str(ROOT / ".venv" / "bin" / "python"), "-m", "orchestrator"]
    return subprocess.run([*command, *argv], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_a_child_task_a_worker_wrote_reaches_no_terminal_raw(served):
    host, folder, start = served
    live = start(sandbox="off")
    doc, marker, child = nesting_helpers.run_tree(live, f"parent: write a.txt={NASTY}")
    assert marker["exit"] == 0 and child["status"] == "completed", (marker, child)
    root = doc["job_id"]
    runs = {
        "status": cli(folder, "status", root),
        "status child": cli(folder, "status", f"{root}-c1"),
        "check-status.sh": cli(folder, f"{root}-c1", script="check-status.sh"),
        "jobs": cli(folder, "jobs"),
        "watch": cli(folder, "watch", f"{root}-c1"),
        "conflicts": cli(folder, "conflicts", f"{root}-c1"),
    }
    for name, done in runs.items():
        said = done.stdout + done.stderr
        assert not [c for c in RAW if c in said], f"{name} printed a raw control character:\n{said!r}"
    # The task is shown where a command shows tasks, in its visible form.
    for name in ("status child", "check-status.sh", "watch"):
        assert "\\x1b]52;c;cHduZWQ=\\x07" in runs[name].stdout, (name, runs[name].stdout)


def read_pty(master: int, process: subprocess.Popen[bytes]) -> bytes:
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        try:
            chunk = os.read(master, 65536) if ready else b""
        except OSError:
            chunk = b""
        if not chunk:
            break
        out += chunk
    process.wait(timeout=30)
    return out


def test_a_workers_log_is_shown_on_a_terminal_and_copied_as_it_is_to_a_pipe(tmp_path):
    host, folder = make_host(tmp_path)
    engine = host_engine(folder, workers={"max_retries": 0, "sandbox": "off"})
    try:
        job = engine.submission.submit("x", None, [f"printf '%s\\n' '{NASTY}'; echo done > d.txt"])
        assert engine.queries.wait(job.id, 60).status.terminal
    finally:
        engine.shutdown(timeout=10)
    env = {**os.environ, "ORCHESTRATOR_HOME": str(folder)}
    argv = [sys.executable, "-m", "orchestrator", "logs", job.id, "worker_1"]
    master, slave = pty.openpty()
    process = subprocess.Popen(argv, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    os.close(slave)
    try:
        on_terminal = read_pty(master, process).decode("utf-8", "replace")
    finally:
        os.close(master)
    assert "\\x1b]52;c;cHduZWQ=\\x07" in on_terminal and "\x1b" not in on_terminal and "\x07" not in on_terminal, on_terminal
    piped = subprocess.run(argv, capture_output=True, env=env, cwd=ROOT, timeout=60).stdout.decode()
    assert "\\x1b]52;c;cHduZWQ=\\x07" in piped and not [c for c in RAW if c in piped], piped
    # --raw to a pipe or a file: the log's bytes as they are (its reader chose them).
    copied = subprocess.run([*argv, "--raw"], capture_output=True, env=env, cwd=ROOT, timeout=60).stdout
    assert copied == engine.workspace.worker_log(job.root_id, 0, "worker_1").read_bytes() and b"\x1b]52;c;cHduZWQ=\x07" in copied


def test_quick_starts_summary_shows_a_task_s_control_characters(tmp_path):
    """quick-start prints its subtasks and the job's table (the simulated worker; a real server)."""
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        f'api:\n  api_key: "{API_KEY}"\n  port: {port}\norchestrator:\n  worker: "simulated"\nsimulated:\n  duration: 0.05\n'
    )
    env = {**os.environ, "ORCHESTRATOR_HOME": str(tmp_path)}
    env.pop("ORCHESTRATOR_CONFIG", None)
    try:
        done = subprocess.run(
            [str(ROOT / "quick-start.sh"), "two parts", "--task", NASTY, "--task", "plain"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        subprocess.run([str(ROOT / "quick-start.sh"), "--stop"], env=env, capture_output=True, timeout=60)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "1. \\x1b]52;c;cHduZWQ=\\x07\\x1b]0;owned\\x07\\x1b[2J" in done.stdout and not [c for c in RAW if c in said], said
