"""What the user sees of a task graph, from records built here: the status
document's waits, gates and unblocked tasks, the terminal table's graph lines, the reports' Mermaid
graph, gates, skips and trespasses, and the timeline's waits on prerequisites."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator.models import JobRecord, JobStatus, TaskNode, WorkerRecord, WorkerStatus
from orchestrator.outcomes import Integrated, IntegrationRecord
from orchestrator.reports import render_final_report, render_level_report
from orchestrator.reports.status_document import job_status, status_table
from orchestrator.reports.taskgraph import (
    MERMAID_MAX_EDGES,
    deliveries,
    dependency_wait,
    gate_summary,
    mermaid,
    mermaid_label,
    waits_on,
)
from orchestrator.reports.timeline import render_timeline_svg

from .helpers.reports import assert_tables_are_rectangular, code_blocks, table_with, tables
from .helpers.task_views import DIAMOND, HOSTILE, RESULT, T, gate, graph_job, node_worker


def merged(at):
    return IntegrationRecord(Integrated(RESULT, "d" * 40, True), T + at, "")


@pytest.fixture
def running():
    """The diamond mid-run: a merged, c succeeded but not merged yet, b running, d pending."""
    job = graph_job()
    a, b, c, d = DIAMOND
    workers = [
        node_worker(a, 1, WorkerStatus.SUCCESS, 0, 4, integrated=merged(5), unblocked=["b", "c"], gates=[gate("tests")]),
        node_worker(b, 2, WorkerStatus.RUNNING, 6),
        node_worker(c, 3, WorkerStatus.SUCCESS, 6, 9),
        node_worker(d, 4, WorkerStatus.PENDING),
    ]
    return job, workers


@pytest.fixture
def finished():
    """The diamond ended: b's required tests gate failed, so d was skipped; b also trespassed."""
    job = graph_job(status=JobStatus.PARTIAL, end=20)
    a, b, c, d = DIAMOND
    workers = [
        node_worker(a, 1, WorkerStatus.SUCCESS, 0, 4, integrated=merged(5), unblocked=["b", "c"], gates=[gate("tests")]),
        node_worker(
            b,
            2,
            WorkerStatus.FAILED,
            6,
            12,
            gates=[gate("tests", "failed", 1), gate("lint", "passed", 0, required=False, duration=0.5)],
            trespass=["src/web/app.js"],
        ),
        node_worker(c, 3, WorkerStatus.SUCCESS, 6, 9, integrated=merged(10)),
        node_worker(d, 4, WorkerStatus.SKIPPED, None, 12, exit_reason="dependency b failed: tests gate"),
    ]
    return job, workers


def doc_of(job, workers, now):
    return job_status(job.id, [job], workers, Path("/nonexistent"), now=T + now)


def tasks_by_id(doc):
    return {t["task_id"]: t for t in doc["results"]["tasks"]}


# -- the status document and the terminal table ----------------------------------------------
def test_status_names_what_each_task_waits_on_until_its_prerequisites_are_merged(running):
    job, workers = running
    tasks = tasks_by_id(doc_of(job, workers, 10))
    # d waits on b (running) and on c: c succeeded, but its work is not in the integration branch yet
    assert tasks["d"]["waits_on"] == ["b", "c"] and tasks["d"]["depends_on"] == ["b", "c"]
    assert tasks["b"]["waits_on"] == [] and tasks["a"]["waits_on"] == []  # started: waits on nothing
    assert tasks["b"]["role"] == "backend" and tasks["b"]["owns"] == ["src/b/**"]
    assert tasks["a"]["unblocked"] == ["b", "c"] and tasks["a"]["integrated"]["merged"] is True
    assert tasks["a"]["gate_summary"] == "tests passed" and tasks["a"]["gates"][0]["log_path"].endswith("gate_tests.log")
    # Once c is merged, d waits on b alone; a wait counts up to now while it lasts
    workers[2].integrated = merged(11)
    doc = doc_of(job, workers, 12)
    assert tasks_by_id(doc)["d"]["waits_on"] == ["b"]
    assert tasks_by_id(doc)["d"]["dependency_wait"] == 12.0
    assert doc["has_dependencies"] is True and doc["integration"] == RESULT
    assert [n["id"] for n in doc["nodes"]] == ["a", "b", "c", "d"] and doc["nodes"][3]["depends_on"] == ["b", "c"]


