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


@pytest.mark.slow
def test_a_changed_sandbox_backend_runs_the_next_job_without_a_restart(tmp_path):
    """config set said the server applies workers.sandbox_backend to its next job, while the
    backend probed at the server's start ran every job until a restart."""
    import sys

    import requests

    from orchestrator.process.backends import probe

    from .conftest import FAKE_CLI

    if not (probe(backend="bubblewrap").available and probe(backend="landlock").available):
        pytest.skip("needs both bubblewrap and Landlock on this machine")
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        f'api:\n  api_key: "{API_KEY}"\n  port: {port}\n'
        f'orchestrator:\n  worker: "command"\n  command: ["{sys.executable}", "{FAKE_CLI}", "{{task}}"]\n'
        'workers:\n  sandbox: "on"\n  sandbox_backend: bubblewrap\n'
    )
    env = {**os.environ, "ORCHESTRATOR_HOME": str(tmp_path)}
    env.pop("ORCHESTRATOR_CONFIG", None)
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": API_KEY}

    def run_job() -> dict:
        job_id = requests.post(f"{url}/api/v1/orchestrate", headers=headers, json={"request": "x", "tasks": ["ok"]}, timeout=30)
        assert job_id.status_code < 300, job_id.text
        doc = requests.get(f"{url}/api/v1/jobs/{job_id.json()['job_id']}/wait?timeout=60", headers=headers, timeout=90).json()
        assert doc["status"] == "completed", doc
        return doc

    try:
        started = subprocess.run(
            [str(ROOT / "orchestrator.sh"), "start-server", "--url"], env=env, capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stdout + started.stderr
        # Given a server whose workers run under bubblewrap
        first = run_job()
        assert first["results"]["tasks"][0]["sandbox"] == "bubblewrap", first
        # When the backend is changed with config set, which says the next job takes it
        said = orch(tmp_path, "set", "workers.sandbox_backend", "landlock")
        assert "applies it to its next job (no restart needed)" in said.stdout, said.stdout + said.stderr
        # Then the next job's worker runs under Landlock, and the job's notes say so
        second = run_job()
        assert second["results"]["tasks"][0]["sandbox"] == "landlock", second
        assert any("workers run sandboxed (Landlock" in note for note in second["notes"]), second["notes"]
        assert any("applied to new jobs: workers.sandbox_backend" in note for note in second["notes"]), second["notes"]
    finally:
        subprocess.run([str(ROOT / "orchestrator.sh"), "stop-server"], env=env, capture_output=True, timeout=60)


@pytest.mark.parametrize("key", ["git.port_range", "git.approval_link_ttl", "tasks.lock_lease", "tasks.lock_timeout"])
def test_a_key_the_server_builds_something_from_at_its_start_is_one_to_restart_for(key):
    """The port pool, the approval links' signer and the path lock tables are made once, when the
    server starts: a change to these keys was said to apply to the next job, and never did."""
    from orchestrator.config.live import needs_restart

    assert needs_restart(*key.split(".", 1))
