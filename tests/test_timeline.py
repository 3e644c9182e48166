"""The timeline picture: an SVG Gantt chart of a job tree, parsed back with ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from orchestrator.models import Attempt, JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.outcomes import FileConflict, MergeOutcome, MergeRecord
from orchestrator.reports import timeline
from orchestrator.reports.timeline import COLOURS, render_timeline_svg, tick_step

from .conftest import fake_command, run_job, wait_until

T = 1_700_000_000.0
NS = {"s": "http://www.w3.org/2000/svg"}
ROOT = "0123456789ab"
CHILD = ROOT + "-c1"


def job(job_id=ROOT, depth=0, start=0.0, end=40.0, **kw):
    return JobRecord(
        id=job_id,
        root_id=ROOT,
        request=kw.pop("request", f"request {job_id}"),
        depth=depth,
        status=kw.pop("status", JobStatus.COMPLETED),
        created_at=T + start,
        started_at=T + start,
        ended_at=None if end is None else T + end,
        **kw,
    )


def worker(name, index, spans, *, job_id=ROOT, depth=0, status=WorkerStatus.SUCCESS, ready=0.0, **kw):
    """A worker whose attempts run over ``spans`` [(start, end, end_reason)], seconds after T."""
    attempts = [Attempt(i + 1, T + s, None if e is None else T + e, end_reason=r) for i, (s, e, r) in enumerate(spans)]
    return WorkerRecord(
        job_id=job_id,
        root_id=ROOT,
        name=name,
        index=index,
        depth=depth,
        task=kw.pop("task", f"task of {name}"),
        kind="command",
        status=status,
        attempts=attempts,
        created_at=T + ready,
        started_at=attempts[0].started_at if attempts else None,
        ended_at=kw.pop("ended", attempts[-1].ended_at if attempts else None),
        **kw,
    )


@pytest.fixture
def tree():
    """worker_2 started a child job of two workers; worker_3 failed twice and was retried."""
    jobs = [job(), job(CHILD, 1, start=2, end=30, parent_job_id=ROOT, parent_worker="worker_2")]
    workers = [
        worker("worker_1", 1, [(0.5, 10, "exit")]),
        worker("worker_2", 2, [(0.5, 31, "exit")], status=WorkerStatus.RECURSIVE_SUCCESS, child_job_ids=[CHILD]),
        worker("worker_3", 3, [(1, 5, "exit"), (6, 12, "timeout"), (13, 20, "exit")], status=WorkerStatus.FAILED),
        worker("worker_4", 4, [(10, 40, "timeout")], status=WorkerStatus.TIMEOUT),
        worker("worker_5", 5, [], status=WorkerStatus.SKIPPED, ended=T + 38),
        worker("worker_2_1", 1, [(2.5, 12, "exit")], job_id=CHILD, depth=1, ready=2),
        worker("worker_2_2", 2, [(12, 29.5, "exit")], job_id=CHILD, depth=1, ready=2),
    ]
    return jobs, workers


def parse(svg):
    return ET.fromstring(svg)


def by_class(root, tag, cls):
    return [e for e in root.iter(f"{{{NS['s']}}}{tag}") if e.get("class") == cls]


def bars(root):
    return by_class(root, "rect", "bar")


def rows(root):
    return by_class(root, "g", "row")


def axis(root):
    """(x of t=0, pixels per second) read from the drawn ticks."""
    ticks = [(float(g.get("data-t")), float(g.find("s:line", NS).get("x1"))) for g in by_class(root, "g", "tick")]
    (t0, x0), (t1, x1) = ticks[0], ticks[-1]
    assert t0 == 0 and t1 > 0
    return x0, (x1 - x0) / (t1 - t0)


def _merge_record(strategy, merged, conflicts, result_commit, at):
    """A JobRecord.merge as landing.py and nesting.py make it: the outcome and its time."""
    outcome = MergeOutcome(
        strategy,
        "b" * 40,
        f"refs/heads/orchestrator/{ROOT}/result",
        result_commit,
        tuple(merged),
        (),
        tuple(conflicts),
        (),
        "git merge orchestrator/x/result",
    )
    return MergeRecord.of(outcome, at)


def test_one_bar_per_attempt_and_a_marker_for_a_worker_that_never_ran(tree):
    svg = parse(render_timeline_svg(*tree, now=T + 40))
    per_worker = {}
    for row in rows(svg):
        per_worker[row.get("data-worker")] = [int(b.get("data-attempt")) for b in bars(row)]
    assert per_worker == {
        "depth_0_worker_1": [1],
        "depth_0_worker_2": [1],
        "depth_1_worker_2_1": [1],
        "depth_1_worker_2_2": [1],
        "depth_0_worker_3": [1, 2, 3],
        "depth_0_worker_4": [1],
        "depth_0_worker_5": [],
    }
    assert len(bars(svg)) == sum(len(w.attempts) for w in tree[1]) == 8
    (marker,) = by_class(svg, "rect", "marker")
    assert marker.get("data-status") == "skipped"


def test_bars_sit_on_the_axis_scale(tree):
    svg = parse(render_timeline_svg(*tree, now=T + 40))
    x0, scale = axis(svg)
    assert scale > 10  # 40 s across ~800 px
    expected = {(w.key, a.number): (a.started_at - T, a.ended_at - T) for w in tree[1] for a in w.attempts}
    for row in rows(svg):
        for bar in bars(row):
            start, end = expected[(row.get("data-worker"), int(bar.get("data-attempt")))]
            assert float(bar.get("x")) == pytest.approx(x0 + start * scale, abs=0.05)
            assert float(bar.get("width")) == pytest.approx((end - start) * scale, abs=0.05)


def test_child_jobs_are_nested_under_the_worker_that_started_them(tree):
    jobs, workers = tree
    svg = parse(render_timeline_svg(jobs, list(reversed(workers)), now=T + 40))
    order = [row.get("data-worker") for row in rows(svg)]
    assert order == [
        "depth_0_worker_1",
        "depth_0_worker_2",
        "depth_1_worker_2_1",
        "depth_1_worker_2_2",
        "depth_0_worker_3",
        "depth_0_worker_4",
        "depth_0_worker_5",
    ]
    label_x = {row.get("data-worker"): float(row.find("s:text", NS).get("x")) for row in rows(svg)}
    assert label_x["depth_1_worker_2_1"] == label_x["depth_0_worker_1"] + timeline.INDENT
    # The child job's band covers exactly its two rows, inside the root's band.
    bands = {b.get("data-job"): b for b in by_class(svg, "rect", "band")}
    child, root = bands[CHILD], bands[ROOT]
    ys = {row.get("data-worker"): float(row.find("s:text", NS).get("y")) for row in rows(svg)}
    top, height = float(child.get("y")), float(child.get("height"))
    assert height == 2 * timeline.ROW_HEIGHT
    assert top < ys["depth_1_worker_2_1"] < ys["depth_1_worker_2_2"] < top + height
    assert float(root.get("height")) == 7 * timeline.ROW_HEIGHT


def test_bars_are_coloured_by_outcome_and_retries_are_faded(tree):
    svg = parse(render_timeline_svg(*tree, now=T + 40))
    retried = {b.get("data-attempt"): b for b in bars(next(r for r in rows(svg) if r.get("data-worker") == "depth_0_worker_3"))}
    assert [retried[n].get("data-status") for n in "123"] == ["failed", "timeout", "failed"]
    assert [retried[n].get("fill-opacity") for n in "123"] == ["0.45", "0.45", "1"]
    statuses = {r.get("data-worker"): bars(r)[0].get("fill") for r in rows(svg) if bars(r)}
    assert statuses["depth_0_worker_2"] == COLOURS["recursive_success"]
    assert statuses["depth_0_worker_4"] == COLOURS["timeout"]
    assert statuses["depth_0_worker_1"] == COLOURS["success"]
    legend = {t.text for t in svg.iter(f"{{{NS['s']}}}text")}
    assert {"success", "recursive_success", "failed", "timeout", "cancelled", "skipped", "running"} <= legend


def test_the_critical_path_is_outlined(tree):
    svg = parse(render_timeline_svg(*tree, now=T + 40))
    outlined = {r.get("data-worker") for r in rows(svg) for b in bars(r) if b.get("stroke")}
    assert outlined == {"depth_0_worker_4"}  # it ended the tree, at 40 s
    tree[1][3].attempts[0].ended_at = tree[1][3].ended_at = T + 20  # now worker_2 and its child job end last
    svg = parse(render_timeline_svg(*tree, now=T + 40))
    outlined = {r.get("data-worker") for r in rows(svg) for b in bars(r) if b.get("stroke")}
    assert outlined == {"depth_0_worker_2", "depth_1_worker_2_2"}


def test_a_running_attempt_reaches_now_and_queue_waits_are_drawn(tree):
    jobs, workers = tree
    jobs[0].ended_at = None
    workers[3] = worker("worker_4", 4, [(10, None, None)], status=WorkerStatus.RUNNING)
    svg = parse(render_timeline_svg(jobs, workers, now=T + 30))
    x0, scale = axis(svg)
    row = next(r for r in rows(svg) if r.get("data-worker") == "depth_0_worker_4")
    (bar,) = bars(row)
    assert bar.get("fill") == COLOURS["running"]
    assert float(bar.get("x")) + float(bar.get("width")) == pytest.approx(x0 + 30 * scale, abs=0.05)
    (wait,) = by_class(row, "line", "wait")  # ready at 0, started at 10
    assert (float(wait.get("x1")), float(wait.get("x2"))) == pytest.approx((x0, x0 + 10 * scale), abs=0.05)
    assert "waited 10s" in wait.find("s:title", NS).text


def test_untrusted_text_is_escaped_and_forbidden_characters_dropped(tree):
    jobs, workers = tree
    nasty = "a<b>&\"c' </text><script>alert(1)</script>\x00\x1b[31m\ud800 end"
    workers[0].task = nasty
    workers[0].exit_reason = "exit <code> & 3"
    jobs[0].request = nasty
    source = render_timeline_svg(jobs, workers, now=T + 40)
    svg = parse(source)  # would raise on a stray < or & or a control character
    assert "<script" not in source and "\x00" not in source
    row = rows(svg)[0]
    assert row.find("s:title", NS).text.endswith("a<b>&\"c' </text><script>alert(1)</script>[31m end")
    label = "".join(row.find("s:text", NS).itertext())
    assert label.startswith("worker_1 a<b>&\"c' </text><script>")
    title = bars(row)[0].find("s:title", NS).text
    assert "task: a<b>&" in title and "exit <code> & 3" in title


def test_two_hundred_workers_stay_readable(tree):
    jobs = [job(end=400)]
    long_task = "Implement the part of the system that does something rather long to describe " * 3
    workers = [worker(f"worker_{i}", i, [(i, i + 30, "exit")], task=long_task) for i in range(1, 201)]
    source = render_timeline_svg(jobs, workers, now=T + 400)
    svg = parse(source)
    assert len(bars(svg)) == 200
    assert len(source) < 400_000  # ~1.3 kB a row, full task in the tooltip included
    assert int(svg.get("height")) == timeline.TOP + 200 * timeline.ROW_HEIGHT + timeline.BOTTOM
    labels = [row.find("s:text", NS) for row in rows(svg)]
    ys = [float(t.get("y")) for t in labels]
    font = float(svg.get("font-size"))
    assert all(b - a >= font + 4 for a, b in zip(ys, ys[1:])), "rows closer than a line of text"
    x0, _ = axis(svg)
    for text in labels:  # every label ends before the plot starts, at a monospace glyph's width
        content = "".join(text.itertext())
        assert content.endswith("…")
        assert float(text.get("x")) + len(content) * 0.62 * font <= x0
    ticks = [float(g.get("data-t")) for g in by_class(svg, "g", "tick")]
    assert ticks == [0, 60, 120, 180, 240, 300, 360]  # the job ran 400 s


def test_the_picture_s_own_arrows_and_ellipses_are_character_references(tree):
    """ "→" and "…" (what the picture writes itself) as &#8594; / &#8230;: a document of ASCII is held
    by Python at a byte a character, half the memory of one with a single character past Latin-1
    (a 10,000-worker tree's picture is 7 MB). A parser reads the same text."""
    jobs, workers = tree
    workers[0].task = "a task long enough to be clipped in the label column of the picture " * 3
    source = render_timeline_svg(jobs, workers, now=T + 40)
    assert source.isascii() and "&#8594;" in source and "&#8230;" in source
    svg = parse(source)
    assert " → " in bars(svg)[0].find("s:title", NS).text
    assert "".join(rows(svg)[0].find("s:text", NS).itertext()).endswith("…")


def test_deep_trees_stop_indenting_so_labels_keep_room():
    jobs, workers, parent = [job()], [], ROOT
    name = "worker_1"
    workers.append(worker(name, 1, [(0, 1, "exit")], child_job_ids=[f"{ROOT}-c1"]))
    for depth in range(1, 15):
        child = f"{ROOT}-c{depth}"
        jobs.append(job(child, depth, parent_job_id=parent, parent_worker=name))
        name = f"{name}_1"
        workers.append(worker(name, 1, [(depth, depth + 1, "exit")], job_id=child, depth=depth))
        parent = child
    svg = parse(render_timeline_svg(jobs, workers, now=T + 40))
    xs = [float(row.find("s:text", NS).get("x")) for row in rows(svg)]
    assert xs == sorted(xs) and max(xs) == xs[0] + timeline.INDENT * timeline.MAX_INDENT_LEVELS
    assert all("".join(r.find("s:text", NS).itertext()).startswith("worker_1") for r in rows(svg))


def test_a_subtree_shows_only_that_job_and_below(tree):
    svg = parse(render_timeline_svg(*tree, job_id=CHILD, now=T + 40))
    assert [r.get("data-worker") for r in rows(svg)] == ["depth_1_worker_2_1", "depth_1_worker_2_2"]
    x0, scale = axis(svg)  # the child job's own start (2 s) is t = 0; its first worker started at 2.5 s
    assert float(bars(svg)[0].get("x")) == pytest.approx(x0 + 0.5 * scale, abs=0.05)


def test_an_empty_tree_is_still_a_valid_picture():
    svg = parse(render_timeline_svg([job(end=None)], [], now=T))
    assert bars(svg) == [] and rows(svg) == []
    assert parse(render_timeline_svg([], [], now=T)).tag == f"{{{NS['s']}}}svg"


@pytest.mark.parametrize("span, step", [(0.3, 0.05), (1, 0.2), (9, 2), (40, 5), (400, 60), (3000, 600), (50_000, 7200)])
def test_ticks_come_in_nice_steps(span, step):
    assert tick_step(span) == step
    assert span / tick_step(span) <= 8


@pytest.mark.slow
def test_a_real_run_writes_the_picture_and_links_it(make_engine):
    # Given command workers, one of which fails on every one of its 3 attempts
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()})
    job_ = run_job(engine, "x", tasks=["ok", "fail"], config={"max_retries": 2})
    # Then the picture exists beside FINAL_RESULT.md, has a bar per attempt, and is linked
    path = engine.workspace.timeline_svg(job_.id)
    svg = ET.parse(path).getroot()
    _, workers = engine.queries.snapshot(job_.id)
    assert [len(w.attempts) for w in workers] == [1, 3]
    assert len(bars(svg)) == 4
    assert [b.get("data-status") for b in bars(svg)] == ["success", "failed", "failed", "failed"]
    final = engine.workspace.final_report(job_.id).read_text()
    assert "[`reports/timeline.svg`](reports/timeline.svg)" in final


