"""No deputy for the AI CLIs the orchestrator starts on a worker's text (DESIGN §15, issue 48 item 1):
the AI planner of a child job a worker asked for, and the judge of a best-of-N task whose candidates
are workers' work, run in the worker's sandbox, with its caps and network, with no tool, in an empty
scratch folder; where the machine cannot sandbox, the child job's AI planner is refused (the
heuristic plans, with a note) and the judge is not asked (``best`` decides, with the reason).

A real server on a host repository whose orchestrator folder holds the API key in config.yaml, a
``command`` parent worker that asks for a child job with ``{"worker": "claude", "planner": "ai"}``
through the API with its own key, and a hostile fake ``claude`` (``orchestrator.claude_command``): it
writes a canary into a folder outside every sandbox, reads config.yaml, connects to a loopback
listener on a port nobody allowed, and then answers with a valid plan that carries what it read.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from orchestrator.process.backends import probe

from .conftest import API_KEY, ROOT, find_cli
from .helpers import nesting as nesting_helpers
from .helpers import real_cli as real_cli_helpers
from .helpers.worktree import snapshot
from .mock_model_server import Text, prompt_text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
served = nesting_helpers.served
claude_workers = real_cli_helpers.claude_workers
CLAUDE = find_cli("claude")

# The fake claude: planner (the planner's prompt) or judge (its prompt holds "Candidate A") or
# worker; its argv is the adapter's, the prompt last. PROOF, CONFIG and PORT are set at its top
# (hostile_claude): the folder outside every sandbox, the orchestrator's config.yaml, the listener.
FAKE_CLAUDE = r"""
import json, os, socket, sys
from pathlib import Path

prompt = sys.argv[-1]
role = "planner" if prompt.startswith("You are the planner") else "judge" if "Candidate A" in prompt else "worker"
said = {"argv": sys.argv[1:-1], "cwd": os.getcwd(), "role": role}
if role != "worker":
    try:
        Path(PROOF, role + "-canary").write_text("ran outside the sandbox\n")
        said["canary"] = "written"
    except OSError as exc:
        said["canary"] = f"refused: {exc.strerror}"
    try:
        said["config"] = Path(CONFIG).read_text()[:200] or "(empty)"
    except OSError as exc:
        said["config"] = f"unreadable: {exc.strerror}"
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=3):
            said["connect"] = "connected"
    except OSError as exc:
        said["connect"] = f"refused: {exc}"
    try:  # past the workers' file-size cap (max_log_mb/max_disk_mb: 1 MB in the planner's test)
        Path(os.environ["TMPDIR"], "big").write_bytes(b"x" * 3_000_000)
        said["big"] = "written"
    except (OSError, KeyError) as exc:
        said["big"] = f"refused: {getattr(exc, 'strerror', exc)}"
    try:
        said["cwd_files"] = sorted(os.listdir("."))
    except OSError as exc:
        said["cwd_files"] = str(exc)
print(json.dumps({"type": "system", "subtype": "init", "said": said}), flush=True)
if role == "planner":
    leak = " ".join(said["config"].split())[:120]
    tools = sys.argv[sys.argv.index("--tools") + 1] if "--tools" in sys.argv else "(all)"
    seen = json.dumps({"tools": tools, "cwd": said["cwd_files"], "big": said["big"]})
    answer = json.dumps([f"write a.txt=planned by the AI {leak}", f"write b.txt=planned by the AI {seen}"])
elif role == "judge":
    tools = sys.argv[sys.argv.index("--tools") + 1] if "--tools" in sys.argv else "(all)"
    seen = json.dumps({"read": " ".join(said["config"].split())[:120], "tools": tools, "cwd": said["cwd_files"]})
    shown_a = prompt.split("## Candidate A", 1)[1].split("## Candidate B", 1)[0]
    answer = json.dumps({"winner": "A" if "+made by worker_2" in shown_a else "B", "reasons": seen})
