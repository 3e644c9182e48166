"""LEVEL_<n>_REPORT.md and FINAL_RESULT.md: content, valid Markdown, overridable templates."""

from __future__ import annotations

import jinja2
import pytest

from orchestrator.models import Attempt, JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.reports import FULL_LIST_LIMIT, SHOWN_LIMIT, render, render_final_report, render_level_report
from orchestrator.reports.markdown import (
    duration,
    iso,
    md_cell,
    md_code_block,
    md_inline_code,
    md_link,
)

from .helpers.reports import assert_tables_are_rectangular, code_blocks, prose_lines, table_with, tables

T = 1_700_000_000.0  # 2023-11-14T22:13:20Z
NASTY = "fix | the `parser`\n# not a heading\n```\n<b>bold</b> \\| end"
NASTY_OUTPUT = "done\n```python\nprint('|')\n```\n# also not a heading"


def make_job(job_id, depth=0, *, start=0.0, end=30.0, status=JobStatus.COMPLETED, **kw):
    return JobRecord(
        id=job_id,
        root_id="r1",
        request=kw.pop("request", f"request of {job_id}"),
        depth=depth,
        status=status,
        created_at=T + start,
        started_at=T + start,
        ended_at=None if end is None else T + end,
        **kw,
    )


def make_worker(job_id, name, depth, start, end, status=WorkerStatus.SUCCESS, index=1, **kw):
    return WorkerRecord(
        job_id=job_id,
        root_id="r1",
        name=name,
        index=index,
        depth=depth,
        task=kw.pop("task", f"task of {name}"),
        kind="simulated",
        status=status,
        attempts=[Attempt(1, T + start, None if end is None else T + end)],
        started_at=T + start,
        ended_at=None if end is None else T + end,
        log_path=f"logs/depth_{depth}_{name}.log",
        dir_path=f"depth_{depth}/{name}",
        **kw,
    )


@pytest.fixture
def tree():
    """A root job with three depth-0 workers; worker_1 started a child job with two workers."""
    root = make_job("r1", status=JobStatus.PARTIAL, request=NASTY, notes=["max_workers lowered to 2"])
    child = make_job("r1.1", 1, start=5, end=20, parent_job_id="r1", parent_worker="worker_1")
    workers = [
        make_worker(
            "r1",
            "worker_1",
            0,
            0,
            25,
            WorkerStatus.RECURSIVE_SUCCESS,
            files_created=["app.py", "docs/README.md"],
            output=NASTY_OUTPUT,
            child_job_ids=["r1.1"],
        ),
        make_worker(
            "r1",
            "worker_2",
            0,
            0,
            10,
            WorkerStatus.FAILED,
            index=2,
            task=NASTY,
            exit_reason="exit code 3 | bad",
            error="boom\nTraceback",
        ),
        make_worker("r1", "worker_3", 0, 0, 30, WorkerStatus.TIMEOUT, index=3, exit_reason="timed out after 30s (SIGKILL)"),
        make_worker("r1.1", "worker_1_1", 1, 5, 15, files_created=["lib|`x`.py"]),
        make_worker("r1.1", "worker_1_2", 1, 6, 20, index=2),
    ]
    tails = {"depth_0_worker_2": "step 1\n```\nValueError: bad | input\n"}
    return root, [root, child], workers, tails


def final(tree, **kw):
    root, jobs, workers, tails = tree
    return render_final_report(root, jobs, workers, log_tails=tails, now=T + 30, **kw)


def level(tree, depth, **kw):
    root, jobs, workers, tails = tree
    return render_level_report(depth, root, jobs, workers, log_tails=tails, now=T + 30, **kw)


def test_final_report_lists_every_worker_of_the_tree(tree):
    text = final(tree)
    rows = table_with(text, "Depth")[2:]
    assert len(rows) == 5
    for w in tree[2]:
        assert f"]({w.dir_path})" in text
        assert w.key in text


def test_level_report_lists_only_the_workers_at_its_depth(tree):
    text0, text1 = level(tree, 0), level(tree, 1)
    assert len(table_with(text0, "Worker")[2:]) == 3
    assert len(table_with(text1, "Worker")[2:]) == 2
    for w in tree[2]:
        # Links climb out of depth_<n>/, where the level report lives.
        mine, other = (text0, text1) if w.depth == 0 else (text1, text0)
        assert f"](../{w.dir_path})" in mine
        assert w.dir_path not in other