@pytest.mark.slow
def test_the_api_draws_the_picture_live(make_live):
    live = make_live(orchestrator={"worker": "command", "command": fake_command()})
    job_id = live.submit(request="x", tasks=["ok", "sleep 30"]).json()["job_id"]
    # Once both workers' processes have started (a worker is "running" from its dispatch, but its
    # attempt, the bar, is recorded only once its process is spawned), and while one still runs,
    # the route draws both attempts, the running one as running
    wait_until(lambda: sum(1 for w in live.engine.queries.snapshot(job_id)[1] if w.attempts) == 2, what="both workers' attempts")
    wait_until(
        lambda: 'data-status="running"' in live.call("GET", f"/api/v1/jobs/{job_id}/timeline.svg").text, what="a running bar"
    )
    answer = live.call("GET", f"/api/v1/jobs/{job_id}/timeline.svg")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("image/svg+xml")
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert len(bars(parse(answer.content))) == 2
    assert live.call("GET", f"/api/v1/jobs/{job_id}/timeline.svg", key="").status_code == 401
    assert live.call("GET", "/api/v1/jobs/..%2f..%2fetc/timeline.svg").status_code in (400, 404)
    assert live.call("GET", "/api/v1/jobs/NOT-AN-ID/timeline.svg").status_code == 400
    assert live.call("GET", "/api/v1/jobs/ffffffffffff/timeline.svg").status_code == 404
    live.call("POST", f"/api/v1/jobs/{job_id}/cancel")


