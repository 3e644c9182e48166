"""A fresh install as a new user has it: this folder's files copied to a scratch folder (no
``.cli/``, no config.yaml, no workspace), ``./install.sh`` run there (its config.yaml is the
template's, with a generated key), and no AI CLI on PATH. Every command's ``--help`` exits 0,
the read-only commands run plainly on that config.yaml with the exit codes docs/commands.md
gives, doctor says what worker kind ``auto`` runs with and without a CLI, and quick-start takes
explicit subtasks. All real subprocesses of the copy's own scripts."""

from __future__ import annotations

import argparse
import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.main import _parser

from .helpers.scratch import VENV, copy_folder, fake_cli, path_without_ai_clis, run, user_shell

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason="no .venv beside the orchestrator (./install.sh)"),
]


def subcommands() -> list[str]:
    """Every command of ``./orchestrator.sh``, read from its parser (a new command is covered)."""
    (sub,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


def install(dest: Path) -> Path:
    """A scratch copy of this folder, installed with its own ./install.sh."""
    folder = copy_folder(dest)
    done = run(folder, ["./install.sh"], user_shell(dest.parent / "home", path_without_ai_clis()), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (folder / "config.yaml").stat().st_mode & 0o077 == 0
    return folder


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """(folder, environment): a fresh install, and a user's shell with no AI CLI on PATH."""
    base = tmp_path_factory.mktemp("fresh")
    folder = install(base / "orchestrator")
    env = user_shell(base / "home", path_without_ai_clis())
    assert run(folder, ["sh", "-c", "command -v claude codex gemini aider ollama opencode"], env).stdout == ""
    assert not (folder / ".cli").exists()
    return folder, env


def no_traceback(done) -> str:
    text = done.stdout + done.stderr
    assert "Traceback" not in text, text
    return text


def port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_template_is_the_fresh_config(fresh):
    folder, _ = fresh
    config = yaml.safe_load((folder / "config.yaml").read_text())
    template = yaml.safe_load((folder / "config.template.yaml").read_text())
    assert config["orchestrator"]["worker"] == template["orchestrator"]["worker"] == "auto"
    assert config["api"]["api_key"] and not template["api"]["api_key"]


def test_the_command_line_lists_its_commands(fresh):
    folder, env = fresh
    done = run(folder, ["./orchestrator.sh", "--help"], env)
    assert done.returncode == 0, no_traceback(done)
    assert len(subcommands()) > 20 and all(name in done.stdout for name in subcommands())


@pytest.mark.parametrize("command", subcommands())
def test_every_commands_help_exits_0(fresh, command):
    folder, env = fresh
    done = run(folder, ["./orchestrator.sh", command, "--help"], env)
    assert done.returncode == 0, no_traceback(done)
    assert done.stdout.startswith(f"usage: orchestrator {command}"), done.stdout


@pytest.mark.parametrize("script", ["./quick-start.sh", "./check-status.sh", "./install.sh"])
def test_the_scripts_help_exits_0(fresh, script):
    folder, env = fresh
    done = run(folder, [script, "--help"], env)
    assert done.returncode == 0, no_traceback(done)
    assert "usage" in done.stdout.lower() or "install.sh" in done.stdout


def test_doctor_on_the_fresh_config_says_auto_runs_the_simulated_worker(fresh):
    folder, env = fresh
    before = (folder / "config.yaml").read_bytes()
    # exit 1: something blocks real AI workers (no AI CLI), said with its fix (docs/commands.md)
    done = run(folder, ["./orchestrator.sh", "doctor"], env)
    text = no_traceback(done)
    assert done.returncode == 1, text
    assert "AI CLIs\n  none found" in done.stdout
    assert "PROBLEM worker    worker kind auto -> simulated: no AI CLI found" in done.stdout, text
    assert "fix: install one, e.g. claude: " in done.stdout
    assert "1 problem(s) block real workers" in done.stdout
    # --json: the same report, parseable, saying what a job runs
    done = run(folder, ["./orchestrator.sh", "doctor", "--json"], env)
    doc = json.loads(done.stdout)
    assert done.returncode == 1 and doc["exit_code"] == 1 and doc["ok"] is False, no_traceback(done)
    assert doc["runs"] == "simulated" and doc["worker"] == "" and doc["clis"] == [] and doc["suggested"] == {}
    (worker,) = [c for c in doc["checks"] if c["topic"] == "worker"]
    assert worker["level"] == "problem" and "simulated" in worker["text"]
    # --write: nothing to write without a CLI, said; config.yaml as it was and still loads
    done = run(folder, ["./orchestrator.sh", "doctor", "--write"], env)
    assert done.returncode == 1, no_traceback(done)
    assert "nothing written to config.yaml: no AI CLI to configure" in done.stdout
    assert (folder / "config.yaml").read_bytes() == before
    got = run(folder, ["./orchestrator.sh", "config", "get", "orchestrator.worker"], env)
    assert (got.returncode, got.stdout) == (0, "auto\n"), no_traceback(got)
    # --worker KIND whose CLI is not here: that problem, with its install line
    done = run(folder, ["./orchestrator.sh", "doctor", "--worker", "codex"], env)
    assert done.returncode == 1, no_traceback(done)
    assert "worker kind codex is chosen with --worker but its CLI is not installed" in done.stdout


def test_the_read_only_commands_run_plainly_on_the_fresh_config(fresh):
    folder, env = fresh
    config = run(folder, ["./orchestrator.sh", "config"], env)
    assert config.returncode == 0 and "worker: auto" in config.stdout, no_traceback(config)
    # jobs asks this folder's server: none runs; 5 when nothing answers at api.port
    port = yaml.safe_load((folder / "config.yaml").read_text())["api"]["port"]
    jobs = run(folder, ["./orchestrator.sh", "jobs"], env)
    no_traceback(jobs)
    if port_answers(port):  # another program's server answers at the template's port on this machine
        assert jobs.returncode in (0, 1), jobs.stderr
    else:
        assert jobs.returncode == 5 and "./quick-start.sh --start" in jobs.stderr, jobs.stderr
    # status and check-status read the workspace: no job yet is bad input, 2, naming what to do
    status = run(folder, ["./orchestrator.sh", "status", "0123456789ab"], env)
    assert status.returncode == 2 and "job 0123456789ab not found" in status.stderr, no_traceback(status)
    for argv in (["./orchestrator.sh", "check-status"], ["./check-status.sh"]):
        check = run(folder, argv, env)
        assert check.returncode == 2 and "no job in" in check.stderr, no_traceback(check)
        assert "./quick-start.sh" in check.stderr


def test_doctor_with_a_cli_on_path_says_auto_runs_it_and_writes_a_config_the_next_command_loads(tmp_path):
    folder = install(tmp_path / "orchestrator")
    bin_dir = tmp_path / "bin"
    claude = fake_cli(bin_dir, "claude")
    env = user_shell(tmp_path / "home", f"{bin_dir}:{path_without_ai_clis()}", ANTHROPIC_API_KEY="sk-ant-fake-doctor-0")
    done = run(folder, ["./orchestrator.sh", "doctor"], env)
    text = no_traceback(done)
    assert f"ok      worker    worker kind auto: found claude on PATH ({claude})" in done.stdout, text
    assert "claude is logged in" in done.stdout, text
    done = run(folder, ["./orchestrator.sh", "doctor", "--json"], env)
    doc = json.loads(done.stdout)
    assert doc["runs"] == "claude" and doc["worker"] == "claude" and done.returncode == doc["exit_code"], no_traceback(done)
    assert not [c for c in doc["checks"] if c["topic"] in ("worker", "login") and c["level"] != "ok"], doc["checks"]
    assert doc["suggested"]["orchestrator"]["claude_command"] == str(claude)
    # --write names the CLI and copies the key's variable; the next commands load that config.yaml
    done = run(folder, ["./orchestrator.sh", "doctor", "--write"], env)
    assert done.returncode == doc["exit_code"] and "Configuration written to" in done.stdout, no_traceback(done)
    written = yaml.safe_load((folder / "config.yaml").read_text())
    assert written["orchestrator"]["worker"] == "claude" and written["orchestrator"]["claude_command"] == str(claude)
    assert written["workers"]["env"] == {"ANTHROPIC_API_KEY": "sk-ant-fake-doctor-0"}
    got = run(folder, ["./orchestrator.sh", "config", "get", "orchestrator.worker"], env)
    assert (got.returncode, got.stdout) == (0, "claude\n"), no_traceback(got)
    again = run(folder, ["./orchestrator.sh", "doctor"], env)
    assert "already has what worker kind claude needs" in again.stdout, no_traceback(again)
    assert "sk-ant-fake-doctor-0" not in done.stdout + again.stdout  # a key's value is never printed


def test_quick_start_takes_explicit_subtasks(tmp_path):
    folder = install(tmp_path / "orchestrator")
    env = user_shell(tmp_path / "home", path_without_ai_clis())
    try:
        done = run(
            folder,
            ["./quick-start.sh", "Notes and a test", "--task", "Write NOTES.md", "--task", "Add tests/test_notes.py"],
            env,
            timeout=240,
        )
    finally:
        run(folder, ["./quick-start.sh", "--stop"], env)
    text = no_traceback(done)
    assert done.returncode == 0, text
    assert "2 subtask(s), worker kind simulated" in done.stdout, text
    assert "  1. Write NOTES.md\n  2. Add tests/test_notes.py\n" in done.stdout, text
    job_id = re.search(r"^job ([0-9a-f]{12}): ", done.stdout, flags=re.M).group(1)
    status = run(folder, ["./orchestrator.sh", "status", job_id, "--json"], env)
    doc = json.loads(status.stdout)
    assert status.returncode == 0 and doc["status"] == "completed", no_traceback(status)
    assert [t["task"] for t in doc["results"]["tasks"]] == ["Write NOTES.md", "Add tests/test_notes.py"]
