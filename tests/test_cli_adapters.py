"""The gemini, aider, opencode and ollama adapters on recorded output,
and the worker log's end marker on a line of its own. The real CLIs are in tests/test_real_*.py."""

from __future__ import annotations

import sys

from orchestrator.models import WorkerStatus
from orchestrator.workers.adapters import ADAPTERS, get_adapter

from .conftest import run_job

AIDER_BANNER = "Aider v0.86.2\nModel: openai/mock-model with whole edit format\nGit repo: none\nRepo-map: disabled\n\n"


def parse(kind: str, text: str, code: int | None = 0):
    return get_adapter(kind).parse(text, code, max_chars=10_000)


# ----------------------------------------------------------------------------- aider


def test_aider_cost_is_the_sum_of_the_messages_not_the_rounded_session_total():
    text = (
        AIDER_BANNER + "a.txt\n```\nA\n```\n\nTokens: 2.9k sent, 120 received. Cost: $0.0073 message, $0.0073 session.\n"
        "b.txt\n```\nB\n```\n\nTokens: 3.1k sent, 80 received. Cost: $0.0077 message, $0.02 session.\n"
    )
    parsed = parse("aider", text)
    assert parsed.ok is None and parsed.error is None
    assert parsed.cost_usd == 0.015  # not 0.02
    assert (parsed.tokens_in, parsed.tokens_out) == (6000, 200)


def test_aider_rate_limit_reports_the_last_error_block_as_transient():
    block = (
        "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for\n"
        "requests. Please try again in 20s.\n"
        "The API provider has rate limited you. Try again later or check your quotas.\n"
    )
    text = (
        AIDER_BANNER + "litellm.APIConnectionError: APIConnectionError: OpenAIException - Connection error.\n"
        "Retrying in 0.2 seconds...\n" + block + "Retrying in 0.5 seconds...\n" + block
    )
    parsed = parse("aider", text)
    assert parsed.ok is False
    assert parsed.error.startswith("aider: litellm.RateLimitError: RateLimitError"), parsed.error
    assert "Retrying in" not in parsed.error and "Connection error" not in parsed.error
    assert parsed.failure_class == "transient" and parsed.retryable
    assert parsed.retry_after == 20.0


def test_aider_bad_key_is_auth_and_not_retried():
    text = AIDER_BANNER + (
        "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect \n"
        "API key provided: sk-bad.\nThe API provider is not able to authenticate you. Check your API key.\n"
    )
    parsed = parse("aider", text)
    assert parsed.ok is False and parsed.failure_class == "auth" and parsed.retryable is False


def test_aider_says_why_it_cannot_spawn_and_other_kinds_do_not():
    assert "runs no shell commands" in get_adapter("aider").no_spawn_reason
    assert all(get_adapter(kind).no_spawn_reason == "" for kind in ADAPTERS if kind != "aider")


def test_an_aider_worker_s_prompt_offers_no_child_jobs_and_says_why(make_engine):
    from orchestrator.config import job_config
    from orchestrator.models import JobRecord, TaskNode, WorkerRecord

    engine = make_engine(orchestrator={"worker": "aider"})
    engine.api_url = "http://127.0.0.1:9"  # recursion on: every other kind would be offered the spawn command
    config = job_config(engine.settings, None)[0]
    job = JobRecord(id="a1b2c3d4e5f6", root_id="a1b2c3d4e5f6", request="r", tasks=["t"], config=config)
    rec = WorkerRecord(job_id="a1b2c3d4e5f6", root_id="a1b2c3d4e5f6", name="worker_1", index=1, depth=0, task="t", kind="aider")
    prompt = engine.prompts.render(rec, job).text
    assert "You cannot start child jobs: aider runs no shell commands when it runs unattended" in prompt
    assert "orchestrator-spawn" not in prompt and "orchestrator spawn" not in prompt
    # A job with a gemini worker (its task's kind) is told how, in its shared block.
    other = JobRecord(id="b1b2c3d4e5f6", root_id="b1b2c3d4e5f6", request="r", tasks=["t"], config=config)
    other.nodes = [TaskNode("t1", kind="gemini")]
    rec.root_id = rec.job_id = other.id
    rec.kind = "gemini"
    assert "orchestrator-spawn --wait" in engine.prompts.render(rec, other).text


