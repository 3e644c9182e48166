"""The AI CLI adapters: the argv each builds, and what each reads from a CLI's output.

Fixtures under tests/fixtures/cli_outputs/ and where they come from
(each "captured" file is the real output of the named CLI version, run in
/tmp against a local mock of its model API on 127.0.0.1 — nothing reached a
model service; each "written" file follows the format named beside it):

claude (@anthropic-ai/claude-code 2.1.329, ``claude -p --output-format json``;
documented at https://docs.claude.com/en/docs/claude-code/headless, "Output formats")
  claude_success.json        captured: a successful result object
  claude_401.json            captured: API answered 401 -> is_error true, subtype "success", exit 1
  claude_not_logged_in.json  captured: no credentials at all, exit 1
  claude_interrupted.json    captured: SIGINT mid-request -> subtype error_during_execution, exit 0
  claude_mixed.txt           written: claude_success.json between stderr lines, as the shared log holds it
codex (@openai/codex 0.169.0, ``codex exec --json``; events documented at
https://developers.openai.com/codex/noninteractive, "JSON output")
  codex_success.jsonl        captured (stderr lines first, then the JSONL events)
  codex_401.jsonl            captured: five reconnects, then turn.failed, exit 1
  codex_no_network.jsonl     captured: no route to the API; codex keeps waiting (killed by our timeout)
  codex_no_message.jsonl     written: a turn that completes without an agent_message item
gemini (@google/gemini-cli 0.61.0, ``gemini -p … -o json``; documented at
https://geminicli.com/docs/cli/headless/, "JSON output")
  gemini_success.txt         captured: stderr notices, then the pretty-printed result on stdout
  gemini_41.txt              captured: no auth method -> error JSON on stderr, exit 41
  gemini_401.txt             captured: the API answered 401 -> stack trace and error JSON, code 401
  gemini_55.txt              captured: untrusted folder (run without --skip-trust), exit 55, no JSON
aider (aider-chat 0.86.2, ``aider --message``; report lines from aider/coders/base_coder.py)
  aider_success.txt          captured: banner, reply, "Tokens: … Cost: …", applied edit, exit 0
  aider_auth_error.txt       captured: litellm.AuthenticationError, exit 0
  aider_missing_key.txt      captured: no OPENAI_API_KEY, exit 0
ollama (``ollama run --verbose``; written from ollama's cmd/cmd.go and api/types.go Metrics.Summary)
  ollama_success.txt         written: spinner escapes, the reply, --verbose timings on stderr
  ollama_thinking.txt        written: a thinking model's "Thinking... / ...done thinking." block
  ollama_server_down.txt     written: checkServerHeartbeat's error, exit 1
  ollama_model_missing.txt   written: pull of an unknown model, exit 1
opencode (opencode-ai 1.18.33, ``opencode run --format json``; event names from its run command)
  opencode_success.jsonl     captured: one step
  opencode_multistep.jsonl   written in the captured shape: two steps, a tool call, two costs
  opencode_401.jsonl         captured: the error event for a 401 (isRetryable false), exit 1
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from orchestrator.config import WORKER_KINDS
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.workers.adapters import ADAPTERS, auto_order, get_adapter, resolve_kind
from orchestrator.workers.adapters.base import WorkerContext

from .conftest import make_settings, run_job

OUTPUTS = Path(__file__).parent / "fixtures" / "cli_outputs"
AI_KINDS = auto_order()  # the AI CLIs auto looks for, from the registry (workers/adapters)
NASTY = 'say "hi"; rm -rf x $(touch pwned) `id` --help\n-o out'
DEFAULT_TOOLS = [
    "Read",
    "Write",
    "Edit",
    "Glob",
    "Grep",
    "Bash(orchestrator-spawn:*)",
    "Bash(python -m orchestrator spawn:*)",
    "Bash(python3 -m orchestrator spawn:*)",
    # the project's own test runners, so a claude worker can run the tests it writes
    "Bash(pytest:*)",
    "Bash(python -m pytest:*)",
    "Bash(python3 -m pytest:*)",
    "Bash(npm test:*)",
    "Bash(go test:*)",
    "Bash(cargo test:*)",
    "Bash(make test:*)",
]


def context(
    tmp_path: Path, prompt: str = "Write hello.py", time_left: float | None = None, env: dict | None = None, **orchestrator
) -> WorkerContext:
    """A worker's context; ``env``: the worker's environment (a HOME of its own in tmp_path by default)."""
    settings = make_settings(tmp_path, orchestrator=orchestrator)
    worker_dir = tmp_path / "depth_0" / "worker_1"
    return WorkerContext(
        task="t",
        prompt=prompt,
        prompt_file=tmp_path / "prompt.md",
        worker_dir=worker_dir,
        depth=0,
        max_recursion_depth=3,
        attempt=1,
        settings=settings,
        time_left=time_left,
        env={"HOME": str(tmp_path)} if env is None else env,
    )


def argv(kind: str, tmp_path: Path, prompt: str = "Write hello.py", **orchestrator) -> list[str]:
    return get_adapter(kind).build_argv(context(tmp_path, prompt, **orchestrator))


def parse(kind: str, name: str, exit_code: int | None = 0, max_chars: int = 4000):
    return get_adapter(kind).parse((OUTPUTS / name).read_text(encoding="utf-8"), exit_code, max_chars=max_chars)


# -- the registry -------------------------------------------------------------------


def test_every_ai_kind_is_registered_and_declares_itself():
    assert AI_KINDS, "no AI CLI kind in the registry"
    for kind in AI_KINDS:
        adapter = get_adapter(kind)
        assert kind in ADAPTERS and adapter.name == kind and adapter.is_ai
        assert adapter.command_key == f"orchestrator.{kind}_command"
        assert adapter.needs_prompt_file(None) is False


def test_the_settings_worker_kinds_are_the_registry_and_auto():
    # config/ sits below the adapters, so the shipped kinds are named there (config/plugins.py); this keeps them the registry's
    assert sorted(WORKER_KINDS) == sorted(["auto", *ADAPTERS])


def test_first_signals_are_the_measured_ones():
    # claude writes its result on SIGINT and nothing on SIGTERM; codex shuts down on
    # SIGINT; opencode ignores SIGINT; ollama exits 0 with a partial answer on SIGINT.
    expected = {
        "claude": signal.SIGINT,
        "codex": signal.SIGINT,
        "gemini": signal.SIGTERM,
        "aider": signal.SIGTERM,
        "ollama": signal.SIGTERM,
        "opencode": signal.SIGTERM,
    }
    assert {kind: get_adapter(kind).first_signal for kind in AI_KINDS} == expected


# -- argv: claude ---------------------------------------------------------------------


def test_claude_argv_plain(tmp_path):
    assert argv("claude", tmp_path) == [
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        *DEFAULT_TOOLS,
        "--",
        "Write hello.py",
    ]


def test_claude_argv_with_model_max_turns_and_cli_args(tmp_path):
    got = argv(
        "claude",
        tmp_path,
        model="claude sonnet 4.5",
        claude_max_turns=7,
        cli_args=["--verbose", "--add-dir", "/data dir"],
        claude_allowed_tools=["Read"],
        claude_command="/opt/claude/bin/claude",
    )
    assert got == [
        "/opt/claude/bin/claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        "claude sonnet 4.5",
        "--max-turns",
        "7",
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        "Read",
        "--verbose",
        "--add-dir",
        "/data dir",
        "--",
        "Write hello.py",
    ]


def test_a_context_with_no_tool_at_all_turns_each_clis_tools_off(tmp_path):
    """``allowed_tools=()`` (the AI planner, a judge): claude gets no built-in tool and no MCP server
    (in place of the worker's allowed list), codex its read-only sandbox, gemini its read-only plan mode
    (never --yolo); a worker's context keeps its tools."""
    from dataclasses import replace

    def built(kind: str, **settings) -> list[str]:
        ctx = context(tmp_path, claude_allowed_tools=["Read", "Bash(pytest:*)"], **settings)
        return get_adapter(kind).build_argv(replace(ctx, allowed_tools=(), sandboxed=True))

    claude = built("claude")
    assert claude[claude.index("--tools") : claude.index("--tools") + 3] == ["--tools", "", "--strict-mcp-config"]
    assert "--allowedTools" not in claude and claude[-2:] == ["--", "Write hello.py"]
    codex = built("codex")
    assert codex[codex.index("--sandbox") + 1] == "read-only" and "danger-full-access" not in codex
    gemini = built("gemini")
    assert gemini[gemini.index("--approval-mode") + 1] == "plan" and "--yolo" not in gemini
    worker = argv("claude", tmp_path, claude_allowed_tools=["Read"])
    assert "--tools" not in worker and worker[worker.index("--allowedTools") + 1] == "Read"


def test_claude_argv_without_tools_and_zero_turns_omits_both(tmp_path):
    got = argv("claude", tmp_path, claude_allowed_tools=[], claude_max_turns=0, claude_permission_mode="plan")
    assert got == [
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "plan",
        "--",
        "Write hello.py",
    ]


def test_claude_bypass_permissions_sets_is_sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "7")  # the server's, not the worker's: no matter
    adapter = get_adapter("claude")
    retries = {"CLAUDE_CODE_MAX_RETRIES": "3"}
    assert adapter.extra_env(context(tmp_path)) == retries
    assert adapter.extra_env(context(tmp_path, claude_permission_mode="bypassPermissions")) == {"IS_SANDBOX": "1", **retries}
    assert adapter.extra_env(context(tmp_path, cli_args=["--dangerously-skip-permissions"])) == {"IS_SANDBOX": "1", **retries}


