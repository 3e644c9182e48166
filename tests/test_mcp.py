"""``python -m orchestrator mcp`` driven by the ``mcp`` SDK's own client over stdio: a real
subprocess, talking to a real API server of a temporary orchestrator folder that the MCP server
starts itself (as quick-start does) and the fixture stops. Workers are the fake CLI (command
kind); inside a worker, ``tests/fixtures/mcp_worker.py`` runs the MCP server with the worker's
own credential, as an AI CLI in a worker would."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import requests
from mcp import Client, StdioServerParameters

from orchestrator.cli.server import folder_server

from .conftest import API_KEY, FIXTURES, ROOT, find_cli
from .helpers.scripts import free_port
from .helpers.worktree import git, make_host, user_env
from .mock_model_server import MockModelServer, Text, ToolUse, tool_results

pytestmark = pytest.mark.slow

WORKER = str(FIXTURES / "mcp_worker.py")
LONG_POLL_MAX = 2  # api.long_poll_max of the folder: the cap of the wait tool


def write_config(folder: Path, port: int, **extra: str) -> None:
    (folder / "config.yaml").write_text(
        f'api:\n  api_key: "{API_KEY}"\n  port: {port}\n  long_poll_max: {LONG_POLL_MAX}\n'
        f"orchestrator:\n  worker: command\n  command: {json.dumps([sys.executable, WORKER, '{task}', '{feedback}'])}\n"
        "workers:\n  kill_grace: 1\n  default_timeout: 60\n" + "".join(extra.values())
    )


@pytest.fixture
def home(tmp_path):
    """An orchestrator folder inside a host git repository (so a job may use worktrees), on a
    free port; its server (started by the MCP server under test) is stopped at the end."""
    host, folder = make_host(tmp_path)
    port = free_port()
    write_config(folder, port)
    git(host, "add", "-A")
    git(host, "commit", "-q", "--no-verify", "-m", "config", env=user_env())
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env["ORCHESTRATOR_HOME"] = str(folder)
    yield folder, env, port
    subprocess.run([str(ROOT / "quick-start.sh"), "--stop"], env=env, capture_output=True, timeout=60)


def server_params(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "orchestrator", "mcp"], env=env, cwd=ROOT)


FENCE = "\n```json\n"


def split(text: str) -> tuple[str, dict[str, Any] | None]:
    """A result's compact text, and the JSON block include_json adds after it (None: none)."""
    if FENCE not in text:
        return text, None
    compact, _, block = text.partition(FENCE)
    assert block.endswith("\n```"), block[-200:]
    return compact, json.loads(block.removesuffix("\n```"))


async def call(client: Client, tool: str, **arguments: Any) -> tuple[str, dict[str, Any] | None, bool]:
    """(compact text, the API's JSON, is_error) of one tool call, asking for the JSON; the key
    never shows."""
    got = await client.call_tool(tool, {"include_json": True, **arguments})
    text = "\n".join(c.text for c in got.content if c.type == "text")
    assert API_KEY not in text
    compact, doc = split(text)
    return compact, doc, bool(got.is_error)


