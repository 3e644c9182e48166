"""A worker's environment: workers.env, workers.inherit_env and
workers.env_passthrough, with real workers writing down the environment they got. The values
set never reach a log, record, report, the `config` command's output or an API response."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.network.egress import PROXY_VARIABLES
from orchestrator.process.backends import probe
from orchestrator.quality.gates import gate_log
from orchestrator.workers.caches import CACHE_VARIABLES

from .conftest import ROOT, run_job
from .helpers.gates import gated  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow

SECRET = "s3cret-value-9f2c41"
# The worker writes its environment to a file in its folder (not to its output, which its
# record keeps as its result: a worker printing a secret is the worker's doing).
DUMP = ["sh", "-c", "env > seen.env; echo done", "{task}"]


def _seen(engine, job) -> dict[str, str]:
    _, workers = engine.queries.snapshot(job.root_id)
    path = engine.workspace.job_dir(job.root_id) / workers[0].dir_path / "seen.env"
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _files_mentioning(root, needle: str, skip: str = "seen.env") -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and p.name != skip and needle.encode() in p.read_bytes()]


def test_workers_env_is_set_and_inheritance_is_the_default(make_engine, monkeypatch):
    monkeypatch.setenv("SERVER_SIDE_VAR", "from-the-server")
    engine = make_engine(orchestrator={"worker": "command", "command": DUMP}, workers={"env": {"MY_TOKEN": SECRET}})
    job = run_job(engine, "x", tasks=["show"])
    seen = _seen(engine, job)
    assert seen["MY_TOKEN"] == SECRET and seen["SERVER_SIDE_VAR"] == "from-the-server"
    assert seen["ORCHESTRATOR_JOB_ID"] == job.id and seen["TMPDIR"].startswith(str(engine.workspace.root))
    # Nothing the orchestrator wrote holds the value: records, logs, reports, the whole tree.
    assert _files_mentioning(engine.workspace.job_dir(job.root_id), SECRET) == []


@pytest.mark.parametrize("forge, variable", [("github", "GITHUB_TOKEN"), ("gitlab", "MY_FORGE_TOKEN")])
def test_the_pull_requests_token_is_withheld_from_workers_unless_passed_through(make_engine, monkeypatch, forge, variable):
    monkeypatch.setenv(variable, SECRET)
    monkeypatch.setenv("SERVER_SIDE_VAR", "from-the-server")
    named = {"forge_token_env": variable} if variable != "GITHUB_TOKEN" else {}
    git = {"pull_request": forge, "push": "origin", "forge_repo": "o/r", **named}
    engine = make_engine(orchestrator={"worker": "command", "command": DUMP}, git=git)
    seen = _seen(engine, run_job(engine, "x", tasks=["show"]))
    assert variable not in seen and seen["SERVER_SIDE_VAR"] == "from-the-server"
    engine = make_engine(orchestrator={"worker": "command", "command": DUMP}, git=git, workers={"env_passthrough": [variable]})
    assert _seen(engine, run_job(engine, "x", tasks=["show"]))[variable] == SECRET  # asked for by name: given


def test_the_hosts_agents_and_buses_are_withheld_from_workers_unless_passed_through(make_engine, monkeypatch):
    """Issue 36 item 6: an inherited SSH_AUTH_SOCK let a worker sign in to the forge as the user."""
    from orchestrator.workers.environment import HOST_DOORS

    doors = {name: f"/run/user/0/door-{name.lower()}" for name in HOST_DOORS}
    for name, value in doors.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SERVER_SIDE_VAR", "from-the-server")
    engine = make_engine(orchestrator={"worker": "command", "command": DUMP})
    seen = _seen(engine, run_job(engine, "x", tasks=["show"]))
    assert {"SSH_AUTH_SOCK", "GPG_AGENT_INFO", "DBUS_SESSION_BUS_ADDRESS"} <= set(HOST_DOORS)
    assert [name for name in HOST_DOORS if name in seen] == [] and seen["SERVER_SIDE_VAR"] == "from-the-server"
    named = {"env_passthrough": ["SSH_AUTH_SOCK", "DBUS_SESSION_BUS_ADDRESS"]}
    engine = make_engine(orchestrator={"worker": "command", "command": DUMP}, workers=named)
    seen = _seen(engine, run_job(engine, "x", tasks=["show"]))
    assert [name for name in HOST_DOORS if name in seen] == ["SSH_AUTH_SOCK", "DBUS_SESSION_BUS_ADDRESS"]
    assert seen["SSH_AUTH_SOCK"] == doors["SSH_AUTH_SOCK"]  # asked for by name: given


def test_without_inheritance_a_worker_gets_only_what_it_is_given(make_engine, monkeypatch):
    monkeypatch.setenv("KEEP_ME", "kept")
    monkeypatch.setenv("DROP_ME", "dropped")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    engine = make_engine(
        orchestrator={"worker": "command", "command": DUMP},
        workers={"inherit_env": False, "env_passthrough": ["KEEP_ME", "NOT_SET_ANYWHERE"], "env": {"MY_TOKEN": SECRET}},
    )
    job = run_job(engine, "x", tasks=["show"])
    seen = _seen(engine, job)
    assert seen["KEEP_ME"] == "kept" and seen["MY_TOKEN"] == SECRET
    assert "DROP_ME" not in seen and "NOT_SET_ANYWHERE" not in seen and "HOME" not in seen
    # The protocol is always there: identity, PATH with orchestrator-spawn's folder first (and
    # nothing else of the orchestrator's), TMPDIR.
    assert seen["ORCHESTRATOR_WORKER_ID"] == "worker_1" and seen["ORCHESTRATOR_DEPTH"] == "0"
    assert seen["PATH"] == os.pathsep.join((str(ROOT / "orchestrator" / "bin"), os.environ["PATH"]))
    assert "PYTHONPATH" not in seen  # the server's own PYTHONPATH is not passed on, and none is made
    assert seen["TMPDIR"] == seen["TMP"] == seen["TEMP"]
    names = set(seen) - {"PWD", "SHLVL", "_", "OLDPWD"}  # what sh adds itself
    caches = {*CACHE_VARIABLES, "GOFLAGS", "GOPROXY"}  # its tree's package caches (workers/caches.py)
    # Sandboxed with workers.sandbox_network: allow (the default), the proxy's variables (network/egress.py).
    assert names <= {"KEEP_ME", "MY_TOKEN", "PATH", "TMPDIR", "TMP", "TEMP"} | caches | set(PROXY_VARIABLES) | {
        n for n in seen if n.startswith("ORCHESTRATOR_")
    }
    assert seen["PIP_CACHE_DIR"] == str(engine.workspace.tree_caches(job.id) / "pip")


def test_a_server_orchestrator_variable_never_reaches_a_worker(make_engine, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_API_KEY", "the-servers-own")
    engine = make_engine(
        orchestrator={"worker": "command", "command": DUMP},
        workers={"env_passthrough": ["ORCHESTRATOR_API_KEY"], "inherit_env": False},
    )
    job = run_job(engine, "x", tasks=["show"])
    assert "ORCHESTRATOR_API_KEY" not in _seen(engine, job)  # no API in this engine: no credential at all


@pytest.mark.parametrize(
    "env, named",
    [
        ({"ORCHESTRATOR_JOB_ID": "x"}, "workers.env.ORCHESTRATOR_JOB_ID"),
        ({"TMPDIR": "/tmp"}, "workers.env.TMPDIR"),
        ({"BAD NAME": "x"}, "'BAD NAME' is not a variable name"),
        ({"PORT": 8080}, "workers.env.PORT: the value must be a string"),
        ("TOKEN=" + SECRET, "must be a mapping"),
    ],
)
def test_a_bad_workers_env_is_refused_by_name_never_by_value(tmp_path, env, named):
    with pytest.raises(ConfigError) as info:
        load_settings(base_dir=tmp_path, environ={}, overrides={"workers": {"env": env}})
    assert named in info.value.message
    assert SECRET not in info.value.message and SECRET not in str(info.value.details)


def test_the_config_command_masks_the_values(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"workers": {"env": {"MY_TOKEN": SECRET}}}))
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--config", str(config), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert yaml.safe_load(out.stdout)["workers"]["env"] == {"MY_TOKEN": "(set)"}


def test_the_environment_setting_reads_from_the_environment_too(tmp_path):
    settings = load_settings(base_dir=tmp_path, environ={"ORCHESTRATOR__WORKERS__ENV": '{"A_VAR": "%s"}' % SECRET})
    assert settings.workers.env == {"A_VAR": SECRET}
    assert SECRET not in repr(settings) and "'A_VAR': '(set)'" in repr(settings)  # a traceback shows no value


@pytest.mark.parametrize("key", ["env", "inherit_env", "env_passthrough", "environment"])
def test_a_request_may_not_set_environment_variables(make_live, key):
    live = make_live()
    refused = live.submit(request="x", tasks=["a"], config={key: {"PATH": "/evil"} if key != "inherit_env" else True})
    assert refused.status_code == 422
    message = refused.json()["message"]
    assert f"config.{key}: a request may not set environment variables" in message and "workers.env" in message
    assert "/evil" not in refused.text


def test_no_api_response_shows_the_values(make_live):
    live = make_live(orchestrator={"worker": "command", "command": DUMP}, workers={"env": {"MY_TOKEN": SECRET}})
    job_id = live.submit(request="x", tasks=["show"]).json()["job_id"]
    doc = live.wait(job_id)
    assert doc["status"] == "completed"
    seen = (live.engine.workspace.job_dir(job_id) / "depth_0" / "worker_1" / "seen.env").read_text()
    assert f"MY_TOKEN={SECRET}" in seen  # the worker got it
    for path in (
        f"/api/v1/jobs/{job_id}/status",
        "/api/v1/jobs",
        f"/api/v1/jobs/{job_id}/report",
        f"/api/v1/jobs/{job_id}/workers/worker_1/log",
        "/openapi.json",
        "/health",
    ):
        answer = live.call("GET", path)
        assert answer.status_code == 200 and SECRET not in answer.text, path


def test_a_job_s_workers_share_one_base_environment_read_when_its_first_worker_starts(monkeypatch, tmp_path):
    """environment.BaseEnvs: the server's environment is copied once per job, not per worker;
    each worker gets its own copy, and a later job reads the environment afresh."""
    from orchestrator.workers.environment import BaseEnvs

    settings = load_settings(base_dir=tmp_path, environ={}, overrides={})
    monkeypatch.setenv("BENCH_SEEN", "one")
    envs = BaseEnvs(settings)
    first = envs.get("aaaaaaaaaaaa")
    monkeypatch.setenv("BENCH_SEEN", "two")
    assert envs.get("aaaaaaaaaaaa") is first and first["BENCH_SEEN"] == "one"
    assert envs.get("bbbbbbbbbbbb")["BENCH_SEEN"] == "two"
    assert not [k for k in first if k.startswith("ORCHESTRATOR_")]


def test_a_worker_s_paths_are_built_once_and_are_the_layout_s(tmp_path):
    from orchestrator.workspace.layout import Workspace

    ws = Workspace(tmp_path)
    paths = ws.worker_paths("0123456789ab", 2, "worker_1_3")
    assert ws.worker_paths("0123456789ab", 2, "worker_1_3") is paths
    job = tmp_path.resolve() / "job_0123456789ab"
    assert paths.dir == ws.worker_dir("0123456789ab", 2, "worker_1_3") == job / "depth_2" / "worker_1_3"
    assert paths.log == job / "logs" / "depth_2_worker_1_3.log"
    assert paths.record == job / "state" / "workers" / "depth_2_worker_1_3.json"
    assert paths.prompt == job / "state" / "prompts" / "depth_2_worker_1_3.txt"
    assert paths.tmp == job / "state" / "tmp" / "depth_2_worker_1_3"
    assert (
        paths.exit_file(3) == ws.exit_file("0123456789ab", 2, "worker_1_3", 3) == job / "state" / "exits" / "depth_2_worker_1_3.3"
    )
    with pytest.raises(Exception, match="invalid worker id"):
        ws.worker_paths("0123456789ab", 2, "../x")


# -- python in a worker or a gate is the user's ---------------------------------------------------

# What a worker or a gate finds as `python`, its PYTHONPATH, and whether the orchestrator's
# commands still run there (orchestrator-lock takes the API, so a worker only checks it there).
PYTHON_PROBE = (
    "command -v python > which.txt; python -c 'import sys; print(sys.prefix)' > prefix.txt; "
    'printf %s "${PYTHONPATH-unset}" > pythonpath.txt; '
    "orchestrator-spawn --help > spawn.txt 2>&1; echo exit=$? >> spawn.txt; "
    "orchestrator-python -c 'import sys, orchestrator.api.client; print(sys.prefix)' > client.txt 2>&1"
)


@pytest.fixture
def users_python(tmp_path, monkeypatch):
    """The server started from a user's shell: their own `python` first on PATH (the system's
    python3 here), the orchestrator's venv nowhere on it, and their PYTHONPATH. Returns that
    python's path and its sys.prefix."""
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None:
        pytest.skip("no system python3 to stand for the user's own")
    folder = tmp_path / "user-bin"
    folder.mkdir()
    (folder / "python").symlink_to(system)
    prefix = subprocess.run([str(folder / "python"), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True)
    assert prefix.stdout.strip() != sys.prefix  # the orchestrator's interpreter is another one
    monkeypatch.setenv("PATH", os.pathsep.join((str(folder), "/usr/bin", "/bin")))
    monkeypatch.setenv("PYTHONPATH", "/home/user/project/src")
    return folder / "python", prefix.stdout.strip()


@pytest.mark.parametrize("sandbox", ["off", "on"])
def test_python_in_a_worker_is_the_users_and_the_orchestrators_commands_still_run(make_live, users_python, sandbox):
    if sandbox == "on" and not probe().available:
        pytest.skip(f"no sandbox on this machine: {probe().reason}")
    python, prefix = users_python
    lock = "orchestrator-lock notes.txt -- sh -c 'echo held > locked.txt'; echo exit=$? > lock.txt"
    live = make_live(
        orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]},
        workers={"sandbox": sandbox, "max_retries": 0},
        git={"isolation": "folder"},
    )
    job_id = live.submit(request="probe", tasks=[f"{PYTHON_PROBE}; {lock}"]).json()["job_id"]
    doc = live.wait(job_id)
    assert doc["status"] == "completed", doc
    folder = live.engine.workspace.job_dir(job_id) / "depth_0" / "worker_1"
    assert (folder / "which.txt").read_text().strip() == str(python)
    assert (folder / "prefix.txt").read_text().strip() == prefix
    assert (folder / "pythonpath.txt").read_text() == "/home/user/project/src"  # the user's, unchanged
    spawn = (folder / "spawn.txt").read_text()
    assert "usage: orchestrator-spawn" in spawn and spawn.endswith("exit=0\n"), spawn
    assert (folder / "client.txt").read_text().strip() == sys.prefix  # the Python client: the orchestrator's
    assert (folder / "lock.txt").read_text() == "exit=0\n" and (folder / "locked.txt").read_text() == "held\n"