def test_level_report_shows_the_jobs_at_its_depth(tree):
    jobs = table_with(level(tree, 1), "Job")
    assert jobs[2][:4] == ["`r1.1`", "`r1`", "worker_1", "completed"]
    assert "# Level 1 report" in level(tree, 1)


def test_final_report_counts_and_success_rate(tree):
    outcome = dict(row[:2] for row in table_with(final(tree), "Measure")[2:])
    assert outcome["Workers"] == "5 total, 3 succeeded, 2 failed"
    assert outcome["Success rate"] == "60.0%"
    assert outcome["Wall time"].startswith("30.0s")
    assert outcome["Status"] == "**partial**"


def test_special_characters_do_not_break_tables(tree):
    for text in (final(tree), level(tree, 0), level(tree, 1)):
        assert_tables_are_rectangular(text)
        for line in prose_lines(text):
            assert not line.startswith(("# not a heading", "# also", "<b>"))


def test_special_characters_survive_in_cells(tree):
    row = table_with(level(tree, 0), "Worker")[3]
    assert row[2] == r"fix \| the \`parser\` # not a heading \`\`\` &lt;b>bold&lt;/b> \\\| end"
    assert row[6] == r"exit code 3 \| bad"


def test_request_and_output_keep_their_backticks_in_code_blocks(tree):
    blocks = code_blocks(final(tree))
    assert NASTY in blocks[0]
    assert NASTY_OUTPUT + "\n" in blocks


def test_failures_show_log_tail_and_log_path(tree):
    text = final(tree)
    failures = text.split("## Failures")[1].split("## Execution timeline")[0]
    assert "### depth_0_worker_2: failed" in failures
    assert "[`logs/depth_0_worker_2.log`](logs/depth_0_worker_2.log)" in failures
    assert "step 1\n```\nValueError: bad | input\n" in code_blocks(failures)
    # A timeout without a tail still names its log.
    assert "### depth_0_worker_3: timeout" in failures
    assert "(logs/depth_0_worker_3.log)" in failures
    assert "No log tail available." in failures
    assert "worker_1_1" not in failures


def test_level_report_failure_links_climb_out_of_its_folder(tree):
    text = level(tree, 0)
    assert "(../logs/depth_0_worker_2.log)" in text
    assert "ValueError: bad | input" in text
    assert "No worker failed at this depth." in level(tree, 1)


def test_files_created_are_traced_to_their_worker(tree):
    lines = final(tree).splitlines()
    assert "- `depth_0_worker_1` → [`depth_0/worker_1/app.py`](depth_0/worker_1/app.py)" in lines
    assert "- `depth_0_worker_1` → [`depth_0/worker_1/docs/README.md`](depth_0/worker_1/docs/README.md)" in lines
    assert "- `depth_1_worker_1_1` → [``depth_1/worker_1_1/lib|`x`.py``](depth_1/worker_1_1/lib%7C%60x%60.py)" in lines


def test_level_report_lists_files_in_the_worker_row(tree):
    row = table_with(level(tree, 0), "Worker")[2]
    assert row[7] == "+2: [`app.py`](../depth_0/worker_1/app.py), [`docs/README.md`](../depth_0/worker_1/docs/README.md)"


def test_child_jobs_name_the_worker_that_started_them(tree):
    child = table_with(final(tree), "Job")[2]
    assert child[0] == "`r1.1`"
    assert child[2] == "worker_1 of `r1`"
    assert child[5] == "2: worker_1_1 success, worker_1_2 success"


def test_timeline_and_performance(tree):
    text = final(tree)
    timeline = text.split("## Execution timeline")[1]
    assert "depth_0_worker_3   |████████████████████████████████████████|" in code_blocks(timeline)[0]
    perf = dict(row[:2] for row in table_with(text.split("## Performance")[1], "Measure")[2:])
    # busy = 25 + 10 + 30 + 10 + 14 = 89s over wall 30s with 5 running at t=6
    assert perf["Busy worker time"] == "1m 29s"
    assert perf["Peak concurrency"] == "5"
    assert perf["Parallel efficiency"].startswith("59.3%")
    assert perf["Slowest worker (bottleneck)"] == "`depth_0_worker_3`, 30.0s"
    assert perf["Level that waited longest"] == "depth 0, 30.0s"


