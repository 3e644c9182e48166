"""The job engine with real subprocesses and real files."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError, Conflict, ValidationError
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process.runner import SEEN_AT_ONCE, ProcessRunner

from .conftest import fake_command, observed, run_job, wait_until

pytestmark = pytest.mark.slow


def workers_of(engine, job):
    _, workers = engine.queries.snapshot(job.root_id)
    return {w.name: w for w in workers if w.job_id == job.id}


def test_simulated_job_builds_the_workspace_layout(engine):
    # Given a request the planner splits into three
    job = run_job(engine, "Build a REST API with authentication, user management, and data CRUD operations")
    # Then every worker succeeded and the tree has the documented shape
    assert job.status is JobStatus.COMPLETED
    root = engine.workspace.job_dir(job.id)
    assert sorted(job.worker_names) == ["worker_1", "worker_2", "worker_3"]
    for name in job.worker_names:
        assert (root / "depth_0" / name).is_dir()
        assert (root / "logs" / f"depth_0_{name}.log").read_text().count("===== attempt 1/") == 1
    assert (root / "depth_0" / "LEVEL_0_REPORT.md").is_file()
    assert (root / "FINAL_RESULT.md").is_file()
    assert "job " in (root / "logs" / "orchestrator.log").read_text()


def test_the_goal_travels_as_a_field_to_records_reports_and_the_deliverable(engine):
    # The planner's shared goal is the job's and each worker's ``goal`` field, not a " for: <goal>"
    # suffix on every task that the planner would have to parse back out of its own output.
    job = run_job(engine, "Build a REST API with authentication, user management, and data CRUD operations")
    assert job.tasks == ["Authentication", "User management", "Data CRUD operations"]
    assert job.goal == "Build a REST API" and engine.workspace.load_job(job.id).goal == "Build a REST API"
    workers = workers_of(engine, job)
    assert {w.goal for w in workers.values()} == {"Build a REST API"}
    folder = engine.workspace.job_dir(job.id)
    deliverable = (folder / workers["worker_1"].dir_path / "authentication.md").read_text()
    assert deliverable.startswith("# Authentication\n\nPart of: Build a REST API\n\n")
    assert "\nTask: Authentication (part of: Build a REST API)\n" in (folder / "FINAL_RESULT.md").read_text()


def test_a_then_sequence_runs_as_a_chain(engine):
    # "then" is a chain, not two parallel workers (the second, "Benchmark it", would have no
    # referent). The second starts once the first has ended (in a worktree
    # job, from its merged work), and its prompt holds the whole request as context.
    job = run_job(engine, "Write a parser in Rust, then benchmark it")
    assert job.tasks == ["Write a parser in Rust", "Benchmark it"] and job.goal is None
    assert [(n.id, n.depends_on) for n in job.nodes] == [("t1", []), ("t2", ["t1"])]
    assert job.worker_names == ["worker_1", "worker_2"] and job.status is JobStatus.COMPLETED
    first, second = workers_of(engine, job)["worker_1"], workers_of(engine, job)["worker_2"]
    assert second.started_at >= first.ended_at


def test_an_ai_worker_prompt_states_the_goal(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command("args", "{prompt}"), "planner": "heuristic"})
    job = run_job(engine, "Build a shop with a cart and a checkout")
    assert job.tasks == ["A cart", "A checkout"] and job.goal == "Build a shop"
    prompt = json.loads(workers_of(engine, job)["worker_2"].output.splitlines()[0])
    shared = (engine.workspace.depth_dir(job.id, 0) / f"shared_{job.id}.md").read_text()  # first
    assert prompt.startswith(shared + "\n# Your subtask\n\nA checkout\n\nIt is part of: Build a shop\n")


def test_files_created_lists_only_the_workers_own_files(engine):
    job = run_job(engine, "x", tasks=["Write the parser"])
    worker = workers_of(engine, job)["worker_1"]
    assert worker.files_created == ["write_the_parser.md"]
    assert worker.status is WorkerStatus.SUCCESS
    assert "RESULT: wrote write_the_parser.md" in worker.output


def test_records_on_disk_match_memory_and_are_valid_json(engine):
    job = run_job(engine, "x", tasks=["a", "b"])
    state = engine.workspace.state_dir(job.id)
    files = list(state.rglob("*.json"))
    assert len(files) == 3  # one job, two workers
    for path in files:
        json.loads(path.read_text())
    assert not list(state.rglob("*.tmp")), "no temp file may be left behind"
    on_disk = engine.workspace.load_job(job.id)
    assert on_disk.status is JobStatus.COMPLETED and on_disk.worker_names == ["worker_1", "worker_2"]


def test_command_kind_logs_stdout_and_stderr_of_every_attempt(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()})
    job = run_job(engine, "x", tasks=["fail 3"], config={"max_retries": 2})
    worker = workers_of(engine, job)["worker_1"]
    log = (engine.workspace.job_dir(job.id) / worker.log_path).read_text()
    assert worker.status is WorkerStatus.FAILED
    assert len(worker.attempts) == 3
    assert [a.exit_code for a in worker.attempts] == [3, 3, 3]
    assert log.count("about to fail") == 3 and log.count("fatal: something broke") == 3
    for n in (1, 2, 3):
        assert f"===== attempt {n}/3 started" in log
    # Its error: how it ended and the end of what it printed (both streams), not only its last line
    assert worker.error == "exit code 3; the end of its output:\nabout to fail\nfatal: something broke"
    assert job.status is JobStatus.FAILED


def test_a_failed_command_workers_error_holds_its_exit_and_its_last_twenty_lines(make_engine):
    """A command that prints 30 lines then fails: its error says its exit code and holds its last 20
    lines in order (a long line's output bounded to 2,000 characters); one killed by a signal says so."""
    script = 'for i in $(seq 1 30); do echo "line $i"; done; echo "oops: the last word" >&2; exit 4'
    engine = make_engine(orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]})
    job = run_job(
        engine,
        "x",
        tasks=[script, "yes long-line-of-output | head -c 9000 | tr -d '\\n'; exit 1", "kill -TERM $$"],
        config={"max_retries": 0},
    )
    first, second, third = (workers_of(engine, job)[f"worker_{n}"] for n in (1, 2, 3))
    assert first.status is WorkerStatus.FAILED
    head, *tail = first.error.splitlines()
    assert head == "exit code 4; the end of its output:"
    assert tail == [f"line {i}" for i in range(12, 31)] + ["oops: the last word"]
    assert second.error.startswith("exit code 1; the end of its output:\n") and len(second.error) <= 2100
    assert second.error.endswith("long-line-of-output")
    assert third.error == "killed by SIGTERM"  # it printed nothing


