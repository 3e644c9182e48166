"""What the user sees of a task's candidates, from records built here (the
shape the selection writes: WorkerRecord.candidate/selected/score, JobRecord.selections): each
task's CANDIDATES file, its link from FINAL_RESULT.md and the level report, the status document's
grouping, the terminal's one line per task, and hostile text that must not break any of them."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET

import pytest

from orchestrator.cli.progress import render_tree, tree_from_records, tree_from_status
from orchestrator.models import Attempt, JobConfig, JobRecord, JobStatus, TaskNode, WorkerRecord, WorkerStatus
from orchestrator.outcomes import GateResult, RankingRow, SelectionRecord
from orchestrator.reports import render_candidate_reports, render_final_report, render_level_report
from orchestrator.reports.candidate_groups import candidate_line, groups, report_path
from orchestrator.reports.status_document import job_status, status_table
from orchestrator.reports.timeline import render_timeline_svg

from .helpers.reports import assert_tables_are_rectangular, code_blocks, prose_lines, table_with, tables

T = 1_700_000_000.0
# Markdown that would end a cell, a code span or block, start a heading, or be read as a template.
HOSTILE = "x | y `z` ``` \n# heading\n{{ 7*7 }} {% raw %} <b>bold</b> \x1b[31mred\x1b[0m |"


def gate(name, passed=True, required=True):
    return GateResult(
        name=name,
        required=required,
        status="passed" if passed else "failed",
        passed=passed,
        exit_code=0 if passed else 1,
        duration=1.0,
        log_path=f"logs/{name}.log",
        commit="c" * 40,
        reason="" if passed else f"{name} gate: exit code 1",
    )


def candidate(index, number, status, *, kind="command", model=None, job_id="r1", depth=0, task_id="t1", **kw):
    node = TaskNode(task_id, kind=kind, model=model, candidate=number)
    start, end = T + index, T + index + 10 * number
    return WorkerRecord(
        job_id=job_id,
        root_id="r1",
        name=kw.pop("name", f"worker_{index}"),
        index=index,
        depth=depth,
        task=kw.pop("task", "add a /health route"),
        kind=kind,
        status=status,
        attempts=[Attempt(1, start, end)],
        created_at=T,
        started_at=start,
        ended_at=end if status.terminal else None,
        log_path=f"logs/depth_{depth}_worker_{index}.log",
        dir_path=f"depth_{depth}/worker_{index}",
        **node.worker_fields(),
        **kw,
    )


def row(worker, rank, score, eligible=True, reason="", measures=None, parts=None):
    return {
        "worker": worker,
        "kind": "command",
        "model": None,
        "eligible": eligible,
        "score": score,
        "parts": parts or {},
        "measures": measures or {},
        "rank": rank,
        "reason": reason,
    }


def job(selections=None, select="best", isolation="worktree", status=JobStatus.COMPLETED):
    return JobRecord(
        id="r1",
        root_id="r1",
        request="add a /health route, three ways",
        status=status,
        config=JobConfig(isolation=isolation, select=select),
        created_at=T,
        started_at=T,
        ended_at=T + 40 if status.terminal else None,
        tasks=["add a /health route"] * 3 + ["write the docs"],
        selections={task: SelectionRecord.from_dict(sel) for task, sel in (selections or {}).items()},
    )


def best_tree():
    """t1 ran as three command candidates under ``best``: worker_1 failed its tests gate,
    worker_2 passed with a small diff and won, worker_3 passed with a large one; t2 ran once."""
    m2 = {"tests_passed": 12, "diff_lines": 8, "cost_usd": 0.0}
    m3 = {"tests_passed": 12, "diff_lines": 400, "cost_usd": 0.0}
    ranking = [
        row("worker_2", 1, 87.5, measures=m2, parts={"tests_passed": 60.0, "diff_lines": 27.5}, reason="highest score"),
        row("worker_3", 2, 61.25, measures=m3, parts={"tests_passed": 60.0, "diff_lines": 1.25}, reason="larger diff"),
        row("worker_1", 3, None, eligible=False, reason="required gate tests failed"),
    ]
    sel = {
        "task_id": "t1",
        "select": "best",
        "candidates": ["worker_1", "worker_2", "worker_3"],
        "winner": "worker_2",
        "reason": "worker_2 scored 87.5, the highest of 2 eligible candidates",
        "ranking": ranking,
        "judge": None,
        "cost_usd": None,
        "at": T + 35,
    }
    branch = "orchestrator/r1/worker_{}".format
    workers = [
        candidate(
            1,
            1,
            WorkerStatus.FAILED,
            gates=[gate("tests", passed=False)],
            selected=False,
            score=RankingRow.from_dict(ranking[2]),
            branch=branch(1),
            commit="1" * 40,
            diffstat="1 file changed, 3 insertions(+)",
            files_changed=[{"path": "app.py", "change": "modified"}],
            exit_reason="required gate tests failed",
        ),
        candidate(
            2,
            2,
            WorkerStatus.SUCCESS,
            gates=[gate("tests")],
            selected=True,
            score=RankingRow.from_dict(ranking[0]),
            cost_usd=0.01,
            branch=branch(2),
            commit="2" * 40,
            diffstat="1 file changed, 8 insertions(+)",
            files_changed=[{"path": "app.py", "change": "modified"}],
        ),
        candidate(
            3,
            3,
            WorkerStatus.SUCCESS,
            gates=[gate("tests")],
            selected=False,
            score=RankingRow.from_dict(ranking[1]),
            cost_usd=0.02,
            branch=branch(3),
            commit="3" * 40,
            diffstat="3 files changed, 400 insertions(+)",
            files_changed=[{"path": f"f{i}.py", "change": "added"} for i in range(3)],
        ),
        WorkerRecord(
            job_id="r1",
            root_id="r1",
            name="worker_4",
            index=4,
            depth=0,
            task="write the docs",
            kind="command",
            status=WorkerStatus.SUCCESS,
            created_at=T,
            task_id="t2",
        ),
    ]
    return job({"t1": sel}), workers


def judge_selection(answer='{"winner": "A", "reasons": "smaller diff"}', reasons="A is smaller", fallback=False, **match):
    """select: judge, in the shape selection/judge.py records: worker_2 against worker_3, asked
    in both orders (``parsed`` is the label the judge picked)."""
    order = {
        "shown": ["worker_2", "worker_3"],
        "answer": answer,
        "parsed": "A",
        "reasons": reasons,
        "cost_usd": 0.003,
        "problem": None,
    }
    flipped = {
        "shown": ["worker_3", "worker_2"],
        "answer": answer,
        "parsed": "B",
        "reasons": reasons,
        "cost_usd": 0.004,
        "problem": None,
    }
    return {
        "task_id": "t1",
        "select": "judge",
        "candidates": ["worker_1", "worker_2", "worker_3"],
        "winner": "worker_2",
        "reason": "won the judge's knockout of 2 eligible in 1 round(s)",
        "ranking": [row("worker_2", 1, 1.0), row("worker_3", 2, 0.0), row("worker_1", 3, None, eligible=False)],
        "judge": {
            "kind": "claude",
            "model": "sonnet",
            "matches": [
                {
                    "round": 1,
                    "a": "worker_2",
                    "b": "worker_3",
                    "orders": [order, flipped],
                    "winner": "worker_2",
                    "reason": "the judge picked worker_2 in both orders",
                    "fallback": fallback,
                    **match,
                }
            ],
        },
        "cost_usd": 0.007,
        "at": T + 36,
    }


def candidates_file(record, workers):
    files = render_candidate_reports(record, [record], workers, now=T + 50)
    assert list(files) == ["CANDIDATES_t1.md"]
    return files["CANDIDATES_t1.md"]


def test_candidates_file_shows_each_candidate_the_winner_and_why():
    record, workers = best_tree()
    text = candidates_file(record, workers)
    assert_tables_are_rectangular(text)
    rows = table_with(text, "#")[2:]
    assert [r[1] for r in rows] == ["`worker_1`", "`worker_2`", "`worker_3`"]
    assert rows[0][3] == "failed" and "tests failed" in rows[0][4] and rows[0][9].startswith("no (out)")
    assert rows[1][5] == "87.5" and rows[1][9] == "**winner**" and rows[1][7] == "$0.0100"
    assert rows[2][5] == "61.25" and rows[2][8] == "30.0s"
    assert "- Winner: **`worker_2`** (command)" in text
    assert "- Why: worker_2 scored 87.5, the highest of 2 eligible candidates" in text
    measures = table_with(text, "Worker")
    assert measures[0][1:] == ["tests_passed", "diff_lines", "cost_usd"]
    assert measures[4][2] == "400 (1.25)"  # worker_3: raw diff lines, then the points they gave
    ranking = table_with(text, "Rank")[2:]
    assert [r[1] for r in ranking] == ["`worker_2`", "`worker_3`", "`worker_1`"]
    assert ranking[2][2] == "no" and ranking[2][4] == "required gate tests failed"
    # Each candidate's diffstat and branch, with the commands to see its diff and compare it to the winner.
    assert "3 files changed, 400 insertions(+)" in text
    assert "`python -m orchestrator diff r1 --worker depth_0_worker_3`" in text
    assert "`git diff orchestrator/r1/worker_2 orchestrator/r1/worker_3`" in text
    assert "`git diff orchestrator/r1/worker_2 orchestrator/r1/worker_2`" not in text
    assert "stay as branches for review until the job is deleted" in text
    assert "## Judge" not in text


def test_candidates_file_shows_a_judges_matches_in_the_order_shown():
    record, workers = best_tree()
    record.selections["t1"] = SelectionRecord.from_dict(judge_selection())
    text = candidates_file(record, workers)
    assert "## Judge" in text and "claude (sonnet) compared" in text
    assert "### Round 1: `worker_2` against `worker_3`" in text
    assert "- Winner: **`worker_2`**: the judge picked worker_2 in both orders" in text
    assert "- Order 1: shown `worker_2` as A then `worker_3` as B; answered `A` (`worker_2`); cost $0.0030" in text
    assert "- Order 2: shown `worker_3` as A then `worker_2` as B; answered `B` (`worker_2`); cost $0.0040" in text
    assert text.count("  - Reasons: A is smaller") == 2
    assert '{"winner": "A", "reasons": "smaller diff"}' in code_blocks(text)[0]
    assert "- Judge's cost: $0.0070" in text


def test_a_judge_fallback_and_a_bye_are_noted():
    record, workers = best_tree()
    sel = judge_selection(answer="I like both!", reasons="", fallback=True)
    match = sel["judge"]["matches"][0]
    match["reason"] = "fell back to best (worker_2 ranks higher): the answer with worker_2 shown as A was unusable: no JSON"
    match["orders"] = match["orders"][:1]
    match["orders"][0].update(parsed=None, problem="no JSON object in the answer")
    sel["judge"]["matches"].append({"round": 2, "a": "worker_2", "b": None, "orders": [], "winner": "worker_2",
                                    "reason": "a bye (odd one out)", "fallback": False})  # fmt: skip
    record.selections["t1"] = SelectionRecord.from_dict(sel)
    text = candidates_file(record, workers)
    assert "- Winner: **`worker_2`** (fell back to `best`): fell back to best (worker_2 ranks higher)" in text
    assert "answered nothing usable" in text and "  - Problem: no JSON object in the answer" in text
    assert "I like both!" in code_blocks(text)[0]
    assert "### Round 2: `worker_2` (a bye)" in text


def test_a_candidate_with_no_diff_and_a_task_not_chosen_yet():
    record, workers = best_tree()
    record.selections.clear()
    record.status = JobStatus.RUNNING
    first = workers[0]
    first.branch = first.commit = first.diffstat = None
    first.files_changed = []
    first.selected = first.score = None
    workers[1].selected = workers[2].selected = None
    workers[2].status, workers[2].ended_at = WorkerStatus.RUNNING, None
    text = candidates_file(record, workers)
    assert "- Winner: not chosen yet (1 of 3 candidates still to finish)" in text
    assert "- No diff: it committed no work (no branch on record)." in text
    assert "- Why:" not in text and "git diff orchestrator/r1/worker_2" not in text
    assert_tables_are_rectangular(text)


def test_no_winner_and_folder_isolation():
    record, workers = best_tree()
    record.config = JobConfig(isolation="folder", select="best")
    chosen = record.selections["t1"]
    chosen.winner, chosen.reason = None, "no candidate passed its required gates"
    for w in workers:
        w.branch = None
        w.selected = False if w.candidate else None
    text = candidates_file(record, workers)
    assert "- Winner: none: no candidate was eligible" in text
    assert "no candidate passed its required gates" in text
    assert "isolation: folder" in text and "](depth_0/worker_3)" in text


def test_final_result_and_level_report_link_each_tasks_file():
    record, workers = best_tree()
    final = render_final_report(record, [record], workers, log_tails={}, now=T + 50)
    assert_tables_are_rectangular(final)
    section = next(t for t in tables(final) if t[0][:3] == ["Task", "Job", "Select"])
    assert len(section) == 3  # header, rule, t1 (t2 ran once: not listed)
    t1 = section[2]
    assert t1[0] == "`t1`" and t1[2] == "best" and t1[4] == "**`worker_2`**"
    assert t1[6] == "[`CANDIDATES_t1.md`](CANDIDATES_t1.md)"
    level = render_level_report(0, record, [record], workers, log_tails={}, now=T + 50)
    assert "[`CANDIDATES_t1.md`](../CANDIDATES_t1.md)" in level
    # A tree without candidates has no such section.
    plain = render_final_report(record, [record], [workers[3]], log_tails={}, now=T + 50)
    assert "## Candidates" not in plain


@pytest.mark.slow
def test_a_summary_final_result_lists_the_first_tasks_with_candidates():
    """Past FULL_LIST_LIMIT workers FINAL_RESULT.md is a summary: SHOWN_LIMIT tasks, then a count."""
    from orchestrator.reports import FULL_LIST_LIMIT, SHOWN_LIMIT

    record, _ = best_tree()
    tasks = FULL_LIST_LIMIT // 2 + 1  # two candidates each: just past the limit
    workers = [
        candidate(2 * t + c, c, WorkerStatus.SUCCESS, task_id=f"t{t}", name=f"worker_{2 * t + c}")
        for t in range(tasks)
        for c in (1, 2)
    ]
    final = render_final_report(record, [record], workers, log_tails={}, now=T + 50)
    section = next(t for t in tables(final) if t[0][:3] == ["Task", "Job", "Select"])
    assert len(section) - 2 == SHOWN_LIMIT
    assert f"_{tasks - SHOWN_LIMIT} more tasks ran as candidates; the level reports list each one._" in final
    level = render_level_report(0, record, [record], workers, log_tails={}, now=T + 50)
    assert len(next(t for t in tables(level) if t[0][:3] == ["Task", "Job", "Select"])) - 2 == tasks


def test_a_child_jobs_tasks_get_their_own_file_under_their_depth():
    record, _ = best_tree()
    child = JobRecord(
        id="r1-c1",
        root_id="r1",
        request="sub",
        depth=1,
        parent_job_id="r1",
        parent_worker="worker_4",
        config=JobConfig(select="fastest"),
        status=JobStatus.RUNNING,
    )
    subs = [candidate(i, i, WorkerStatus.RUNNING, job_id="r1-c1", depth=1, name=f"worker_4_{i}") for i in (1, 2)]
    assert report_path(child, "t1") == "depth_1/CANDIDATES_r1-c1_t1.md"
    files = render_candidate_reports(record, [record, child], subs, now=T + 50)
    text = files["depth_1/CANDIDATES_r1-c1_t1.md"]
    assert "**fastest**" in text and "](../FINAL_RESULT.md)" in text and "](../logs/depth_1_worker_1.log)" in text
    level = render_level_report(1, record, [record, child], subs, log_tails={}, now=T + 50)
    assert "[`depth_1/CANDIDATES_r1-c1_t1.md`](../depth_1/CANDIDATES_r1-c1_t1.md)" in level


def test_hostile_text_does_not_break_the_files():
    record, workers = best_tree()
    sel = judge_selection(answer=HOSTILE * 300, reasons=HOSTILE, fallback=HOSTILE)
    sel["reason"] = HOSTILE
    sel["ranking"][0]["reason"] = HOSTILE
    for w in workers[:3]:
        w.model = HOSTILE
        w.task = HOSTILE
        w.diffstat = HOSTILE
        w.score = dataclasses.replace(w.score, measures={HOSTILE: HOSTILE, "n": 1.5}, parts={HOSTILE: 2.0})
    record.selections["t1"] = SelectionRecord.from_dict(sel)
    text = candidates_file(record, workers)
    final = render_final_report(record, [record], workers, log_tails={}, now=T + 50)
    for md in (text, final):
        assert_tables_are_rectangular(md)
        assert "{{ 7*7 }}" in md and "49" not in md  # shown, never evaluated
        assert "\x1b" not in md
        assert not any(line.startswith("# heading") for line in prose_lines(md))
    # The judge's answer in each order is clipped, inside a code block that nothing closes early.
    blocks = code_blocks(text)
    assert len(blocks) == 2 and all(len(b) < 2200 and b.rstrip().endswith("…") for b in blocks)
    measures = table_with(text, "Worker")
    assert len(measures[0]) == 3  # Worker, the hostile measure (one cell), n


def test_the_timeline_marks_candidates_and_each_selection():
    record, workers = best_tree()
    root = ET.fromstring(render_timeline_svg([record], workers, now=T + 50))
    ns = {"s": "http://www.w3.org/2000/svg"}
    rows = {g.get("data-worker"): g for g in root.iterfind(".//s:g[@class='row']", ns)}
    assert [(rows[f"depth_0_worker_{i}"].get("data-candidate"), rows[f"depth_0_worker_{i}"].get("data-selected")) for i in (1, 2, 3)] == [
        ("1", "false"), ("2", "true"), ("3", "false")]  # fmt: skip
    assert rows["depth_0_worker_4"].get("data-candidate") is None
    label = "".join(rows["depth_0_worker_2"].find("s:text", ns).itertext())
    assert label.startswith("worker_2 ★ ")
    assert "candidate 2 of t1, selected" in rows["depth_0_worker_2"].find("s:title", ns).text
    # The text timeline in FINAL_RESULT.md says when the task's selection was made, and who won
    final = render_final_report(record, [record], workers, log_tails={}, now=T + 50)
    assert "★ task t1 of job r1 (best) at 35.0s: worker_2 of worker_1, worker_2, worker_3" in "\n".join(code_blocks(final))


# -- the status document and the terminal ------------------------------------------------------
def test_the_status_document_groups_a_tasks_candidates(tmp_path):
    record, workers = best_tree()
    doc = job_status("r1", [record], workers, tmp_path, now=T + 50)
    groups_ = doc["candidates"]
    assert list(groups_) == ["t1"]
    t1 = groups_["t1"]
    assert t1["select"] == "best" and t1["chosen"] and t1["winner"] == "worker_2"
    assert t1["report"] == "CANDIDATES_t1.md"
    assert [r["worker"] for r in t1["rows"]] == ["worker_1", "worker_2", "worker_3"]
    assert t1["rows"][0]["failed_gates"] == ["tests"] and t1["rows"][0]["gates_passed"] is False
    assert t1["rows"][1]["score"] == 87.5 and t1["rows"][1]["selected"] is True
    assert t1["rows"][2]["measures"] == {"tests_passed": 12, "diff_lines": 400, "cost_usd": 0.0}
    entry = doc["results"]["tasks"][1]
    assert entry["candidate"] == 2 and entry["selected"] is True and entry["score"]["rank"] == 1
    assert doc["results"]["tasks"][3]["candidate"] is None


def test_one_terminal_line_per_task_with_its_candidates_side_by_side(tmp_path):
    record, workers = best_tree()
    line = candidate_line(groups(record, workers)["t1"])
    assert line == (
        "t1 [best] worker_1 command ✗ gate tests | worker_2 command ✓ 87.5 (winner) | worker_3 command ✓ 61.2 larger diff"
    )
    assert candidate_line(groups(record, workers)["t1"], ascii_only=True).startswith("t1 [best] worker_1 command x gate tests")
    doc = job_status("r1", [record], workers, tmp_path, now=T + 50)
    table = status_table(doc)
    assert "candidates: " + line in table
    # The progress tree: one line for t1 instead of three, from records or from the status document.
    for tree in (tree_from_records([record], workers), tree_from_status(doc)):
        lines = render_tree(tree, now=T + 50)
        assert sum("worker_2" in line for line in lines) == 1
        (t1,) = [line for line in lines if "[best]" in line]
        assert re.match(r"├─ ✔ t1 +success +\[best\] worker_1 command ✗ gate tests \| worker_2 command ✓ 87.5 \(winner\) \|", t1)
        assert any("worker_4" in line for line in lines)
        # A narrow terminal that keeps only running and failed workers still lists t1 (worker_1 failed).
        assert any("t1" in line for line in render_tree(tree, now=T + 50, height=4))


def test_a_child_jobs_candidates_fold_into_one_line_too(tmp_path):
    record, workers = best_tree()
    parent = workers[3]
    parent.child_job_ids = ["r1-c1"]
    child = JobRecord(id="r1-c1", root_id="r1", request="sub", depth=1, parent_job_id="r1", parent_worker="worker_4",
                      config=JobConfig(select="fastest"), status=JobStatus.RUNNING)  # fmt: skip
    subs = [candidate(i, i, WorkerStatus.RUNNING, job_id="r1-c1", depth=1, name=f"worker_4_{i}", task_id="s") for i in (1, 2)]
    doc = job_status("r1", [record, child], workers + subs, tmp_path, now=T + 50)
    assert list(doc["results"]["tasks"][3]["child_candidates"]["r1-c1"]) == ["s"]
    for tree in (tree_from_records([record, child], workers + subs), tree_from_status(doc)):
        lines = render_tree(tree, now=T + 50)
        (s_line,) = [line for line in lines if "[fastest]" in line]
        assert "running" in s_line and "worker_4_1 command running | worker_4_2 command running" in s_line
        assert sum("worker_4_1" in line for line in lines) == 1


def test_the_terminal_line_is_one_line_whatever_the_text(tmp_path):
    record, workers = best_tree()
    workers[2].score = dataclasses.replace(workers[2].score, reason=HOSTILE)
    workers[1].model = "m\nx\x1b[31m"
    line = candidate_line(groups(record, workers)["t1"])
    assert "\n" not in line and "\x1b" not in line
    assert "worker_2 command m x ✓ 87.5 (winner) | worker_3 command ✓ 61.2 x ¦ y" in line
    assert line.count(" | ") == 2  # the separators between the three candidates, and no other


@pytest.mark.parametrize("select", ["cheapest", "fastest", "first_passing"])
def test_the_rule_shown_is_the_selections(select):
    record, workers = best_tree()
    record.selections["t1"].select = select
    text = candidates_file(record, workers)
    assert f"- Rule: **{select}**" in text
    assert line_rule(record, workers) == select


def line_rule(record, workers):
    return re.match(r"t1 \[(\w+)\]", candidate_line(groups(record, workers)["t1"])).group(1)


# -- from a real engine run ---------------------------------------------------------------------
@pytest.mark.slow
def test_the_views_of_a_real_runs_candidates(hosted):
    """Three command candidates in real worktrees (test_candidates.THREE: one fails the tests gate,
    one passes with a large diff, one with a small diff): the selection's real records, as each
    view shows them."""
    from .helpers.candidates import TESTS_GATE, THREE

    host, folder, make = hosted
    engine = make(tasks={"gates": [TESTS_GATE]})
    job = engine.submission.submit("feature", {"attempts": 3}, [{"id": "feat", "task": THREE}])
    done = engine.queries.wait(job.id, 60)
    assert done.status is JobStatus.COMPLETED, done.error
    jobs, workers = engine.queries.snapshot(done.root_id)
    # The file
    text = render_candidate_reports(jobs[0], jobs, workers)["CANDIDATES_feat.md"]
    assert_tables_are_rectangular(text)
    rows = table_with(text, "#")[2:]
    assert [(r[1], r[3], r[9]) for r in rows] == [
        ("`worker_1`", "failed", "no (out)"),
        ("`worker_2`", "success", "no"),
        ("`worker_3`", "success", "**winner**"),
    ]
    assert "tests failed" in rows[0][4] and rows[2][4] == "tests passed"
    assert "- Winner: **`worker_3`** (command)" in text
    assert f"- Why: {done.selections['feat'].reason}" in text
    ranking = table_with(text, "Rank")[2:]
    assert [r[1] for r in ranking][0] == "`worker_3`"
    for w in workers:
        assert f"- Diffstat: {w.diffstat}" in text
        assert f"`python -m orchestrator diff {job.id} --worker {w.key}`" in text
    assert f"`git diff orchestrator/{job.id}/worker_3 orchestrator/{job.id}/worker_2`" in text
    # FINAL_RESULT.md as the engine wrote it lists the task and links its file
    final = (folder / "workspace" / f"job_{job.id}" / "FINAL_RESULT.md").read_text()
    assert "[`CANDIDATES_feat.md`](CANDIDATES_feat.md)" in final
    written = (folder / "workspace" / f"job_{job.id}" / "CANDIDATES_feat.md").read_text()
    assert written.split("Generated at")[0] == text.split("Generated at")[0]
    # The status document and the terminal line
    doc = job_status(job.id, jobs, workers, folder / "workspace" / f"job_{job.id}")
    group = doc["candidates"]["feat"]
    assert group["winner"] == "worker_3" and [r["selected"] for r in group["rows"]] == [False, False, True]
    assert group["rows"][2]["measures"] and group["rows"][2]["score"] is not None
    line = candidate_line(group)
    assert line.startswith("feat [best] worker_1 command ✗ gate tests | worker_2 command ✓ ")
    assert "worker_3 command ✓ " in line and "(winner)" in line.split(" | ")[2]
