"""Issue 48, item 7's tail: where other processes read a worker's environment (Landlock: no PID
namespace, /proc shared), the provider key a CLI can read from a file comes by a file only that
worker reads, not by its environment (workers/environment.py's provider_keys_by_file): claude by
its ``apiKeyHelper`` (a ``--settings`` of its own), the anthropic worker by ``--api-key-file``.
The CLIs that cannot (codex, gemini, aider, opencode) keep it in the environment (docs/sandbox.md).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process import landlock
from orchestrator.process.backends import forget_probes, probe
from orchestrator.process.sandbox import Backend, SandboxMode, SandboxNetwork, decide
from orchestrator.workers.adapters import get_adapter
from orchestrator.workers.environment import provider_keys_by_file

from .conftest import explain, find_cli, only_worker, run_job
from .mock_model_server import QUIET_ENV, MockModelServer, Text, ToolUse

KEY = "sk-ant-provider-key-0123456789"
CLAUDE_ARGV = ["claude", "-p", "--output-format", "stream-json", "--verbose", "--", "the prompt"]


def spec(backend: Backend):
    """A sandbox spec of ``backend`` (only its backend matters here)."""
    base = decide(SandboxMode.ON, probe(backend="bubblewrap"), network=SandboxNetwork.ALLOW).spec
    if base is None:
        pytest.skip("no bubblewrap here to build a spec from")
    return replace(base, backend=backend)


def env_of(tmp_path: Path) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": KEY, "OPENAI_API_KEY": "sk-openai", "TMPDIR": str(tmp_path / "tmp"), "PATH": os.defpath}


class EnvironScan:
    """While open, every process whose /proc/PID/environ holds ``secret`` (its command line, in the
    list it yields), as a root worker under Landlock would read them."""

    def __init__(self, secret: str) -> None:
        self.needle = secret.encode()
        self.seen: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._scan, daemon=True)

    def _scan(self) -> None:
        while not self.done.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if self.needle in Path(f"/proc/{pid}/environ").read_bytes():
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                        self.seen.append(cmdline[:200].decode(errors="replace"))
                except OSError:
                    pass
            self.done.wait(0.1)

    def __enter__(self) -> list[str]:
        self.thread.start()
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)


def landlock_or_skip() -> None:
    forget_probes()
    if not probe(backend="landlock").available or landlock.abi() < 4:
        pytest.skip("no Landlock (ABI 4) here")


def test_claude_reads_its_key_by_its_api_key_helper_under_landlock(tmp_path):
    argv, env = provider_keys_by_file(get_adapter("claude"), list(CLAUDE_ARGV), env_of(tmp_path), spec(Backend.LANDLOCK))
    assert "ANTHROPIC_API_KEY" not in env and env["OPENAI_API_KEY"] == "sk-openai"  # claude's own key only
    assert argv[:2] == ["claude", "--settings"]
    helper = json.loads(argv[2])["apiKeyHelper"]
    assert argv[3:] == CLAUDE_ARGV[1:]
    (key_file,) = (tmp_path / "tmp").iterdir()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The helper, run as claude runs it (/bin/sh), prints the key.
    done = subprocess.run(["/bin/sh", "-c", helper], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == KEY


def test_the_anthropic_worker_reads_its_key_by_a_file_under_landlock(tmp_path):
    argv, env = provider_keys_by_file(get_adapter("anthropic"), ["python", "-m", "w"], env_of(tmp_path), spec(Backend.LANDLOCK))
    assert "ANTHROPIC_API_KEY" not in env and argv[:3] == ["python", "-m", "w"] and argv[3] == "--api-key-file"
    assert Path(argv[4]).read_text().strip() == KEY


def test_nothing_moves_where_the_environment_is_private_or_the_cli_cannot(tmp_path):
    env = env_of(tmp_path)
    # bubblewrap (a PID namespace of its own) and unconfined: no other tree reads the environment
    for sandbox in (spec(Backend.BUBBLEWRAP), None):
        assert provider_keys_by_file(get_adapter("claude"), list(CLAUDE_ARGV), dict(env), sandbox) == (CLAUDE_ARGV, env)
    # a CLI that reads its key from the environment only keeps it there
    gemini = {**env, "GEMINI_API_KEY": "g-key"}
    assert provider_keys_by_file(get_adapter("gemini"), ["gemini"], dict(gemini), spec(Backend.LANDLOCK)) == (["gemini"], gemini)
    # the user's own --settings (claude reads one): left alone, and no key file left behind
    own = [*CLAUDE_ARGV[:-2], "--settings", "/my/settings.json", "--", "the prompt"]
    assert provider_keys_by_file(get_adapter("claude"), list(own), dict(env), spec(Backend.LANDLOCK)) == (own, env)
    assert not list((tmp_path / "tmp").iterdir())


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's sandboxes")
def test_a_landlock_worker_s_provider_key_is_in_no_process_environment(make_engine, tmp_path):
    """Through the engine, the anthropic kind under Landlock against a loopback mock: the mock gets
    the key, and while the worker runs (a command of 3 s) no process's /proc/PID/environ holds it
    (before: the worker's own did, readable by every process of another tree as root)."""
    landlock_or_skip()
    script = [ToolUse("run_command", {"argv": ["sleep", "3"]}), Text("ok")]
    with MockModelServer(script, lifetime=90) as mock:
        engine = make_engine(
            orchestrator={"worker": "anthropic", "planner": "heuristic"},
            workers={
                "env": {"ANTHROPIC_BASE_URL": mock.url, "ANTHROPIC_API_KEY": KEY},
                "sandbox": "on",
                "sandbox_backend": "landlock",
                "max_retries": 0,
            },
            anthropic={"model": "claude-sonnet-5-5", "max_retries": 0},
        )
        with EnvironScan(KEY) as seen:
            job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=90)
        worker = only_worker(engine, job)
        why = explain(engine, job, mock)
        assert job.status is JobStatus.COMPLETED and worker.status is WorkerStatus.SUCCESS, why
        assert worker.sandbox == "landlock", why
        sent = [
            r.headers.get("x-api-key") or r.headers.get("authorization", "").removeprefix("Bearer ") for r in mock.conversation
        ]
        assert sent == [KEY, KEY], why  # (the SDK sends it as a bearer token)
    assert not seen, f"the provider key in the environment of: {sorted(set(seen))}"
    assert "--api-key-file" in worker.attempts[0].argv, worker.attempts[0].argv
    forget_probes()