def test_without_an_integration_branch_a_succeeded_prerequisite_counts_as_delivered(running):
    job, workers = running
    job.integration = None  # folder isolation: nothing is merged, success is what a dependent waits for
    workers[0].integrated = None
    assert tasks_by_id(doc_of(job, workers, 10))["d"]["waits_on"] == ["b"]


def test_the_status_document_only_adds_keys_for_a_job_without_a_graph(running):
    job, workers = running
    plain = JobRecord(id="p1", root_id="p1", request="plain", status=JobStatus.RUNNING, created_at=T, started_at=T)
    worker = WorkerRecord(job_id="p1", root_id="p1", name="worker_1", index=1, depth=0, task="t", kind="command", created_at=T)
    doc = job_status("p1", [plain], [worker], Path("/nonexistent"), now=T + 1)
    entry = doc["results"]["tasks"][0]
    assert doc["has_dependencies"] is False and doc["nodes"] == [] and doc["integration"] is None
    assert entry["task_id"] is None and entry["waits_on"] == [] and entry["gates"] == [] and entry["gate_summary"] is None
    assert {"worker_id", "status", "queue_wait", "exit_reason", "log"} <= set(entry)  # today's keys stay
    # The terminal table of a job without a graph has no graph lines
    assert "↳" not in status_table(doc)


def test_the_terminal_table_shows_each_tasks_graph_line(finished):
    job, workers = finished
    table = status_table(doc_of(job, workers, 20))
    lines = table.splitlines()
    below = {
        lines[i].split()[0]: lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if lines[i + 1].lstrip().startswith("↳")
    }
    assert below["worker_1"] == "↳ a; gates: tests passed; unblocked: b, c"
    assert below["worker_2"] == (
        "↳ b (backend); after a; gates: tests failed (exit 1), lint passed [optional]; trespass: src/web/app.js"
    )
    assert below["worker_4"] == "↳ d; after b, c; dependency b failed: tests gate"


def test_a_child_jobs_tasks_carry_their_own_graph_fields(finished):
    job, workers = finished
    child = graph_job([TaskNode("x"), TaskNode("y", ["x"])], id="r1.1", parent_job_id="r1", parent_worker="worker_1", depth=1)
    child.integration = None
    workers[0].child_job_ids = ["r1.1"]
    kids = [
        node_worker(TaskNode("x"), 1, WorkerStatus.RUNNING, 1, job_id="r1.1", depth=1),
        node_worker(TaskNode("y", ["x"]), 2, WorkerStatus.PENDING, job_id="r1.1", depth=1),
    ]
    doc = job_status("r1", [job, child], workers + kids, Path("/nonexistent"), now=T + 3)
    sub = {t["task_id"]: t for t in doc["results"]["tasks"][0]["child_results"]}
    assert sub["y"]["waits_on"] == ["x"] and sub["y"]["dependency_wait"] == 3.0


# -- the reports ---------------------------------------------------------------------------------
MERMAID_LINE = re.compile(
    r'graph TD|    n\d+\["[^"<>`\n\x00-\x1f]*"\]|    n\d+ --> n\d+'
    r"|    classDef [a-z_]+ fill:#[0-9a-f]{6},color:#[0-9a-f]{6},stroke:#[0-9a-f]{6}|    class n\d+(,n\d+)* [a-z_]+"
)


def mermaid_blocks(markdown):
    return [m.group(1) for m in re.finditer(r"^```mermaid\n(.*?)^```$", markdown, re.M | re.S)]


