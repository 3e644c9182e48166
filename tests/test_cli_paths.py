"""Each adapter declares the folders its CLI writes (``path_settings``: its documented variables for
tmp, config, cache and data), and a sandbox opens each: a tmp one is the worker's TMPDIR at the
path the CLI was given (Claude Code hangs without a word when CLAUDE_CODE_TMPDIR is read-only), the
others a private overlay. Real bubblewrap, real processes; the CLIs are stand-ins that write where
their settings say and then print what the real CLI prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process.backends import probe
from orchestrator.workers.adapters import get_adapter
from orchestrator.workers.adapters.base import PathUse

from .conftest import run_job

SUPPORT = probe()
needs_bwrap = pytest.mark.skipif(not SUPPORT.available, reason=f"no sandbox on this machine: {SUPPORT.reason}")
OUTPUTS = Path(__file__).parent / "fixtures" / "cli_outputs"

# A CLI that writes a file into the folder its setting names (failing at once where it cannot:
# the real one may hang instead), then prints the real CLI's output.
STAND_IN = """#!/bin/sh
mkdir -p "${folder}/{sub}" && echo written > "${folder}/{sub}/probe" || {{ echo "cannot write ${folder}" >&2; exit 3; }}
echo "wrote ${folder}/{sub}/probe" >&2
exec cat '{output}'
"""


def stand_in(tmp_path, cli, variable, sub, output):
    path = tmp_path / f"{cli}-stand-in"
    path.write_text(STAND_IN.format(folder=variable, sub=sub, output=OUTPUTS / output))
    path.chmod(0o755)
    return str(path)


def test_every_ai_cli_declares_its_documented_path_settings():
    declared = {
        name: {(s.variable, s.use) for s in get_adapter(name).path_settings}
        for name in ("claude", "codex", "gemini", "opencode", "aider")
    }
    assert ("CLAUDE_CODE_TMPDIR", PathUse.TMP) in declared["claude"]
    assert ("CLAUDE_CONFIG_DIR", PathUse.CONFIG) in declared["claude"]
    assert ("CODEX_HOME", PathUse.CONFIG) in declared["codex"]
    assert ("GEMINI_CLI_HOME", PathUse.CONFIG) in declared["gemini"]
    assert {"XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "OPENCODE_CONFIG_DIR"} <= {
        variable for variable, _ in declared["opencode"]
    }
    assert (None, PathUse.CACHE) in declared["aider"]


def test_a_setting_resolves_in_the_workers_environment_never_the_servers(tmp_path):
    claude, opencode = get_adapter("claude"), get_adapter("opencode")
    home = tmp_path / "home"
    env = {"HOME": str(home), "CLAUDE_CODE_TMPDIR": "/var/tmp/claude-x", "OPENCODE_DB": "/srv/db/opencode.db"}
    assert claude.tmp_dirs(env) == [Path("/var/tmp/claude-x")]
    assert claude.state_dirs(None, env) == [home / ".claude"]
    assert Path("/srv/db") in opencode.state_dirs(None, env)  # a file setting opens its folder
    assert home / ".local" / "share" / "opencode" in opencode.state_dirs(None, env)
    assert claude.tmp_dirs({"HOME": str(home)}) == []  # unset: the process's TMPDIR, already its own
    assert claude.tmp_dirs({"HOME": str(home), "CLAUDE_CODE_TMPDIR": "relative"}) == []  # in its own cwd


@needs_bwrap
@pytest.mark.slow
def test_a_claude_worker_whose_tmp_setting_is_outside_the_sandbox_writes_there_and_finishes(tmp_path, make_engine):
    outside = tmp_path / "claude-tmp"  # not among the sandbox's writable paths
    script = stand_in(tmp_path, "claude", "CLAUDE_CODE_TMPDIR", "claude", "claude_success.json")
    engine = make_engine(
        orchestrator={"worker": "claude", "claude_command": script},
        workers={"env": {"CLAUDE_CODE_TMPDIR": str(outside)}, "max_retries": 0},
    )
    job = run_job(engine, "x", tasks=["say hello"])
    (worker,) = engine.queries.snapshot(job.root_id)[1]
    log = engine.workspace.worker_log(job.root_id, 0, worker.name).read_text()
    assert worker.sandbox == "bubblewrap"
    assert worker.status is WorkerStatus.SUCCESS and job.status is JobStatus.COMPLETED, log
    assert f"wrote {outside}/claude/probe" in log
    # It wrote into its own TMPDIR, shown at that path: the real folder holds nothing of it.
    assert list(outside.iterdir()) == []


@needs_bwrap
@pytest.mark.slow
def test_an_opencode_worker_whose_config_folder_is_outside_the_sandbox_writes_there_and_finishes(tmp_path, make_engine):
    outside = tmp_path / "opencode-config"
    outside.mkdir()
    (outside / "opencode.json").write_text("{}\n")
    script = stand_in(tmp_path, "opencode", "OPENCODE_CONFIG_DIR", "node_modules", "opencode_success.jsonl")
    engine = make_engine(
        orchestrator={"worker": "opencode", "opencode_command": script},
        workers={"env": {"OPENCODE_CONFIG_DIR": str(outside)}, "max_retries": 0},
    )
    job = run_job(engine, "x", tasks=["say hello"])
    (worker,) = engine.queries.snapshot(job.root_id)[1]
    log = engine.workspace.worker_log(job.root_id, 0, worker.name).read_text()
    assert worker.sandbox == "bubblewrap"
    assert worker.status is WorkerStatus.SUCCESS and job.status is JobStatus.COMPLETED, log
    assert f"wrote {outside}/node_modules/probe" in log
    if SUPPORT.overlay:  # a private overlay: the user's real folder is as it was
        assert sorted(p.name for p in outside.iterdir()) == ["opencode.json"]
