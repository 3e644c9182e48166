"""The result always passes for a child job too (DESIGN §15): a parent worker's branch receiving a
child job's work moves only to a tree on which the required gates that applied to the work in it
passed. A real server on a host repository made here, a real parent worker that starts its child
job with ``orchestrator-spawn --wait``, real child workers and real gate processes (``python3 -m
unittest`` on a tiny package), under bubblewrap and under Landlock; the user's repository checked
before and after."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import requests

from orchestrator.process.backends import probe
from orchestrator.reports.status_document import status_table
from orchestrator.workspace.stages import LEDGER

from .conftest import API_KEY, ROOT
from .helpers import nesting as nesting_helpers
from .helpers.served_home import served_home
from .helpers.worktree import git, make_host, snapshot
from .test_result_gate import KILL_POINTS, NEW_CALLER, RENAME, UNITTEST, add_package, unittest_on

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
served = nesting_helpers.served

# The workers' script (argv: the task). The parent ("parent: A | B") starts one child job with
# subtasks A and B, waits for it, and writes what spawn printed in marker.json (outside its
# checkout's tracked files: .git/info/exclude is the sandbox's; it is simply committed, and the
# project's tests do not mind it). A child runs its task with sh, in its checkout.
WORKER = r"""
import json, subprocess, sys
from pathlib import Path

task = sys.argv[1]
if task.startswith("parent:"):
    subtasks = [part.strip() for part in task.removeprefix("parent:").split("|")]
    done = subprocess.run(["orchestrator-spawn", "--wait", *subtasks], capture_output=True, text=True)
    Path("marker.json").write_text(json.dumps({"exit": done.returncode, "out": done.stdout, "err": done.stderr}))
else:
    subprocess.run(["sh", "-c", task], check=True)
"""
CONFIG = {"gates": [UNITTEST], "max_retries": 0, "max_recursion_depth": 1}


def _command(tmp_path: Path) -> list[str]:
    script = tmp_path / "child_worker.py"  # outside the repository
    script.write_text(WORKER)
    return [str(ROOT / "orchestrator" / "bin" / "orchestrator-python"), str(script), "{task}"]


def _start(served, tmp_path, backend: str):
    """The host (with the package committed), the snapshot before, and the live server whose
    workers run WORKER under ``backend`` (``auto``: whatever the machine offers, or none)."""
    host, folder, start = served
    add_package(host)
    before = snapshot(host, folder)
    sandbox = "auto" if backend == "auto" else "on"
    sections = {"workers": {"sandbox_backend": backend}, "orchestrator": {"command": _command(tmp_path)}}
    return host, folder, before, start(sandbox=sandbox, sections=sections)


def _tree(live, tasks: list[str]) -> tuple[dict, dict, dict, str]:
    """The root (one parent worker whose child job runs ``tasks``) run to its end: its status,
    the parent's marker, the child job's status document, the child's id."""
    root_id = live.submit(request="tree", tasks=["parent: " + " | ".join(tasks)], config=CONFIG).json()["job_id"]
    doc = nesting_helpers.wait(live, root_id)
    marker = json.loads((live.engine.workspace.worker_dir(root_id, 0, "worker_1") / "marker.json").read_text())
    child_id = f"{root_id}-c1"
    return doc, marker, live.call("GET", f"/api/v1/jobs/{child_id}/status").json(), child_id


def _verdicts(live, root_id: str, job_id: str) -> list[tuple[bool, list[str]]]:
    ledger = live.engine.workspace.state_dir(root_id) / LEDGER
    entries = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.is_file() else []
    return [
        (e["verdict"]["passed"], e["verdict"]["workers"])
        for e in entries
        if e["key"].startswith(f"result gate {job_id} ") and e["event"] == "verdict"
    ]