def test_final_result_draws_the_graph_with_its_gates_skips_and_trespasses(finished):
    job, workers = finished
    text = render_final_report(job, [job], workers, log_tails={}, now=T + 20)
    (graph,) = mermaid_blocks(text)
    lines = graph.splitlines()
    assert all(MERMAID_LINE.fullmatch(line) for line in lines), [line for line in lines if not MERMAID_LINE.fullmatch(line)]
    assert {"    n1 --> n2", "    n1 --> n3", "    n2 --> n4", "    n3 --> n4"} <= set(lines)
    assert '    n2["b: task b (failed, gates: tests failed (exit 1), lint passed [optional])"]' in lines
    assert "    class n4 skipped" in lines and "    class n1,n3 success" in lines
    tasks = table_with(text, "Task")
    assert tasks[0] == ["Task", "Worker", "Role", "After", "Status", "Gates", "Unblocked"]
    assert tasks[4][:5] == ["`c`", "[`worker_3`](depth_0/worker_3)", "—", "`a`", "success"]
    assert tasks[2][6] == "`b`, `c`" and tasks[3][2] == "backend"
    gates = next(t for t in tables(text) if t[0][1] == "Gate")
    assert gates[3] == [
        "`b`", "`tests`", "yes", "**failed**: tests gate: exit code 1", "1", "1.2s", "`cccccccccccc`",
        "[`logs/depth_0_worker_x.gate_tests.log`](logs/depth_0_worker_x.gate_tests.log)",
    ]  # fmt: skip
    assert gates[4][1:4] == ["`lint`", "no", "**passed**"]
    assert "- `d` (`worker_4`): dependency b failed: tests gate" in text
    assert "- `b` (`worker_2`) touched paths it does not own: `src/web/app.js`" in text
    assert "Ownership (enforce: blocks the merge)" in text
    assert "merged into `orchestrator/r1/result`" in text
    assert_tables_are_rectangular(text)


def test_the_level_report_shows_the_graph_of_the_jobs_at_its_depth(finished):
    job, workers = finished
    text = render_level_report(0, job, [job], workers, log_tails={}, now=T + 20)
    assert len(mermaid_blocks(text)) == 1 and "- `d` (`worker_4`): dependency b failed: tests gate" in text
    # its links climb out of depth_0/
    assert "[`logs/depth_0_worker_x.gate_tests.log`](../logs/depth_0_worker_x.gate_tests.log)" in text
    assert render_level_report(1, job, [job], workers, log_tails={}, now=T + 20).count("Task graph") == 0
    assert_tables_are_rectangular(text)


def test_task_text_cannot_break_the_mermaid_block_or_the_report(finished):
    job, workers = finished
    for w in workers:
        w.task = HOSTILE
    text = render_final_report(job, [job], workers, log_tails={}, now=T + 20)
    (graph,) = mermaid_blocks(text)
    assert all(MERMAID_LINE.fullmatch(line) for line in graph.splitlines())
    assert "`" not in graph and "<" not in graph and "click" in graph  # as label text only
    assert len([b for b in code_blocks(text) if b.startswith("graph TD")]) == 1
    # A label shows the text, its few unsafe characters as look-alikes (no entity code: Mermaid garbles them)
    assert mermaid_label(HOSTILE) == "x'] --› evil; click n1 call alert() ％% ˋˋˋ end ˋ{‹b›}ˋ|＃35; ;"
    assert mermaid_label("a\x1b[31mred\u2028b #quot; #x &amp; & %{init}% %%{init}%%") == (
        "a[31mred b ＃quot; #x ＆amp; & %{init}% ％%{init}％%"
    )


def test_a_graph_too_big_for_mermaid_is_left_to_the_table():
    nodes = [TaskNode(f"t{i}", [f"t{j}" for j in range(max(1, i - 3), i)]) for i in range(1, 200)]
    job = graph_job(nodes, status=JobStatus.COMPLETED, end=50)
    workers = [node_worker(n, i, WorkerStatus.SUCCESS, 1, 2) for i, n in enumerate(nodes, 1)]
    assert sum(len(n.depends_on) for n in nodes) > MERMAID_MAX_EDGES and mermaid(job, workers) is None
    text = render_final_report(job, [job], workers, log_tails={}, now=T + 50)
    assert not mermaid_blocks(text) and "199 tasks: too many for a diagram" in text
    assert len(table_with(text, "Task")) == 2 + 199