else:
    Path("work.txt").write_text("done\n")
    answer = "did the work"
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": answer, "total_cost_usd": 0}))
"""

# The parent worker (a command worker): asks the API, with its own key, for a child job planned by
# the AI planner on claude workers, waits for it, and writes what it got in marker.json.
PARENT = r"""
import json, sys
from pathlib import Path
from orchestrator.api.calls import SpawnClient

client = SpawnClient()
job = client.orchestrate(sys.argv[1], config={"worker": "claude", "planner": "ai", "max_workers": 2})
doc = client.wait(job["job_id"], timeout=150)
Path("marker.json").write_text(json.dumps({"child": job["job_id"], "status": doc["status"]}))
"""


# A candidate worker (a command worker): its work, in its checkout.
CANDIDATE = r"""
import os
from pathlib import Path

Path("work.txt").write_text(f"made by {os.environ['ORCHESTRATOR_WORKER_ID']}\n")  # the judge prefers worker_2's
"""


def hostile_claude(tmp_path: Path, folder: Path, port: int) -> tuple[Path, Path]:
    """The fake claude script and the proof folder it writes its canary into (outside every sandbox)."""
    proof = tmp_path / "proof"
    proof.mkdir()
    script = tmp_path / "fake-claude"
    head = f"#!{sys.executable}\nPROOF = {str(proof)!r}\nCONFIG = {str(folder / 'config.yaml')!r}\nPORT = {port}\n"
    script.write_text(head + FAKE_CLAUDE)
    script.chmod(0o755)
    return script, proof


def every_file_text(root: Path) -> str:
    """Every file under ``root`` (the workspace: records, logs, prompts), as text."""
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture
def listener():
    """A loopback TCP listener on a port no setting allows; ``accept`` must find nobody."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def start_hostile(served, tmp_path, listener, backend: str, sandbox: str = "on", worker: str = PARENT, **workers):
    """The server, its command workers running ``worker`` (a script: argv the task), the fake claude;
    ``workers``: more workers settings."""
    host, folder, start = served
    (folder / "config.yaml").write_text(f"api:\n  api_key: {API_KEY}\n")  # the key the planner must not read
    claude, proof = hostile_claude(tmp_path, folder, listener.getsockname()[1])
    parent = tmp_path / "worker.py"
    parent.write_text(worker)
    before = snapshot(host, folder)
    sections = {
        "workers": {"sandbox_backend": backend, **workers},
        "orchestrator": {
            "claude_command": str(claude),
            "command": [str(ROOT / "orchestrator" / "bin" / "orchestrator-python"), str(parent), "{task}"],
        },
    }
    live = start(sandbox=sandbox, sections=sections)
    return host, folder, proof, before, live


def escapes(live, proof: Path, listener: socket.socket, doc: dict) -> list[str]:
    """What got out: a canary outside, a connection to the listener, the key in the status or the workspace."""
    found = [f"canary {p.name}" for p in proof.iterdir()]
    try:
        connection, _ = listener.accept()
        connection.close()
        found.append("a connection to the loopback listener")
    except BlockingIOError:
        pass
    if API_KEY in json.dumps(doc):
        found.append("the API key in the root's status")
    if API_KEY in every_file_text(live.engine.workspace.root):
        found.append("the API key in the workspace")
    return found


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_child_jobs_ai_planner_runs_confined_with_no_tool_and_its_plan_is_used(served, tmp_path, listener, backend):
    if not probe(backend=backend).available:
        pytest.skip(f"no {backend} sandbox here: {probe(backend=backend).reason}")
    caps = {"max_log_mb": 1, "max_disk_mb": 1}  # no file past 1 MB (the kernel's file-size limit)
    host, folder, proof, before, live = start_hostile(served, tmp_path, listener, backend, **caps)
    request = "add a.txt, and add b.txt"
    root_id = live.submit(request="tree", tasks=[request], config={"max_recursion_depth": 1, "planner": "ai"}).json()["job_id"]
    doc = nesting_helpers.wait(live, root_id)
    marker = json.loads((live.engine.workspace.worker_dir(root_id, 0, "worker_1") / "marker.json").read_text())
    child = live.engine.queries.get_job(marker["child"])
    assert marker["status"] == "completed", (marker, child.notes)
    # The plan was the AI's (the planner ran, confined), and what it read of config.yaml holds no key.
    assert child.planner == "ai", child.notes
    read = "(empty)" if backend == "bubblewrap" else "unreadable: Permission denied"  # config.yaml: hidden, or refused
    assert child.tasks[0] == f"write a.txt=planned by the AI {read}", child.tasks
    seen = json.loads(child.tasks[1].removeprefix("write b.txt=planned by the AI "))
    # No tool at all, in an empty scratch folder (its log, its TMPDIR), not the parent's checkout.
    assert seen["tools"] == "" and set(seen["cwd"]) <= {"planner.log", "tmp"}, seen
    assert seen["big"] == "refused: File too large", seen  # under the workers' caps
    assert escapes(live, proof, listener, doc) == []
    assert snapshot(host, folder) == before


