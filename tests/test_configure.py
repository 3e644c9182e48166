"""``./orchestrator.sh config get KEY`` and ``config set KEY VALUE ...`` (cli/configure.py): the
values read back as the server reads them, comments kept, bad input refused with the file
unchanged, and what this folder's running server does with a change (a real server)."""

from __future__ import annotations

import os
import subprocess

import pytest

from orchestrator.config import load_settings

from .conftest import API_KEY, ROOT
from .helpers.scripts import free_port

TEXT = '# my settings\napi:\n  api_key: "k-123"  # the key\norchestrator:\n  worker: "auto"  # which kind\n'


def orch(home, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ORCHESTRATOR_HOME": str(home)}
    env.pop("ORCHESTRATOR_CONFIG", None)
    return subprocess.run([str(ROOT / "orchestrator.sh"), "config", *argv], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def home(tmp_path):
    (tmp_path / "config.yaml").write_text(TEXT)
    return tmp_path


def test_set_writes_the_values_keeps_comments_and_get_reads_them_back(home):
    done = orch(
        home,
        "set",
        "orchestrator.worker",
        "command",
        "orchestrator.command",
        '["bash", "-c", "{task}"]',
        "workers.max_retries",
        "0",
        "tasks.gates",
        '[{"name": "tests", "run": ["pytest", "-q"]}]',
    )
    assert done.returncode == 0, done.stderr
    assert "no server of this folder runs: it reads the file when it starts" in done.stdout
    text = (home / "config.yaml").read_text()
    assert text.startswith("# my settings\n") and "# the key" in text and 'worker: "command"  # which kind' in text
    settings = load_settings(home / "config.yaml", base_dir=home)
    assert settings.orchestrator.command == ["bash", "-c", "{task}"] and settings.workers.max_retries == 0
    assert settings.tasks.gates[0]["name"] == "tests"
    assert orch(home, "get", "orchestrator.command").stdout == '["bash", "-c", "{task}"]\n'
    assert orch(home, "get", "orchestrator.worker").stdout == "command\n"
    assert orch(home, "get", "api.api_key").stdout == "k-123\n"  # KEY=$(... config get api.api_key)
    assert orch(home, "get", "workers.max_retries").stdout == "0\n"


def test_a_secret_is_written_but_never_echoed(home):
    done = orch(home, "set", "api.api_key", "s3cret-value")
    assert done.returncode == 0 and "api.api_key: (set)" in done.stdout and "s3cret" not in done.stdout + done.stderr
    assert orch(home, "get", "api.api_key").stdout == "s3cret-value\n"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["set", "orchestrator.wrker", "command"], "unknown setting 'orchestrator.wrker'"),
        (["set", "orchestrator.worker", "nope"], "orchestrator.worker='nope' is not allowed. Choose one of: auto"),
        (["set", "workers.max_retries", "-3"], "workers.max_retries=-3 is out of range"),
        (["set", "workers.max_retries", "[1"], "workers.max_retries: '[1' is not a YAML or JSON value"),
        (["set", "orchestrator.worker"], "config set takes SECTION.KEY VALUE pairs"),
        (["get"], "config get takes one SECTION.KEY"),
        (["get", "nosuch"], "unknown setting 'nosuch'"),
    ],
)
def test_bad_input_names_what_is_wrong_and_changes_nothing(home, argv, said):
    done = orch(home, *argv)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    if "out of range" in said or "not allowed" in said:  # refused by the load of the changed file
        assert f"{home / 'config.yaml'} was not changed" in done.stderr
    assert (home / "config.yaml").read_text() == TEXT


def test_set_without_a_config_file_says_to_install_first(tmp_path):
    done = orch(tmp_path, "set", "orchestrator.worker", "command")
    assert done.returncode == 2 and "run ./install.sh first" in done.stderr
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.slow
def test_set_says_what_the_running_server_does_with_each_change(tmp_path):
    port = free_port()
    (tmp_path / "config.yaml").write_text(f'api:\n  api_key: "{API_KEY}"\n  port: {port}\nsimulated:\n  duration: 0.05\n')
    env = {**os.environ, "ORCHESTRATOR_HOME": str(tmp_path)}
    env.pop("ORCHESTRATOR_CONFIG", None)
    try:
        started = subprocess.run(
            [str(ROOT / "orchestrator.sh"), "start-server", "--url"], env=env, capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0 and started.stdout == f"http://127.0.0.1:{port}\n", started.stdout + started.stderr
        live = orch(tmp_path, "set", "orchestrator.worker", "simulated")
        assert f"the server at http://127.0.0.1:{port} applies it to its next job (no restart needed)" in live.stdout
        later = orch(tmp_path, "set", "workers.max_disk_mb", "500")
        assert "reads workers.max_disk_mb only at start: restart to apply: ./orchestrator.sh restart-server" in later.stdout
    finally:
        subprocess.run([str(ROOT / "orchestrator.sh"), "stop-server"], env=env, capture_output=True, timeout=60)
