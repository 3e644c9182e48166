"""README.md's "three commands" and README_FOR_AI.md's MCP block, run as written, in a scratch copy
of this folder inside a git repository the test makes (a user's project): once on a machine with
no AI CLI (what a new user without one gets: doctor says so, writes nothing, quick-start runs the
simulated worker), and once with the real claude CLI in the copy's ``.cli/`` (where
tests/install_cli.sh puts it) talking to a loopback mock of the Anthropic API. The blocks are this
repository's own text; the only changes made to them are the placeholders a user fills in."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from .conftest import find_cli
from .helpers.readme import snippet
from .helpers.scratch import VENV, copy_folder, path_without_ai_clis, run, user_shell
from .helpers.worktree import git, snapshot
from .mock_model_server import MockModelServer, Text, ToolUse, prompt_text, subtask, tool_results, working_directory
from .test_examples import snippets

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason="no .venv beside the orchestrator (./install.sh)"),
]

CLAUDE = find_cli("claude")
needs_claude = pytest.mark.skipif(CLAUDE is None, reason="claude CLI not found (run tests/install_cli.sh)")
REQUEST = "Add a --json flag to the CLI, with tests"
API_KEY = "sk-ant-mock-readme-0000"


def project(tmp_path: Path) -> tuple[Path, Path]:
    """A user's repository with a commit, and this folder copied into it (untracked, as ``cp -r``
    leaves it) as ``orchestrator/``."""
    host = tmp_path / "my project"
    host.mkdir()
    (host / "cli.py").write_text("print('hello')\n")
    git(host, "init", "-q", "-b", "main")
    git(host, "add", "-A")
    git(host, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "cli")
    return host, copy_folder(host / "orchestrator")


def three_commands(folder: Path, env: dict[str, str]):
    """The README block's lines, one after another as a user types them, each one's exit code printed."""
    lines = snippet("three-commands").splitlines()
    assert [line.split()[0] for line in lines] == ["./install.sh", "./orchestrator.sh", "./quick-start.sh"]
    script = "".join(f'{line}\necho "== exit $?"\n' for line in lines)
    try:
        return run(folder, ["bash", "-c", script], env, timeout=600)
    finally:  # quick-start leaves this folder's server running, as the README says: stopped here
        run(folder, ["./quick-start.sh", "--stop"], env)


def exits(out: str) -> list[int]:
    return [int(code) for code in re.findall(r"^== exit (\d+)$", out, flags=re.M)]


def untouched(host: Path, folder: Path) -> dict[str, object]:
    """What the README promises never changes (head, index, branches, stash, the project's files),
    the orchestrator folder itself aside (its config.yaml, logs and workspace are its own)."""
    shot = snapshot(host, folder)
    shot["files"] = {k: v for k, v in shot["files"].items() if not k.startswith("orchestrator/")}  # type: ignore[union-attr]
    shot["status"] = "\n".join(line for line in str(shot["status"]).splitlines() if "orchestrator/" not in line)
    return shot


def merge_result(host: Path, job_id: str, env: dict[str, str]):
    """The README's merge block, run from the user's repository with the job's id filled in."""
    line = snippet("merge-result").strip()
    assert line == "git merge orchestrator/<job>/result"
    return run(host, ["bash", "-c", line.replace("<job>", job_id)], env)


def test_the_readmes_three_commands_on_a_machine_without_an_ai_cli(tmp_path):
    host, folder = project(tmp_path)
    env = user_shell(tmp_path / "home", path_without_ai_clis())
    before = untouched(host, folder)
    done = three_commands(folder, env)
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    # install 0; doctor 1 (no AI CLI blocks real workers, said with its fix, nothing written); quick-start 0
    assert exits(done.stdout) == [0, 1, 0], out
    assert "worker kind auto -> simulated: no AI CLI found" in done.stdout, out
    assert "nothing written to config.yaml: no AI CLI to configure" in done.stdout, out
    assert "isolation auto -> worktree" in done.stdout, out
    assert yaml.safe_load((folder / "config.yaml").read_text())["orchestrator"]["worker"] == "auto"
    job_id = re.search(r"^job ([0-9a-f]{12}): \d+ subtask\(s\), worker kind simulated$", done.stdout, flags=re.M).group(1)
    assert f"git merge orchestrator/{job_id}/result" in done.stdout, out  # the summary prints the exact command
    assert untouched(host, folder) == before
    # the README's next block: the result, from the user's repository
    merged = merge_result(host, job_id, env)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    added = git(host, "diff", "--name-only", "HEAD~1", "HEAD").split()
    assert added and not [name for name in added if name.startswith("orchestrator/")], added


def worker_script(body):
    """The model's side: the planner gets a plan of two tasks; each worker writes one file, then says so."""
    prompt = prompt_text(body)
    if "ONLY a JSON object" in prompt:
        plan = [
            {"id": "flag", "task": "Add a --json flag to cli.py"},
            {"id": "tests", "task": "Write tests for cli.py's --json flag"},
        ]
        return Text(json.dumps({"tasks": plan}))
    if tool_results(body):
        return Text("Done.")
    name = "TESTS.md" if (subtask(body) or "").startswith("Write tests for") else "JSON_FLAG.md"
    return ToolUse("Write", {"file_path": f"{working_directory(body)}/{name}", "content": f"# {name}\n"})


@pytest.mark.real_cli
@needs_claude
def test_the_readmes_three_commands_with_claude_in_dot_cli_on_a_mock_model(tmp_path):
    host, folder = project(tmp_path)
    local = folder / ".cli" / "node_modules" / ".bin"
    local.mkdir(parents=True)
    (local / "claude").symlink_to(CLAUDE)
    before = untouched(host, folder)
    with MockModelServer(worker_script, lifetime=500) as mock:
        env = user_shell(tmp_path / "home", path_without_ai_clis(), **mock.client_env(API_KEY))
        done = three_commands(folder, env)
        summary = mock.summary()
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    assert exits(done.stdout) == [0, 0, 0], f"{out}\n{summary}"
    # doctor found claude in .cli/ and wrote what it needs: its path and the provider's variables
    assert f"{local / 'claude'} (from .cli/)" in done.stdout and "Configuration written to" in done.stdout, out
    written = yaml.safe_load((folder / "config.yaml").read_text())
    assert written["orchestrator"]["worker"] == "claude" and written["orchestrator"]["claude_command"] == str(local / "claude")
    assert written["workers"]["env"] == {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": mock.url}
    assert API_KEY not in done.stdout
    # quick-start ran two claude workers (the mock's plan), each in a worktree, on the mock only
    job_id = re.search(r"^job ([0-9a-f]{12}): 2 subtask\(s\), worker kind claude$", done.stdout, flags=re.M).group(1)
    assert f"Job {job_id} completed: 2/2 workers succeeded" in done.stdout, f"{out}\n{summary}"
    assert mock.paths and all(p.startswith("POST /v1/messages") for p in mock.paths), mock.paths
    assert untouched(host, folder) == before
    merged = merge_result(host, job_id, env)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert git(host, "show", "HEAD:JSON_FLAG.md") == "# JSON_FLAG.md\n" and git(host, "show", "HEAD:TESTS.md") == "# TESTS.md\n"


PREFIX = "mcp__orchestrator__"


def _last_result(body) -> str:
    content = tool_results(body)[-1].get("content")
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))
    return str(content or "")