def test_running_workers_count_up_to_now(tree):
    root, jobs, workers, tails = tree
    workers[4] = make_worker("r1.1", "worker_1_2", 1, 6, None, WorkerStatus.RUNNING, index=2)
    text = render_final_report(root, jobs, workers, log_tails=tails, now=T + 26)
    row = table_with(text, "Depth")[-1]
    assert (row[4], row[5]) == ("running", "20.0s")


def test_notes_errors_and_generated_time(tree):
    root, jobs, workers, tails = tree
    jobs[1].error = "child | failed"
    text = render_final_report(root, jobs, workers, log_tails=tails, now=T)
    assert "- Job `r1`: max_workers lowered to 2" in text
    assert r"- Job `r1.1` error: child \| failed" in text
    assert "Generated at 2023-11-14T22:13:20Z" in text


def test_cost_and_tokens_appear_only_when_known(tree):
    assert "Cost" not in table_with(final(tree), "Depth")[0]
    assert "## Cost and tokens" not in final(tree)
    tree[2][0].cost_usd, tree[2][0].tokens_in = 0.5, 1200
    text = final(tree)
    assert table_with(text, "Depth")[0][-2:] == ["Cost", "Tokens in / out"]
    assert "- Cost: $0.5000 (reported by 1 of 5 workers)" in text
    assert "- Tokens in: 1,200" in text
    assert_tables_are_rectangular(text)


def test_a_simulated_run_says_at_the_top_that_no_ai_did_the_work(tree):
    # Every worker of the fixture tree is of the simulated kind
    head = final(tree).split("## Request")[0]
    assert "> **Simulated run: no AI did this work.** Every worker ran the built-in simulated worker" in head
    assert "orchestrator.worker" in head
    assert "**Simulated run: no AI did this work.** 2 of 2 workers at this depth" in level(tree, 1).split("## Jobs")[0]
    # A tree where only some workers were simulated says how many; one with none says nothing
    for w in tree[2][:3]:
        w.kind = "claude"
    assert "2 of 5 workers ran the built-in simulated worker" in final(tree)
    for w in tree[2]:
        w.kind = "claude"
    assert "Simulated run" not in final(tree) and "Simulated run" not in level(tree, 1)


def test_a_real_simulated_run_s_final_result_starts_with_the_notice(make_engine):
    from .conftest import run_job

    engine = make_engine()
    job = run_job(engine, tasks=["a", "b"])
    text = (engine.workspace.job_dir(job.id) / "FINAL_RESULT.md").read_text()
    assert text.splitlines()[2].startswith("> **Simulated run: no AI did this work.** Every worker ran"), text[:400]


def test_empty_tree_renders_both_reports():
    root = make_job("r1", status=JobStatus.FAILED, end=1, error="planner failed")
    text = render_final_report(root, [root], [], log_tails={}, now=T + 1)
    assert "No workers ran." in text and "No attempt has started." in text
    assert "No worker failed." in text
    assert_tables_are_rectangular(text)
    assert "No workers at this depth." in render_level_report(0, root, [root], [], log_tails={}, now=T)


def test_templates_dir_overrides_the_packaged_template(tree, tmp_path):
    (tmp_path / "level_report.md.j2").write_text("custom level {{ depth }} of {{ root.id }}\n")
    assert level(tree, 1, templates_dir=tmp_path) == "custom level 1 of r1\n"
    # Templates missing from the override folder still come from the package.
    assert final(tree, templates_dir=tmp_path).startswith("# Final result: job `r1`")


def test_the_templates_are_compiled_once_on_a_thread_of_their_own_and_a_broken_override_is_said_where_it_renders(tree, tmp_path):
    import threading

    from orchestrator import reports

    (tmp_path / "level_report.md.j2").write_text("{% if %}broken\n")  # a syntax error in the user's override
    env = reports.environment(tmp_path)
    assert not env.cache
    warming = reports.warm_soon(tmp_path)
    assert isinstance(warming, threading.Thread)
    assert reports.warm_soon(tmp_path) is None  # once per folder: the second asks nothing
    warming.join(timeout=60)
    assert not warming.is_alive()
    compiled = {key[1] for key in env.cache}  # (jinja's cache: (its loader, the name))
    assert {reports.FINAL_TEMPLATE, "task_graph.md.j2", "candidates_section.md.j2"} <= compiled
    assert reports.LEVEL_TEMPLATE not in compiled  # the broken one: not compiled, not raised on the thread
    with pytest.raises(jinja2.TemplateSyntaxError):
        level(tree, 1, templates_dir=tmp_path)