def _backend(name: str) -> None:
    if not probe(backend=name).available:
        pytest.skip(f"no {name} sandbox here: {probe(backend=name).reason}")


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_child_jobs_rename_and_new_caller_the_parents_branch_passes_and_the_breaker_is_left_out_named(
    served, tmp_path, backend
):
    _backend(backend)
    host, folder, before, live = _start(served, tmp_path, backend)
    doc, marker, child, child_id = _tree(live, [RENAME, NEW_CALLER])
    root_id = doc["job_id"]
    tasks = {t["worker_id"]: t for t in child["results"]["tasks"]}
    # each passed its gate alone, on its own branch
    assert all(t["status"] == "success" for t in tasks.values()), tasks
    # the parent's branch took the rename alone: the caller of the old name was left out, the combination named
    merge = child["merge"]
    assert merge["target"] == f"orchestrator/{root_id}/worker_1"
    assert merge["merged"] == ["worker_1_1"], merge
    (left,) = merge["left_out"]
    assert left["worker"] == "worker_1_2" and left["combination"] == "worker_1_1", left
    why = "breaks the combination with worker_1_1: tests failed: ImportError: cannot import name 'total'"
    assert left["reason"].startswith(why), left
    # the child job reads partial, and its notes say who was left out and why
    assert child["status"] == "partial", child["notes"]
    assert any(f"left out: worker_1_2 ({why}" in n for n in child["notes"]), child["notes"]
    assert f"left out: worker_1_2 ({why}" in status_table(child)  # check-status CHILD
    assert live.engine.workspace.load_job(child_id).merge.left_out == (left,)  # its record on disk
    # the parent's spawn --wait said so, and exited as for a partial job
    assert marker["exit"] == 3, marker
    assert f"Left out (not in your branch; its work stays on its branch): worker_1_2 ({why}" in marker["out"], marker["out"]
    # the parent's branch passes the project's tests, and holds the rename, not the caller
    tip = git(host, "rev-parse", merge["target"]).strip()
    assert git(host, "show", f"{tip}:calc.py") == "def sum_all(xs):\n    return sum(xs)\n"
    assert "report.py" not in git(host, "ls-tree", "--name-only", tip).split()
    assert unittest_on(host, merge["result_commit"], tmp_path).returncode == 0
    assert unittest_on(host, tip, tmp_path).returncode == 0
    # the parent's own gate passed on its branch with its child's work in it; its child job being
    # partial, it is child_incomplete and the root partial (what is below it is not all there)
    (parent,) = doc["results"]["tasks"]
    assert parent["status"] == "child_incomplete" and doc["status"] == "partial", (parent["status"], doc["status"])
    assert parent["commit"] == tip and [g["passed"] for g in parent["gates"]] == [True], parent["gates"]
    # the candidate's gate runs are in the stage ledger: the pair, and the pair once more (only the
    # whole batch failed); worker_1_1 alone is the tree its own gate passed on: not run again
    assert _verdicts(live, root_id, child_id) == [(False, ["worker_1_1", "worker_1_2"])] * 2
    log = (live.engine.workspace.logs_dir(root_id) / f"{child_id}.result_gate_tests.log").read_text()
    assert log.count("===== gate tests failed") == 2, log[-2000:]
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_child_job_whose_workers_pass_together_lands_all_of_them_after_one_gate_run(served, tmp_path, backend):
    _backend(backend)
    host, folder, before, live = _start(served, tmp_path, backend)
    doc, marker, child, child_id = _tree(live, [RENAME, "echo notes > notes.txt"])
    root_id = doc["job_id"]
    assert child["status"] == "completed", child["notes"]
    merge = child["merge"]
    assert merge["merged"] == ["worker_1_1", "worker_1_2"] and merge["left_out"] == [], merge
    assert marker["exit"] == 0 and "Left out" not in marker["out"], marker
    assert "Merged (auto), now in your checkout: worker_1_1, worker_1_2" in marker["out"], marker["out"]
    assert unittest_on(host, merge["result_commit"], tmp_path).returncode == 0
    assert _verdicts(live, root_id, child_id) == [(True, ["worker_1_1", "worker_1_2"])]
    log = (live.engine.workspace.logs_dir(root_id) / f"{child_id}.result_gate_tests.log").read_text()
    assert log.count("===== gate tests passed =====") == 1, log[-2000:]
    assert doc["status"] == "completed", doc
    assert snapshot(host, folder) == before


# -- a server killed during the gates of a child job's merge -------------------------------------


@pytest.mark.chaos
@pytest.mark.parametrize(
    ("failpoint", "started"),
    KILL_POINTS,
    ids=["between-two-runs", "during-the-batch-gate"],
)
def test_kill_9_during_a_child_merges_gate_gates_nothing_twice_that_had_a_verdict(tmp_path, failpoint, started):
    host, folder = make_host(tmp_path)
    add_package(host)
    served = served_home(tmp_path, host, _command(tmp_path))  # (its folder outside the host)
    home, url, start = served.home, served.url, served.start
    before = snapshot(host, folder)

    headers = {"X-API-Key": API_KEY}
    server = start(f"{failpoint}=1")
    try:
        answer = requests.post(
            url + "/api/v1/orchestrate",
            json={"request": "x", "tasks": [f"parent: {RENAME} | {NEW_CALLER}"], "config": CONFIG},
            headers=headers,
            timeout=30,
        )
        root_id = answer.json()["job_id"]
        child_id = f"{root_id}-c1"
        branch = f"orchestrator/{root_id}/worker_1"
        assert server.wait(150) == -signal.SIGKILL
        # the parent's branch never moved to the failing pair
        assert "report.py" not in git(host, "ls-tree", "--name-only", branch).split()
        assert snapshot(host, folder) == before
        server = start()
        deadline = f"{url}/api/v1/jobs/{root_id}/wait?timeout=60"
        for _ in range(4):
            done = requests.get(deadline, headers=headers, timeout=90).json()
            if done["status"] in ("completed", "partial", "failed", "cancelled"):
                break
        child = requests.get(f"{url}/api/v1/jobs/{child_id}/status", headers=headers, timeout=30).json()
        assert child["status"] == "partial", child["notes"]
        merge = child["merge"]
        assert merge["merged"] == ["worker_1_1"], merge
        assert [w["worker"] for w in merge["left_out"]] == ["worker_1_2"], merge
        assert merge["left_out"][0]["reason"].startswith("breaks the combination with worker_1_1: tests failed: ImportError")
        # a verdict reached before the kill is kept: the pair is run once, plus the search's re-run
        # of it, plus the one run the kill cut off (if it cut one off), never more
        job_dir = home / "workspace" / f"job_{root_id}"
        entries = [json.loads(line) for line in (job_dir / "state" / LEDGER).read_text().splitlines()]
        mine = f"result gate {child_id} "
        gate_runs = [e["key"] for e in entries if e["key"].startswith(mine) and e["event"] == "started"]
        pair = gate_runs[0]
        assert gate_runs == [pair + suffix for suffix in started]
        verdicts = [e["key"] for e in entries if e["key"].startswith(mine) and e["event"] == "verdict"]
        assert verdicts == [pair, pair + " run 2"]
        log = (job_dir / "logs" / f"{child_id}.result_gate_tests.log").read_text()
        assert log.count("===== gate tests: ") == len(started)
        tip = git(host, "rev-parse", branch).strip()
        assert "report.py" not in git(host, "ls-tree", "--name-only", tip).split()
        assert unittest_on(host, tip, tmp_path).returncode == 0
        assert snapshot(host, folder) == before
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(60)