def test_the_streamed_picture_is_the_whole_one_and_shared_figures_draw_the_same(tree, tmp_path):
    # Given a tree, its figures computed once (as the engine does for the picture and FINAL_RESULT.md)
    from orchestrator.reports.analytics import analyse
    from orchestrator.workspace.layout import Workspace

    jobs, workers = tree
    whole = render_timeline_svg(jobs, workers, now=50.0)
    figures = analyse(jobs, workers, 50.0)
    # Then the pieces, streamed to a file in blocks, make the same document, with or without them
    assert "".join(timeline.timeline_svg_parts(jobs, workers, now=50.0)) == whole
    assert render_timeline_svg(jobs, workers, now=50.0, analytics=figures) == whole
    path = tmp_path / "timeline.svg"
    Workspace(tmp_path).write_text(path, timeline.timeline_svg_parts(jobs, workers, now=50.0, analytics=figures))
    assert path.read_text(encoding="utf-8") == whole
    assert [p.name for p in tmp_path.iterdir()] == ["timeline.svg"]  # no temp file left behind
    big = tmp_path / "big.txt"  # many pieces, several blocks, non-ASCII across their edges
    Workspace(tmp_path).write_text(big, (f"{i}→" * 50 for i in range(3000)))
    assert big.read_text(encoding="utf-8") == "".join(f"{i}→" * 50 for i in range(3000))