def test_a_missing_variable_is_an_error(tmp_path):
    (tmp_path / "broken.md.j2").write_text("{{ no_such_field }}")
    with pytest.raises(jinja2.UndefinedError):
        render("broken.md.j2", tmp_path)


def test_a_thousand_worker_report_renders():
    root = make_job("r1", end=2000)
    workers = [make_worker("r1", f"worker_{i}", 0, i, i + 50, index=i) for i in range(1, 1001)]
    text = render_final_report(root, [root], workers, log_tails={}, now=T + 2000)
    assert len(table_with(text, "Depth")) == 1002
    assert "depth_0_worker_1000" in text


def test_a_tree_past_the_full_list_limit_gets_a_summary_with_a_table_per_level():
    """Past FULL_LIST_LIMIT workers, FINAL_RESULT.md is read, not scrolled: a row per level linking
    the level report (which lists every worker), and at most SHOWN_LIMIT failures, outputs, files
    and busiest workers, each list saying how many more there are."""
    assert FULL_LIST_LIMIT == 1000 and SHOWN_LIMIT == 50
    root = make_job("r1", end=2000)
    child = make_job("r1.1", 1, start=10, end=1500, parent_job_id="r1", parent_worker="worker_1")
    workers = [
        make_worker("r1", f"worker_{i}", 0, i, i + 50 + (i == 7) * 500, index=i, output=f"out {i}", files_created=[f"f{i}.py"])
        for i in range(1, 401)
    ]
    workers += [
        make_worker(
            "r1.1", f"worker_1_{i}", 1, 10 + i, 20 + i, index=i, status=WorkerStatus.FAILED if i <= 60 else WorkerStatus.SUCCESS
        )
        for i in range(1, 602)
    ]
    text = render_final_report(root, [root, child], workers, log_tails={}, now=T + 2000)
    assert_tables_are_rectangular(text)
    assert not [t for t in tables(text) if t[0][0] == "Depth" and t[0][1] == "Worker"]  # no row per worker
    levels = table_with(text, "Depth")
    assert levels[0][:4] == ["Depth", "Jobs", "Workers", "Status counts"]
    assert [row[:4] for row in levels[2:]] == [["0", "1", "400", "success: 400"], ["1", "1", "601", "success: 541, failed: 60"]]
    assert levels[3][-1] == "[`depth_1/LEVEL_1_REPORT.md`](depth_1/LEVEL_1_REPORT.md)"
    failures = text.split("## Failures")[1].split("## Execution timeline")[0]
    assert failures.count("\n### ") == 50 and "_10 more workers failed; the level reports show each one._" in failures
    results = text.split("## Results")[1].split("## Child jobs")[0]
    assert results.count("\n### ") == 50 and "_350 more workers produced output" in results
    assert "_350 more files; the level reports list them by worker._" in text
    busiest = table_with(text, "Worker")
    assert len(busiest) == 52 and busiest[2][0] == "`depth_0_worker_7`"  # the longest first
    timeline = text.split("## Execution timeline")[1].split("## Performance")[0]
    assert "1001 attempts: one line each is too long" in timeline and not code_blocks(timeline)
    assert "| Workers | 1001 total, 941 succeeded, 60 failed |" in text


def test_md_cell_escapes_and_truncates():
    assert md_cell("a | b\n\n c") == r"a \| b c"
    assert md_cell("`x` <y>") == r"\`x\` &lt;y>"
    assert md_cell("# title") == r"\# title"
    assert md_cell("1. item") == r"1\. item"
    assert md_cell(r"a\|b") == r"a\\\|b"
    assert md_cell("x" * 50, max_len=10) == "x" * 9 + "…"
    assert md_cell("|" * 50, max_len=10).endswith("\\|…")  # never cuts an escape in half
    assert md_cell(None) == md_cell("  ") == "—"
    assert md_cell(WorkerStatus.FAILED) == "failed"


def test_md_code_block_fence_outruns_any_backtick_run():
    assert md_code_block("a\n`````\nb") == "``````\na\n`````\nb\n``````"
    assert md_code_block("x", "text") == "```text\nx\n```"
    assert md_code_block("\x1b[31mred\x1b[0m\r\n") == "```\nred\n```"


