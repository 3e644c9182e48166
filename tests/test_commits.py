"""The commits a job makes read like a person's who used an AI CLI: by the user
(the host's git identity; the orchestrator's only where there is none), crediting the AI by a
``Co-authored-by:`` trailer, naming the job and the worker with one trailer each on every commit,
under a subject cut at a word's end. Real git, real repositories made here, real processes."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from orchestrator.git.commits import ORCHESTRATOR, Identity, identity_of
from orchestrator.git.repository import snapshot_commit
from orchestrator.models import JobStatus, WorkerRecord
from orchestrator.workers.adapters import ADAPTERS, co_author_of, get_adapter

from .conftest import make_settings, run_job
from .helpers.worktree import git, snapshot, workers

USER = Identity("Ada Lovelace", "ada@example.org")


def test_each_ai_kind_credits_its_cli_and_the_model_it_runs_and_no_other_kind_does(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, orchestrator={"model": "claude-sonnet-4", "opencode_model": "anthropic/claude-opus-4"})
    none = make_settings(tmp_path)

    def line(kind: str, role_model: str | None = None, where=settings) -> str | None:
        return get_adapter(kind).co_author(where, role_model)

    assert line("claude") == "Claude Code (claude-sonnet-4) <noreply@anthropic.com>"  # orchestrator.model
    assert line("claude", "", none) == "Claude Code <noreply@anthropic.com>"  # the CLI's default: not named
    assert line("codex", "gpt-5-codex") == "Codex (gpt-5-codex) <noreply@openai.com>"  # the role's model wins
    assert line("gemini", "gemini-2.5-pro") == "Gemini CLI (gemini-2.5-pro) <noreply@google.com>"
    assert line("aider", "anthropic/claude-sonnet-4") == "aider (anthropic/claude-sonnet-4) <aider@aider.chat>"
    assert line("ollama", where=none) == "Ollama (llama3.2) <noreply@ollama.com>"  # orchestrator.ollama_model
    assert line("opencode") == "opencode (anthropic/claude-opus-4) <noreply@opencode.ai>"
    assert line("opencode", where=make_settings(tmp_path, orchestrator={"model": "gpt-5"})) == "opencode <noreply@opencode.ai>"
    assert line("anthropic", where=none) == f"Claude ({none.anthropic.model}) <noreply@anthropic.com>"
    # Neither a command of the user's nor the simulated worker is an AI: no trailer claims one.
    assert line("command") is None and line("simulated") is None
    assert {kind for kind, cls in ADAPTERS.items() if cls().co_author(none, None)} == {
        kind for kind, cls in ADAPTERS.items() if cls.is_ai
    }
    # A model's name never breaks the trailer's "Name (model) <email>".
    assert line("codex", "o3) <x@y>\nSigned-off-by: z") == "Codex (o3 x@ySigned-off-by: z) <noreply@openai.com>"
    # From a worker's record: its kind, its role's model; a kind this server does not know credits no one.
    worker = WorkerRecord(job_id="j", root_id="j", index=1, name="worker_1", depth=0, task="t", kind="gemini", model="g-1")
    assert co_author_of(worker, settings) == "Gemini CLI (g-1) <noreply@google.com>"
    assert co_author_of(dataclasses.replace(worker, kind="gone"), settings) is None


def bare_git_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """No identity outside a repository: an empty HOME, no system config."""
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for name in ("AUTHOR", "COMMITTER"):
        for part in ("NAME", "EMAIL"):
            monkeypatch.delenv(f"GIT_{name}_{part}", raising=False)


def test_the_identity_is_the_repositorys_else_the_global_one_else_the_orchestrators_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare_git_env(monkeypatch, tmp_path / "home")
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", str(repo))
    config = (repo / ".git" / "config").read_bytes()
    assert identity_of(repo) == ORCHESTRATOR  # none anywhere: never one guessed from the host name
    (tmp_path / "home" / ".gitconfig").write_text("[user]\n\tname = Global Grace\n\temail = grace@example.org\n")
    assert identity_of(repo) == Identity("Global Grace", "grace@example.org")
    git(repo, "config", "user.name", USER.name)
    git(repo, "config", "user.email", USER.email)
    config = (repo / ".git" / "config").read_bytes()
    assert identity_of(repo) == USER
    assert (repo / ".git" / "config").read_bytes() == config
    assert not (repo / ".git" / "config.worktree").exists()


FAKE_CLAUDE = """#!{python}
# Like `claude -p --output-format stream-json`: writes a file named after its worker, prints a result.
import json, os
name = os.environ["ORCHESTRATOR_WORKER_ID"]
with open(name + ".txt", "w") as handle:
    handle.write(name + "\\n")
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "result": "wrote " + name}}))
"""
# Like claude's stream-json when it ran its default model: its init event names the model, and its
# result's modelUsage counts each model it called (a small one for side tasks, the main one).
FAKE_CLAUDE_MODELS = """#!{python}
import json, os
name = os.environ["ORCHESTRATOR_WORKER_ID"]
with open(name + ".txt", "w") as handle:
    handle.write(name + "\\n")