def test_a_workers_env_pythonpath_reaches_the_worker_unchanged(make_engine, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    engine = make_engine(orchestrator={"worker": "command", "command": DUMP}, workers={"env": {"PYTHONPATH": "/mine/src"}})
    job = run_job(engine, "x", tasks=["show"])
    assert _seen(engine, job)["PYTHONPATH"] == "/mine/src"


def test_python_in_a_gate_is_the_users(gated, users_python):  # noqa: F811
    python, prefix = users_python
    host, folder, make = gated
    engine = make()
    script = (  # the probe's, to the gate's log
        "command -v python; python -c 'import sys; print(sys.prefix)'; echo \"PYTHONPATH=${PYTHONPATH-unset}\"; "
        "orchestrator-spawn --help; echo exit=$?"
    )
    probe_gate = {"name": "probe", "run": ["sh", "-c", script]}
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"gates": [probe_gate], "max_retries": 0})
    (w1,) = engine.queries.snapshot(job.root_id)[1]
    log = gate_log(engine.workspace, w1, "probe").read_text()
    assert w1.gates[0].status == "passed", log
    assert f"{python}\n{prefix}\nPYTHONPATH=/home/user/project/src\nusage: orchestrator-spawn" in log and "exit=0\n" in log


# -- an AI CLI's own folders come from the worker's environment -----------------------------------