def test_claude_keeps_the_users_own_retry_count(tmp_path, monkeypatch):
    # Set for the worker (workers.env) only: the server's environment has none.
    monkeypatch.delenv("CLAUDE_CODE_MAX_RETRIES", raising=False)
    assert get_adapter("claude").extra_env(context(tmp_path, env={"CLAUDE_CODE_MAX_RETRIES": "7"})) == {}


def test_claude_bash_limits_cover_the_attempts_time_left_and_never_drop_below_the_clis(tmp_path, monkeypatch):
    for name in ("BASH_DEFAULT_TIMEOUT_MS", "BASH_MAX_TIMEOUT_MS", "CLAUDE_CODE_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    adapter = get_adapter("claude")
    env = adapter.extra_env(context(tmp_path, time_left=1800.2))
    assert (env["BASH_DEFAULT_TIMEOUT_MS"], env["BASH_MAX_TIMEOUT_MS"]) == ("1801000", "1801000")
    env = adapter.extra_env(context(tmp_path, time_left=30))  # shorter than the CLI's own: left as the CLI has them
    assert (env["BASH_DEFAULT_TIMEOUT_MS"], env["BASH_MAX_TIMEOUT_MS"]) == ("120000", "600000")
    assert "BASH_DEFAULT_TIMEOUT_MS" not in adapter.extra_env(context(tmp_path, time_left=None))


def test_claude_bash_limits_the_user_set_win(tmp_path, monkeypatch):
    monkeypatch.delenv("BASH_DEFAULT_TIMEOUT_MS", raising=False)  # the worker's value, never the server's, counts
    monkeypatch.setenv("BASH_MAX_TIMEOUT_MS", "1000")
    env = get_adapter("claude").extra_env(context(tmp_path, time_left=900, env={"BASH_DEFAULT_TIMEOUT_MS": "2000"}))
    assert "BASH_DEFAULT_TIMEOUT_MS" not in env and env["BASH_MAX_TIMEOUT_MS"] == "900000"


# -- argv: the others -----------------------------------------------------------------


def test_codex_argv_plain_model_and_cli_args(tmp_path):
    wd = str(tmp_path / "depth_0" / "worker_1")
    base = [
        "codex",
        "exec",
        "--json",
        "-C",
        wd,
        "--skip-git-repo-check",
        "--sandbox",
        "workspace-write",
        "-c",
        "sandbox_workspace_write.network_access=true",
        "-c",
        "sandbox_workspace_write.exclude_slash_tmp=true",
        "-c",
        "shell_environment_policy.ignore_default_excludes=true",
        "-c",
        "allow_login_shell=false",
    ]
    assert argv("codex", tmp_path) == [*base, "--", "Write hello.py"]
    assert argv("codex", tmp_path, model="gpt 5", cli_args=["-c", "model_reasoning_effort=high"]) == [
        *base,
        "-m",
        "gpt 5",
        "-c",
        "model_reasoning_effort=high",
        "--",
        "Write hello.py",
    ]


def test_codex_leaves_the_sandbox_to_cli_args_that_choose_one(tmp_path):
    got = argv("codex", tmp_path, cli_args=["--dangerously-bypass-approvals-and-sandbox"])
    assert "--sandbox" not in got and got[-3:] == ["--dangerously-bypass-approvals-and-sandbox", "--", "Write hello.py"]
    assert argv("codex", tmp_path, cli_args=["--sandbox=read-only"]).count("--sandbox") == 0


def test_codex_login_shell_is_off_unless_cli_args_choose(tmp_path):
    assert argv("codex", tmp_path).count("allow_login_shell=false") == 1
    mine = argv("codex", tmp_path, cli_args=["-c", "allow_login_shell=true"])
    assert [a for a in mine if "allow_login_shell" in a] == ["allow_login_shell=true"]


def test_codex_poll_limit_covers_the_attempts_time_left_unless_the_user_set_it(tmp_path, monkeypatch):
    server = tmp_path / "server-codex-home"  # the server's CODEX_HOME sets a limit; the worker's is another
    server.mkdir()
    (server / "config.toml").write_text("background_terminal_max_timeout = 7000\n")
    monkeypatch.setenv("CODEX_HOME", str(server))
    given = {"CODEX_HOME": str(tmp_path / "codex-home")}  # workers.env
    got = get_adapter("codex").build_argv(context(tmp_path, time_left=1800.5, env=given))
    assert got[got.index("background_terminal_max_timeout=1801000") - 1] == "-c"
    short = get_adapter("codex").build_argv(context(tmp_path, time_left=60, env=given))  # never below codex's 300000
    assert "background_terminal_max_timeout=300000" in short
    mine = get_adapter("codex").build_argv(
        context(tmp_path, time_left=1800, env=given, cli_args=["-c", "background_terminal_max_timeout=5000"])
    )
    assert [a for a in mine if "background_terminal_max_timeout" in a] == ["background_terminal_max_timeout=5000"]
    (tmp_path / "codex-home").mkdir()
    (tmp_path / "codex-home" / "config.toml").write_text('model = "x"\nbackground_terminal_max_timeout = 9000\n')
    assert not [
        a for a in get_adapter("codex").build_argv(context(tmp_path, time_left=1800, env=given)) if "background_terminal" in a
    ]
    # Without CODEX_HOME, the worker's HOME/.codex: the server's CODEX_HOME is not the worker's.
    (server / "config.toml").unlink()
    (tmp_path / ".codex").mkdir()
    (tmp_path / ".codex" / "config.toml").write_text("background_terminal_max_timeout = 9000\n")
    assert not [a for a in get_adapter("codex").build_argv(context(tmp_path, time_left=1800)) if "background_terminal" in a]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="codex's sandbox helper is Linux's")