def test_gates_without_dependencies_get_the_section_without_a_diagram():
    job = graph_job([TaskNode("t1"), TaskNode("t2")], status=JobStatus.COMPLETED, end=9, integration=None)
    workers = [
        node_worker(TaskNode("t1"), 1, WorkerStatus.SUCCESS, 0, 3, gates=[gate("tests")]),
        node_worker(TaskNode("t2"), 2, WorkerStatus.SUCCESS, 0, 3),
    ]
    text = render_final_report(job, [job], workers, log_tails={}, now=T + 9)
    assert "## Task graph" in text and not mermaid_blocks(text) and "`tests`" in text


def test_a_report_of_a_job_without_a_graph_has_no_task_graph_section():
    job = graph_job([TaskNode("t1"), TaskNode("t2")], status=JobStatus.COMPLETED, end=9, integration=None)
    workers = [node_worker(TaskNode(f"t{i}"), i, WorkerStatus.SUCCESS, 0, 3) for i in (1, 2)]
    assert "Task graph" not in render_final_report(job, [job], workers, log_tails={}, now=T + 9)


def test_gate_summary_names_each_gate_and_its_exit_code():
    assert gate_summary([]) is None
    assert (
        gate_summary([gate("tests", "timeout", None), gate("build", "not_started", None)]) == "tests timeout, build not_started"
    )
    assert gate_summary([gate("lint", "failed", 2, required=False)]) == "lint failed (exit 2) [optional]"


# -- the timeline ---------------------------------------------------------------------------------
def test_dependency_wait_runs_from_the_jobs_start_to_the_last_prerequisite_merged(finished):
    job, workers = finished
    tasks = deliveries(job, workers)
    b = dependency_wait(workers[1], job, tasks, T + 20)
    assert (b.start, b.until, b.depends_on, b.waiting) == (T, T + 5, ("a",), False)  # a merged at 5, b started at 6
    d = dependency_wait(workers[3], job, tasks, T + 20)
    assert (d.until, d.waiting) == (T + 12, False)  # b never delivered: d waited until it was skipped
    assert dependency_wait(workers[0], job, tasks, T + 20) is None  # a waits on nothing
    assert waits_on(workers[3], job, tasks) == []  # ended: it waits on nothing any more


def test_the_timeline_marks_waits_on_prerequisites_apart_from_waits_for_a_slot(running):
    job, workers = running
    svg = render_timeline_svg([job], workers, now=T + 10)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    rows = {g.get("data-worker"): g for g in root.iter(ns + "g") if g.get("class") == "row"}
    waits = {key: [ln for ln in row.iter(ns + "line") if "wait" in (ln.get("class") or "")] for key, row in rows.items()}
    # b: waited on a until a was merged at 5, then 1s for a slot; d still waits on b and c at now (10)
    (b_deps, b_slot) = waits["depth_0_worker_2"]
    assert b_deps.get("class") == "wait deps" and b_slot.get("class") == "wait"
    assert b_deps.get("data-depends-on") == "a" and float(b_deps.get("data-until")) == pytest.approx(5.0)
    assert "waited 5.0s on its prerequisites: a" in b_deps.find(ns + "title").text
    (d_deps,) = waits["depth_0_worker_4"]
    assert d_deps.get("class") == "wait deps" and float(d_deps.get("data-until")) == pytest.approx(10.0)
    assert "waiting on its prerequisites: b, c" in d_deps.find(ns + "title").text
    assert float(d_deps.get("x2")) > float(b_deps.get("x2"))
    assert "waiting on prerequisites" in "".join(t.text or "" for t in root.iter(ns + "text"))  # the legend


