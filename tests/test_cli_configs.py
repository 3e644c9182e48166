"""A CLI's model endpoint from its own config file (workers/cli_configs.py): taken from the file as the
server found it at its start, never as a worker may have left it since; a job whose CLI's file now
names an endpoint its workers may not reach is refused at submission, naming the setting."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.models import WorkerStatus
from orchestrator.process.backends import probe
from orchestrator.workers.adapters import get_adapter
from orchestrator.workers.cli_configs import CliConfigs, live_endpoints
from orchestrator.workers.confinement import Confinement
from orchestrator.workspace.layout import Workspace

from .conftest import make_settings, only_worker

pytestmark = pytest.mark.skipif(not probe().available, reason=f"no sandbox here: {probe().reason}")

PROVIDER = '[model_providers.gateway]\nname = "gw"\nbase_url = "http://127.0.0.1:{port}/v1"\nwire_api = "responses"\n'


@pytest.fixture
def codex_home(tmp_path, monkeypatch):
    home = tmp_path / "codex-home"
    home.mkdir()
    monkeypatch.setenv("CODEX_HOME", str(home))
    return home


def confinement(tmp_path, configs):
    settings = make_settings(tmp_path, orchestrator={"worker": "codex"}, workers={"sandbox": "on"})
    return settings, Confinement(settings, Workspace(settings.workspace_root), configs=configs)


def always(plan):
    return {(e.host, e.port): e.label for e in plan.always}


def test_the_config_as_found_at_the_start_opens_its_endpoint_and_a_later_one_does_not(tmp_path, codex_home):
    config = codex_home / "config.toml"
    config.write_text(PROVIDER.format(port=4000))
    settings, confined = confinement(tmp_path, CliConfigs.take(make_settings(tmp_path)))
    codex, env = get_adapter("codex"), {"CODEX_HOME": str(codex_home)}
    labels = always(confined.egress_plan(codex, env))
    assert labels[("127.0.0.1", 4000)].startswith(f"the model API of its model provider gateway in {config}")
    confined.check_endpoints(None, ["codex"], env)  # as found at the start: reached, not refused

    config.write_text(PROVIDER.format(port=4001))  # a worker's planting, or the user's edit since the start
    assert ("127.0.0.1", 4001) not in always(confined.egress_plan(codex, env))
    assert ("127.0.0.1", 4000) in always(confined.egress_plan(codex, env))  # the copy of the start
    assert [e.url for e in live_endpoints(codex, env)] == ["http://127.0.0.1:4001/v1"]
    with pytest.raises(ConfigError) as refused:
        confined.check_endpoints(None, ["codex"], env)
    message = refused.value.message
    assert f"codex's model provider gateway in {config} names the model endpoint 127.0.0.1:4001" in message, message
    assert 'Add "127.0.0.1:4001" to workers.sandbox_allow in config.yaml' in message, message
    assert refused.value.details == {"key": "workers.sandbox_allow"}


def test_without_a_copy_of_the_start_no_config_file_opens_anything(tmp_path, codex_home):
    (codex_home / "config.toml").write_text(PROVIDER.format(port=4000))
    _, confined = confinement(tmp_path, None)  # a gate's or a setup's: no snapshot
    assert ("127.0.0.1", 4000) not in always(confined.egress_plan(get_adapter("codex"), {"CODEX_HOME": str(codex_home)}))


def test_opencode_providers_of_its_global_config_and_of_opencode_config(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    (xdg / "opencode").mkdir(parents=True)
    (xdg / "opencode" / "opencode.jsonc").write_text(
        '{\n  // the gateway\n  "provider": {"gw": {"options": {"baseURL": "http://127.0.0.1:4100/v1"}}}\n}\n'
    )
    named = tmp_path / "elsewhere.json"
    named.write_text('{"provider": {"corp": {"options": {"baseURL": "https://llm.corp.example/v1"}}}}')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setenv("OPENCODE_CONFIG", str(named))
    _, confined = confinement(tmp_path, CliConfigs.take(make_settings(tmp_path)))
    labels = always(confined.egress_plan(get_adapter("opencode"), {"XDG_CONFIG_HOME": str(xdg), "OPENCODE_CONFIG": str(named)}))
    assert ("127.0.0.1", 4100) in labels and ("llm.corp.example", 443) in labels, labels


@pytest.mark.slow
def test_a_file_changed_after_the_submission_fails_the_attempt_at_its_start_naming_the_setting(make_engine, codex_home):
    # Between the job's submission and its worker's start the file names another endpoint (a worker
    # of another job may write CODEX_HOME): the attempt fails before its CLI starts, once, with the
    # setting to add, rather than waiting on a refused connection until its timeout.
    engine = make_engine(
        orchestrator={"worker": "codex", "codex_command": "/bin/true", "command": ["sh", "-c", "{task}"]},
        workers={"global_max_workers": 1, "max_retries": 2, "sandbox": "on"},
    )
    holder = engine.submission.submit("hold the one slot", {"worker": "command"}, ["sleep 2"])
    job = engine.submission.submit("say hi", None, ["Say hi"])
    (codex_home / "config.toml").write_text(PROVIDER.format(port=4002))
    assert engine.queries.wait(holder.id, 30).status.terminal
    done = engine.queries.wait(job.id, 30)
    worker = only_worker(engine, done)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1, worker.attempts
    assert worker.attempts[0].end_reason == "spawn_error", worker.attempts
    assert "names the model endpoint 127.0.0.1:4002" in worker.error, worker.error
    assert 'Add "127.0.0.1:4002" to workers.sandbox_allow in config.yaml' in worker.error, worker.error