print(json.dumps({{"type": "system", "subtype": "init", "model": "claude-sonnet-4-5-20250929"}}))
usage = {{"claude-haiku-4-5-20251001": {{"outputTokens": 40}}, "claude-sonnet-4-5-20250929": {{"outputTokens": 900}}}}
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "result": "wrote", "modelUsage": usage}}))
"""
# A subtask longer than a subject, with a long path where a subject must end.
LONG = "Add thousands separators to intcomma, documented in src/humanize/number_formatting_helpers.py for every locale"


def commits_of(host: Path, job, own: list[str]) -> list[dict[str, str]]:
    """The workers' own commits (``own``), then the result branch's: who, subject, trailers."""
    found = own + git(host, "rev-list", "--reverse", f"{job.merge.base}..orchestrator/{job.id}/result").split()
    fmt = "%an <%ae>%n%cn <%ce>%n%s%n%(trailers:key=Orchestrator-Job,valueonly,separator=%x2C)%n"
    fmt += "%(trailers:key=Orchestrator-Worker,valueonly,separator=%x2C)%n%(trailers:key=Co-authored-by,valueonly,separator=%x2C)"
    keys = ("author", "committer", "subject", "job", "worker", "co_author")
    return [dict(zip(keys, git(host, "log", "-1", f"--format={fmt}", c).split("\n"))) for c in found]


@pytest.mark.slow
def test_a_jobs_commits_are_the_users_credit_the_ai_and_name_one_worker_each(hosted, tmp_path: Path) -> None:
    host, folder, make = hosted
    git(host, "config", "user.name", USER.name)
    git(host, "config", "user.email", USER.email)
    config = (host / ".git" / "config").read_bytes()
    before = snapshot(host, folder)
    script = tmp_path / "fake-claude"
    script.write_text(FAKE_CLAUDE.format(python=sys.executable))
    script.chmod(0o755)
    engine = make(orchestrator={"worker": "claude", "claude_command": str(script), "model": "claude-sonnet-4"})
    job = run_job(engine, "x", tasks=[LONG, "Write the tests."])
    found = workers(engine, job)
    assert job.status is JobStatus.COMPLETED, [w.error for w in found.values()]
    made = commits_of(host, job, [found["worker_1"].commit, found["worker_2"].commit])
    assert len(made) == 4  # two workers' commits, then one result commit each
    for commit, worker in zip(made, ["worker_1", "worker_2"] * 2):
        assert commit["author"] == commit["committer"] == f"{USER.name} <{USER.email}>", commit
        assert commit["job"] == job.id and commit["worker"] == worker, commit
        assert commit["co_author"] == "Claude Code (claude-sonnet-4) <noreply@anthropic.com>", commit
    subjects = [c["subject"] for c in made]
    assert subjects[1] == subjects[3] == "Write the tests"
    assert subjects[0] == subjects[2] == "Add thousands separators to intcomma, documented in…"
    assert all(len(s) < 72 for s in subjects)
    assert snapshot(host, folder) == before and (host / ".git" / "config").read_bytes() == config


@pytest.mark.slow
def test_without_any_git_identity_the_commits_are_the_orchestrators_and_a_command_worker_credits_no_ai(
    hosted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare_git_env(monkeypatch, tmp_path / "empty home")
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=[f"echo one > one.txt; : {LONG}"])
    assert job.status is JobStatus.COMPLETED
    made = commits_of(host, job, [workers(engine, job)["worker_1"].commit])
    assert len(made) == 2
    for commit in made:
        assert commit["author"] == commit["committer"] == "orchestrator <orchestrator@localhost>", commit
        assert commit["job"] == job.id and commit["worker"] == "worker_1" and commit["co_author"] == "", commit
        assert commit["subject"] == "echo one > one.txt; : Add thousands separators to intcomma, documented…"
    assert snapshot(host, folder) == before


def test_the_snapshot_of_uncommitted_changes_is_the_users_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare_git_env(monkeypatch, tmp_path / "home")
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "config", "user.name", USER.name)
    git(repo, "config", "user.email", USER.email)
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-qm", "one")
    (repo / "a.txt").write_text("two\n")  # uncommitted
    status = git(repo, "status", "--porcelain=v2")
    made = snapshot_commit(repo, "HEAD")
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", made).strip() == (
        f"{USER.name} <{USER.email}>|{USER.name} <{USER.email}>|Uncommitted changes the job started from"
    )
    assert git(repo, "show", f"{made}:a.txt") == "two\n" and git(repo, "status", "--porcelain=v2") == status


@pytest.mark.slow
def test_the_trailer_names_the_model_the_cli_reported_when_none_was_configured(hosted, tmp_path: Path) -> None:
    host, folder, make = hosted
    before = snapshot(host, folder)
    script = tmp_path / "fake-claude"
    script.write_text(FAKE_CLAUDE_MODELS.format(python=sys.executable))
    script.chmod(0o755)
    # Given no model configured (the CLI's own default), and a CLI that reports the models it ran
    engine = make(orchestrator={"worker": "claude", "claude_command": str(script)})
    job = run_job(engine, "x", tasks=["Write the tests."])
    (worker,) = workers(engine, job).values()
    assert job.status is JobStatus.COMPLETED, worker.error
    # Then the worker's commit and the result's credit the model that wrote most of the work
    for commit in commits_of(host, job, [worker.commit]):
        assert commit["co_author"] == "Claude Code (claude-sonnet-4-5-20250929) <noreply@anthropic.com>", commit
    assert worker.reported_model == "claude-sonnet-4-5-20250929"
    assert snapshot(host, folder) == before


def test_claudes_model_is_read_from_its_init_event_when_its_result_counts_none() -> None:
    init = json.dumps({"type": "system", "subtype": "init", "model": "claude-opus-4-1"})
    result = json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "ok"})
    assert get_adapter("claude").parse(f"{init}\n{result}\n", 0, max_chars=1000).model == "claude-opus-4-1"
    assert get_adapter("claude").parse(f"{result}\n", 0, max_chars=1000).model is None