def test_codex_helper_links_go_last_on_the_workers_path_to_the_binary_the_npm_launcher_runs(tmp_path):
    """The links codex makes in $CODEX_HOME/tmp/arg0-linux (the adapter's docstring says why): made in
    a new folder of the worker's TMPDIR to the platform package's binary (the npm launcher, bin/codex.js,
    is a script), never through what an earlier attempt left there, and left out where the binary is
    not found."""
    import platform

    from orchestrator.workers.adapters.codex import _PLATFORM_PACKAGES, _TRIPLES, HELPER_NAMES, HELPER_PREFIX

    triple = _TRIPLES[platform.machine()]
    scope = tmp_path / "lib" / "node_modules" / "@openai"
    launcher = scope / "codex" / "bin" / "codex.js"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/usr/bin/env node\n")
    launcher.chmod(0o755)
    binary = scope / _PLATFORM_PACKAGES[triple] / "vendor" / triple / "bin" / "codex"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\x7fELF")
    binary.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "codex").symlink_to(launcher)  # npm's bin link
    tmp, users = tmp_path / "worker-tmp", tmp_path / "users-folder"
    tmp.mkdir()
    users.mkdir()
    # An earlier attempt planted links where a fixed folder name would be, to a folder of the user's
    for planted in ("codex-helpers", f"{HELPER_PREFIX}x", f"{HELPER_PREFIX}"):
        (tmp / planted).symlink_to(users)
    env = {"HOME": str(tmp_path), "TMPDIR": str(tmp), "PATH": f"{bin_dir}:/usr/bin"}
    ctx = context(tmp_path, env=env)
    got = get_adapter("codex").extra_env(ctx)
    path, _, last = got["PATH"].rpartition(":")
    folder = Path(last)
    assert path == f"{bin_dir}:/usr/bin" and folder.parent == tmp and folder.name.startswith(HELPER_PREFIX)
    assert not folder.is_symlink() and sorted(p.name for p in folder.iterdir()) == sorted(HELPER_NAMES)
    assert all((folder / name).resolve() == binary for name in HELPER_NAMES)
    assert list(users.iterdir()) == []
    # Each attempt gets its own folder
    again = get_adapter("codex").extra_env(ctx)["PATH"].rpartition(":")[2]
    assert again != last and all((Path(again) / name).resolve() == binary for name in HELPER_NAMES)
    # A codex_command that is the binary itself; none found: no links, PATH as it was.
    assert get_adapter("codex").extra_env(context(tmp_path, env=env, codex_command=str(binary)))["PATH"].startswith(path)
    assert get_adapter("codex").extra_env(context(tmp_path, env={**env, "PATH": "/usr/bin"}, codex_command="nocodex")) == {}
    binary.unlink()
    assert get_adapter("codex").extra_env(ctx) == {}
    assert get_adapter("codex").extra_env(context(tmp_path, env={"HOME": str(tmp_path), "PATH": env["PATH"]})) == {}
    assert list(users.iterdir()) == []