# -- git isolation: commits and merges -------------------------------------------------------------
def _git_tree():
    """A worktree job: worker_1 failed (reset), failed again (a timeout: its work kept), then
    succeeded with a commit; worker_2 changed nothing; a child job of worker_1 merged at 33s
    and the root merged at 45s (past every attempt's end)."""
    from orchestrator.config.job import JobConfig

    worktree = JobConfig(isolation="worktree")
    root = job(config=worktree, end=40.0)
    child = job(CHILD, 1, start=2, end=30, parent_job_id=ROOT, parent_worker="worker_1", config=worktree)
    root.merge = _merge_record("auto", ["worker_1", "worker_2"], [], "r" * 40, T + 45)
    child.merge = _merge_record(
        "theirs", ["worker_1_1"], [FileConflict("a", ("worker_1_1",), 1, "content", "worker_1_1")], None, T + 33
    )
    w1 = worker("worker_1", 1, [(0.5, 5, "exit"), (6, 12, "timeout"), (13, 35, "exit")], child_job_ids=[CHILD])
    for attempt, checkpoint in zip(w1.attempts, ("a" * 40, "a" * 40, "b" * 40)):
        attempt.checkpoint = checkpoint
    w1.branch, w1.commit = f"orchestrator/{ROOT}/worker_1", "c" * 40
    w2 = worker("worker_2", 2, [(1, 3, "exit")])
    w2.attempts[0].checkpoint = w2.commit = "a" * 40
    w2.branch = f"orchestrator/{ROOT}/worker_2"
    w11 = worker("worker_1_1", 1, [(2.5, 20, "exit")], job_id=CHILD, depth=1, ready=2)
    w11.attempts[0].checkpoint, w11.commit, w11.branch = "a" * 40, "d" * 40, f"orchestrator/{ROOT}/worker_1_1"
    return [root, child], [w1, w2, w11]