# ----------------------------------------------------------------------------- gemini


def gemini_error(code: int, message: str) -> str:
    return (
        'Error when talking to Gemini API\n{\n  "session_id": "s1",\n  "error": {\n    "type": "Error",\n'
        f'    "message": {message!r},\n    "code": {code}\n  }}\n}}\n'
    ).replace("'", '"')


def test_gemini_errors_are_classified_from_the_code_in_its_error_json():
    bad_key = parse("gemini", gemini_error(400, "API key not valid. Please pass a valid API key."), 144)
    assert (bad_key.failure_class, bad_key.retryable) == ("auth", False)
    assert bad_key.error.startswith("gemini: API key not valid")
    for code in (401, 403):
        parsed = parse("gemini", gemini_error(code, "Request had invalid credentials."), code % 256)
        assert (parsed.failure_class, parsed.retryable) == ("auth", False), code
    bad = parse("gemini", gemini_error(400, "Invalid JSON payload received."), 144)
    assert (bad.failure_class, bad.retryable) == ("bad_request", False)
    for code in (429, 503):
        parsed = parse("gemini", gemini_error(code, "Resource has been exhausted (e.g. check quota)."), code % 256)
        assert (parsed.failure_class, parsed.retryable) == ("transient", True), code
    turn_limit = parse("gemini", "Reached max session turns\n", 53)
    assert (turn_limit.failure_class, turn_limit.retryable) == ("bad_request", False)


def worker_ctx(tmp_path, time_left=600.0, env=None):
    """A worker's context; ``env``: the worker's environment (a HOME of its own in tmp_path by default)."""
    from orchestrator.workers.adapters.base import WorkerContext

    prompts = tmp_path / "state" / "prompts"
    prompts.mkdir(parents=True, exist_ok=True)
    return WorkerContext(
        task="t",
        prompt="p",
        prompt_file=prompts / "depth_0_worker_1.txt",
        worker_dir=tmp_path / "w",
        depth=0,
        max_recursion_depth=3,
        attempt=1,
        settings=None,
        time_left=time_left,
        env={"HOME": str(tmp_path)} if env is None else env,
    )


def test_gemini_worker_home_adds_shell_limit_and_attempts_keeps_the_user_s(tmp_path, monkeypatch):
    import json
    import os

    user = tmp_path / "user"
    (user / ".gemini").mkdir(parents=True)
    (user / ".gemini" / "oauth_creds.json").write_text("{}")
    (user / ".env").write_text("GEMINI_API_KEY=x\n")
    (user / ".gemini" / "settings.json").write_text('{// mine\n "general": {"maxAttempts": 5}, "ui": {"theme": "x"}}')
    # The worker's GEMINI_CLI_HOME (workers.env), not the server's: its environment has another.
    server = tmp_path / "server"
    (server / ".gemini").mkdir(parents=True)
    (server / ".gemini" / "settings.json").write_text('{"general": {"maxAttempts": 9}}')
    monkeypatch.setenv("GEMINI_CLI_HOME", str(server))
    monkeypatch.setenv("HOME", str(server))
    given = {"GEMINI_CLI_HOME": str(user)}  # workers.env
    env = get_adapter("gemini").extra_env(worker_ctx(tmp_path, 600.4, env=given))
    mine = tmp_path / "state" / "prompts" / "depth_0_worker_1.gemini-home"
    assert env == {"GEMINI_CLI_HOME": str(mine)}
    settings = json.loads((mine / ".gemini" / "settings.json").read_text())
    assert settings["general"]["maxAttempts"] == 5  # the user's value wins
    assert settings["tools"]["shell"]["inactivityTimeout"] == 601
    assert settings["ui"] == {"theme": "x"}
    assert os.readlink(mine / ".gemini" / "oauth_creds.json") == str(user / ".gemini" / "oauth_creds.json")
    assert os.readlink(mine / ".env") == str(user / ".env")
    (user / ".gemini" / "settings.json").write_text('{"tools": {"shell": {"inactivityTimeout": 42}}}')
    get_adapter("gemini").extra_env(worker_ctx(tmp_path, env=given))
    settings = json.loads((mine / ".gemini" / "settings.json").read_text())
    assert settings["tools"]["shell"]["inactivityTimeout"] == 42 and settings["general"]["maxAttempts"] == 3
    (user / ".gemini" / "settings.json").write_text("[1]")
    assert get_adapter("gemini").extra_env(worker_ctx(tmp_path, env=given)) == {}  # not gemini's either: leave it alone
    assert json.loads((user / ".gemini" / "settings.json").read_text()) == [1]