def test_gemini_argv_plain_model_and_cli_args(tmp_path):
    base = ["gemini", "--prompt=Write hello.py", "--output-format", "json", "--yolo", "--skip-trust"]
    assert argv("gemini", tmp_path) == base
    assert argv("gemini", tmp_path, model="gemini 2.5 pro", cli_args=["--include-directories", "/a b"]) == [
        *base,
        "-m",
        "gemini 2.5 pro",
        "--include-directories",
        "/a b",
    ]


def test_aider_argv_plain_model_and_cli_args(tmp_path, monkeypatch):
    from orchestrator.workers.adapters.aider import MODEL_SETTINGS

    server_home = tmp_path / "server-home"  # the server's HOME has model settings; the worker's (tmp_path) not
    server_home.mkdir()
    (server_home / ".aider.model.settings.yml").write_text("- name: x\n")
    monkeypatch.setenv("HOME", str(server_home))
    base = [
        "aider",
        "--message=Write hello.py",
        "--yes-always",
        "--no-auto-commits",
        "--no-check-update",
        "--no-analytics",
        "--no-gitignore",
        "--no-pretty",
        "--no-git",
        "--no-show-release-notes",
        f"--chat-history-file={os.devnull}",
        f"--input-history-file={os.devnull}",
    ]
    settings = f"--model-settings-file={MODEL_SETTINGS}"
    assert MODEL_SETTINGS.is_file()
    assert argv("aider", tmp_path) == [*base, settings]
    assert argv("aider", tmp_path, model="openrouter/some model", cli_args=["--edit-format", "whole"]) == [
        *base,
        "--model",
        "openrouter/some model",
        settings,
        "--edit-format",
        "whole",
    ]
    # the user's own model settings (which ours would replace) win
    assert argv("aider", tmp_path, cli_args=["--model-settings-file", "mine.yml"]) == [*base, "--model-settings-file", "mine.yml"]
    (tmp_path / ".aider.model.settings.yml").write_text("[]")
    assert argv("aider", tmp_path) == base


def test_ollama_argv_uses_ollama_model(tmp_path):
    assert argv("ollama", tmp_path) == ["ollama", "run", "llama3.2", "--verbose", "--nowordwrap", "--", "Write hello.py"]
    got = argv("ollama", tmp_path, ollama_model="qwen2.5-coder:7b", model="ignored-for-ollama", cli_args=["--keepalive", "5m"])
    assert got == ["ollama", "run", "qwen2.5-coder:7b", "--verbose", "--nowordwrap", "--keepalive", "5m", "--", "Write hello.py"]


def test_opencode_argv_plain_model_and_cli_args(tmp_path):
    # --dir pins opencode to the worker's directory (else it works in an inherited $PWD)
    here = str(tmp_path / "depth_0" / "worker_1")
    assert argv("opencode", tmp_path) == ["opencode", "run", "--format", "json", "--dir", here, "--", "Write hello.py"]
    assert argv("opencode", tmp_path, opencode_model="anthropic/claude sonnet", cli_args=["--auto"]) == [
        "opencode",
        "run",
        "--format",
        "json",
        "--dir",
        here,
        "-m",
        "anthropic/claude sonnet",
        "--auto",
        "--",
        "Write hello.py",
    ]
    # orchestrator.model is used only when it has opencode's provider/model form
    assert "-m" not in argv("opencode", tmp_path, model="sonnet")
    assert argv("opencode", tmp_path, model="openai/gpt-5")[6:8] == ["-m", "openai/gpt-5"]
    # a --dir of the user's own is the one opencode gets (yargs would make two an array)
    assert [a for a in argv("opencode", tmp_path, cli_args=["--dir=/x"]) if a.startswith("--dir")] == ["--dir=/x"]