def test_md_inline_code_survives_backticks_and_pipes():
    assert md_inline_code("a``b") == "```a``b```"
    assert md_inline_code("`x") == "`` `x ``"
    assert md_inline_code("a|b") == "`a|b`"
    assert md_inline_code("a|b", cell=True) == r"`a\|b`"
    assert md_inline_code("a\\|b", cell=True) == r"a\\\|b"
    assert md_inline_code("") == "—"


def test_md_link_is_relative_and_encoded():
    assert md_link("logs/w 1.log", "depth_1") == "[`logs/w 1.log`](../logs/w%201.log)"
    assert md_link("", text="worker_1") == "`worker_1`"


def test_durations_and_timestamps():
    assert [duration(s) for s in (None, 0, 1.24, 59.94, 184, 3599.6, 7500)] == [
        "—",
        "0.0s",
        "1.2s",
        "59.9s",
        "3m 04s",
        "1h 00m",
        "2h 05m",
    ]
    assert iso(T) == "2023-11-14T22:13:20Z"
    assert iso(None) == "—"


def test_long_outputs_are_cut_and_point_to_the_log(tree):
    tree[2][3].output = "x" * 5000
    text = final(tree)
    assert "x" * 4000 + "\n" in code_blocks(text)
    assert "_1,000 more characters; the full output is in [`logs/depth_1_worker_1_1.log`]" in text


def test_final_report_links_the_timeline_picture_only_when_given(tree):
    root, jobs, workers, tails = tree
    text = render_final_report(root, jobs, workers, log_tails=tails, now=T + 30, timeline_svg="reports/timeline.svg")
    timeline = text.split("## Execution timeline")[1].split("## Performance")[0]
    assert "Picture: [`reports/timeline.svg`](reports/timeline.svg)" in timeline
    assert "timeline.svg" not in final(tree)


def test_performance_names_the_critical_path_and_the_queue_waits(tree):
    # worker_3 (0 → 30 s) ended the tree; worker_1_2 started 1 s after its job's plan (ready at 5 s)
    text = final(tree)
    perf = dict(row[:2] for row in table_with(text.split("## Performance")[1], "Measure")[2:])
    assert perf["Critical path"] == "`depth_0_worker_3` (below)"
    assert perf["Queue wait"] == "1.0s in all; longest `depth_1_worker_1_2`, 1.0s"
    path = table_with(text, "Step")
    assert path[2] == ["1", "worker `depth_0_worker_3`", "0", "0.0s", "30.0s", "30.0s", "0.0s", "timeout"]
    assert_tables_are_rectangular(text)


def test_a_critical_path_through_a_child_job_lists_every_link(tree):
    root, jobs, workers, tails = tree
    workers[2].attempts[0].ended_at = workers[2].ended_at = T + 12  # worker_3 ends early now
    text = render_final_report(root, jobs, workers, log_tails=tails, now=T + 30)
    steps = [(row[1], row[5]) for row in table_with(text, "Step")[2:]]
    assert steps == [("worker `depth_0_worker_1`", "25.0s"), ("job `r1.1`", "15.0s"), ("worker `depth_1_worker_1_2`", "14.0s")]


def test_resources_are_shown_per_worker_per_job_and_for_the_tree(tree):
    workers = tree[2]
    workers[0].cpu_seconds, workers[0].peak_rss, workers[0].peak_processes = 2.5, 50 * 2**20, 3
    workers[3].cpu_seconds, workers[3].peak_rss, workers[3].cost_usd = 1.0, 300 * 2**10, 0.5
    text = final(tree)
    per_worker = {row[0]: row for row in table_with(text, "Worker")[2:] if row[0].startswith("`depth_")}
    assert per_worker["`depth_0_worker_1`"][1:6] == ["0.0s", "25.0s", "2.5s", "50.0 MiB", "3"]
    assert per_worker["`depth_1_worker_1_1`"][4] == "300 KiB"
    assert per_worker["`depth_0_worker_2`"][3:5] == ["—", "—"]  # never sampled: unknown, not zero
    resources = next(t for t in tables(text) if t[0][0] == "Job" and "CPU time" in t[0])
    jobs = {row[0]: row for row in resources[2:]}
    assert jobs["`r1`"][2:7] == ["3", "1m 05s", "2.5s", "50.0 MiB", "—"]
    assert jobs["`r1`"][8] == "$0.5000"  # with its child job's cost
    assert jobs["`r1.1`"][2:7] == ["2", "24.0s", "1.0s", "300 KiB", "$0.5000"]
    assert jobs["**tree**"][2:7] == ["5", "1m 29s", "3.5s", "50.0 MiB", "$0.5000"]
    perf = dict(row[:2] for row in table_with(text.split("## Performance")[1], "Measure")[2:])
    assert perf["CPU time"] == "3.5s (3.9% of worker time)"
    assert perf["Peak memory (largest worker)"] == "50.0 MiB"
    assert_tables_are_rectangular(text)


