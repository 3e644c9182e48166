"""The README's commands, snippets, routes and keys are the product's: run or check each."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from orchestrator.api.openapi import openapi_document
from orchestrator.config import SCHEMA

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_ci_runs_the_readmes_two_commands_verbatim():
    commands = [line for line in blocks("bash")[0].splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and commands[0].startswith("./install.sh && ./quick-start.sh")
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci


def test_every_route_in_the_readme_is_served():
    documented = set(openapi_document()["paths"])
    mentioned = set(re.findall(r"`(?:GET|POST|DELETE) (/[^` ?]+)", README))
    assert mentioned, "the README lists routes"
    for path in mentioned:
        assert path.replace("{id}", "{job_id}") in documented, path


def test_every_setting_the_readme_names_exists():
    names = set(
        re.findall(
            r"`((?:orchestrator|workers|recursion|api|logging|simulated|git|tasks|candidates|scoring|webhooks|distributed)\.[a-z_]+)",
            README,
        )
    )
    assert len(names) > 15
    for name in names:
        section, key = name.split(".")
        assert key in SCHEMA[section], name


@pytest.mark.slow
def test_readme_curl_lines_work_against_a_live_server(live):
    script = blocks("bash")[1].replace("http://localhost:8000", live.url).replace("your-api-key", live.key)
    submit, status = script.split("\ncurl http")
    out = subprocess.run(["bash", "-c", submit + " -s"], capture_output=True, text=True, check=True).stdout
    job_id = re.search(r'"job_id":\s*"([^"]+)"', out).group(1)
    live.wait(job_id)
    status = ("curl http" + status).replace("JOB_ID", job_id)
    doc = subprocess.run(["bash", "-c", status.strip() + " -s"], capture_output=True, text=True, check=True).stdout
    assert '"status": "completed"' in doc or '"status":"completed"' in doc


@pytest.mark.slow
def test_readme_python_client_snippet_runs(live):
    code = blocks("python")[0].replace("http://localhost:8000", live.url).replace("your-api-key", live.key)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Status: running" in out.stdout and "completed" in out.stdout.splitlines()[-1]