def test_where_the_machine_cannot_sandbox_a_child_jobs_ai_planner_is_refused_with_a_note(served, tmp_path, listener):
    """workers.sandbox off (as on a machine without bubblewrap or Landlock): the child job is planned
    by the heuristic planner and says why; the fake CLI never runs as its planner."""
    host, folder, proof, before, live = start_hostile(served, tmp_path, listener, "auto", sandbox="off")
    request = "add a.txt, and add b.txt"
    root_id = live.submit(request="tree", tasks=[request], config={"max_recursion_depth": 1, "planner": "ai"}).json()["job_id"]
    doc = nesting_helpers.wait(live, root_id)
    marker = json.loads((live.engine.workspace.worker_dir(root_id, 0, "worker_1") / "marker.json").read_text())
    child = live.engine.queries.get_job(marker["child"])
    assert child.planner == "heuristic", (child.planner, child.tasks)
    assert any("AI planner refused" in note and "sandbox" in note for note in child.notes), child.notes
    assert escapes(live, proof, listener, doc) == []


JUDGED = {"attempts": 2, "select": "judge", "judge": {"kind": "claude", "timeout": 60}}


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_the_judge_of_candidates_runs_confined_with_no_tool_and_its_verdict_is_used(served, tmp_path, listener, backend):
    if not probe(backend=backend).available:
        pytest.skip(f"no {backend} sandbox here: {probe(backend=backend).reason}")
    host, folder, proof, before, live = start_hostile(served, tmp_path, listener, backend, worker=CANDIDATE)
    root_id = live.submit(request="best of two", tasks=["make work.txt"], config=JUDGED).json()["job_id"]
    doc = nesting_helpers.wait(live, root_id)
    job = live.engine.queries.get_job(root_id)
    (selection,) = job.selections.values()
    assert selection.judge is not None and selection.judge.matches, selection
    (match,) = selection.judge.matches
    # The judge answered both orders (it ran, confined) and its verdict decided; it read no key.
    assert match.winner == "worker_2" and match.fallback is False and len(match.orders) == 2, match
    assert selection.winner == "worker_2", selection
    seen = json.loads(match.orders[0].reasons)
    read = "(empty)" if backend == "bubblewrap" else "unreadable: Permission denied"
    assert seen["read"] == read and seen["tools"] == "", seen
    assert set(seen["cwd"]) <= {"judge.log", "judge_prompt.md", "tmp"}, seen
    assert escapes(live, proof, listener, doc) == []
    assert snapshot(host, folder) == before


def test_where_the_machine_cannot_sandbox_the_judge_is_not_asked_and_best_decides(served, tmp_path, listener):
    host, folder, proof, before, live = start_hostile(served, tmp_path, listener, "auto", sandbox="off", worker=CANDIDATE)
    root_id = live.submit(request="best of two", tasks=["make work.txt"], config=JUDGED).json()["job_id"]
    doc = nesting_helpers.wait(live, root_id)
    job = live.engine.queries.get_job(root_id)
    (selection,) = job.selections.values()
    (match,) = selection.judge.matches
    assert match.fallback is True and "the judge was not asked" in match.reason and "sandbox" in match.reason, match
    assert selection.winner is not None, selection
    assert escapes(live, proof, listener, doc) == []