def test_the_text_timeline_lists_the_waits_on_prerequisites(finished):
    job, workers = finished
    text = render_final_report(job, [job], workers, log_tails={}, now=T + 20)
    (timeline,) = [b for b in code_blocks(text) if "█" in b]
    assert "⧗ depth_0_worker_2 waited 5.0s on its prerequisites a (0.0s → 5.0s)" in timeline
    assert "⧗ depth_0_worker_4 waited 12.0s on its prerequisites b, c (0.0s → 12.0s)" in timeline
    assert "depth_0_worker_1 waited" not in timeline  # a waits on nothing


def test_a_child_jobs_graph_is_headed_by_its_job_in_the_level_report(finished):
    job, workers = finished
    child = graph_job([TaskNode("x"), TaskNode("y", ["x"])], id="r1.1", parent_job_id="r1", parent_worker="worker_1", depth=1)
    kids = [
        node_worker(TaskNode("x"), 1, WorkerStatus.SUCCESS, 1, 2, job_id="r1.1", depth=1, integrated=merged(2)),
        node_worker(TaskNode("y", ["x"]), 2, WorkerStatus.SUCCESS, 3, 4, job_id="r1.1", depth=1),
    ]
    text = render_level_report(1, job, [job, child], workers + kids, log_tails={}, now=T + 20)
    assert "### Job `r1.1`" in text and mermaid_blocks(text) == [mermaid(child, kids) + "\n"]
    assert "n1 --> n2" in mermaid_blocks(text)[0]
    final = render_final_report(job, [job, child], workers + kids, log_tails={}, now=T + 20)
    assert "### Job `r1`" in final and "### Job `r1.1`" in final and len(mermaid_blocks(final)) == 2


def test_a_summary_report_lists_the_first_tasks_of_a_big_graph(monkeypatch):
    import orchestrator.reports as reports

    monkeypatch.setattr(reports, "FULL_LIST_LIMIT", 20)  # a summary past 20 workers, instead of 1,000
    nodes = [TaskNode(f"t{i}", [f"t{i - 1}"] if i > 1 else []) for i in range(1, 61)]
    job = graph_job(nodes, status=JobStatus.COMPLETED, end=70)
    workers = [node_worker(n, i, WorkerStatus.SUCCESS, i, i + 1, integrated=merged(i + 1)) for i, n in enumerate(nodes, 1)]
    text = render_final_report(job, [job], workers, log_tails={}, now=T + 70)
    assert len(table_with(text, "Task")) == 2 + reports.SHOWN_LIMIT
    assert f"_{60 - reports.SHOWN_LIMIT} more tasks; the level reports list each one._" in text
    assert len(mermaid_blocks(text)) == 1  # 60 nodes still draw


def test_the_live_progress_tree_says_what_a_pending_task_waits_on(running):
    from orchestrator.cli.progress import render_tree, tree_from_records, tree_from_status

    job, workers = running
    from_records = render_tree(tree_from_records([job], workers), now=T + 10)
    from_status = render_tree(tree_from_status(doc_of(job, workers, 10)), now=T + 10)
    for lines in (from_records, from_status):
        (d,) = [line for line in lines if "worker_4" in line]
        assert d.endswith("(waits on b, c) task d") and "pending" in d
        assert not any("waits on" in line for line in lines if "worker_4" not in line)


def test_under_on_failure_continue_a_prerequisite_that_ended_is_met(finished):
    job, workers = finished
    workers[3].status, workers[3].ended_at, workers[3].exit_reason = WorkerStatus.PENDING, None, ""
    assert waits_on(workers[3], job, deliveries(job, workers)) == ["b"]  # skip (the default): b failed, d never may start
    job.config = dataclasses.replace(job.config, on_failure="continue")
    tasks = deliveries(job, workers)
    assert waits_on(workers[3], job, tasks) == []  # b ended: d may run
    wait = dependency_wait(workers[3], job, tasks, T + 20)
    assert (wait.until, wait.waiting) == (T + 12, False)  # until b ended, the later of b and c
    assert waits_on(workers[3], job, deliveries(job, [workers[2]])) == []  # a prerequisite without a record counts as met