def test_commits_are_marked_where_the_attempt_that_made_them_ended():
    jobs, workers = _git_tree()
    svg = parse(render_timeline_svg(jobs, workers, now=T + 50))
    x0, scale = axis(svg)
    marks = {}
    for row in rows(svg):
        for mark in by_class(row, "path", "commit"):
            marks.setdefault(row.get("data-worker"), []).append((mark.get("data-attempt"), mark.get("data-commit"), mark))
    # worker_1: attempt 1 was reset away (no commit on the branch), attempt 2's work was kept
    # (attempt 3 started from it), attempt 3 committed; worker_2 changed nothing; the child's worker committed
    assert [(a, c) for a, c, _ in marks["depth_0_worker_1"]] == [("2", "b" * 40), ("3", "c" * 40)]
    assert "depth_0_worker_2" not in marks
    assert [(a, c) for a, c, _ in marks["depth_1_worker_1_1"]] == [("1", "d" * 40)]
    # Each sits at its attempt's end on the axis scale, and says what it is
    second = marks["depth_0_worker_1"][0][2]
    assert second.get("d").startswith(f"M{x0 + 12 * scale:.2f} ")
    assert "commit bbbbbbbbbbbb of attempt 2's work on orchestrator/" in second.find("s:title", NS).text


def test_merges_are_marked_across_their_jobs_band_and_widen_the_chart():
    jobs, workers = _git_tree()
    svg = parse(render_timeline_svg(jobs, workers, now=T + 50))
    x0, scale = axis(svg)
    merges = {g.get("data-job"): g for g in by_class(svg, "g", "merge")}
    assert set(merges) == {ROOT, CHILD}
    # The root's merge (after every attempt) is still on the chart: the axis reaches it
    assert float(merges[ROOT].get("data-at")) == 45.0
    line = merges[ROOT].find("s:line", NS)
    assert abs(float(line.get("x1")) - (x0 + 45 * scale)) < 0.01 and float(line.get("x1")) <= timeline.WIDTH
    # It crosses its job's band: the root's covers all three rows, the child's only its own worker's
    bands = {b.get("data-job"): b for b in by_class(svg, "rect", "band")}
    for job_id in (ROOT, CHILD):
        band, drawn = bands[job_id], merges[job_id].find("s:line", NS)
        assert float(drawn.get("y1")) == float(band.get("y")) and float(drawn.get("y2")) == float(band.get("y")) + float(
            band.get("height")
        )
    assert "merge (theirs) of 1 worker(s), 0 skipped, 1 conflicting file(s)" in merges[CHILD].find("s:title", NS).text
    # The legend names both marks
    legend = {t.text for t in svg.iter(f"{{{NS['s']}}}text")}
    assert {"commit", "merge"} <= legend