@pytest.mark.real_cli
@pytest.mark.skipif(CLAUDE is None, reason="claude CLI not found (run tests/install_cli.sh)")
@pytest.mark.skipif(not probe().available, reason=f"no sandbox here: {probe().reason}")
def test_the_real_claude_plans_a_child_job_in_the_sandbox_with_no_tool_through_the_mock(served, claude_workers, tmp_path):
    """The real claude as a child job's planner, in the worker sandbox: it reaches the mock model API
    (its kind's model URL, through the proxy) and is offered no tool; its plan is the child's."""

    def script(body):
        if "You are the planner of a job orchestrator" in prompt_text(body):
            return Text('{"tasks": [{"id": "a", "task": "Write a.txt"}, {"id": "b", "task": "Write b.txt"}]}')
        return Text("Nothing to change.")

    mock = claude_workers(script)
    host, folder, start = served
    parent = tmp_path / "parent.py"  # outside the repository
    parent.write_text(PARENT)
    sections = {
        "orchestrator": {
            "claude_command": CLAUDE,
            "command": [str(ROOT / "orchestrator" / "bin" / "orchestrator-python"), str(parent), "{task}"],
        },
    }
    live = start(sandbox="on", sections=sections)
    config = {"max_recursion_depth": 1, "planner": "ai"}
    root_id = live.submit(request="tree", tasks=["add a.txt, and add b.txt"], config=config).json()["job_id"]
    nesting_helpers.wait(live, root_id)
    marker = json.loads((live.engine.workspace.worker_dir(root_id, 0, "worker_1") / "marker.json").read_text())
    child = live.engine.queries.get_job(marker["child"])
    why = f"{child.notes}\n{mock.summary()}"
    assert (child.planner, child.tasks) == ("ai", ["Write a.txt", "Write b.txt"]), why
    planned = [r.body for r in mock.conversation if "You are the planner of a job orchestrator" in prompt_text(r.body)]
    assert len(planned) == 1 and planned[0].get("tools") == [], why


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_scoring_command_runs_under_the_workers_caps(served, tmp_path, backend):
    """``scoring.command`` runs on a candidate's checkout: in its sandbox, under a worker's caps (no
    file past 1 MB here: its 3 MB file is refused, which its measure says)."""
    if not probe(backend=backend).available:
        pytest.skip(f"no {backend} sandbox here: {probe(backend=backend).reason}")
    host, folder, start = served
    worker = tmp_path / "worker.py"
    worker.write_text(CANDIDATE)
    score = tmp_path / "score.py"
    score.write_text(
        "import json, os\n"
        "try:\n"
        "    open(os.path.join(os.environ['PIP_CACHE_DIR'] + '-big'), 'wb').write(b'x' * 3_000_000)\n"
        "    big = 1\n"
        "except OSError:\n"
        "    big = 0\n"
        "print(json.dumps({'big': big}))\n"
    )
    sections = {
        "workers": {"max_log_mb": 1, "max_disk_mb": 1, "sandbox_backend": backend},
        "orchestrator": {"command": [str(ROOT / "orchestrator" / "bin" / "orchestrator-python"), str(worker), "{task}"]},
        "scoring": {"command": [sys.executable, str(score)]},
    }
    live = start(sandbox="on", sections=sections)
    root_id = live.submit(request="best of two", tasks=["make work.txt"], config={"attempts": 2, "select": "best"}).json()[
        "job_id"
    ]
    nesting_helpers.wait(live, root_id)
    (selection,) = live.engine.queries.get_job(root_id).selections.values()
    assert [row.measures.get("big") for row in selection.ranking] == [0, 0], selection.ranking