def test_opencode_worker_env_has_its_own_database_and_bash_limit_unless_the_user_set_them(tmp_path, monkeypatch):
    # The server's environment says the opposite each time: only the worker's counts.
    monkeypatch.setenv("OPENCODE_DB", "/server.db")
    monkeypatch.setenv("OPENCODE_EXPERIMENTAL_BASH_DEFAULT_TIMEOUT_MS", "7")
    ctx = worker_ctx(tmp_path, 300.0)
    env = get_adapter("opencode").extra_env(ctx)
    assert env == {
        "OPENCODE_DB": str(ctx.prompt_file.with_name("depth_0_worker_1.opencode") / "opencode.db"),  # a folder of its own
        "OPENCODE_EXPERIMENTAL_BASH_DEFAULT_TIMEOUT_MS": "300000",
    }
    for name in ("OPENCODE_DB", "OPENCODE_EXPERIMENTAL_BASH_DEFAULT_TIMEOUT_MS"):
        monkeypatch.delenv(name)
    mine = {"OPENCODE_DB": "/x.db", "OPENCODE_EXPERIMENTAL_BASH_DEFAULT_TIMEOUT_MS": "5"}  # workers.env
    assert get_adapter("opencode").extra_env(worker_ctx(tmp_path, 300.0, env=mine)) == {}


# ----------------------------------------------------------------------------- opencode


def test_opencode_error_events_are_classified_with_status_and_retry_after():
    def event(**data) -> str:
        return '{"type":"error","sessionID":"s","error":{"name":"APIError","data":%s}}\n' % __import__("json").dumps(data)

    limited = parse(
        "opencode",
        event(message="Rate limit reached", statusCode=429, isRetryable=True, responseHeaders={"Retry-After": "20"}),
        1,
    )
    assert (limited.failure_class, limited.retryable, limited.retry_after) == ("transient", True, 20.0)
    auth = parse("opencode", event(message="Incorrect API key provided", statusCode=401, isRetryable=False), 1)
    assert (auth.failure_class, auth.retryable) == ("auth", False)
    bad = parse("opencode", event(message="model not found", statusCode=404, isRetryable=False), 1)
    assert (bad.failure_class, bad.retryable) == ("bad_request", False)


def test_ollama_classes():
    assert parse("ollama", "Error: pull model manifest: file does not exist\n", 1).failure_class == "bad_request"
    assert parse("ollama", "Error: could not connect to ollama app, is it running?\n", 1).failure_class == "transient"


# ----------------------------------------------------------------------------- the log's end marker


def test_end_marker_starts_on_its_own_line_after_output_without_a_newline(make_engine):
    script = "import sys; sys.stdout.write('{\"done\": true}'); sys.stdout.flush()"
    engine = make_engine(orchestrator={"worker": "command", "command": [sys.executable, "-c", script]})
    job = run_job(engine, "x", tasks=["t"])
    (worker,) = engine.queries.snapshot(job.root_id)[1]
    log = (engine.workspace.job_dir(job.id) / worker.log_path).read_text()
    assert worker.status is WorkerStatus.SUCCESS
    assert '{"done": true}\n===== attempt 1 exited with code 0' in log, log
    assert worker.output == '{"done": true}'