@pytest.mark.parametrize("kind", AI_KINDS)
def test_a_nasty_prompt_is_exactly_one_argv_element(kind, tmp_path):
    got = argv(kind, tmp_path, prompt=NASTY, model="model with spaces", cli_args=["--x", "a b"])
    assert all(isinstance(part, str) for part in got)
    holding = [part for part in got if NASTY in part]
    assert len(holding) == 1, got
    # claude, codex, ollama and opencode take it after "--" as its own element; gemini and
    # aider take it as an option value, in the only spelling that keeps a leading "-" a value.
    prefix = {"gemini": "--prompt=", "aider": "--message="}.get(kind, "")
    assert holding[0] == prefix + NASTY
    if not prefix:
        assert got[-2:] == ["--", NASTY]
    at = got.index("--x")
    assert got[at : at + 2] == ["--x", "a b"]


def test_model_names_with_spaces_stay_one_element(tmp_path):
    for kind in ("claude", "codex", "gemini", "aider"):
        assert "my model v2" in argv(kind, tmp_path, model="my model v2")
    assert "my model:v2" in argv("ollama", tmp_path, ollama_model="my model:v2")
    assert "prov/my model" in argv("opencode", tmp_path, opencode_model="prov/my model")


# -- parse: claude --------------------------------------------------------------------


def test_claude_success_gives_result_cost_tokens_and_session():
    parsed = parse("claude", "claude_success.json")
    assert parsed.ok is None and parsed.error is None
    assert parsed.output == "HELLO-FROM-MOCK"
    assert parsed.cost_usd == pytest.approx(0.000111)
    assert (parsed.tokens_in, parsed.tokens_out) == (12, 5)
    assert parsed.extra["session_id"] == "f9736b11-0c5c-400d-9883-ada228fa71c6"


def test_claude_is_error_with_subtype_success_is_a_non_retryable_failure():
    parsed = parse("claude", "claude_401.json", exit_code=1)
    assert parsed.ok is False and parsed.retryable is False
    assert "Invalid API key · Fix external API key" in parsed.error and "401" in parsed.error
    assert "{" not in parsed.output


def test_claude_not_logged_in_is_not_retried():
    parsed = parse("claude", "claude_not_logged_in.json", exit_code=1)
    assert parsed.ok is False and parsed.retryable is False
    assert "Not logged in · Please run /login" in parsed.error


def test_claude_interrupted_result_is_a_failure_even_with_exit_0():
    parsed = parse("claude", "claude_interrupted.json", exit_code=0)
    assert parsed.ok is False and "error_during_execution" in parsed.error


def test_claude_result_is_found_among_other_stderr_lines():
    parsed = parse("claude", "claude_mixed.txt")
    assert parsed.ok is None and parsed.output == "HELLO-FROM-MOCK" and parsed.tokens_in == 12


def test_claude_without_a_result_object_failed():
    text = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons\n"
    parsed = get_adapter("claude").parse(text, 1, max_chars=100)
    assert parsed.ok is False and parsed.retryable is False
    assert parsed.error == f"no result from claude ({text.strip()})"
    assert parsed.failure_class is None
    no_key = get_adapter("claude").parse("Invalid API key · Please run /login\n", 1, max_chars=100)
    assert no_key.retryable is False and no_key.failure_class == "auth"


# -- parse: codex ---------------------------------------------------------------------


def test_codex_success_gives_the_last_agent_message_and_tokens():
    parsed = parse("codex", "codex_success.jsonl")
    assert parsed.ok is None and parsed.output == "HELLO-FROM-MOCK"
    assert (parsed.tokens_in, parsed.tokens_out, parsed.cost_usd) == (120, 7, None)
    assert parsed.extra["thread_id"] == "01a1fcd5-4c4e-7b83-8631-8415c960ac06"


def test_codex_turn_failed_with_401_is_not_retried():
    parsed = parse("codex", "codex_401.jsonl", exit_code=1)
    assert parsed.ok is False and parsed.retryable is False
    assert parsed.error.startswith("codex: unexpected status 401 Unauthorized")


@pytest.mark.parametrize(
    "message, failure_class, retry_after",
    [
        ("unexpected status 401 Unauthorized: Incorrect API key provided", "auth", None),
        ("unexpected status 400 Bad Request: unsupported model", "bad_request", None),
        ("exceeded retry limit, last status: 429 Too Many Requests, request id: req_1", "transient", None),
        ("exceeded retry limit, last status: 429 Too Many Requests: Please try again in 1.5s.", "transient", 1.5),
        ("unexpected status 529 <unknown status code>: overloaded; try again in 800ms", "transient", 0.8),
        ("stream disconnected before completion", None, None),
    ],
)
def test_codex_failure_class_comes_from_the_status_in_its_message(message, failure_class, retry_after):
    event = '{"type": "turn.failed", "error": {"message": "%s"}}' % message
    parsed = get_adapter("codex").parse('{"type": "turn.started"}\n' + event + "\n", 1, max_chars=1000)
    assert parsed.ok is False and parsed.failure_class == failure_class and parsed.retry_after == retry_after
    assert parsed.retryable is (failure_class not in ("auth", "bad_request"))