# -- end to end: a real graph job (real processes, real git) ---------------------------------------
@pytest.mark.slow
def test_a_real_graph_job_shows_its_waits_skips_and_graph_in_status_reports_and_timeline(hosted, tmp_path):
    from .conftest import wait_until

    host, folder, make = hosted
    engine = make(workers={"max_retries": 0})
    gate_file = tmp_path / "go"
    hold = f"while [ ! -e '{gate_file}' ]; do sleep 0.05; done; "
    tasks = [
        {"id": "a", "task": "echo a > a.txt"},
        {"id": "b", "task": hold + "echo b > b.txt", "depends_on": ["a"], "role": "backend"},
        {"id": "c", "task": hold + "echo c > c.txt; exit 3", "depends_on": ["a"]},
        {"id": "d", "task": "echo d > d.txt", "depends_on": ["b", "c"]},
    ]
    job = engine.submission.submit("a diamond whose c fails", {"isolation": "worktree"}, tasks)
    status = lambda: {t["task_id"]: t for t in engine.queries.status_document(job.id)["results"]["tasks"]}  # noqa: E731
    # While b and c run, d waits on both; a (merged) says what its end unblocked
    wait_until(lambda: status()["b"]["status"] == status()["c"]["status"] == "running", timeout=60, what="b and c running")
    now = status()
    assert now["d"]["status"] == "pending" and now["d"]["waits_on"] == ["b", "c"], now["d"]
    assert now["a"]["unblocked"] == ["b", "c"] and now["a"]["integrated"]["merged"] is True
    assert now["b"]["role"] == "backend" and now["b"]["waits_on"] == []
    table = status_table(engine.queries.status_document(job.id))
    assert "↳ d; after b, c; waits on b, c" in table
    # c fails: d is skipped, naming it; b succeeds
    gate_file.touch()
    done = engine.queries.wait(job.id, 60)
    assert done.status is JobStatus.PARTIAL
    end = status()
    assert end["d"]["status"] == "skipped" and end["d"]["waits_on"] == []
    assert end["d"]["exit_reason"].startswith("skipped: dependency c failed"), end["d"]["exit_reason"]
    # FINAL_RESULT.md: the graph, the tasks, why d was skipped
    report = engine.workspace.final_report(job.id).read_text()
    (graph,) = mermaid_blocks(report)
    assert all(MERMAID_LINE.fullmatch(line) for line in graph.splitlines()), graph
    assert {"    n1 --> n2", "    n1 --> n3", "    n2 --> n4", "    n3 --> n4", "    class n4 skipped"} <= set(graph.splitlines())
    assert "- `d` (`worker_4`): skipped: dependency c failed" in report
    assert [row[0] for row in table_with(report, "Task")[2:]] == ["`a`", "`b`", "`c`", "`d`"]
    # The timeline: b and c waited on a until it was merged, d on b and c until it was skipped
    root = ET.fromstring(engine.workspace.timeline_svg(job.id).read_text())
    ns = "{http://www.w3.org/2000/svg}"
    deps = {
        g.get("data-worker"): line
        for g in root.iter(ns + "g")
        if g.get("class") == "row"
        for line in g.iter(ns + "line")
        if line.get("class") == "wait deps"
    }
    assert set(deps) == {"depth_0_worker_2", "depth_0_worker_3", "depth_0_worker_4"}
    assert deps["depth_0_worker_2"].get("data-depends-on") == "a" and deps["depth_0_worker_4"].get("data-depends-on") == "b,c"
    records = {w.task_id: w for w in engine.queries.snapshot(job.id)[1]}
    started = engine.queries.get_job(job.id).started_at
    origin = min([started, *(a.started_at for w in records.values() for a in w.attempts)])  # the chart's zero
    for key, task_id in (("depth_0_worker_2", "b"), ("depth_0_worker_3", "c")):
        assert float(deps[key].get("data-until")) == pytest.approx(records["a"].integrated.at - origin, abs=0.002)
        assert records[task_id].attempts[0].started_at >= records["a"].integrated.at
    assert float(deps["depth_0_worker_4"].get("data-until")) == pytest.approx(records["d"].ended_at - origin, abs=0.002)