def test_retries_back_off_and_then_succeed(make_engine):
    engine = make_engine(
        orchestrator={"worker": "command", "command": fake_command()}, workers={"retry_backoff": 0.2, "retry_backoff_max": 5}
    )
    job = run_job(engine, "x", tasks=["flaky 2"], config={"max_retries": 3})
    worker = workers_of(engine, job)["worker_1"]
    assert worker.status is WorkerStatus.SUCCESS
    assert [a.exit_code for a in worker.attempts] == [1, 1, 0]
    gaps = [b.started_at - a.ended_at for a, b in zip(worker.attempts, worker.attempts[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # exponential: 0.2 then 0.4, jitter only adds
    assert gaps[1] < 2.0


def test_partial_when_some_workers_fail(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()})
    job = run_job(engine, "x", tasks=["ok", "fail 2", "ok 2"], config={"max_retries": 0})
    assert job.status is JobStatus.PARTIAL
    statuses = {n: w.status for n, w in workers_of(engine, job).items()}
    assert statuses == {"worker_1": WorkerStatus.SUCCESS, "worker_2": WorkerStatus.FAILED, "worker_3": WorkerStatus.SUCCESS}


def test_hung_worker_ignoring_sigterm_times_out_via_sigkill_and_leaves_nothing(make_engine):
    # SIGTERM ignored by a shell before Python starts (an ignored signal stays so across exec): under load
    # the interpreter's start can outlast the 1 s deadline, and the fake's own SIG_IGN would come too late
    ignoring = ["/bin/sh", "-c", 'trap "" TERM; exec "$0" "$@"', *fake_command()]
    engine = make_engine(orchestrator={"worker": "command", "command": ignoring}, workers={"kill_grace": 0.5})
    started = time.monotonic()
    job = run_job(engine, "x", tasks=["ignore-term"], config={"default_timeout": 1, "max_retries": 2})
    took = time.monotonic() - started
    worker = workers_of(engine, job)["worker_1"]
    assert worker.status is WorkerStatus.TIMEOUT
    assert len(worker.attempts) == 1, "a timeout is not retried by default"
    assert worker.attempts[0].kill_rung == "SIGKILL" and worker.attempts[0].end_reason == "timeout"
    assert 1.5 <= took < 6
    assert ProcessRunner().tagged(engine.worker_tag(worker)) == []


def test_hung_worker_that_obeys_sigterm_ends_on_the_first_rung(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()}, workers={"kill_grace": 3})
    job = run_job(engine, "x", tasks=["hang"], config={"default_timeout": 0.5})
    attempt = workers_of(engine, job)["worker_1"].attempts[0]
    assert attempt.kill_rung == "SIGTERM" and attempt.signal == 15


def test_double_forked_grandchild_is_swept_after_timeout(make_engine):
    # Unsandboxed: the test reads the grandchild's pid as the worker saw it, and a sandbox's PID namespace hides the host's
    engine = make_engine(
        orchestrator={"worker": "command", "command": fake_command()}, workers={"kill_grace": 0.3, "sandbox": "off"}
    )
    job = run_job(engine, "x", tasks=["grandchild"], config={"default_timeout": 1.5})
    worker = workers_of(engine, job)["worker_1"]
    pid_file = engine.workspace.job_dir(job.id) / worker.dir_path / "grandchild.pid"
    grandchild = int(pid_file.read_text())
    assert worker.status is WorkerStatus.TIMEOUT
    assert not _alive(grandchild), "the setsid double-forked grandchild must not survive"
    assert ProcessRunner().tagged(engine.worker_tag(worker)) == []


def test_killed_by_sigkill_is_not_retried(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()})
    job = run_job(engine, "x", tasks=["selfkill"], config={"max_retries": 3})
    worker = workers_of(engine, job)["worker_1"]
    assert len(worker.attempts) == 1
    assert worker.attempts[0].signal == 9 and worker.status is WorkerStatus.FAILED
    assert "SIGKILL" in worker.exit_reason