def test_claude_tokens_are_the_sessions_when_it_printed_several_results():
    # After a background task's notification claude answers again: a second result event whose
    # usage counts only the turns since the first, while modelUsage and the cost are the session's.
    first = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "first",
        "total_cost_usd": 0.0064,
        "usage": {"input_tokens": 1200, "output_tokens": 80},
        "result_index": 0,
    }
    second = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "second",
        "total_cost_usd": 0.0192,
        "usage": {"input_tokens": 1200, "output_tokens": 80},
        "result_index": 1,
        "modelUsage": {
            "claude-x": {
                "inputTokens": 3000,
                "cacheReadInputTokens": 600,
                "cacheCreationInputTokens": 0,
                "outputTokens": 240,
                "costUSD": 0.0192,
            }
        },
    }
    parsed = get_adapter("claude").parse(json.dumps(first) + "\n" + json.dumps(second) + "\n", 0, max_chars=100)
    assert (parsed.output, parsed.cost_usd, parsed.tokens_in, parsed.tokens_out) == ("second", 0.0192, 3600, 240)


def test_claude_failure_class_from_api_error_status_type_and_retry_events():
    def result(**fields):
        doc = {"type": "result", "subtype": "success", "is_error": True, "result": "API Error", **fields}
        return json.dumps(doc)

    retry = '{"type":"system","subtype":"api_retry","attempt":1,"max_retries":3,"retry_delay_ms":3479,"error_status":529}'
    claude = get_adapter("claude")
    overloaded = claude.parse(
        retry + "\n" + result(api_error_status=529, api_error_type="overloaded_error") + "\n", 1, max_chars=100
    )
    assert (overloaded.failure_class, overloaded.retry_after, overloaded.retryable) == ("transient", 3.479, True)
    limited = claude.parse(result(api_error_status=429) + "\n", 1, max_chars=100)
    assert (limited.failure_class, limited.retry_after, limited.retryable) == ("transient", None, True)
    for fields, expected in (
        ({"api_error_status": 401}, "auth"),
        ({"api_error_status": 400}, "bad_request"),
        ({"api_error_type": "permission_error"}, "auth"),
        ({"api_error_type": "overloaded_error"}, "transient"),
    ):
        parsed = claude.parse(result(**fields) + "\n", 1, max_chars=100)
        assert parsed.failure_class == expected, fields
        assert parsed.retryable is (expected == "transient"), fields
    maxed = claude.parse(json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True}) + "\n", 1, max_chars=100)
    assert maxed.failure_class is None and maxed.retryable is False


def test_codex_without_a_final_message_failed():
    parsed = parse("codex", "codex_no_message.jsonl", exit_code=0)
    assert parsed.ok is False and parsed.retryable is True
    assert parsed.error == "no result from codex (the turn completed without an agent message)"
    assert parsed.tokens_in == 24763
    waiting = parse("codex", "codex_no_network.jsonl", exit_code=0)
    assert waiting.ok is False and "waiting for network" in waiting.error


# -- parse: gemini --------------------------------------------------------------------


def test_gemini_success_gives_response_and_stats_tokens():
    parsed = parse("gemini", "gemini_success.txt")
    assert parsed.ok is None and parsed.output == "HELLO-FROM-MOCK"
    assert (parsed.tokens_in, parsed.tokens_out) == (321, 9)
    assert parsed.extra["session_id"] == "a8128498-e71f-4454-9a85-c8e074b253c0"


def test_gemini_exit_41_error_json_on_stderr_is_not_retried():
    parsed = parse("gemini", "gemini_41.txt", exit_code=41)
    assert parsed.ok is False and parsed.retryable is False
    assert "Please set an Auth method" in parsed.error and "41" in parsed.error


def test_gemini_api_401_keeps_the_apis_message():
    parsed = parse("gemini", "gemini_401.txt", exit_code=145)
    assert parsed.ok is False and parsed.retryable is False
    assert parsed.error == "gemini: API key not valid. Please pass a valid API key. (code 401)"


def test_gemini_untrusted_folder_is_not_retried():
    parsed = parse("gemini", "gemini_55.txt", exit_code=55)
    assert parsed.ok is False and parsed.retryable is False
    assert "untrusted folder" in parsed.error and "\x1b" not in parsed.error


# -- parse: aider ---------------------------------------------------------------------


def test_aider_success_reads_cost_and_tokens_lines():
    parsed = parse("aider", "aider_success.txt")
    assert parsed.ok is None and parsed.error is None
    assert parsed.output.startswith("Here is the answer.") and parsed.output.endswith("Applied edit to hello.txt")
    assert "Aider v0.86.2" not in parsed.output and "Tokens:" not in parsed.output
    assert (parsed.tokens_in, parsed.tokens_out, parsed.cost_usd) == (678, 21, 0.00011)


def test_aider_token_counts_in_thousands_and_several_messages_add_up():
    text = (
        "Aider v0.86.2\nModel: x\n\nfirst\n\nTokens: 1.2k sent, 345 received. Cost: $0.0012 message, $0.0012 session.\n"
        "second\n\nTokens: 12k sent, 1.0k cache write, 500 cache hit, 2.5k received.\n"
        "Cost: $0.03 message, $0.0312 session.\n"
    )
    parsed = get_adapter("aider").parse(text, 0, max_chars=1000)
    assert (parsed.tokens_in, parsed.tokens_out, parsed.cost_usd) == (13200, 2845, 0.0312)
    assert parsed.output == "first\n\nsecond"