def test_the_legend_of_a_worktree_graph_fits_the_picture(running):
    from orchestrator.reports.timeline import CHAR_WIDTH, WIDTH

    job, workers = running
    job.config = dataclasses.replace(job.config, isolation="worktree")  # its legend has commit and merge too
    root = ET.fromstring(render_timeline_svg([job], workers, now=T + 10))
    ns = "{http://www.w3.org/2000/svg}"
    legend = [(float(t.get("x")), t.text) for t in root.findall(ns + "text") if t.get("y") in ("18", "39")]
    assert {"waiting on prerequisites", "commit", "merge"} <= {text for _, text in legend}
    assert all(x + len(text) * CHAR_WIDTH <= WIDTH for x, text in legend), legend


def test_a_nodes_label_is_bounded_however_many_gates_ran(finished):
    job, workers = finished
    workers[0].task = "t" * 500
    workers[0].gates = [gate(f"gate{i}", "failed", i) for i in range(1, 40)]
    (line,) = [line for line in mermaid(job, workers).splitlines() if line.startswith("    n1[")]
    assert len(line) < 200 and "a: " + "t" * 39 + "…" in line and line.endswith('…)"]')


@pytest.mark.slow
def test_a_real_gated_graph_shows_each_gate_and_the_skip_it_caused(hosted):
    host, folder, make = hosted
    engine = make(workers={"max_retries": 0})
    gates = [
        {"name": "tests", "run": ["sh", "-c", "! test -e bad.txt"], "required": True, "timeout": 30},
        {"name": "lint", "run": ["true"], "required": False, "timeout": 30},
    ]
    tasks = [
        {"id": "a", "task": "echo a > a.txt"},
        {"id": "b", "task": "echo b > b.txt", "depends_on": ["a"]},
        {"id": "c", "task": "echo c > bad.txt", "depends_on": ["a"]},
        {"id": "d", "task": "echo d > d.txt", "depends_on": ["b", "c"]},
    ]
    job = engine.submission.submit("a gated diamond", {"isolation": "worktree", "gates": gates}, tasks)
    assert engine.queries.wait(job.id, 60).status is JobStatus.PARTIAL
    tasks_now = {t["task_id"]: t for t in engine.queries.status_document(job.id)["results"]["tasks"]}
    assert tasks_now["a"]["gate_summary"] == "tests passed, lint passed [optional]"
    assert tasks_now["c"]["gate_summary"] == "tests failed (exit 1)" and tasks_now["c"]["status"] == "failed"
    assert "gate tests failed" in tasks_now["d"]["exit_reason"] and tasks_now["d"]["status"] == "skipped"
    report = engine.workspace.final_report(job.id).read_text()
    gate_rows = next(t for t in tables(report) if t[0][1] == "Gate")[2:]
    assert [(r[0], r[1], r[3]) for r in gate_rows] == [
        ("`a`", "`tests`", "**passed**"), ("`a`", "`lint`", "**passed**"),
        ("`b`", "`tests`", "**passed**"), ("`b`", "`lint`", "**passed**"),
        ("`c`", "`tests`", "**failed**: exit code 1"),
    ]  # fmt: skip
    # Each gate's log link points at the file the gate wrote, next to the report
    c_log = re.search(r"\]\((logs/depth_0_worker_3\.gate_tests\.log)\)", gate_rows[4][7]).group(1)
    assert (engine.workspace.final_report(job.id).parent / c_log).is_file()
    (graph,) = mermaid_blocks(report)
    assert '    n3["c: echo c › bad.txt (failed, gates: tests failed (exit 1))"]' in graph.splitlines()
    assert "- `d` (`worker_4`): skipped: dependency c failed" in report
