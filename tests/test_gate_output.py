"""A failed gate's output is reachable wherever its task's failure is: the gate entry's
``output_tail`` in the status document, ``?gate=NAME`` on the worker log route, the Python
client, ``./orchestrator.sh logs --gate``, the MCP tools and the spawn helper's Markdown of a
child job. The live tests run one real tree on a real server: a root worker in a worktree of a
real repository runs ``orchestrator-spawn --wait``, and its child job's worker fails the
``tests`` gate, which prints a known marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import requests
from mcp import Client, StdioServerParameters

from orchestrator.api.client import OrchestratorClient
from orchestrator.cli.server import start_in_thread
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine
from orchestrator.errors import WorkerNotFound
from orchestrator.gate_output import TAIL_CHARS, TAIL_LINES, failing_gate, output_lines, output_tail
from orchestrator.outcomes import GateResult

from .conftest import API_KEY, ROOT
from .helpers.worktree import make_host

MARKER = "GATE-MARKER-5b7e: expected 3, got 2"
# The root's worker hands its task to a child job; the child's worker writes leaf.txt, which the gate refuses.
SCRIPT = 'if [ "$ORCHESTRATOR_DEPTH" = 0 ]; then orchestrator-spawn --wait "leaf"; true; else echo leaf > leaf.txt; fi'
GATE = {
    "name": "tests",
    "run": ["sh", "-c", f"echo collecting; if [ -e leaf.txt ]; then echo '{MARKER}'; exit 1; fi; echo fine"],
}


# -- the tail and its wording -----------------------------------------------------------------


def test_the_tail_keeps_the_last_lines_within_the_character_bound():
    output = "".join(f"line {i}\n" for i in range(100))
    assert output_tail(output).splitlines() == [f"line {i}" for i in range(100 - TAIL_LINES, 100)]
    long = "\n".join("x" * 300 + f" {i}" for i in range(TAIL_LINES))
    tail = output_tail(long)
    assert len(tail) <= TAIL_CHARS and tail.endswith(f" {TAIL_LINES - 1}") and tail.startswith("x")  # cut at a line's start
    assert output_tail("one huge line " * 1000).endswith("line") and len(output_tail("y" * 5000)) == TAIL_CHARS
    assert output_tail("") == "" and output_tail("\n\n  \n") == ""


def test_a_record_from_before_output_tails_loads_and_says_only_what_failed():
    old = {"name": "tests", "required": True, "status": "failed", "passed": False, "exit_code": 1, "reason": "exit code 1"}
    entry = GateResult.from_dict(old)
    assert entry.output_tail is None and "output_tail" not in entry.to_dict()
    assert output_lines(entry) == ["Gate tests failed (exit code 1)."]
    kept = GateResult.from_dict(old | {"output_tail": "E assert 2 == 3\n1 failed"})
    assert output_lines(kept.to_dict(), indent="> ") == [
        "Gate tests failed (exit code 1); the end of its output:",
        "> E assert 2 == 3",
        "> 1 failed",
    ]
    assert output_lines(GateResult.from_dict(old | {"output_tail": ""})) == [
        "Gate tests failed (exit code 1); it printed nothing."
    ]


def test_the_failing_gate_is_the_one_the_exit_reason_names():
    gates = [{"name": "lint", "required": False, "passed": False}, {"name": "tests", "required": True, "passed": False}]
    assert failing_gate(gates, "step gates failed: gate tests failed: exit code 1")["name"] == "tests"
    assert failing_gate(gates, "timed out after 30s") is None  # its gate failed an earlier attempt, not this end
    assert failing_gate([], "step gates failed: gate tests failed") is None


# -- one real tree ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """(server url, engine, the orchestrator folder, the root's status, the child's failed task, the child job's id)."""
    host, folder = make_host(tmp_path_factory.mktemp("gate_output"))
    settings = load_settings(
        base_dir=folder,
        environ={},
        overrides={
            "workers": {"kill_grace": 0.5, "default_timeout": 60, "max_retries": 0},
            "orchestrator": {"worker": "command", "command": ["sh", "-c", SCRIPT, "worker", "{task}"]},
            "api": {"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
        },
    )
    engine = Engine(settings)
    server = start_in_thread(settings, engine, port=0)
    try:
        client = OrchestratorClient(api_url=server.url, api_key=API_KEY)
        job = client.orchestrate(request="big", tasks=["big"], config={"max_recursion_depth": 1, "gates": [GATE]})["job_id"]
        doc = client.wait(job, timeout=120)
        assert doc["status"] in ("completed", "partial", "failed"), doc
        (parent,) = doc["results"]["tasks"]
        (child,) = parent["child_results"]
        assert child["status"] == "failed" and child["exit_reason"] == "step gates failed: gate tests failed: exit code 1", child
        yield server.url, engine, folder, doc, child, child["job_id"]
    finally:
        engine.shutdown(timeout=10)
        server.close()


def get(url: str, path: str) -> requests.Response:
    return requests.get(url + path, headers={"X-API-Key": API_KEY}, timeout=30)


def log_path(child: dict) -> str:
    return f"/api/v1/jobs/{child['job_id']}/workers/depth_{child['depth']}_{child['worker_id']}/log"


@pytest.mark.slow
def test_the_status_documents_gate_entry_holds_the_end_of_the_gates_output(tree):
    url, _, _, doc, child, child_job = tree
    (entry,) = child["gates"]
    assert entry["status"] == "failed" and entry["exit_code"] == 1
    assert entry["output_tail"] == f"collecting\n{MARKER}"  # its output only: not the log's header or footer lines
    # The child job's own status says the same; the parent's passed gate keeps no tail
    (own,) = requests.get(f"{url}/api/v1/jobs/{child_job}/status", headers={"X-API-Key": API_KEY}, timeout=30).json()["results"][
        "tasks"
    ]
    assert own["gates"][0]["output_tail"] == entry["output_tail"]
    (parent,) = doc["results"]["tasks"]
    assert [(g["name"], g["status"], g["output_tail"]) for g in parent["gates"]] == [("tests", "passed", None)]


@pytest.mark.slow
def test_the_log_route_serves_a_gates_whole_output_and_its_tail(tree):
    url, *_, child, _ = tree
    whole = get(url, log_path(child) + "?gate=tests")
    assert whole.status_code == 200 and whole.headers["Content-Type"].startswith("text/plain")
    assert (
        MARKER in whole.text
        and "===== gate tests: sh -c" in whole.text
        and "===== gate tests failed: exit code 1 =====" in whole.text
    )
    assert int(whole.headers["X-Log-Size"]) == len(whole.content)
    tail = get(url, log_path(child) + "?gate=tests&tail=2")
    assert tail.text.splitlines() == [MARKER, "===== gate tests failed: exit code 1 ====="]
    rest = get(url, log_path(child) + f"?gate=tests&offset={len(whole.content) - 10}")
    assert rest.text == whole.text[-10:]
    # The worker's own log keeps its one line about the gate, not the gate's output
    own = get(url, log_path(child)).text
    assert "[orchestrator] gate tests failed in " in own and MARKER not in own


@pytest.mark.slow
def test_an_unknown_gate_is_a_404_naming_the_workers_gates_and_a_bad_name_a_400(tree):
    url, *_, child, _ = tree
    missing = get(url, log_path(child) + "?gate=lint")
    assert missing.status_code == 404, missing.text
    body = missing.json()
    assert body["error"] == WorkerNotFound.code and "has no gate 'lint' (its gates: tests)" in body["message"]
    assert body["details"] == {"gates": ["tests"]}
    for bad in ("../tests", "-x", "", "a" * 65, "tests/../../x"):
        answer = get(url, log_path(child) + "?gate=" + requests.utils.quote(bad, safe=""))
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", (bad, answer.text)
    assert get(url, log_path(child) + "?gate=tests").status_code == 200
    no_key = requests.get(url + log_path(child) + "?gate=tests", timeout=30)
    assert no_key.status_code == 401 and MARKER not in no_key.text


@pytest.mark.slow
def test_a_link_planted_in_the_gate_logs_place_is_refused_not_followed(tree, tmp_path):
    url, engine, folder, doc, child, _ = tree
    (entry,) = child["gates"]
    path = engine.workspace.job_dir(doc["job_id"]) / entry["log_path"]
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-91c\n")
    kept = path.with_name(path.name + ".kept")
    path.rename(kept)
    try:
        path.symlink_to(secret)
        for query in ("?gate=tests", "?gate=tests&tail=5", "?gate=tests&follow=1"):
            answer = get(url, log_path(child) + query)
            assert answer.status_code == 403 and "TOP-SECRET" not in answer.text, (query, answer.text)
            assert answer.json()["error"] == "refused_path"
        worker = f"depth_{child['depth']}_{child['worker_id']}"
        for lines in ([], ["-n", "5"]):
            shown = cli(folder, "logs", child["job_id"], worker, "--gate", "tests", *lines)
            assert shown.returncode != 0 and "TOP-SECRET" not in shown.stdout + shown.stderr, (lines, shown)
    finally:
        path.unlink()
        kept.rename(path)


@pytest.mark.slow
def test_the_python_client_reads_a_gates_output(tree):
    url, *_, child, _ = tree
    client = OrchestratorClient(api_url=url, api_key=API_KEY)
    worker = f"depth_{child['depth']}_{child['worker_id']}"
    assert MARKER in client.logs(child["job_id"], worker, gate="tests")
    assert client.logs(child["job_id"], worker, gate="tests", tail=1) == "===== gate tests failed: exit code 1 =====\n"
    with pytest.raises(WorkerNotFound, match="its gates: tests"):
        client.logs(child["job_id"], worker, gate="lint")


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "ORCHESTRATOR_HOME": str(folder), "HOME": str(folder)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_orchestrator_sh_logs_gate_prints_the_gates_output(tree):
    *_, folder, _, child, _ = tree
    worker = f"depth_{child['depth']}_{child['worker_id']}"
    shown = cli(folder, "logs", child["job_id"], worker, "--gate", "tests")
    assert shown.returncode == 0 and MARKER in shown.stdout and "===== gate tests failed" in shown.stdout, shown
    last = cli(folder, "logs", child["job_id"], worker, "--gate", "tests", "-n", "1")
    assert last.stdout.strip() == "===== gate tests failed: exit code 1 =====", last
    unknown = cli(folder, "logs", child["job_id"], worker, "--gate", "lint")
    assert unknown.returncode != 0 and "its gates: tests" in unknown.stderr, unknown
    assert MARKER not in cli(folder, "logs", child["job_id"], worker).stdout  # the worker's log stays its own


@pytest.mark.slow
def test_the_mcp_tools_show_a_failed_gates_output(tree):
    url, *_, child, child_job = tree
    worker = f"depth_{child['depth']}_{child['worker_id']}"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "ORCHESTRATOR_API_URL": url, "ORCHESTRATOR_API_KEY": API_KEY}
    params = StdioServerParameters(command=sys.executable, args=["-m", "orchestrator", "mcp"], env=env, cwd=ROOT)

    async def text_of(client: Client, tool: str, **arguments) -> str:
        got = await client.call_tool(tool, arguments)
        assert not got.is_error, got
        return "\n".join(c.text for c in got.content if c.type == "text")

    async def scenario() -> dict[str, str]:
        async with Client(params) as client:
            return {
                "status": await text_of(client, "status", job_id=child_job),
                "wait": await text_of(client, "wait", job_id=child_job, timeout=1),
                "logs": await text_of(client, "logs", job_id=child_job, worker=worker),
                "gate": await text_of(client, "logs", job_id=child_job, worker=worker, gate="tests"),
            }

    shown = anyio.run(scenario)
    hint = f"whole output: logs(job_id={child_job!r}, worker={worker!r}, gate='tests')"
    for tool in ("status", "wait", "logs"):
        assert "Gate tests failed (exit code 1); the end of its output:" in shown[tool] and MARKER in shown[tool], shown[tool]
        assert hint in shown[tool], shown[tool]
    assert shown["gate"].startswith(f"output of gate tests of {worker} in job {child_job}: last 50 line(s)")
    assert MARKER in shown["gate"] and "===== gate tests failed: exit code 1 =====" in shown["gate"]


@pytest.mark.slow
def test_the_spawn_helpers_markdown_of_the_child_names_the_gate_and_its_output(tree):
    *_, doc, child, child_job = tree
    (parent,) = doc["results"]["tasks"]
    markdown = parent["output"]  # what orchestrator-spawn --wait printed to the root's worker
    section = markdown.split(f"### {child['worker_id']}: failed", 1)[1]
    assert "Gate tests failed (exit code 1); the end of its output:" in section
    assert f"    {MARKER}" in section and "    collecting" in section
    ref = f"depth_{child['depth']}_{child['worker_id']}"
    assert f"Its whole output: GET /api/v1/jobs/{child_job}/workers/{ref}/log?gate=tests" in section