def test_missing_command_fails_at_once_naming_the_config_key(make_engine):
    # Not on the workers' PATH: refused at submission, before anything runs
    engine = make_engine(orchestrator={"worker": "command", "command": ["definitely-not-a-cli-xyz", "{prompt}"]})
    with pytest.raises(ConfigError, match="'definitely-not-a-cli-xyz' \\(orchestrator.command\\) is not on the workers' PATH"):
        run_job(engine, "x", tasks=["a"], config={"max_retries": 3})
    # Relative to the worker's folder (found or not where it runs): its worker fails at once, not retried
    engine = make_engine(orchestrator={"worker": "command", "command": ["./definitely-not-a-cli-xyz", "{prompt}"]})
    job = run_job(engine, "x", tasks=["a"], config={"max_retries": 3})
    worker = workers_of(engine, job)["worker_1"]
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1
    assert "No such file or directory: ./definitely-not-a-cli-xyz" in worker.error
    assert "orchestrator.command" in worker.error


def test_max_workers_bounds_concurrency(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()})
    job = run_job(engine, "x", tasks=["sleep 0.4"] * 6, config={"max_workers": 2})
    spans = sorted((w.attempts[0].started_at, w.attempts[0].ended_at) for w in workers_of(engine, job).values())
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert peak == 2
    assert job.status is JobStatus.COMPLETED


def test_prompt_reaches_the_command_as_one_argv_element(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command("args", "{task}", "--", "{worker_dir}")})
    nasty = 'say "hi"; rm -rf x $(touch pwned) `id` --help\nsecond line'
    job = run_job(engine, "x", tasks=[nasty])
    worker = workers_of(engine, job)["worker_1"]
    wdir = engine.workspace.job_dir(job.id) / worker.dir_path
    lines = [json.loads(line) for line in worker.output.splitlines()]
    assert lines == [" ".join(nasty.split()), "--", str(wdir)]  # explicit tasks are whitespace-normalised
    assert not (wdir / "pwned").exists()


def test_worker_environment_carries_the_protocol(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command("env")})
    job = run_job(engine, "x", tasks=["a"])
    worker = workers_of(engine, job)["worker_1"]
    env = json.loads(worker.output)
    assert env["ORCHESTRATOR_JOB_ID"] == job.id and env["ORCHESTRATOR_WORKER_ID"] == "worker_1"
    assert env["ORCHESTRATOR_DEPTH"] == "0" and env["ORCHESTRATOR_MAX_DEPTH"] == "3"
    assert env["ORCHESTRATOR_WORKER_DIR"].endswith("depth_0/worker_1")
    assert env["ORCHESTRATOR_TAG"].startswith(f"{job.id}.depth_0_worker_1.")


