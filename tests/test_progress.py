"""The terminal view: the job tree drawn from records or from the API, redrawn in place on a
TTY, plain lines otherwise; and ``python -m orchestrator watch`` as a user runs it."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import progress
from orchestrator.cli.progress import ProgressView, render_tree, tree_from_records, tree_from_status
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.reports.status_document import job_status

from .conftest import API_KEY, ROOT, run_job
from .helpers.progress import NOW, ROOT_ID, job, small_tree, worker


def test_the_tree_of_hand_built_records_renders_exactly():
    jobs, workers = small_tree()
    assert render_tree(tree_from_records(jobs, workers), now=NOW) == [
        "job 0123456789ab           running           1/3 done",
        "├─ ✔ worker_1              success              0.4s  Frontend",
        "├─ ▶ worker_2              running             10.0s  Backend with auth and orders",
        "│  └─ job 0123456789ab-c1  running           1/3 done",
        "│     ├─ ▶ worker_2_1      running              2.5s  Auth",
        "│     ├─ ✘ worker_2_2      failed               3.2s  Orders",
        "│     └─ · worker_2_3      pending                    Payments",
        "└─ · worker_3              pending                    Database",
    ]


def test_a_child_job_is_drawn_as_its_own_subtree():
    jobs, workers = small_tree()
    lines = render_tree(tree_from_records(jobs, workers, f"{ROOT_ID}-c1"), now=NOW)
    assert lines[0].startswith("job 0123456789ab-c1 ") and len(lines) == 4
    assert lines[1].startswith("├─ ▶ worker_2_1 ")


def test_a_tree_too_tall_for_the_terminal_lists_running_and_failed_workers_and_counts_the_rest():
    # Given 30 workers: 2 running, 1 failed, 25 succeeded, 2 pending
    statuses = ["running"] * 2 + ["failed"] + ["success"] * 25 + ["pending"] * 2
    names = [f"worker_{i}" for i in range(1, 31)]
    workers = [
        worker(
            n,
            s,
            f"task {i}",
            index=i,
            started=990.0 if s != "pending" else None,
            ended=991.0 if s in ("failed", "success") else None,
        )
        for i, (n, s) in enumerate(zip(names, statuses), 1)
    ]
    tree = tree_from_records([job(ROOT_ID, "running", names)], workers)
    # When it must fit in 6 lines
    lines = render_tree(tree, now=NOW, height=6)
    # Then the running and failed ones are listed and the others counted on one line
    assert lines == [
        "job 0123456789ab  running           26/30 done",
        "├─ ▶ worker_1     running             10.0s  task 1",
        "├─ ▶ worker_2     running             10.0s  task 2",
        "├─ ✘ worker_3     failed               1.0s  task 3",
        "└─ ✔ 25 succeeded  · 2 pending",
    ]
    # And when even that is too tall, the failed are counted too, then the tail is cut
    assert render_tree(tree, now=NOW, height=4)[-1] == "└─ ✘ 1 failed  ✔ 25 succeeded  · 2 pending"
    cut = render_tree(tree, now=NOW, height=3)
    assert len(cut) == 3 and cut[-1] == "… 2 more line(s): enlarge the terminal to see them"


def test_lines_are_cut_to_the_terminal_width_and_ascii_is_used_when_utf8_is_not_available():
    jobs, workers = small_tree()
    lines = render_tree(tree_from_records(jobs, workers), now=NOW, width=40)
    assert all(len(line) <= 40 for line in lines) and lines[1].endswith("…")
    plain = render_tree(tree_from_records(jobs, workers), now=NOW, ascii_only=True)
    assert plain[1] == "|- + worker_1              success              0.4s  Frontend"
    assert all(line.isascii() for line in plain)
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert ProgressView(stream, tty=True).ascii_only


def test_the_status_document_draws_the_same_tree_as_the_records():
    # Given a finished tree, once as records and once as the API's status document
    jobs, workers = small_tree()
    for rec in workers:
        rec.status, rec.ended_at = WorkerStatus.SUCCESS, (rec.started_at or 990.0) + 1.5
        rec.started_at = rec.started_at or 990.0
    for rec in jobs:
        rec.status = JobStatus.COMPLETED
    doc = job_status(ROOT_ID, jobs, workers, Path("/nonexistent") / f"job_{ROOT_ID}")
    # Then both sources draw the same lines
    assert render_tree(tree_from_status(doc), now=NOW) == render_tree(tree_from_records(jobs, workers), now=NOW)


def test_a_worker_with_no_changes_says_so_in_the_tree_from_records_and_from_the_status_document():
    jobs, workers = small_tree()
    workers[0].no_changes = True  # worker_1 ended with its checkout as it found it
    line = "├─ ✔ worker_1              success              0.4s  no changes: Frontend"
    assert render_tree(tree_from_records(jobs, workers), now=NOW)[1] == line
    doc = job_status(ROOT_ID, jobs, workers, Path("/nonexistent") / f"job_{ROOT_ID}")
    assert render_tree(tree_from_status(doc), now=NOW)[1] == line
    out = io.StringIO()
    ProgressView(out, tty=False).update(jobs, workers[:1])
    assert out.getvalue().rstrip().endswith("depth_0_worker_1             success (no changes)")


def test_without_a_terminal_each_change_is_one_plain_line():
    jobs, workers = small_tree()
    out = io.StringIO()
    view = ProgressView(out, tty=False)
    view.update(jobs, workers)
    view.update(jobs, workers)  # nothing changed: nothing printed
    workers[2].status = WorkerStatus.RUNNING
    view.update(jobs, workers)
    lines = out.getvalue().splitlines()
    assert len(lines) == 7 and "\x1b" not in out.getvalue()
    assert re.fullmatch(r"\[ *[0-9.]+s\] depth_0_worker_3 +running", lines[-1])
    assert re.fullmatch(r"\[ *[0-9.]+s\] depth_1_worker_2_2 +failed", lines[4])


def test_on_a_terminal_the_tree_is_redrawn_in_place(monkeypatch):
    monkeypatch.setattr(progress, "REFRESH", 0)
    jobs, workers = small_tree()
    out = io.StringIO()
    view = ProgressView(out, tty=True, size=(100, 30))
    view.update(jobs, workers)
    first = out.getvalue()
    assert "\x1b[" not in first and len(first.splitlines()) == 9  # a header and the 8 lines of the tree
    view.update(jobs, workers)
    # the second picture goes up 9 lines and clears down before drawing
    assert out.getvalue()[len(first) :].startswith("\x1b[9F\x1b[J[")


def test_a_note_stays_above_the_tree_on_a_terminal(monkeypatch):
    """watch's note that its server stopped answering is not drawn over by the next picture."""
    monkeypatch.setattr(progress, "REFRESH", 0)
    jobs, workers = small_tree()
    out = io.StringIO()
    view = ProgressView(out, tty=True, size=(100, 30))
    view.update(jobs, workers)
    view.note("the server at http://127.0.0.1:1 stopped answering; following the workspace files")
    noted = out.getvalue()
    assert noted.endswith("stopped answering; following the workspace files\n")
    view.update(jobs, workers)
    after = out.getvalue()[len(noted) :]
    assert "\x1b[" not in after and len(after.splitlines()) == 9  # drawn below the note, not up over it
    view.update(jobs, workers)
    assert out.getvalue()[len(noted) + len(after) :].startswith("\x1b[9F\x1b[J[")