def test_level_report_totals_show_cpu_memory_and_the_longest_queue_wait(tree):
    tree[2][3].cpu_seconds, tree[2][3].peak_rss = 1.25, 2 * 2**30
    totals = dict(row[:2] for row in table_with(level(tree, 1), "Measure")[2:])
    assert (totals["CPU time"], totals["Peak memory (largest worker)"]) == ("1.2s", "2.00 GiB")
    assert totals["Longest queue wait"] == "`depth_1_worker_1_2`, 1.0s"  # its job's plan was ready at 5 s


def test_the_goal_shows_beside_the_task_from_its_field():
    # The goal is a record field (not a " for: <goal>" suffix inside each task)
    root = make_job("r1", status=JobStatus.PARTIAL, request="Build a REST API with auth and users", goal="Build a REST API")
    workers = [
        make_worker("r1", "worker_1", 0, 0, 5, task="Auth", goal="Build a REST API", output="done"),
        make_worker("r1", "worker_2", 0, 0, 5, WorkerStatus.FAILED, index=2, task="Users", goal="Build a REST API"),
    ]
    text = render_final_report(root, [root], workers, log_tails={}, now=T + 30)
    assert "\nPlanned as parts of: Build a REST API\n" in text
    assert "\nTask: Auth (part of: Build a REST API)\n" in text
    assert "\n- Task: Users (part of: Build a REST API)\n" in text
    assert "| Auth |" in text and "| Users |" in text  # the table keeps the task alone
    level = render_level_report(0, root, [root], workers, log_tails={}, now=T + 30)
    assert "\n- Task: Users (part of: Build a REST API)\n" in level


def test_records_written_before_the_goal_field_still_load_and_show_their_task():
    # A record of the old planner: no "goal" key, the goal inside the task as " for: <goal>"
    old_job = make_job("r1", request="Build a REST API with auth and users").to_dict()
    old_job.pop("goal")
    old_worker = make_worker("r1", "worker_1", 0, 0, 5, task="Auth for: Build a REST API", output="done").to_dict()
    old_worker.pop("goal")
    job, worker = JobRecord.from_dict(old_job), WorkerRecord.from_dict(old_worker)
    assert job.goal is None and worker.goal is None
    text = render_final_report(job, [job], [worker], log_tails={}, now=T + 30)
    assert "\nTask: Auth for: Build a REST API\n" in text and "part of" not in text and "Planned as" not in text


def test_final_report_from_figures_computed_once_is_the_same_report():
    """The engine computes the tree's figures once (analyse over ``tree_order``) for the picture
    and FINAL_RESULT.md: given them, the report is the one it computes itself."""
    from orchestrator.reports import tree_order
    from orchestrator.reports.analytics import analyse

    root = make_job("r1", end=300)
    child = make_job("r1.1", 1, start=10, end=200, parent_job_id="r1", parent_worker="worker_2")
    workers = [make_worker("r1.1", f"worker_2_{i}", 1, 10 + i, 20 + 2 * i, index=i) for i in (3, 1, 2)]
    workers += [make_worker("r1", f"worker_{i}", 0, i, 50 + i, index=i, status=WorkerStatus.FAILED) for i in (2, 1)]
    jobs, ordered = tree_order([child, root], workers)
    assert [j.id for j in jobs] == ["r1", "r1.1"]
    assert [w.name for w in ordered] == ["worker_1", "worker_2", "worker_2_1", "worker_2_2", "worker_2_3"]
    figures = analyse(jobs, ordered, T + 300)
    alone = render_final_report(root, [child, root], workers, log_tails={}, now=T + 300)
    shared = render_final_report(root, jobs, ordered, log_tails={}, now=T + 300, analytics=figures)
    assert shared == alone and "worker_2_3" in shared