FAKE_GEMINI = """#!/bin/sh
cp "$GEMINI_CLI_HOME/.gemini/settings.json" seen-settings.json
readlink "$GEMINI_CLI_HOME/.gemini/oauth_creds.json" > seen-creds.txt
echo '{"response": "done"}'
"""


def test_gemini_starts_from_the_gemini_cli_home_of_workers_env_not_the_servers(make_engine, tmp_path, monkeypatch):
    # The user's gemini login and auth choice, named in workers.env only; the server's
    # environment names another home (no settings there: gemini would fail with code 41).
    user = tmp_path / "gemini-user"
    (user / ".gemini").mkdir(parents=True)
    (user / ".gemini" / "settings.json").write_text('{"security": {"auth": {"selectedType": "oauth-personal"}}}')
    (user / ".gemini" / "oauth_creds.json").write_text("{}")
    monkeypatch.setenv("GEMINI_CLI_HOME", str(tmp_path / "server-gemini"))
    monkeypatch.setenv("HOME", str(tmp_path / "server-home"))
    fake = tmp_path / "fake-gemini"
    fake.write_text(FAKE_GEMINI)
    fake.chmod(0o755)
    engine = make_engine(
        orchestrator={"worker": "gemini", "gemini_command": str(fake)}, workers={"env": {"GEMINI_CLI_HOME": str(user)}}
    )
    job = run_job(engine, "x", tasks=["Write a.md"])
    (worker,) = engine.queries.snapshot(job.root_id)[1]
    assert job.status.value == "completed", worker.error
    folder = engine.workspace.job_dir(job.root_id) / worker.dir_path
    settings = yaml.safe_load((folder / "seen-settings.json").read_text())  # JSON is YAML
    assert settings["security"] == {"auth": {"selectedType": "oauth-personal"}}  # the user's, with the worker's limits added
    assert settings["general"]["maxAttempts"] == 3
    assert (folder / "seen-creds.txt").read_text().strip() == str(user / ".gemini" / "oauth_creds.json")