def test_folder_jobs_and_failed_merges_get_no_git_marks(tree):
    jobs, workers = tree
    svg = parse(render_timeline_svg(jobs, workers, now=T + 50))
    assert not by_class(svg, "path", "commit") and not by_class(svg, "g", "merge")
    assert not {"commit", "merge"} & {t.text for t in svg.iter(f"{{{NS['s']}}}text")}
    git_jobs, git_workers = _git_tree()
    git_jobs[0].merge = MergeRecord(None, "", error="git is too old")
    svg = parse(render_timeline_svg(git_jobs, git_workers, now=T + 50))
    assert {g.get("data-job") for g in by_class(svg, "g", "merge")} == {CHILD}


@pytest.mark.slow
def test_ten_thousand_worktree_workers_draw_their_marks_in_linear_time():
    """bench_scale renders a 10,000-worker picture: the marks cost a few string joins per worker."""
    import time as clock

    from orchestrator.config.job import JobConfig

    def build(n, worktree):
        root = job(config=JobConfig(isolation="worktree" if worktree else "folder"))
        if worktree:
            root.merge = MergeRecord.of(MergeOutcome("auto", "", "x", None, (), (), (), (), ""), T + 41)
        ws = []
        for i in range(n):
            w = worker(f"worker_{i + 1}", i + 1, [(i % 30, i % 30 + 5, "exit")])
            if worktree:
                w.attempts[0].checkpoint, w.commit, w.branch = "a" * 40, f"{i:040x}", f"orchestrator/{ROOT}/worker_{i + 1}"
            ws.append(w)
        return [root], ws

    def seconds(jobs, workers):
        best = float("inf")
        for _ in range(3):
            started = clock.perf_counter()
            render_timeline_svg(jobs, workers, now=T + 50)
            best = min(best, clock.perf_counter() - started)
        return best

    plain, git = seconds(*build(10_000, False)), seconds(*build(10_000, True))
    jobs, workers = build(10_000, True)
    svg = render_timeline_svg(jobs, workers, now=T + 50)
    assert svg.count('class="commit"') == 10_000 and svg.count('class="merge"') == 1
    print(f"METRIC timeline_10k_folder_s={plain:.3f} s")
    print(f"METRIC timeline_10k_worktree_s={git:.3f} s")
    assert git < 2 * plain + 0.5, (plain, git)