def test_tools_run_a_worktree_job_through_this_folders_server_it_starts(home):
    folder, env, port = home
    assert folder_server(folder) is None
    squatter = socket.create_server(("127.0.0.1", port))  # another program holds the configured port
    squatter.listen()

    async def scenario() -> None:
        async with Client(server_params(env)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert sorted(tools) == [
                "cancel",
                "continue_worker",
                "diff",
                "list_jobs",
                "logs",
                "merge",
                "orchestrate",
                "status",
                "wait",
            ]  # no spawn outside a worker
            assert tools["orchestrate"].input_schema["required"] == ["request"]

            text, doc, err = await call(
                client, "orchestrate", request="two files", tasks=["ok 2", "ok 1"], config={"isolation": "worktree"}
            )
            assert not err, text
            job = doc["job_id"]
            assert (
                f"job {job} submitted at depth 0: 2 subtask(s), worker kind command" in text and f"wait(job_id='{job}')" in text
            )
            record = folder_server(folder)  # the MCP server started this folder's own server, on a free port
            assert record is not None and record.port != port and (folder / ".server.json").is_file()

            for _ in range(30):  # each wait is held at most api.long_poll_max
                text, doc, err = await call(client, "wait", job_id=job, timeout=30)
                if doc["status"] != "running" and doc["status"] != "pending":
                    break
            assert not err and doc["status"] == "completed", text
            assert (
                f"job {job}: completed" in text and "workers: 2 succeeded, 0 failed" in text and "next: read the report" in text
            )
            assert "report: " in text and doc["results"]["final_report"].endswith("FINAL_RESULT.md")
            take = f"take it: git merge orchestrator/{job}/result"  # the hint check-status and quick-start print
            assert take in text, text

            text, doc, err = await call(client, "status", job_id=job)
            assert not err and doc["progress"]["succeeded"] == 2 and "worker_1: success - ok 2" in text and take in text
            plain = await client.call_tool("status", {"job_id": job})  # without include_json: the few lines only
            assert plain.content[0].text == text and len(text.splitlines()) <= 9 and plain.structured_content is None

            text, doc, err = await call(client, "list_jobs")
            assert not err and [j["job_id"] for j in doc["jobs"]] == [job] and doc["limit"] == 20, text
            assert text.startswith("1 of 1 job(s), newest first:") and f"{job}  completed" in text, text
            text, doc, err = await call(client, "list_jobs", status="failed", limit=1000)
            assert not err and doc["jobs"] == [] and doc["limit"] == 100 and text == "no jobs with status failed (total 0)"
            text, _, err = await call(client, "list_jobs", status="done")
            assert err and "status must be one of pending, running" in text, text

            text, doc, err = await call(client, "logs", job_id=job, worker="worker_1", tail=1)
            assert not err and doc["tail"] == 1 and text.startswith(f"log of worker_1 in job {job}: last 1 line(s)\n")
            assert len(doc["log"].strip().splitlines()) == 1

            text, doc, err = await call(client, "diff", job_id=job, worker="worker_2")
            assert not err and "+++ b/out.txt" in doc["diff"] and "+++ b/out.txt" in text, text
            text, doc, err = await call(client, "diff", job_id=job, max_bytes=10)
            assert not err and doc["truncated"] and "cut at 10 (raise max_bytes for more)" in text

            text, doc, err = await call(client, "merge", job_id=job)
            assert (
                not err and text.startswith(f"job {job}: merged worker_1\nresult:    orchestrator/{job}/result") and take in text
            ), text

            text, doc, err = await call(client, "continue_worker", job_id=job, worker="worker_2", feedback="echo more >> out.txt")
            assert not err and doc["round"]["number"] == 2 and f"job {job}: worker_2 round 2 started" in text, text
            text, _, err = await call(client, "continue_worker", job_id=job, worker="worker_2", feedback="again")
            assert err and "continue round running" in text, text

    try:
        anyio.run(scenario)
    finally:
        squatter.close()


def test_wait_is_capped_cancel_stops_a_job_and_bad_input_names_the_argument(home):
    folder, env, _ = home

    async def scenario() -> None:
        async with Client(server_params(env)) as client:
            for tool, arguments, expected in [
                ("orchestrate", {"request": "  "}, "request is empty"),
                ("orchestrate", {"request": "x", "tasks": []}, "tasks is an empty list"),
                ("orchestrate", {"request": "x", "tasks": ["ok", ""]}, "tasks[1] must be a non-empty string"),
                ("orchestrate", {"request": "x", "config": {"max_workers": "many"}}, "max_workers"),
                ("wait", {"job_id": "j", "timeout": -1}, "timeout must be at least 0"),
                ("logs", {"job_id": "j", "worker": "worker_1", "tail": 0}, "tail must be at least 1"),
                ("merge", {"job_id": "j", "strategy": "ours"}, "strategy must be one of auto, theirs, manual, resolve"),
                ("continue_worker", {"job_id": "j", "worker": "worker_1", "feedback": " "}, "feedback is empty"),
                ("status", {"job_id": "no-such-job"}, "InvalidId: invalid job id 'no-such-job'"),
                ("status", {"job_id": "0123456789ab"}, "JobNotFound"),
                ("status", {}, "job_id"),
            ]:
                text, _, err = await call(client, tool, **arguments)
                assert err and expected in text, (tool, arguments, text)

            text, doc, err = await call(client, "orchestrate", request="hang", tasks=["hang"])
            assert not err, text
            job = doc["job_id"]
            started = time.monotonic()
            text, doc, err = await call(client, "wait", job_id=job, timeout=600)
            held = time.monotonic() - started
            assert not err and doc["status"] in ("pending", "running") and held < LONG_POLL_MAX + 8, (held, text)
            assert f"after {LONG_POLL_MAX}s (timeout is capped at {LONG_POLL_MAX}s)" in text and "next: wait(" in text

            text, doc, err = await call(client, "cancel", job_id=job)
            assert not err, text
            text, doc, err = await call(client, "wait", job_id=job, timeout=LONG_POLL_MAX)
            for _ in range(10):
                if doc["status"] == "cancelled":
                    break
                text, doc, err = await call(client, "wait", job_id=job, timeout=LONG_POLL_MAX)
            assert doc["status"] == "cancelled" and f"job {job}: cancelled" in text, text
            text, _, err = await call(client, "cancel", job_id=job)
            assert err and "Conflict" in text, text

            # This folder's server stops: the next call says so, the one after starts it again.
            stop = subprocess.run([str(ROOT / "quick-start.sh"), "--stop"], env=env, capture_output=True, timeout=60)
            assert stop.returncode == 0 and folder_server(folder) is None, stop
            text, _, err = await call(client, "status", job_id=job)
            assert err and "ServerUnreachable" in text and "the next call looks for this folder's server again" in text
            text, doc, err = await call(client, "status", job_id=job)
            assert not err and doc["status"] == "cancelled" and folder_server(folder) is not None, text

    anyio.run(scenario)


def run_spawning_worker(folder: Path, env: dict[str, str], max_depth: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A root job whose one worker runs our MCP server with its own credential and calls spawn;
    (the worker's JSON report, the root job's status)."""

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with Client(server_params(env)) as client:
            _, doc, err = await call(
                client,
                "orchestrate",
                request="spawn",
                tasks=["mcp-spawn ok"],
                config={"enable_recursion": True, "max_recursion_depth": max_depth},
            )
            assert not err
            for _ in range(40):
                text, doc, err = await call(client, "wait", job_id=doc["job_id"], timeout=LONG_POLL_MAX)
                if doc["status"] not in ("pending", "running"):
                    break
            assert doc["status"] == "completed", text
            log, _, _ = await call(client, "logs", job_id=doc["job_id"], worker="worker_1", tail=50)
            lines = [line for line in log.splitlines() if line.startswith("{")]
            assert lines, log
            return json.loads(lines[-1]), doc

    return anyio.run(scenario)


def test_a_spawn_from_inside_a_worker_uses_its_credential_and_is_refused_past_the_depth_cap(home):
    folder, env, _ = home
    report, root = run_spawning_worker(folder, env, max_depth=0)
    assert report["tools"] == [
        "cancel",
        "continue_worker",
        "diff",
        "list_jobs",
        "logs",
        "merge",
        "spawn",
        "status",
        "wait",
    ]  # spawn, not orchestrate
    assert report["list_jobs"] == [root["job_id"]]  # its own tree only
    assert report["spawn"]["is_error"], report
    text = report["spawn"]["text"]
    expected = f"RecursionLimit: Max recursion depth reached: worker worker_1 of job {root['job_id']} is at depth 0"
    assert expected in text and "this tree's max_recursion_depth is 0" in text, text
    assert root["tree"]["jobs"] == 1  # no child job was made

    report, root = run_spawning_worker(folder, env, max_depth=1)
    spawned = report["spawn"]
    assert not spawned["is_error"], spawned
    assert spawned["doc"]["depth"] == 1 and spawned["doc"]["parent_job_id"] == root["job_id"]
    assert spawned["doc"]["parent_worker"] == "worker_1" and "child job" in spawned["text"]
    assert report["wait"]["doc"]["status"] == "completed", report
    assert report["list_jobs"] == [root["job_id"]]  # the first root job is not the worker's to see


# ----------------------------------------------------------------------------- the real Claude Code CLI

CLAUDE = find_cli("claude")
PREFIX = "mcp__orchestrator__"  # how Claude Code names an MCP server's tools: mcp__<server>__<tool>


def _last_result(body: dict[str, Any]) -> str:
    """The text of the last tool_result the CLI sent back (our tool's compact text)."""
    found = tool_results(body)
    if not found:
        return ""
    content = found[-1].get("content")
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))
    return str(content or "")


@pytest.mark.real_cli
@pytest.mark.skipif(
    CLAUDE is None, reason="claude CLI not found at .cli/node_modules/.bin/claude nor on PATH (run tests/install_cli.sh)"
)
def test_the_real_claude_cli_calls_the_orchestrate_tool_of_our_mcp_server_and_the_job_completes(home, tmp_path):
    folder, env, _ = home
    bodies: list[dict[str, Any]] = []
    search = {"query": f"select:{PREFIX}orchestrate,{PREFIX}wait", "max_results": 5}

    def script(body: dict[str, Any]) -> Any:
        """The model's side, as Claude Code wants it: MCP tools are deferred (named in a system
        message, their schemas fetched with ToolSearch), so search, then orchestrate, then wait on
        the job the tool named until it ends, then say how it ended."""
        bodies.append(body)
        if not tool_results(body):
            return ToolUse("ToolSearch", search)
        last = _last_result(body)
        job = re.search(r"job ([0-9a-f]{12})", last)
        if job is None:
            return ToolUse(PREFIX + "orchestrate", {"request": "write two files", "tasks": ["ok 2", "ok 1"]})
        if "submitted" in last or last.startswith("still "):
            return ToolUse(PREFIX + "wait", {"job_id": job.group(1), "timeout": 30})
        return Text("The orchestrator says: " + last.splitlines()[0])

    mcp_config = {
        "mcpServers": {
            "orchestrator": {"command": str(ROOT / "orchestrator.sh"), "args": ["mcp"], "env": {"ORCHESTRATOR_HOME": str(folder)}}
        }
    }
    work = tmp_path / "work"
    work.mkdir()
    home_dir = tmp_path / "claude-home"
    home_dir.mkdir()
    with MockModelServer(script, lifetime=170) as mock:
        cli_env = {k: v for k, v in env.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))}
        cli_env.update(mock.client_env("sk-ant-mock-key-0000"))
        cli_env.update({"HOME": str(home_dir), "CLAUDE_CONFIG_DIR": str(home_dir / ".claude")})
        proc = subprocess.run(
            [
                CLAUDE,
                "-p",
                "Run this through the orchestrator",
                "--output-format",
                "json",
                "--strict-mcp-config",
                "--mcp-config",
                json.dumps(mcp_config),
                "--allowedTools",
                f"{PREFIX}orchestrate,{PREFIX}wait",
            ],
            cwd=work,
            env=cli_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=150,
        )
        summary = mock.summary()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{summary}"
    doc = json.loads(proc.stdout)
    listed = json.dumps(bodies[0])  # the deferred tools' names, in the first request
    assert all(f"{PREFIX}{t}" in listed for t in ("orchestrate", "status", "wait", "logs", "cancel", "diff", "merge")), listed
    fetched = {t["name"]: t for t in bodies[1].get("tools", [])}  # right after ToolSearch
    assert fetched[PREFIX + "orchestrate"]["input_schema"]["required"] == ["request"], sorted(fetched)
    assert doc["permission_denials"] == [], doc
    assert re.match(r"The orchestrator says: job [0-9a-f]{12}: completed", doc["result"]), doc["result"]
    job_id = doc["result"].split("job ")[1].split(":")[0]
    record = folder_server(folder)  # the job ran on this folder's server, which our MCP server started
    assert record is not None
    status = requests.get(f"{record.url}/api/v1/jobs/{job_id}/status", headers={"X-API-Key": API_KEY}, timeout=10).json()
    assert status["status"] == "completed" and status["progress"]["succeeded"] == 2
    assert all(p.startswith("POST /v1/messages") for p in mock.paths), mock.paths  # nothing but the loopback mock
