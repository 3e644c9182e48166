"""A job whose worker kind cannot start here is refused at submission (422, naming what to set),
before anything is written: it used to be accepted (202) and every worker then failed."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def _jobs_on_disk(live):
    return sorted(p.name for p in live.engine.workspace.root.glob("job_*"))


def test_the_command_kind_without_orchestrator_command_is_a_422_that_names_the_setting(make_live):
    live = make_live(orchestrator={"worker": "simulated"})
    answer = live.submit(request="notes", tasks=["a", "b"], config={"worker": "command"})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "invalid_config"
    assert "worker kind command cannot run here" in body["message"]
    assert "orchestrator.command" in body["message"] and "config set orchestrator.command" in body["message"]
    assert _jobs_on_disk(live) == [] and live.call("GET", "/api/v1/jobs").json()["jobs"] == []


def test_a_cli_kind_not_on_the_workers_path_is_a_422_that_names_the_program_and_the_fix(make_live, tmp_path):
    live = make_live(orchestrator={"worker": "simulated", "claude_command": str(tmp_path / "no-such-claude")})
    answer = live.submit(request="notes", tasks=["a"], config={"worker": "claude"})
    assert answer.status_code == 422, answer.text
    message = answer.json()["message"]
    assert "worker kind claude cannot run here" in message and "no-such-claude" in message
    assert "orchestrator.claude_command" in message and "doctor --worker claude" in message
    assert _jobs_on_disk(live) == []


def test_the_configured_kind_is_checked_as_the_requested_one(make_live):
    live = make_live(orchestrator={"worker": "command"})
    refused = live.submit(request="notes", tasks=["a"])
    assert refused.status_code == 422 and "worker kind command cannot run here" in refused.json()["message"]
    assert _jobs_on_disk(live) == []


def test_a_request_carrying_a_command_is_refused_saying_where_a_command_is_set(make_live):
    live = make_live(orchestrator={"worker": "simulated"})
    answer = live.submit(request="notes", config={"worker": "command", "command": ["rm", "-rf", "/"]})
    assert answer.status_code == 422, answer.text
    message = answer.json()["message"]
    assert message.startswith("config.command: a request never carries a command")
    assert "orchestrator.command" in message and "config.yaml" in message
    assert _jobs_on_disk(live) == []


def test_a_command_on_the_workers_path_only_is_accepted(make_live):
    # orchestrator-python is on the workers' PATH (the orchestrator's helpers), not the server's
    live = make_live(orchestrator={"worker": "command", "command": ["orchestrator-python", "-c", "print(1)"]})
    assert live.submit(request="notes", tasks=["a"]).status_code == 202


def test_a_command_relative_to_the_workers_folder_is_left_to_the_worker(make_live):
    live = make_live(orchestrator={"worker": "command", "command": ["./agent.sh", "{task}"]})
    assert live.submit(request="notes", tasks=["a"]).status_code == 202