@pytest.mark.slow
def test_a_real_worktree_run_marks_each_workers_commit(tmp_path):
    from .helpers.worktree import host_engine, make_host

    host, folder = make_host(tmp_path)
    engine = host_engine(folder)
    try:
        done = run_job(engine, "edit", tasks=["echo one > one.txt", "true"], config={"isolation": "worktree"})
        jobs, workers = engine.queries.snapshot(done.root_id)
        by_name = {w.name: w for w in workers}
        svg = parse(render_timeline_svg(jobs, workers))
        marks = {m.get("data-commit") for m in by_class(svg, "path", "commit")}
        # worker_1 committed its file; worker_2 changed nothing, so its branch has no commit of its own
        assert marks == {by_name["worker_1"].commit}
        assert by_name["worker_2"].commit == by_name["worker_2"].attempts[0].checkpoint
        assert "commit" in {t.text for t in svg.iter(f"{{{NS['s']}}}text")}
        # FINAL_RESULT.md's text timeline says it too, after the attempt that made it
        final = engine.workspace.final_report(done.id).read_text()
        line = next(x for x in final.splitlines() if x.startswith("depth_0_worker_1 "))
        assert line.endswith(f"◆ commit {by_name['worker_1'].commit[:12]}")
        assert "◆" not in next(x for x in final.splitlines() if x.startswith("depth_0_worker_2 "))
    finally:
        engine.shutdown(timeout=10)


def test_the_text_timeline_notes_commits_after_their_attempts_and_lists_merges():
    from orchestrator.reports import render_final_report

    jobs, workers = _git_tree()
    text = render_final_report(jobs[0], jobs, workers, log_tails={}, now=T + 50)
    lines = text.splitlines()
    line = {x.split(" ", 1)[0]: x for x in lines if x.startswith("depth_")}
    assert line["depth_0_worker_1#2"].endswith("◆ commit bbbbbbbbbbbb")
    assert line["depth_0_worker_1#3"].endswith("◆ commit cccccccccccc")
    assert "◆" not in line["depth_0_worker_1"] and "◆" not in line["depth_0_worker_2"]
    assert f"│ merge of job {ROOT} (auto) at 45.0s: 2 merged, 0 skipped, 0 conflicting file(s)" in lines
    assert f"│ merge of job {CHILD} (theirs) at 33.0s: 1 merged, 0 skipped, 1 conflicting file(s)" in lines
    # A folder tree's text timeline has neither
    plain_jobs = [job()]
    plain = render_final_report(plain_jobs[0], plain_jobs, [worker("worker_1", 1, [(0, 5, "exit")])], log_tails={}, now=T + 50)
    assert "◆" not in plain and "│ merge" not in plain