def test_cancel_kills_running_workers_and_skips_pending(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()})
    job = engine.submission.submit("x", {"max_workers": 1}, ["hang", "ok"])
    wait_until(lambda: workers_of(engine, job)["worker_1"].attempts)
    engine.cancel(job.id)
    done = engine.queries.wait(job.id, 10)
    assert done.status is JobStatus.CANCELLED
    statuses = {n: w.status for n, w in workers_of(engine, job).items()}
    assert statuses == {"worker_1": WorkerStatus.CANCELLED, "worker_2": WorkerStatus.SKIPPED}
    assert "skipped: the job was cancelled before it started" == workers_of(engine, job)["worker_2"].exit_reason
    with pytest.raises(Conflict, match="already cancelled"):
        engine.cancel(job.id)


def test_bad_requests_are_refused_and_leave_no_job_folder(engine):
    cases = [
        ("", None, None, "empty"),
        ("   \n", None, None, "empty"),
        (42, None, None, "string"),
        ("x" * 20001, None, None, "limit"),
        ("x", {"max_workers": 0}, None, "out of range"),
        ("x", {"max_workers": -1}, None, "out of range"),
        ("x", {"max_workers": 10**6}, None, "out of range"),
        ("x", {"max_workers": "5"}, None, "wrong type"),
        ("x", {"worker": "nope"}, None, "not allowed"),
        ("x", {"bogus": 1}, None, "unknown config key"),
        ("x", None, [], "non-empty list"),
        ("x", None, ["ok", ""], r"tasks\[1\]"),
        ("x", {"max_workers": 17}, None, "above this server's limit"),
    ]
    for request, config, tasks, message in cases:
        with pytest.raises((ValidationError, ConfigError), match=message):
            engine.submission.submit(request, config, tasks)
    assert engine.workspace.root_ids() == []


def test_unwritable_workspace_is_a_clear_error(make_engine, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file, not a folder")
    engine = make_engine(orchestrator={"workspace_root": str(blocker / "ws")})
    with pytest.raises(Exception, match="not writable"):
        engine.submission.submit("x")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] not in ("Z", "X")


def test_a_worker_printing_megabytes_loses_no_line_and_keeps_a_bounded_result(make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()}, workers={"output_chars": 500})
    job = run_job(engine, "x", tasks=["flood 8"])
    worker = workers_of(engine, job)["worker_1"]
    log = (engine.workspace.job_dir(job.id) / worker.log_path).read_text()
    numbers = [int(line.split()[2]) for line in log.splitlines() if line.startswith("flood line ")]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) > 80_000  # contiguous, nothing lost
    assert worker.status is WorkerStatus.SUCCESS and len(worker.output) <= 501


def test_finished_trees_leave_memory_but_stay_readable_from_disk(make_engine):
    """A long-running server keeps only the newest finished trees in memory (flat memory);
    the older ones are served from their records exactly as before."""
    from orchestrator.engine.core import FINISHED_TREES_IN_MEMORY

    engine = make_engine(orchestrator={"worker": "command", "command": ["true"]})
    jobs = [run_job(engine, f"tree {n}", tasks=["a", "b"]) for n in range(FINISHED_TREES_IN_MEMORY + 8)]
    in_memory = {j.id for j in jobs if engine.queries.holds(j.id)}
    assert len(in_memory) == FINISHED_TREES_IN_MEMORY
    assert jobs[0].id not in in_memory and jobs[-1].id in in_memory
    assert len(engine.worker_tags()) == 2 * FINISHED_TREES_IN_MEMORY and not engine.events.since(jobs[0].id)
    # The evicted tree reads the same from disk: job, workers, report, wait.
    old = engine.queries.get_job(jobs[0].id)
    assert old.status is JobStatus.COMPLETED and old.worker_names == ["worker_1", "worker_2"]
    _, workers = engine.queries.snapshot(jobs[0].id)
    assert [w.status for w in workers] == [WorkerStatus.SUCCESS, WorkerStatus.SUCCESS]
    assert engine.queries.wait(jobs[0].id, 0.1).status is JobStatus.COMPLETED
    assert "tree 0" in engine.queries.read_report(jobs[0].id, "final")
    engine.delete(jobs[0].id)
    engine.delete(jobs[-1].id)  # and one still in memory
    assert not engine.queries.holds(jobs[-1].id)