CLAUDE = find_cli("claude")


@pytest.mark.slow
@pytest.mark.real_cli
@pytest.mark.skipif(CLAUDE is None, reason="claude CLI not found (run tests/install_cli.sh)")
def test_a_landlock_claude_worker_gets_its_key_by_its_helper_and_no_environment_holds_it(make_engine, tmp_path, monkeypatch):
    """The real claude under Landlock, its key given in workers.env (the server's own environment
    is readable too where /proc is shared: docs/sandbox.md): the mock gets the key its apiKeyHelper
    printed, and no process's environment held it while claude ran."""
    landlock_or_skip()
    home = tmp_path / "home"
    home.mkdir()
    for name in [n for n in os.environ if n.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))]:
        monkeypatch.delenv(name)
    with MockModelServer([Text("Hello by the helper")], lifetime=90) as mock:
        for name, value in {**QUIET_ENV, "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude")}.items():
            monkeypatch.setenv(name, value)
        engine = make_engine(
            orchestrator={"worker": "claude", "claude_command": CLAUDE, "planner": "heuristic"},
            workers={
                "env": {"ANTHROPIC_BASE_URL": mock.url, "ANTHROPIC_API_KEY": KEY},
                "sandbox": "on",
                "sandbox_backend": "landlock",
                "max_retries": 0,
                "default_timeout": 90,
            },
        )
        with EnvironScan(KEY) as seen:
            job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=120)
        worker = only_worker(engine, job)
        why = explain(engine, job, mock)
        assert job.status is JobStatus.COMPLETED and worker.status is WorkerStatus.SUCCESS, why
        assert worker.sandbox == "landlock" and worker.output == "Hello by the helper", why
        assert mock.conversation and all(r.headers.get("x-api-key") == KEY for r in mock.conversation), why
    assert not seen, f"the provider key in the environment of: {sorted(set(seen))}"
    assert "--settings" in worker.attempts[0].argv, worker.attempts[0].argv
    forget_probes()