def mcp_script(body):
    """The model's side, as Claude Code wants it: MCP tools are deferred (fetched with
    ToolSearch), then orchestrate, then wait on the job until it ends, then say how it ended."""
    if not tool_results(body):
        return ToolUse("ToolSearch", {"query": f"select:{PREFIX}orchestrate,{PREFIX}wait", "max_results": 5})
    last = _last_result(body)
    job = re.search(r"job ([0-9a-f]{12})", last)
    if job is None:
        return ToolUse(PREFIX + "orchestrate", {"request": "two notes", "tasks": ["Write A.md", "Write B.md"]})
    if "submitted" in last or last.startswith("still "):
        return ToolUse(PREFIX + "wait", {"job_id": job.group(1), "timeout": 30})
    return Text("The orchestrator says: " + last.splitlines()[0])


@pytest.mark.real_cli
@needs_claude
def test_the_guides_mcp_block_registers_our_server_in_claude_and_runs_a_job_through_it(tmp_path):
    (block,) = snippets("mcp", "bash")
    folder = copy_folder(tmp_path / "orchestrator")
    bin_dir = tmp_path / "bin"  # claude on PATH, as the block runs it
    bin_dir.mkdir()
    (bin_dir / "claude").symlink_to(CLAUDE)
    home = tmp_path / "home"
    env = user_shell(home, f"{bin_dir}:{path_without_ai_clis()}")
    assert run(folder, ["./install.sh"], env, timeout=300).returncode == 0
    # the job's workers are the simulated worker (claude here is only the assistant calling the tools)
    assert run(folder, ["./orchestrator.sh", "config", "set", "orchestrator.worker", "simulated"], env).returncode == 0
    script = block.replace("/abs/path/orchestrator", str(folder))
    assert "/abs/path" not in script and script.count(str(folder)) == 2
    with MockModelServer(mcp_script, lifetime=170) as mock:
        env.update(mock.client_env(API_KEY))
        try:
            done = run(tmp_path, ["bash", "-e", "-c", script], env, timeout=160)
        finally:
            run(folder, ["./quick-start.sh", "--stop"], env)
        summary = mock.summary()
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{out}\n{summary}"
    # claude mcp add registered this folder's server in the user's claude configuration
    registered = json.loads((home / ".claude.json").read_text())
    servers = {
        name: spec for project in registered.get("projects", {}).values() for name, spec in project.get("mcpServers", {}).items()
    }
    servers.update(registered.get("mcpServers", {}))
    assert servers["orchestrator"]["command"] == f"{folder}/orchestrator.sh" and servers["orchestrator"]["args"] == ["mcp"]
    # claude -p called the orchestrate tool of our MCP server, which started this folder's server; the job is in its workspace
    said = re.search(r"The orchestrator says: job ([0-9a-f]{12}): completed", done.stdout)
    assert said, f"{out}\n{summary}"
    status = run(folder, ["./orchestrator.sh", "status", said.group(1), "--json"], env)
    doc = json.loads(status.stdout)
    assert doc["status"] == "completed" and [t["task"] for t in doc["results"]["tasks"]] == ["Write A.md", "Write B.md"]
    assert all(p.startswith("POST /v1/messages") for p in mock.paths), mock.paths