def test_a_released_tree_leaves_memory_and_its_status_document_is_the_same(make_engine):
    """``run`` builds its status document from its own copy after ``release`` (cli/main.py):
    the same document the engine gave while it held the tree, and the disk's after."""
    from orchestrator.reports.status_document import job_status

    engine = make_engine(orchestrator={"worker": "command", "command": ["true"]})
    job = run_job(engine, "released", tasks=["a", "b", "c"])
    held = engine.queries.status_document(job.id)
    jobs, workers = engine.queries.snapshot(job.root_id)
    engine.release(job.root_id)
    assert not engine.queries.holds(job.root_id) and engine.worker_tags() == []
    ours = job_status(job.id, jobs, workers, engine.workspace.job_dir(job.root_id), now=0.0)
    disk = engine.queries.status_document(job.id)  # read from the records now
    assert held == ours == disk and ours["status"] == "completed"


def test_recover_skips_finished_trees_from_their_root_record_alone(make_engine):
    """A server start reads one small record per finished tree, not the whole tree: here a
    finished tree's worker record is garbage, and recovery neither reads it nor complains."""
    engine = make_engine(orchestrator={"worker": "command", "command": ["true"]})
    job = run_job(engine, "done", tasks=["a"])
    record = engine.workspace.worker_record_path(job.id, 0, "worker_1")
    record.write_text("{ not json")
    fresh = make_engine(orchestrator={"worker": "command", "command": ["true"]})
    assert fresh.takeover.recover() == []
    assert fresh.queries.get_job(job.id).status is JobStatus.COMPLETED


def test_a_restart_accounts_for_attempts_the_old_server_never_recorded(make_engine):
    """A short attempt gets no "running" record, so a server may die having run two attempts
    (a failure, then its retry) and recorded neither: the next server must list both."""
    # Given a worker that failed once and then succeeded, and the state a server killed before
    # writing any record of it leaves: no worker record, and the job record says running
    sections = {"orchestrator": {"worker": "command", "command": fake_command()}, "workers": {"retry_backoff": 0.05}}
    engine = make_engine(**sections)
    job = run_job(engine, "x", tasks=["flaky 1"], config={"max_retries": 1})
    ran = workers_of(engine, job)["worker_1"]
    assert [a.exit_code for a in ran.attempts] == [1, 0]
    engine.shutdown()
    ws = engine.workspace
    ws.worker_record_path(job.id, 0, "worker_1").unlink()
    data = json.loads(ws.job_record_path(job.id).read_text())
    data.update(status="running", ended_at=None)
    ws.job_record_path(job.id).write_text(json.dumps(data))
    # When a new server takes the tree over
    fresh = make_engine(**sections)
    assert fresh.takeover.recover() == [job.id]
    assert fresh.queries.wait(job.id, 30).status is JobStatus.COMPLETED
    # Then both runs are in the record, rebuilt from their start lines and exit files, and
    # nothing ran a third time
    worker = workers_of(fresh, job)["worker_1"]
    assert worker.status is WorkerStatus.SUCCESS
    assert [(a.number, a.exit_code, a.end_reason) for a in worker.attempts] == [(1, 1, "exit"), (2, 0, "exit")]
    for before, after in zip(ran.attempts, worker.attempts):
        assert after.log_offset == before.log_offset
        assert -1e-6 < before.started_at - after.started_at < 0.001  # the start line keeps milliseconds
        # the end is its exit file's time: the old server saw it at once (then its own clock read, at
        # most SEEN_AT_ONCE after the file), the new one late (the file's time, a clock tick on)
        assert -0.01 < before.ended_at - after.ended_at <= SEEN_AT_ONCE
    assert ws.worker_log(job.id, 0, "worker_1").read_text().count(" started ") == 2