def test_the_tree_fits_the_terminal_height(monkeypatch):
    jobs, workers = small_tree()
    out = io.StringIO()
    ProgressView(out, tty=True, size=(100, 6)).update(jobs, workers)
    assert len(out.getvalue().splitlines()) <= 5  # a line is left for the cursor


def test_finish_prints_the_summary_and_the_report_paths(make_engine):
    engine = make_engine()
    done = run_job(engine, tasks=["a", "b"])
    doc = job_status(done.id, *engine.queries.snapshot(done.id), engine.workspace.job_dir(done.id))
    out = io.StringIO()
    ProgressView(out, tty=False).finish(doc)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(rf"Job {done.id} completed: 2/2 workers succeeded in [0-9.]+s", lines[1])
    assert lines[2] == f"report: {engine.workspace.final_report(done.id)}"
    assert lines[3] == f"level 0: {engine.workspace.level_report(done.id, 0)}"


# -- watch, as a user runs it ------------------------------------------------------------


def watch_home(tmp_path, port=None):
    """An orchestrator home whose config has the test key (and a port where nothing listens)."""
    home = tmp_path / "watcher"
    home.mkdir()
    api = {"api_key": API_KEY, **({"port": port} if port else {})}
    (home / "config.yaml").write_text(
        yaml.safe_dump({"api": api, "orchestrator": {"workspace_root": str(tmp_path / "workspace")}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    return {**env, "ORCHESTRATOR_HOME": str(home), "COLUMNS": "120", "LINES": "30"}


def run_in_pty(argv, env, timeout=60):
    """Run ``argv`` with a pseudo-terminal as stdout and stderr; returns (exit code, all it wrote)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


@pytest.mark.slow
def test_watch_under_a_terminal_redraws_the_tree_and_ends_with_the_summary(make_live, tmp_path):
    # Given a server running a job whose three workers take a while
    live = make_live(simulated={"duration": 3.0})
    job_id = live.submit(request="x", tasks=["alpha", "beta", "gamma"]).json()["job_id"]
    # When `python -m orchestrator watch` follows it on a pseudo-terminal
    code, out = run_in_pty([sys.executable, "-m", "orchestrator", "watch", job_id, live.url], watch_home(tmp_path))
    # Then it drew the tree, redrew it in place, and ended with the summary and the reports
    assert code == 0, out
    assert re.search(r"\x1b\[\d+F\x1b\[J", out), out
    assert f"job {job_id}" in out and "▶ worker_1" in out and "✔ worker_3" in out
    assert f"Job {job_id} completed: 3/3 workers succeeded" in out
    assert f"report: {live.engine.workspace.final_report(job_id)}" in out
    assert f"(from {live.url})" in out


@pytest.mark.slow
def test_watch_without_a_terminal_prints_plain_event_lines(make_live, tmp_path):
    live = make_live()
    job_id = live.submit(request="x", tasks=["alpha", "beta"]).json()["job_id"]
    live.wait(job_id)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "watch", job_id, live.url],
        env=watch_home(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    assert re.search(r"^\[ *[0-9.]+s\] depth_0_worker_2 +success +exit code 0$", out.stdout, re.M), out.stdout
    assert f"Job {job_id} completed: 2/2 workers succeeded" in out.stdout


@pytest.mark.slow
def test_watch_with_no_server_reads_the_workspace_files(make_engine, tmp_path):
    # Given a finished job in the workspace and no server of this folder running
    engine = make_engine()
    done = run_job(engine, tasks=["alpha"])
    env = watch_home(tmp_path, port=_free_port())
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "watch", done.id], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert f"Job {done.id} completed: 1/1 workers succeeded" in out.stdout
    assert "(from the workspace files (this folder's API server is not running))" in out.stdout


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_batch_reads_a_job_s_subtree_once_however_many_of_its_events_it_holds():
    """Given a batch with three events of one job and one of a worker, ``run``'s view reads the
    job's subtree once (at a 10,000-worker root's end each event copied the whole tree) and
    still gets every worker the events name, in the order they were named."""
    from types import SimpleNamespace

    from orchestrator.cli.main import _changed_workers
    from orchestrator.events import Event, EventType

    def record(name: str, status: str) -> SimpleNamespace:
        return SimpleNamespace(key=f"depth_0_{name}", status=status)

    reads: list[str | None] = []

    def snapshot(root: str, job_id: str | None = None) -> tuple[list, list]:
        reads.append(job_id)
        return [], [record("worker_1", "success"), record("worker_2", f"read {len(reads)}")]

    queries = SimpleNamespace(snapshot=snapshot, find_worker=lambda job, depth, name: record(name, "running"))
    engine = SimpleNamespace(queries=queries)
    events = [
        Event(seq=1, time=0.0, type=EventType.WORKER, root_id="r", job_id="r", status="running", worker="worker_3"),
        *(Event(seq=n, time=0.0, type=EventType.JOB, root_id="r", job_id="r", status="completed") for n in (2, 3, 4)),
    ]
    found = _changed_workers(engine, "r", events)
    assert reads == ["r"]
    assert [(w.key, w.status) for w in found] == [
        ("depth_0_worker_3", "running"),
        ("depth_0_worker_1", "success"),
        ("depth_0_worker_2", "read 1"),
    ]
