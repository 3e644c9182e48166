"""``orchestrator doctor``: run as a user runs it (a subprocess of ``python -m orchestrator``), in a
private folder, HOME and PATH, against the real claude CLI where tests/install_cli.sh put it and a
loopback mock of the Anthropic API (which must see no request: doctor never calls a model)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import protocol
from orchestrator.cli.doctor import Report, _suggested_gate
from orchestrator.config import load_settings, render_template
from orchestrator.engine.core import Engine
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process.backends import probe

from .conftest import ROOT, explain, find_cli, only_worker, run_job
from .mock_model_server import QUIET_ENV, MockModelServer, Text, ToolUse, tool_results, working_directory

CLAUDE = find_cli("claude")
needs_claude = pytest.mark.skipif(CLAUDE is None, reason="claude CLI not found (run tests/install_cli.sh)")
API_KEY = "sk-ant-mock-doctor-0000"
USER_COMMENT = "# my own note: keep this line"


def bin_with(tmp_path: Path, *names: str) -> Path:
    """A PATH folder holding only ``names`` (links to the real programs)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name in names:
        found = shutil.which(name)
        assert found, f"{name} is needed on PATH for this test"
        if not (folder / name).exists():
            (folder / name).symlink_to(found)
    return folder


def make_folder(tmp_path: Path, *, claude: bool = False, mode: int = 0o600) -> Path:
    """An orchestrator folder: config.yaml from the template with a user's comment, and the real
    claude CLI in its .cli/ (where tests/install_cli.sh puts it) when ``claude``."""
    folder = tmp_path / "orch"
    folder.mkdir()
    text = render_template().replace("orchestrator:\n", f"{USER_COMMENT}\norchestrator:\n", 1)
    config = folder / "config.yaml"
    config.write_text(text)
    config.chmod(mode)
    if claude:
        assert CLAUDE
        local = folder / ".cli" / "node_modules" / ".bin"
        local.mkdir(parents=True)
        (local / "claude").symlink_to(CLAUDE)
    return folder


def doctor(folder: Path, home: Path, *args: str, path: str | None = None, **env: str) -> tuple[int, str, str]:
    """``python -m orchestrator doctor ARGS`` for ``folder``; (exit code, stdout, stderr)."""
    home.mkdir(exist_ok=True)
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_", "OPENAI_", "GEMINI_", "ORCHESTRATOR"))
    }
    base.update({"HOME": str(home), "PYTHONPATH": str(ROOT), protocol.HOME: str(folder), **env})
    if path is not None:
        base["PATH"] = path
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", *args],
        cwd=folder,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout, done.stderr


def checks(doc: dict, topic: str) -> list[dict]:
    return [c for c in doc["checks"] if c["topic"] == topic]


@pytest.mark.slow
def test_without_any_ai_cli_it_says_so_and_what_to_install(tmp_path):
    folder = make_folder(tmp_path)
    code, out, err = doctor(folder, tmp_path / "home", path=str(bin_with(tmp_path, "git")))
    assert code == 1, out + err
    assert "AI CLIs\n  none found" in out
    assert "PROBLEM worker    worker kind auto -> simulated: no AI CLI found" in out
    assert "npm install -g @anthropic-ai/claude-code" in out
    assert "1 problem(s) block real workers" in out
    code, out, _ = doctor(folder, tmp_path / "home", "--json", path=str(bin_with(tmp_path, "git")))
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and doc["clis"] == [] and doc["suggested"] == {}
    # Without bubblewrap on PATH the sandbox is a note with its fix, not a problem (workers.sandbox: auto).
    (sandbox,) = checks(doc, "sandbox")
    assert sandbox["level"] == "note" and "bwrap is not installed" in sandbox["fix"]


def test_bad_usage_exits_2(tmp_path):
    folder = make_folder(tmp_path)
    code, _, err = doctor(folder, tmp_path / "home", "--no-such-flag")
    assert code == 2 and "--no-such-flag" in err