def test_tree_order_keeps_a_job_in_plan_order_and_sorts_one_that_is_not():
    # A job's records read in plan order are kept as they are (no sort); out of order, or with a
    # position shared (ties by name), they are sorted by position then name
    from orchestrator.reports import tree_order

    root = make_job("r1", end=300)
    in_order = [make_worker("r1", f"worker_{i}", 0, i, 50, index=i) for i in (1, 2, 3)]
    assert tree_order([root], in_order)[1] == in_order
    shuffled = [
        make_worker("r1", name, 0, 1, 50, index=i)
        for name, i in (("worker_b", 2), ("worker_3", 3), ("worker_a", 2), ("worker_1", 1))
    ]
    assert [w.name for w in tree_order([root], shuffled)[1]] == ["worker_1", "worker_a", "worker_b", "worker_3"]
    tied = [make_worker("r1", name, 0, 1, 50, index=1) for name in ("worker_z", "worker_y")]
    assert [w.name for w in tree_order([root], tied)[1]] == ["worker_y", "worker_z"]


def test_a_level_report_from_the_tree_s_figures_is_the_one_it_computes_itself():
    """A tree of one level: the engine gives its level report the figures it computed once for
    FINAL_RESULT.md (analyse over ``tree_order`` at the same ``now``): the report is the same."""
    from orchestrator.reports import tree_order
    from orchestrator.reports.analytics import analyse

    root = make_job("r1", end=300)
    workers = [make_worker("r1", f"worker_{i}", 0, i, 50 + 3 * i, index=i) for i in (3, 1, 2)]
    workers[1].status = WorkerStatus.FAILED
    jobs, ordered = tree_order([root], workers)
    figures = analyse(jobs, ordered, T + 300)
    alone = render_level_report(0, root, [root], workers, log_tails={}, now=T + 300)
    shared = render_level_report(0, root, jobs, ordered, log_tails={}, now=T + 300, analytics=figures)
    assert shared == alone and "worker_3" in shared and "Longest queue wait" in shared


def test_the_engine_gives_a_level_report_the_tree_s_figures_only_when_the_tree_is_that_level(make_engine, monkeypatch):
    """One level: LEVEL_0_REPORT.md and FINAL_RESULT.md are rendered from one set of figures at one
    ``now``. Two levels: each level report computes its own (the tree's would count the other level)."""
    from orchestrator import reports

    from .conftest import fake_command, wait_until

    calls: list[tuple[str, int | None, object, float | None]] = []
    real_level, real_final = reports.render_level_report, reports.render_final_report

    def level_seen(depth, root, jobs, workers, **kw):
        calls.append(("level", depth, kw.get("analytics"), kw.get("now")))
        return real_level(depth, root, jobs, workers, **kw)

    def final_seen(root, jobs, workers, **kw):
        calls.append(("final", None, kw.get("analytics"), kw.get("now")))
        return real_final(root, jobs, workers, **kw)

    monkeypatch.setattr(reports, "render_level_report", level_seen)
    monkeypatch.setattr(reports, "render_final_report", final_seen)
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()})
    one = engine.submission.submit("one level", {"max_workers": 2}, ["ok", "ok"])
    assert engine.queries.wait(one.id, 30).status is JobStatus.COMPLETED
    wait_until(lambda: any(c[0] == "final" for c in calls), what="the final report")
    (level_call,) = [c for c in calls if c[0] == "level"]
    (final_call,) = [c for c in calls if c[0] == "final"]
    assert level_call[1] == 0 and level_call[2] is not None and level_call[2] is final_call[2]
    assert level_call[3] == final_call[3]
    calls.clear()
    root = engine.submission.submit("two levels", {"max_workers": 2, "max_recursion_depth": 2}, ["hang"])
    wait_until(lambda: any(w.status is WorkerStatus.RUNNING for w in engine.queries.snapshot(root.id)[1]), what="running")
    child = engine.submission.submit("y", {"max_workers": 2}, ["ok"], parent_job_id=root.id, parent_worker="worker_1")
    assert engine.queries.wait(child.id, 30).status is JobStatus.COMPLETED
    engine.cancel(root.id)
    assert engine.queries.wait(root.id, 30).status.terminal
    wait_until(lambda: any(c[0] == "final" for c in calls), what="the tree's final report")
    ended = [c for c in calls if c[0] == "level"][-2:]  # the root's end renders every level
    assert [c[1] for c in ended] == [0, 1] and all(c[2] is None for c in ended), calls