def test_a_workers_tmpdir_is_private_emptied_when_it_ends_and_gone_with_its_tree(make_engine, tmp_path):
    # Given two workers that note their TMPDIR: "leave" leaves a file there and ends at once,
    # "clean" leaves nothing and runs on
    seen = observed(tmp_path)
    script = (
        'echo "$TMPDIR" > "%s/$ORCHESTRATOR_WORKER_ID.tmp" && mv "%s/$ORCHESTRATOR_WORKER_ID.tmp" "%s/$ORCHESTRATOR_WORKER_ID"; '
        'if [ "$0" = leave ]; then echo scratch > "$TMPDIR/scratch"; else sleep 2; fi' % (seen, seen, seen)
    )
    engine = make_engine(
        orchestrator={"worker": "command", "command": ["sh", "-c", script, "{task}"]},
        workers={"max_workers": 2, "sandbox_writable": [str(seen)]},
    )
    job = engine.submission.submit("tmp", None, ["leave", "clean"])
    wait_until(lambda: len([p for p in seen.iterdir() if not p.name.endswith(".tmp")]) == 2, what="both TMPDIRs noted")
    leave, clean = (Path((seen / name).read_text().strip()) for name in ("worker_1", "worker_2"))
    # Then each has its own folder, outside its worker folder
    assert leave != clean and leave.parent == clean.parent
    assert engine.workspace.job_dir(job.id) in leave.parents
    assert engine.workspace.worker_dir(job.id, 0, "worker_1") not in leave.parents
    # When "leave" has ended and "clean" still runs, what "leave" left is gone
    wait_until(lambda: engine.queries.snapshot(job.id)[1][0].status.terminal, what="worker_1 ended")
    assert engine.queries.snapshot(job.id)[1][1].status.value == "running"
    assert not (leave / "scratch").exists() and clean.is_dir()
    # and once the tree has ended no TMPDIR is left at all
    assert engine.queries.wait(job.id, 30).status.value == "completed"
    assert not leave.exists() and not clean.exists() and not leave.parent.exists()


def test_running_record_is_written_only_for_a_process_that_outlives_the_delay(make_engine, monkeypatch):
    # Given a 1 s delay (0.1 s by default; longer here so a loaded machine still ends the short
    # worker within it), a worker that exits at once and one that runs for 2 s, with every
    # worker record write noted as it reaches the disk
    monkeypatch.setattr("orchestrator.engine.attempts.RUNNING_RECORD_DELAY", 1.0)
    engine = make_engine(orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]}, workers={"max_workers": 2})
    written: dict[str, list[str]] = {}
    save = engine.workspace.save_worker_dict

    def noting(root_id, depth, name, data):
        save(root_id, depth, name, data)
        written.setdefault(name, []).append(data["status"])

    engine.workspace.save_worker_dict = noting
    job = engine.submission.submit("x", None, ["true", "sleep 2"])
    # Then the long one is "running" on disk, with its process, while it runs
    wait_until(lambda: written.get("worker_2") == ["running"], what="worker_2's running record")
    on_disk = engine.workspace.load_worker(job.id, 0, "worker_2")
    assert on_disk.status is WorkerStatus.RUNNING and on_disk.attempts[0].pid
    assert engine.queries.wait(job.id, 30).status is JobStatus.COMPLETED
    # and the short one's only write is its final record, though it was announced as started
    assert written == {"worker_1": ["success"], "worker_2": ["running", "success"]}
    events = (engine.workspace.orchestrator_log(job.id)).read_text()
    assert "depth_0_worker_1 running: attempt 1 started" in events


def test_a_short_worker_s_record_is_read_for_a_running_write_only_when_one_is_made(make_engine, monkeypatch):
    # Given a 1 s delay before a "running" record is written, a worker that exits at once and one
    # that runs for 2 s, with every snapshot of a worker record taken (a copy of the whole record,
    # under the engine's lock) noted by worker, and every write as it reaches the disk
    monkeypatch.setattr("orchestrator.engine.attempts.RUNNING_RECORD_DELAY", 1.0)
    engine = make_engine(orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]}, workers={"max_workers": 2})
    taken: dict[str, int] = {}
    snapshot = engine.tables.worker_snapshot

    def noting_snapshot(live, record=None):
        taken[live.record.name] = taken.get(live.record.name, 0) + 1
        return snapshot(live, record)

    written: dict[str, list[tuple[str, int | None]]] = {}
    save = engine.workspace.save_worker_dict

    def noting_write(root_id, depth, name, data):
        save(root_id, depth, name, data)
        written.setdefault(name, []).append((data["status"], data["attempts"][-1]["pid"] if data["attempts"] else None))

    monkeypatch.setattr(engine.tables, "worker_snapshot", noting_snapshot)
    engine.workspace.save_worker_dict = noting_write
    job = engine.submission.submit("x", None, ["true", "sleep 2"])
    assert engine.queries.wait(job.id, 30).status is JobStatus.COMPLETED
    # Then the short one's record was read once, for its final write: none for a write never made
    assert taken["worker_1"] == 1 and [status for status, _ in written["worker_1"]] == ["success"]
    # and the long one's twice: its "running" record, read when it is written, with its process
    assert taken["worker_2"] == 2
    assert [status for status, _ in written["worker_2"]] == ["running", "success"] and written["worker_2"][0][1]


