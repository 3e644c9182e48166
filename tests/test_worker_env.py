"""A worker's environment (issue 10 item 6): workers.env, workers.inherit_env and
workers.env_passthrough, with real workers writing down the environment they got. The values
set never reach a log, record, report, the `config` command's output or an API response."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError

from .conftest import ROOT, run_job

pytestmark = pytest.mark.slow

SECRET = "s3cret-value-9f2c41"
# The worker writes its environment to a file in its folder (not to its output, which its
# record keeps as its result: a worker printing a secret is the worker's doing).
DUMP = ["sh", "-c", "env > seen.env; echo done", "{task}"]


def _seen(engine, job) -> dict[str, str]:
    _, workers = engine.snapshot(job.root_id)
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
    # The protocol is always there: identity, PATH with orchestrator-spawn's folder and the
    # folder's interpreter first, TMPDIR.
    assert seen["ORCHESTRATOR_WORKER_ID"] == "worker_1" and seen["ORCHESTRATOR_DEPTH"] == "0"
    assert seen["PATH"].split(os.pathsep)[:2] == [str(ROOT / "orchestrator" / "bin"), os.path.dirname(sys.executable)]
    assert seen["PATH"].endswith(os.environ["PATH"])
    assert seen["PYTHONPATH"] == str(ROOT)  # the server's own PYTHONPATH is not passed on
    assert seen["TMPDIR"] == seen["TMP"] == seen["TEMP"]
    names = set(seen) - {"PWD", "SHLVL", "_", "OLDPWD"}  # what sh adds itself
    assert names <= {"KEEP_ME", "MY_TOKEN", "PATH", "PYTHONPATH", "TMPDIR", "TMP", "TEMP"} | {
        n for n in seen if n.startswith("ORCHESTRATOR_")
    }


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
    from orchestrator.environment import BaseEnvs

    settings = load_settings(base_dir=tmp_path, environ={}, overrides={})
    monkeypatch.setenv("BENCH_SEEN", "one")
    envs = BaseEnvs(settings)
    first = envs.get("aaaaaaaaaaaa")
    monkeypatch.setenv("BENCH_SEEN", "two")
    assert envs.get("aaaaaaaaaaaa") is first and first["BENCH_SEEN"] == "one"
    assert envs.get("bbbbbbbbbbbb")["BENCH_SEEN"] == "two"
    assert not [k for k in first if k.startswith("ORCHESTRATOR_")]


def test_a_worker_s_paths_are_built_once_and_are_the_layout_s(tmp_path):
    from orchestrator.workspace import Workspace

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
