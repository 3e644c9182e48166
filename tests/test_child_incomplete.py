"""A worker that exits 0 after a child job it started did not complete is ``child_incomplete``,
never ``success``, and the job it belongs to is ``partial``, never ``completed``: a real server,
real ``command`` workers three levels deep (each runs ``orchestrator-spawn --wait`` as an AI worker
would), one grandchild failing, and every surface an agent reads saying so."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli.mcpserver import status_text
from orchestrator.cli.progress import summary
from orchestrator.cli.scripts import exit_code
from orchestrator.engine.queries import Queries
from orchestrator.reports.status_document import status_table
from orchestrator.webhooks.event_types import Seen, worker_summary, worker_types

pytestmark = pytest.mark.slow

# depth 0 and 1 spawn a child job and exit 0 whatever it did; at depth 2 "leaf bad" fails.
SCRIPT = """
case "$ORCHESTRATOR_DEPTH" in
  0) orchestrator-spawn --wait "middle" ;;
  1) orchestrator-spawn --wait "leaf ok" "leaf bad" ;;
  *) if [ "$1" = "leaf bad" ]; then echo "leaf bad fails" >&2; exit 1; fi; echo "$1" > leaf.txt ;;
esac
exit 0
"""


def test_a_failed_grandchild_is_child_incomplete_and_partial_on_every_surface(make_live):
    live = make_live(
        orchestrator={"worker": "command", "command": ["sh", "-c", SCRIPT, "worker", "{task}"]}, workers={"max_retries": 0}
    )
    root_id = live.submit(request="top", tasks=["top"], config={"max_recursion_depth": 2}).json()["job_id"]
    doc = live.wait(root_id)
    child_id = f"{root_id}-c1"

    # The status document: the root is partial, its worker child_incomplete with the reason, and
    # its counts say so (not "1 of 1 succeeded").
    assert doc["status"] == "partial", doc
    (top,) = doc["results"]["tasks"]
    assert top["status"] == "child_incomplete", top
    assert top["exit_reason"] == f"exit code 0; child job {child_id} ended partial"
    assert doc["progress"]["succeeded"] == 0 and doc["progress"]["child_incomplete"] == 1, doc["progress"]
    assert doc["progress"]["failed"] == 0
    (middle,) = top["child_results"]
    assert middle["status"] == "child_incomplete" and middle["job_id"] == child_id, middle
    assert doc["tree"]["child_incomplete"] == 2 and doc["tree"]["succeeded"] == 1, doc["tree"]
    child = live.call("GET", f"/api/v1/jobs/{child_id}/status").json()
    assert child["status"] == "partial"
    grandchild_id = child["results"]["tasks"][0]["child_job_id"]
    assert child["results"]["tasks"][0]["exit_reason"] == f"exit code 0; child job {grandchild_id} ended partial"
    grandchild = live.call("GET", f"/api/v1/jobs/{grandchild_id}/status").json()
    assert grandchild["status"] == "partial"
    assert sorted(t["status"] for t in grandchild["results"]["tasks"]) == ["failed", "success"]

    # spawn's Markdown, as the root worker read it back from its child job.
    assert top["output"].startswith(f"## Child job {child_id}: partial"), top["output"]
    assert "0/1 workers succeeded at depth 1; 1 child_incomplete" in top["output"]
    assert "### worker_1_1: child_incomplete" in top["output"]
    assert f"Incomplete: exit code 0; child job {grandchild_id} ended partial" in top["output"]

    # check-status's table, from the server's document and from the files alone.
    table = status_table(doc)
    assert f"job {root_id}  PARTIAL" in table
    assert "1 child_incomplete (exited 0, a child job it started did not complete)" in table
    assert any(line.split()[:2] == ["worker_1", "child_incomplete"] for line in table.splitlines()), table
    assert f"↳ exit code 0; child job {child_id} ended partial" in table
    from_files = Queries(live.engine.workspace).status_document(root_id)
    assert from_files["status"] == "partial" and from_files["results"]["tasks"][0]["status"] == "child_incomplete"

    # quick-start's summary and exit code (3: partial), and the MCP status text.
    assert summary(doc).startswith(f"Job {root_id} partial: 0/1 workers succeeded, 1 child_incomplete")
    assert exit_code(doc) == 3
    assert "workers: 0 succeeded, 1 child_incomplete" in status_text(doc)
    assert f"worker_1: child_incomplete - top (exit code 0; child job {child_id} ended partial)" in status_text(doc)

    # FINAL_RESULT.md: the status, the counts, and the worker among the failures with its reason.
    report = Path(doc["results"]["final_report"]).read_text()
    assert "| Status | **partial** |" in report
    assert "2 child_incomplete (exited 0, a child job it started did not complete)" in report
    assert "### depth_0_worker_1: child_incomplete" in report, report
    assert f"exit code 0; child job {child_id} ended partial" in report
    section = report.split("### depth_0_worker_1: child_incomplete", 1)[1].split("###", 1)[0]
    assert "Last lines of the log:" in section and "No log tail available" not in section, section

    # The timeline's picture: its legend names the status its bar is drawn in.
    svg = live.engine.workspace.timeline_svg(root_id).read_text()
    assert ">child_incomplete</text>" in svg

    # Kage Bunshin's task API (/api/v1/tasks): the worker is not "completed"; worker_status names it.
    task = live.call("GET", f"/api/v1/tasks/{root_id}").json()
    (result,) = task["cli_results"]
    assert result["worker_status"] == "child_incomplete" and result["status"] == "failed", result

    # The webhooks the worker's end stands for, from the tree's own events, and what a delivery carries.
    job = live.engine.workspace.load_job(root_id)
    record = live.engine.workspace.load_worker(root_id, 0, "worker_1")
    (ended,) = [e for e in live.engine.events.since(root_id) if e.worker == "worker_1" and e.status == "child_incomplete"]
    assert worker_types(Seen(), job, record, ended) == ["worker.child_incomplete"]
    payload = worker_summary(record, ended)
    assert payload["status"] == "child_incomplete"
    assert payload["exit_reason"] == f"exit code 0; child job {child_id} ended partial"