def test_a_running_record_written_late_never_carries_what_a_snapshot_taken_since_orders(make_engine, monkeypatch):
    # Given a 1 s delay before a "running" record is written and a worker that runs for 2 s, whose
    # record another thread snapshots (as a child job's attach does: its write waits for the child's
    # own record) while it runs, and writes only after that delay
    monkeypatch.setattr("orchestrator.engine.attempts.RUNNING_RECORD_DELAY", 1.0)
    engine = make_engine(orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]}, workers={"max_workers": 1})
    writes: list[str] = []
    save = engine.workspace.save_worker_dict
    ours = threading.local()

    def noting_write(root_id, depth, name, data):
        save(root_id, depth, name, data)
        writes.append(f"{data['status']}{' (ours)' if getattr(ours, 'writing', False) else ''}")

    engine.workspace.save_worker_dict = noting_write
    job = engine.submission.submit("x", None, ["sleep 2"])
    key = (job.root_id, "depth_0_worker_1")
    live = engine.tables.workers[key]
    wait_until(lambda: bool(live.record.attempts and live.record.attempts[-1].pid), timeout=10)  # its attempt recorded
    with engine.tables.locked():
        taken = engine.tables.worker_snapshot(live)
    time.sleep(1.5)
    ours.writing = True
    taken.write()
    ours.writing = False
    assert engine.queries.wait(job.id, 30).status is JobStatus.COMPLETED
    # Then the late "running" write was not made over it: the record reached the disk by its taker's write
    assert writes == ["running (ours)", "success"]


def test_a_job_s_config_is_built_once_at_submission_and_carried_typed(make_engine, monkeypatch):
    """The record holds the JobConfig that job_config built; nothing rebuilds it
    from a dict (submission, dispatch, the worker's run, a child job's limits), and job.json keeps
    the same dict as before."""
    from orchestrator.config import JobConfig
    from orchestrator.engine import submission as engine_module  # where a job is admitted and its config built

    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()})
    built = []
    real_job_config = engine_module.job_config

    def counting_job_config(*args, **kwargs):
        built.append(real_job_config(*args, **kwargs)[0])
        return built[-1], []

    def no_rebuild(cls, data):
        if threading.current_thread().name != "job-index":  # the index reads ended trees from disk, as any reader
            raise AssertionError("a job's config was rebuilt from a dict")
        return real_from_dict(data)

    real_from_dict = JobConfig.from_dict

    monkeypatch.setattr(engine_module, "job_config", counting_job_config)
    monkeypatch.setattr(JobConfig, "from_dict", classmethod(no_rebuild))
    root = engine.submission.submit("x", {"max_workers": 2, "max_recursion_depth": 2}, ["hang"])
    # (worker and isolation "auto" resolved at submission: tmp_path is in no git work tree)
    assert len(built) == 1 and engine.queries.get_job(root.id).config == built[0].replace(worker="command", isolation="folder")
    wait_until(lambda: workers_of(engine, root)["worker_1"].status is WorkerStatus.RUNNING, what="worker_1 running")
    child = engine.submission.submit("y", {"max_workers": 4}, ["ok"], parent_job_id=root.id, parent_worker="worker_1")
    assert len(built) == 2 and built[1].max_workers == 2  # lowered to the parent's
    assert engine.queries.wait(child.id, 30).status is JobStatus.COMPLETED
    assert (
        engine.queries.get_job(child.id).config is engine.queries.get_job(child.id).config
    )  # the one object, not a copy per read
    engine.cancel(root.id)
    engine.queries.wait(root.id, 30)
    monkeypatch.undo()
    on_disk = json.loads(engine.workspace.job_record_path(root.id).read_text())["config"]
    assert on_disk == {**built[0].to_dict(), "worker": "command", "isolation": "folder"}
    assert engine.workspace.load_job(child.id).config == engine.queries.get_job(child.id).config