@pytest.mark.slow
def test_a_config_readable_by_others_is_a_problem_with_its_chmod(tmp_path):
    folder = make_folder(tmp_path, mode=0o644)
    code, out, _ = doctor(folder, tmp_path / "home", "--json", path=str(bin_with(tmp_path, "git")))
    (config,) = checks(json.loads(out), "config")
    assert code == 1
    assert config["level"] == "problem" and "mode 0644" in config["text"]
    assert config["fix"] == f"chmod 600 {folder / 'config.yaml'}"
    (folder / "config.yaml").chmod(0o600)
    _, out, _ = doctor(folder, tmp_path / "home", "--json", path=str(bin_with(tmp_path, "git")))
    assert [c["level"] for c in checks(json.loads(out), "config")] == ["ok"]
    # In a repository that does not ignore it, the keys it holds could be committed: said, with the fix.
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    _, out, _ = doctor(folder, tmp_path / "home", "--json", path=str(bin_with(tmp_path, "git")))
    ok, unignored = checks(json.loads(out), "config")
    assert ok["level"] == "ok" and unignored["level"] == "note" and "does not ignore it" in unignored["text"]
    assert unignored["fix"] == f"add config.yaml to {folder / '.gitignore'}"
    (folder / ".gitignore").write_text("config.yaml\n")
    _, out, _ = doctor(folder, tmp_path / "home", "--json", path=str(bin_with(tmp_path, "git")))
    assert [c["level"] for c in checks(json.loads(out), "config")] == ["ok"]


@pytest.mark.slow
@needs_claude
def test_real_claude_logged_out_is_a_problem_with_its_fix(tmp_path):
    folder = make_folder(tmp_path, claude=True)
    code, out, err = doctor(folder, tmp_path / "home", "--json")
    doc = json.loads(out)
    assert code == 1, out + err
    (claude,) = [c for c in doc["clis"] if c["kind"] == "claude"]
    assert claude["source"] == ".cli/" and claude["path"] == str(folder / ".cli" / "node_modules" / ".bin" / "claude")
    assert "Claude Code" in claude["version"] and claude["login"] == "no"
    (login,) = checks(doc, "login")
    assert login["level"] == "problem" and "ANTHROPIC_API_KEY" in login["fix"]
    # auto does not look in .cli/: a job started now runs the simulated worker, said with the fix
    (worker,) = checks(doc, "worker")
    assert doc["runs"] == "simulated" and worker["level"] == "note", worker
    assert "using the simulated worker" in worker["text"] and "doctor --write names the CLI" in worker["fix"]
    # The configuration is proposed anyway: the kind and the CLI's path, which auto would not find.
    assert doc["suggested"]["orchestrator"]["worker"] == "claude"
    assert doc["suggested"]["orchestrator"]["claude_command"] == claude["path"]


@pytest.mark.slow
@needs_claude
def test_real_claude_logged_in_passes_without_calling_the_model_and_writes_a_merged_config(tmp_path):
    folder = make_folder(tmp_path, claude=True)
    config = folder / "config.yaml"
    original = config.read_text()
    with MockModelServer([Text("never asked")], lifetime=120) as mock:
        env = mock.client_env(API_KEY)
        code, out, err = doctor(folder, tmp_path / "home", **env)
        assert code == 0, out + err
        assert "claude is logged in (`claude auth status`: api_key, ANTHROPIC_API_KEY)" in out
        assert API_KEY not in out and mock.url not in out  # names only, never values
        code, out, err = doctor(folder, tmp_path / "home", "--write", **env)
        assert code == 0, out + err
        first = config.read_text()
        code, out2, _ = doctor(folder, tmp_path / "home", "--write", "--json", **env)
        assert code == 0 and config.read_text() == first  # idempotent
        assert API_KEY not in out + out2
        again = json.loads(out2)  # the second run finds nothing left to set
        assert again["suggested"] == {} and again["written"] is False
    assert mock.requests == []  # no model call
    # Every line of the original that was not a changed key's is still there: comments kept.
    changed = ("  worker:", "  claude_command:", "  claude_allowed_tools:", "  env:")
    kept = [line for line in original.splitlines() if not line.startswith(changed)]
    assert [line for line in first.splitlines() if not line.startswith(changed)] == kept
    assert USER_COMMENT in first and "#" in next(line for line in first.splitlines() if line.startswith("  env:"))
    data = yaml.safe_load(first)
    assert data["orchestrator"]["worker"] == "claude"
    assert data["orchestrator"]["claude_command"] == str(folder / ".cli" / "node_modules" / ".bin" / "claude")
    assert data["orchestrator"]["claude_allowed_tools"][-1] == "Bash"  # this machine sandboxes workers
    assert data["workers"]["env"] == {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": mock.url}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "Configuration written to" in out


def test_a_gate_is_suggested_from_the_repository_s_test_command(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "package.json").write_text(json.dumps({"scripts": {"test": 'echo "Error: no test specified" && exit 1'}}))
    npm = tmp_path / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text("#!/bin/sh\n")
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(npm.parent))
    assert _suggested_gate(Report(tmp_path / "c.yaml"), repo) is None  # npm init's placeholder is no test
    (repo / "package.json").write_text(json.dumps({"scripts": {"test": "node t.js"}}))
    gate = _suggested_gate(Report(tmp_path / "c.yaml"), repo)
    assert gate == {"name": "tests", "run": ["npm", "test"], "required": True, "timeout": 600}
    (repo / "go.mod").write_text("module x\n")  # go comes first, and go is not on this PATH: said, not written
    report = Report(tmp_path / "c.yaml")
    assert _suggested_gate(report, repo) is None
    assert "go.mod suggests `go test ./...` as a gate, but go is not on PATH" in report.findings[0].text