def test_aider_exit_0_with_an_auth_error_failed():
    for name in ("aider_auth_error.txt", "aider_missing_key.txt"):
        parsed = parse("aider", name, exit_code=0)
        assert parsed.ok is False and parsed.retryable is False, name
        assert parsed.error.startswith("aider: litellm.AuthenticationError") and "Check your API key." in parsed.error


# -- parse: ollama --------------------------------------------------------------------


def test_ollama_text_without_spinner_or_timings_and_with_tokens():
    parsed = parse("ollama", "ollama_success.txt")
    assert parsed.ok is None
    assert parsed.output.startswith("Here is a Python function") and parsed.output.endswith("step of -1.")
    assert "eval" not in parsed.output and "\x1b" not in parsed.output
    assert (parsed.tokens_in, parsed.tokens_out, parsed.cost_usd) == (31, 58, None)


def test_ollama_drops_the_thinking_block():
    parsed = parse("ollama", "ollama_thinking.txt")
    assert parsed.output == "Soft rain on the roof\nwhispers to the sleeping town\npuddles hold the sky"


def test_ollama_server_down_is_a_retryable_failure():
    parsed = parse("ollama", "ollama_server_down.txt", exit_code=1)
    assert parsed.ok is False and parsed.retryable is True
    assert parsed.error == "ollama: could not connect to ollama app, is it running?"


def test_ollama_unknown_model_is_not_retried():
    parsed = parse("ollama", "ollama_model_missing.txt", exit_code=1)
    assert parsed.ok is False and parsed.retryable is False and "file does not exist" in parsed.error


# -- parse: opencode ------------------------------------------------------------------


def test_opencode_single_step():
    parsed = parse("opencode", "opencode_success.jsonl")
    assert parsed.ok is None and parsed.output == "HELLO-FROM-MOCK"
    assert (parsed.cost_usd, parsed.tokens_in, parsed.tokens_out) == (0.000111, 12, 5)


def test_opencode_sums_the_cost_of_every_step_and_keeps_the_last_text():
    parsed = parse("opencode", "opencode_multistep.jsonl")
    assert parsed.cost_usd == pytest.approx(0.0061 + 0.00175)
    assert parsed.tokens_in == 1200 + 300 + 80 + 1600 and parsed.tokens_out == 150 + 40 + 10
    assert parsed.output == "Created hello.py, which prints hello."
    assert parsed.extra["session_id"] == "ses_e0327b05dffewgr7GnDBFiLzAv"


def test_opencode_error_event_is_a_failure_that_honours_is_retryable():
    parsed = parse("opencode", "opencode_401.jsonl", exit_code=1)
    assert parsed.ok is False and parsed.retryable is False
    assert parsed.error == "opencode: invalid x-api-key (APIError 401)"


# -- every AI kind: no result is a failure; megabytes stay fast -----------------------


@pytest.mark.parametrize("kind", AI_KINDS)
def test_exit_0_without_a_result_is_a_failure(kind):
    text = "Loading configuration...\nsome progress line\n"
    parsed = get_adapter(kind).parse(text if kind != "ollama" else "", 0, max_chars=1000)
    assert parsed.ok is False
    assert parsed.error.startswith(f"no result from {kind} (")
    if kind != "ollama":
        assert parsed.error == f"no result from {kind} (some progress line)"


@pytest.mark.parametrize("kind", AI_KINDS)
def test_killed_without_a_result_leaves_the_message_to_the_signal(kind):
    parsed = get_adapter(kind).parse("partial\n", -signal.SIGTERM, max_chars=100)
    assert parsed.ok is False and parsed.error is None


SUCCESS = {
    "claude": "claude_success.json",
    "codex": "codex_success.jsonl",
    "gemini": "gemini_success.txt",
    "aider": "aider_success.txt",
    "ollama": "ollama_success.txt",
    "opencode": "opencode_success.jsonl",
}


@pytest.mark.parametrize("kind", AI_KINDS)
def test_megabytes_of_output_parse_fast_and_keep_only_max_chars(kind):
    noise = "".join(f"progress line {i} " + "x" * 80 + "\n" for i in range(60_000))  # ~6 MB before the result
    big_answer = "A" * 300_000
    success = (OUTPUTS / SUCCESS[kind]).read_text(encoding="utf-8").replace("HELLO-FROM-MOCK", big_answer)
    if kind == "aider":
        success = success.replace("Here is the answer.", big_answer)
    if kind == "ollama":
        success = success.replace("It uses slicing", big_answer)
    started = time.perf_counter()
    parsed = get_adapter(kind).parse(noise + success, 0, max_chars=500)
    elapsed = time.perf_counter() - started
    assert elapsed < 3, f"{kind} took {elapsed:.2f}s"
    assert parsed.ok is None, parsed.error
    assert len(parsed.output) <= 501


def test_a_huge_result_is_tail_capped():
    obj = json.loads((OUTPUTS / "claude_success.json").read_text())
    obj["result"] = "start " + "x" * 100_000 + " the end"
    parsed = get_adapter("claude").parse(json.dumps(obj), 0, max_chars=50)
    assert parsed.output.startswith("…") and parsed.output.endswith(" the end") and len(parsed.output) == 51


# -- auto ---------------------------------------------------------------------------