@pytest.mark.slow
@pytest.mark.real_cli
@needs_claude
def test_a_job_with_the_written_config_runs_a_real_claude_worker_in_a_worktree(tmp_path, monkeypatch):
    """doctor --write in a folder inside a host repository, then a job on exactly that config.yaml
    (the server's environment has no Anthropic variable: workers.env carries them) runs a real
    claude worker in a worktree; the host is as it was, the folder's config.yaml aside."""
    from .helpers.worktree import git, make_host, snapshot, user_env

    host, folder = make_host(tmp_path)
    (folder / ".gitignore").write_text("/workspace/*\nconfig.yaml\n")
    git(host, "rm", "-q", "--cached", "tools/orch/config.yaml")
    git(host, "commit", "-q", "--no-verify", "-am", "ignore config.yaml", env=user_env())
    (folder / "config.yaml").write_text(render_template())
    (folder / "config.yaml").chmod(0o600)
    local = folder / ".cli" / "node_modules" / ".bin"
    local.mkdir(parents=True)
    (local / "claude").symlink_to(CLAUDE)

    def script(body):
        if tool_results(body):
            return Text("Wrote hello.md")
        return ToolUse("Write", {"file_path": f"{working_directory(body)}/hello.md", "content": "# Hello\n"})

    before = snapshot(host, folder)
    with MockModelServer(script, lifetime=180) as mock:
        code, out, err = doctor(folder, tmp_path / "home", "--write", **mock.client_env(API_KEY))
        assert code == 0, out + err
        written = snapshot(host, folder)
        assert {k: v for k, v in written.items() if k != "files"} == {k: v for k, v in before.items() if k != "files"}
        for name in [n for n in os.environ if n.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))]:
            monkeypatch.delenv(name)
        for name, value in {**QUIET_ENV, "HOME": str(tmp_path / "home")}.items():
            monkeypatch.setenv(name, value)
        settings = load_settings(folder / "config.yaml", base_dir=folder, environ={})
        settings = settings.replace(orchestrator={"planner": "heuristic"}, workers={"default_timeout": 120})
        engine = Engine(settings)
        try:
            job = run_job(engine, "Write hello.md", tasks=["Write hello.md"], timeout=150)
            worker = only_worker(engine, job)
            why = explain(engine, job, mock)
            assert job.status is JobStatus.COMPLETED and worker.status is WorkerStatus.SUCCESS, why
            assert job.config.isolation == "worktree" and worker.branch == f"orchestrator/{job.id}/worker_1", why
            assert git(host, "show", f"{worker.branch}:hello.md") == "# Hello\n"
        finally:
            engine.shutdown(timeout=10)
        assert mock.requests and all(r.headers["x-api-key"] == API_KEY for r in mock.requests)
    assert snapshot(host, folder) == written


CODEX = find_cli("codex")
needs_codex = pytest.mark.skipif(CODEX is None, reason="codex CLI not found (run tests/install_cli.sh)")
CODEX_PROVIDER_CONFIG = """model = "mock-model"
model_provider = "proxy"

[model_providers.proxy]
name = "Company proxy"
base_url = "http://127.0.0.1:9/v1"
env_key = "PROXY_TEAM_KEY"
wire_api = "responses"
"""


def with_codex(folder: Path) -> None:
    """The real codex CLI beside claude in the folder's .cli/."""
    assert CODEX
    (folder / ".cli" / "node_modules" / ".bin" / "codex").symlink_to(CODEX)


@pytest.mark.slow
@needs_claude
@needs_codex
def test_worker_chooses_the_cli_and_a_codex_provider_key_counts_as_logged_in(tmp_path):
    folder = make_folder(tmp_path, claude=True)
    with_codex(folder)
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(CODEX_PROVIDER_CONFIG)
    path = str(bin_with(tmp_path, "git", "node"))
    # Neither logged in: without --worker doctor proposes the first CLI found.
    code, out, err = doctor(folder, home, "--json", path=path)
    assert json.loads(out)["worker"] == "claude", out + err
    code, out, err = doctor(folder, home, "--json", "--worker", "codex", path=path, PROXY_TEAM_KEY="team-secret-1")
    doc = json.loads(out)
    assert doc["worker"] == "codex", out + err
    (codex,) = [cli for cli in doc["clis"] if cli["kind"] == "codex"]
    assert codex["login"] == "yes" and "PROXY_TEAM_KEY" in codex["login_detail"], codex
    assert checks(doc, "login")[0]["level"] == "ok"
    assert doc["suggested"]["orchestrator"]["worker"] == "codex"
    assert "team-secret-1" not in out, "a key's value is never printed"
    # The provider's key variable unset: not logged in, naming the variable codex needs.
    code, out, err = doctor(folder, home, "--json", "--worker", "codex", path=path)
    (codex,) = [cli for cli in json.loads(out)["clis"] if cli["kind"] == "codex"]
    assert code == 1 and codex["login"] == "no" and "PROXY_TEAM_KEY" in codex["login_detail"], out + err
    # --write copies the key variable into workers.env, so the workers' codex finds it.
    code, out, err = doctor(folder, home, "--write", "--worker", "codex", path=path, PROXY_TEAM_KEY="team-secret-1")
    written = yaml.safe_load((folder / "config.yaml").read_text())
    assert written["orchestrator"]["worker"] == "codex" and written["workers"]["env"]["PROXY_TEAM_KEY"] == "team-secret-1"
    code, _, err = doctor(folder, home, "--worker", "nonesuch", path=path)
    assert code == 2 and "--worker nonesuch is not an AI CLI kind" in err


@pytest.mark.slow
def test_install_proposal_follows_whether_npm_s_global_prefix_is_writable(tmp_path):
    folder = make_folder(tmp_path)
    path = str(bin_with(tmp_path, "git", "node", "npm"))
    prefix = tmp_path / "npm-prefix"
    (prefix / "lib" / "node_modules").mkdir(parents=True)
    (prefix / "bin").mkdir()
    code, out, err = doctor(folder, tmp_path / "home", path=path, NPM_CONFIG_PREFIX=str(prefix))
    assert "npm install -g @anthropic-ai/claude-code" in out and "--prefix" not in out, out + err
    if os.geteuid() == 0:
        pytest.skip("root writes any prefix: the read-only case runs as an ordinary user (tests/run_as_user.sh)")
    for sub in (prefix / "lib" / "node_modules", prefix / "bin"):
        sub.chmod(0o555)
    code, out, err = doctor(folder, tmp_path / "home", path=path, NPM_CONFIG_PREFIX=str(prefix))
    assert code == 1
    assert "npm install -g" not in out, out
    assert f"npm install --prefix {folder / '.cli'} @anthropic-ai/claude-code" in out, out
    assert f"npm's global prefix {prefix} is not writable by you" in out


@pytest.mark.slow
@pytest.mark.skipif(not probe().available, reason="no sandbox here")
def test_the_network_check_prints_the_proxys_effective_list_for_the_chosen_kind(tmp_path):
    folder = make_folder(tmp_path)
    config = folder / "config.yaml"
    config.write_text(
        config.read_text()
        .replace('worker: "auto"', 'worker: "claude"', 1)
        .replace("sandbox_allow: []", 'sandbox_allow: ["registry.npmjs.org", "!evil.example.com"]', 1)
    )
    code, out, err = doctor(folder, tmp_path / "home", "--json", ANTHROPIC_BASE_URL="http://127.0.0.1:4011")
    doc = json.loads(out)
    (network,) = checks(doc, "network")
    assert network["level"] == "ok" and "sandboxed claude workers reach only" in network["text"], network
    lines = doc["network"]
    assert "allow registry.npmjs.org (any port)" in lines and "allow api.anthropic.com (any port)" in lines, lines
    assert any(line.startswith("deny evil.example.com") for line in lines), lines
    assert any("127.0.0.1:4011" in line and "the model API its settings name" in line for line in lines), lines
    assert any("this server's API" in line for line in lines), lines
    assert any(line.startswith("implicit: private, loopback") for line in lines), lines