def _executable(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_auto_picks_a_fake_claude_first_on_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    claude = _executable(bin_dir, "claude")
    _executable(bin_dir, "ollama")
    monkeypatch.setenv("PATH", str(bin_dir))
    kind, why = resolve_kind("auto", make_settings(tmp_path))
    assert kind == "claude" and why == f"worker kind auto: found claude on PATH ({claude})"


def test_auto_follows_the_order_and_the_command_settings(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir, "ollama")
    _executable(bin_dir, "gemini")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert resolve_kind("auto", make_settings(tmp_path))[0] == "gemini"
    elsewhere = _executable(tmp_path, "my-codex")
    settings = make_settings(tmp_path, orchestrator={"codex_command": str(elsewhere)})
    assert resolve_kind("auto", settings)[0] == "codex"


def test_auto_falls_back_to_simulated_when_no_cli_is_found(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    kind, why = resolve_kind("auto", make_settings(tmp_path))
    assert kind == "simulated"
    assert why == (
        "worker kind auto: no AI CLI found on PATH (looked for: claude, codex, gemini, aider, ollama, "
        "opencode); using the simulated worker"
    )


# -- one real job through the engine with a fake claude -------------------------------

FAKE_CLAUDE = '''#!{python}
"""Behaves like `claude -p --output-format stream-json --verbose`: writes a file in its cwd,
prints noise on stderr, then the documented result event on stdout."""
import json, sys
args = sys.argv[1:]
assert args[:4] == ["-p", "--output-format", "stream-json", "--verbose"], args
prompt = args[args.index("--") + 1]
with open("hello.txt", "w") as handle:
    handle.write("hello\\n")
print("[warn] a line on stderr", file=sys.stderr, flush=True)
print(json.dumps({{
    "type": "result", "subtype": "success", "is_error": False, "duration_ms": 1234, "num_turns": 2,
    "result": "Wrote hello.txt" + (" (task seen)" if "Write hello.txt" in prompt else " (task missing)"), "session_id": "0f1e2d3c-aaaa-bbbb-cccc-000000000001",
    "total_cost_usd": 0.0123,
    "usage": {{"input_tokens": 100, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 20}},
}}))
'''


@pytest.mark.slow
def test_engine_runs_a_claude_worker_and_records_its_result(tmp_path, make_engine):
    script = tmp_path / "fake-claude"
    script.write_text(FAKE_CLAUDE.format(python=sys.executable))
    script.chmod(0o755)
    engine = make_engine(orchestrator={"worker": "claude", "claude_command": str(script)})
    job = run_job(engine, "x", tasks=["Write hello.txt"])
    _, workers = engine.queries.snapshot(job.root_id)
    (worker,) = [w for w in workers if w.job_id == job.id]
    assert job.status is JobStatus.COMPLETED
    assert worker.status is WorkerStatus.SUCCESS and worker.kind == "claude"
    assert worker.output == "Wrote hello.txt (task seen)"
    assert worker.cost_usd == pytest.approx(0.0123)
    assert (worker.tokens_in, worker.tokens_out) == (115, 20)
    assert worker.files_created == ["hello.txt"]


@pytest.mark.slow
def test_a_spent_cost_budget_stops_new_workers(tmp_path, make_engine):
    # Given workers that each report $0.0123, one at a time, under a $0.02 budget
    script = tmp_path / "fake-claude"
    script.write_text(FAKE_CLAUDE.format(python=sys.executable))
    script.chmod(0o755)
    engine = make_engine(orchestrator={"worker": "claude", "claude_command": str(script)})
    job = run_job(engine, "x", tasks=[f"Write hello.txt {i}" for i in range(5)], config={"max_workers": 1, "max_cost_usd": 0.02})
    # Then two ran (the second crossed the budget) and the other three never started
    _, workers = engine.queries.snapshot(job.root_id)
    statuses = [w.status for w in sorted(workers, key=lambda w: w.index)]
    assert statuses == [WorkerStatus.SUCCESS] * 2 + [WorkerStatus.SKIPPED] * 3
    assert "reached its budget max_cost_usd=$0.0200" in workers[-1].exit_reason
    assert job.status is JobStatus.PARTIAL


def test_a_request_cannot_lift_the_servers_budget(settings):
    from orchestrator.config import job_config
    from orchestrator.errors import ConfigError

    capped = settings.replace(workers={"max_cost_usd": 1.0})
    assert job_config(capped, {"max_cost_usd": 0.5})[0].max_cost_usd == 0.5
    for asked in (2.0, 0):
        with pytest.raises(ConfigError, match="budget"):
            job_config(capped, {"max_cost_usd": asked})


# -- the worker's environment, never the server's ---------------------------------------------------


def test_no_adapter_reads_the_servers_environment_or_home():
    """Adapters read ``WorkerContext.env`` (the worker's environment); os.environ and Path.home()
    are the server's, which workers.env, inherit_env and env_passthrough make another."""
    import re

    adapters = Path(__file__).resolve().parent.parent / "orchestrator" / "adapters"
    reads = re.compile(r"os\.environ|os\.getenv|environ\.get|Path\.home\(|expanduser\(")
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(adapters.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if reads.search(line.split("#", 1)[0])
    ]
    assert found == [], "read the worker's environment (ctx.env, or the env given to state_dirs) instead"


def test_without_home_in_the_workers_environment_its_home_is_the_users_not_the_servers(tmp_path, monkeypatch):
    import pwd

    from orchestrator.workers.adapters.aicli import home_of

    monkeypatch.setenv("HOME", str(tmp_path / "server-home"))
    assert home_of({"HOME": str(tmp_path / "mine")}) == tmp_path / "mine"
    assert home_of({}) == Path(pwd.getpwuid(os.getuid()).pw_dir)  # where a CLI without HOME looks
