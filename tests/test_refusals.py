"""What the system refused a worker (workers/refusals.py) on every surface: its record, the status
document, check-status's table, FINAL_RESULT.md, the webhook payload, ``watch``; what its log says
it was refused, shown as its own words and never counted as a refusal; and a running worker's silence
("no output for N s"). A real sandboxed worker whose every write outside its checkout is refused
stays ``success``, what it was refused beside it."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from orchestrator.cli.progress import ProgressView, render_tree, tree_from_records, tree_from_status
from orchestrator.events import Event
from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.outcomes import Refusal, RefusalKind, refusal_line, said_line
from orchestrator.process.backends import probe
from orchestrator.reports.status_document import Silence, job_status, status_table
from orchestrator.webhooks.event_types import Seen, worker_summary, worker_types
from orchestrator.workers import refusals

from .conftest import run_job, wait_until
from .helpers.worktree import git, host_engine, make_host, snapshot, user_env, workers

needs_bwrap = pytest.mark.skipif(not probe().available, reason="no sandbox on this machine")


def _log(tmp_path, *lines, name="w.log"):
    path = tmp_path / name
    path.write_bytes(b"".join(line.encode() + b"\n" for line in lines))
    return path


def _worker(**fields):
    base = dict(job_id="r", root_id="r", name="worker_1", index=1, depth=0, task="t", kind="command")
    return WorkerRecord(**{**base, **fields})


# -- reading a log ---------------------------------------------------------------------------
def test_the_refusals_a_cli_printed_are_its_own_words_read_with_the_path_each_names(tmp_path):
    log = _log(
        tmp_path,
        "===== attempt 1 started =====",
        "touch: cannot touch '/home/u/.bashrc': Read-only file system",
        "error: cannot lock ref 'refs/heads/main': Unable to create '/repo/.git/refs/heads/main.lock': Read-only file system",
        "fatal: cannot lock ref 'refs/stash': unable to write",
        "bash: /etc/passwd: Permission denied",
        "all good",
    )
    found = refusals.scan(log)
    assert found.shown == [] and found.total == 0  # nothing outside it recorded a refusal
    assert [(r.kind, r.path, r.recorded) for r in found.said] == [
        (RefusalKind.READ_ONLY, "/home/u/.bashrc", False),
        (RefusalKind.READ_ONLY, "/repo/.git/refs/heads/main.lock", False),
        (RefusalKind.GIT_REF, None, False),
        (RefusalKind.PERMISSION, "/etc/passwd", False),
    ]
    assert found.said_total == 4 and found.said[0].line == "touch: cannot touch '/home/u/.bashrc': Read-only file system"


def test_an_orchestrator_line_the_worker_printed_is_no_refusal_its_record_is(tmp_path):
    """The orchestrator's refusals (checkouts/worktree.py's: an object not taken, a branch move left
    undone, a link undone) are in a record the worker's sandbox cannot write; lines in its log that
    read like them are the worker's to print (issue 48 item 10), and are not taken."""
    log = _log(
        tmp_path,
        "[orchestrator] an object its sandbox wrote was not taken into the repository: 1234: cannot be read",
        "[orchestrator] its branch in its sandbox is 'x', not a commit: refs/heads/o/r/worker_1 was left where it was",
        "[orchestrator] refs/heads/o/r/worker_1 moved outside its sandbox while it committed (lock): left where it was",
        "[orchestrator] its branch ref had been made a link (../main): set back to 0123456789ab",
        "[orchestrator] sandbox: write to /etc/passwd refused: Permission denied",
    )
    assert refusals.scan(log).total == 0 and refusals.scan(log).said_total == 0
    record = tmp_path / "w.refusals.jsonl"
    refusals.record(record, "[orchestrator] an object its sandbox wrote was not taken into the repository: 99: bad")
    with record.open("a") as f:
        f.write("not an entry\n")
    found = refusals.Refusals()
    refusals.add_recorded(found, record)
    assert [(r.kind, r.line, r.recorded) for r in found.shown] == [
        (RefusalKind.ORCHESTRATOR, "[orchestrator] an object its sandbox wrote was not taken into the repository: 99: bad", True)
    ]


def test_a_flood_in_the_log_is_no_refusal_and_cannot_push_the_recorded_ones_out(tmp_path):
    from orchestrator.network.egress import RecordEntry
    from orchestrator.network.proxy import Outcome

    log = _log(tmp_path, *(f"touch: cannot touch '/forged/{i}': Read-only file system" for i in range(40)))
    found = refusals.Refusals()
    refusals.add_network(found, [RecordEntry(Outcome.REFUSED, "api.example", 443, "not in workers.sandbox_allow", 1)])
    refusals.scan(log, into=found)
    assert found.total == 1 and [r.path for r in found.shown] == ["api.example:443"] and found.shown[0].recorded
    assert found.said_total == 40 and len(found.said) == refusals.MAX_SHOWN
    assert refusal_line(found.shown, found.total) == "1 refused: network api.example:443"
    assert said_line(found.said, found.said_total).startswith("its log says (its own words): read-only /forged/0;")


def test_a_proxy_line_the_worker_printed_itself_is_no_refusal_its_network_record_is(tmp_path):
    # The log is the worker's writing too: only the record its sandbox cannot write says what the proxy refused.
    from orchestrator.network.egress import RecordEntry
    from orchestrator.network.proxy import Outcome

    log = tmp_path / "worker.log"
    log.write_text("[orchestrator] network: refused forged.example:443: not in workers.sandbox_allow (1 so far)\n")
    found = refusals.scan(log)
    assert found.total == 0 and found.shown == []
    refusals.add_network(found, [RecordEntry(Outcome.REFUSED, "api.example", 8443, "not in workers.sandbox_allow", 2)])
    assert [(r.kind, r.path, r.line) for r in found.shown] == [
        (
            RefusalKind.NETWORK,
            "api.example:8443",
            "[orchestrator] network: refused api.example:8443: not in workers.sandbox_allow (2 so far)",
        )
    ]


def test_permission_denied_inside_the_workers_own_folders_is_no_refusal(tmp_path):
    own = tmp_path / "work"
    log = _log(tmp_path, f"PermissionError: [Errno 13] Permission denied: '{own}/locked.txt'", "sh: x: Permission denied")
    assert refusals.scan(log, [own]).said_total == 0


def test_a_flood_of_refused_lines_keeps_a_bounded_record(tmp_path):
    """A hostile worker's flood: every line counted, the first distinct ones kept, each cut short."""
    log = tmp_path / "flood.log"
    with log.open("wb") as f:
        f.write(b"x: Read-only file system " + b"A" * 100_000 + b"\n")  # one huge line
        for i in range(200_000):
            f.write(b"touch: cannot touch '/home/u/f%d': Read-only file system\n" % (i % 50))
    found = refusals.scan(log)
    assert found.said_total == 200_001 and found.total == 0
    assert len(found.said) == refusals.MAX_SHOWN
    assert all(len(r.line) <= refusals.MAX_LINE for r in found.said)
    assert len({r.path for r in found.said}) == refusals.MAX_SHOWN  # distinct, not the same line 20 times


def test_a_log_that_cannot_be_read_has_no_refusals(tmp_path):
    assert refusals.scan(tmp_path / "missing.log").said_total == 0


def test_a_log_read_on_from_an_earlier_read_says_what_a_whole_read_says_and_reads_only_what_came(tmp_path):
    """An attempt's end reads the log; the read after its commit goes on from there (scan_more): the
    same words as a whole read, a line being written at the first read read whole at the next,
    and the bytes read before not read again; a log rewritten shorter is read whole."""
    log = tmp_path / "w.log"
    log.write_bytes(b"touch: cannot touch '/etc/a': Read-only file system\nbash: /etc/b: Permissi")
    first, progress = refusals.scan_more(log, ())
    assert [r.path for r in first.said] == ["/etc/a"] and first.said_total == 1  # ("Permissi": no words yet)
    with log.open("ab") as f:
        f.write(b"on denied\nerror: cannot lock ref 'refs/heads/x': unable to write\n")
    more, progress = refusals.scan_more(log, (), progress)
    whole = refusals.scan(log)
    assert (
        [(r.kind, r.path) for r in more.said]
        == [(r.kind, r.path) for r in whole.said]
        == [
            (RefusalKind.READ_ONLY, "/etc/a"),
            (RefusalKind.PERMISSION, "/etc/b"),
            (RefusalKind.GIT_REF, None),
        ]
    )
    assert more.said_total == whole.said_total == 3 and more.total == 0
    # What was read is not read again: a line changed in place before where the read stopped is not seen.
    data = log.read_bytes()
    log.write_bytes(data.replace(b"/etc/a", b"/etc/z"))
    with log.open("ab") as f:
        f.write(b"mkdir: cannot create directory '/etc/c': Read-only file system\n")
    again, progress = refusals.scan_more(log, (), progress)
    assert [r.path for r in again.said] == ["/etc/a", "/etc/b", None, "/etc/c"] and again.said_total == 4

    # Nothing more written since: the log is not opened, and says the same
    def no_open(*args, **kwargs):
        raise AssertionError("the log was opened again though it had not grown")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "open", no_open)
        same, progress = refusals.scan_more(log, (), progress)
    assert [r.path for r in same.said] == ["/etc/a", "/etc/b", None, "/etc/c"] and same.said_total == 4
    # Rewritten shorter than what was read (a worker's own log): read whole again.
    log.write_bytes(b"bash: /etc/d: Permission denied\n")
    rewritten, _ = refusals.scan_more(log, (), progress)
    assert [r.path for r in rewritten.said] == ["/etc/d"] and rewritten.said_total == 1


def test_refusals_read_on_after_a_commit_still_read_the_orchestrators_record_whole(tmp_path, make_engine):
    """``read_refusals`` goes on in the log from an earlier read, but the orchestrator's record (what
    it would not take from the sandbox, written after the attempt's end) is read whole each time."""
    from orchestrator.engine.attempts import read_refusals

    engine = make_engine()
    rec = _worker(job_id="0123456789ab", root_id="0123456789ab")
    paths = engine.workspace.worker_paths(rec.root_id, rec.depth, rec.name)
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    paths.log.write_bytes(b"bash: /etc/a: Permission denied\n")
    directory = tmp_path / "own"
    directory.mkdir()
    first, progress = read_refusals(engine.workspace, rec, directory)
    assert first.total == 0 and [r.path for r in first.said] == ["/etc/a"]
    refusals.record(paths.refusals, "[orchestrator] a symlink to /etc/passwd not taken")
    with paths.log.open("ab") as f:
        f.write(f"cat: {directory}/x: Permission denied\n".encode())  # (its own folder: no refusal)
    after, _ = read_refusals(engine.workspace, rec, directory, progress)
    assert [r.line for r in after.shown] == ["[orchestrator] a symlink to /etc/passwd not taken"] and after.total == 1
    assert [r.path for r in after.said] == ["/etc/a"] and after.said_total == 1


def test_a_retried_workers_refusals_are_on_its_record_while_the_retry_runs_and_counted_once_at_its_end(tmp_path, make_engine):
    """What an attempt's log says it was refused is read before its retry starts (on its record on
    disk while the retry runs), and read on from there after the worker's commit: at its end the
    record holds both attempts' words, each once."""
    engine = make_engine(orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]})
    go = tmp_path / "go"
    script = (
        'if [ "$ORCHESTRATOR_ATTEMPT" = 1 ]; then echo "touch: cannot touch \'/etc/a\': Read-only file system"; exit 1; fi;'
        f' echo "bash: /etc/b: Permission denied"; while [ ! -e "{go}" ]; do sleep 0.05; done'
    )
    job = engine.submission.submit("x", {"max_retries": 1}, [script])
    record = engine.workspace.worker_paths(job.root_id, 0, "worker_1").record

    def retry_running():
        data = json.loads(record.read_text()) if record.exists() else {}
        return len(data.get("attempts", [])) == 2 and data

    # Given its first attempt refused /etc/a and failed, When its retry runs
    during = wait_until(retry_running, timeout=30, what="the retry's start on the record")
    # Then its record already says what the first attempt was refused
    assert [r["path"] for r in during["said_refused"]] == ["/etc/a"] and during["said_refused_total"] == 1, during
    go.touch()
    done = engine.queries.wait(job.id, 30)
    w = workers(engine, done)["worker_1"]
    # And at its end both attempts' words are there, each once
    assert w.status is WorkerStatus.SUCCESS and len(w.attempts) == 2
    assert [r.path for r in w.said_refused] == ["/etc/a", "/etc/b"] and w.said_refused_total == 2, w.said_refused
    assert json.loads(record.read_text())["said_refused_total"] == 2


def test_refusals_survive_the_records_round_trip():
    rec = _worker(status=WorkerStatus.SUCCESS)
    rec.refusals, rec.refusals_total = [Refusal(RefusalKind.NETWORK, "a.example:443", "refused", recorded=True)], 4
    rec.said_refused, rec.said_refused_total = [Refusal(RefusalKind.READ_ONLY, "/home/u/x", "no: Read-only file system")], 2
    again = WorkerRecord.from_dict(rec.to_dict())
    assert again.refusals == rec.refusals and again.refusals_total == 4
    assert again.said_refused == rec.said_refused and again.said_refused_total == 2
    assert refusal_line(again.refusals, 4) == "4 refused: network a.example:443 and 3 more"


def test_a_record_from_when_its_logs_words_were_counted_reads_them_as_its_words():
    rec = _worker(status=WorkerStatus.SUCCESS)
    data = rec.to_dict()
    data["refusals"] = [
        Refusal(RefusalKind.NETWORK, "a.example:443", "refused", recorded=True).to_dict(),
        Refusal(RefusalKind.READ_ONLY, "/home/u/x", "no: Read-only file system").to_dict(),
    ]
    data["refusals_total"] = 5
    again = WorkerRecord.from_dict(data)
    assert [r.path for r in again.refusals] == ["a.example:443"] and again.refusals_total == 1
    assert [r.path for r in again.said_refused] == ["/home/u/x"] and again.said_refused_total == 4


# -- the surfaces ----------------------------------------------------------------------------
def _tree(tmp_path, **fields):
    job = JobRecord(id="r", root_id="r", request="do it", status=JobStatus.RUNNING, worker_names=["worker_1"])
    rec = _worker(log_path="logs/depth_0_worker_1.log", **fields)
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / rec.log_path).write_text("started\n")
    return job, rec


def test_the_status_document_and_table_show_refusals_beside_success_and_the_logs_words_apart(tmp_path):
    job, rec = _tree(tmp_path, status=WorkerStatus.SUCCESS)
    rec.refusals, rec.refusals_total = [Refusal(RefusalKind.NETWORK, "a.example:443", "refused: a", recorded=True)], 1
    rec.said_refused, rec.said_refused_total = [Refusal(RefusalKind.READ_ONLY, "/home/u/x", "no: Read-only file system")], 1
    doc = job_status("r", [job], [rec], tmp_path)
    task = doc["results"]["tasks"][0]
    assert task["status"] == "success" and task["refused"] == "1 refused: network a.example:443"
    assert task["refusals"] == [{"kind": "network", "path": "a.example:443", "line": "refused: a", "recorded": True}]
    assert task["refusals_total"] == 1
    assert task["said"] == "its log says (its own words): read-only /home/u/x (1 line)" and task["said_refused_total"] == 1
    assert task["said_refused"] == [
        {"kind": "read-only", "path": "/home/u/x", "line": "no: Read-only file system", "recorded": False}
    ]
    table = status_table(doc)
    assert "↳ 1 refused: network a.example:443" in table and "↳ its log says (its own words): read-only /home/u/x" in table
    drawn = "\n".join(render_tree(tree_from_status(doc)))
    assert "(1 refused: network a.example:443) (its log says (its own words): read-only /home/u/x (1 line))" in drawn


def test_a_running_worker_silent_past_quiet_after_says_so_on_every_surface(tmp_path):
    job, rec = _tree(tmp_path, status=WorkerStatus.RUNNING, started_at=1000.0)
    log = tmp_path / rec.log_path
    os.utime(log, (1000.0, 1000.0))  # its last write
    doc = job_status("r", [job], [rec], tmp_path, now=1075.0, quiet_after=60)
    task = doc["results"]["tasks"][0]
    assert task["quiet_for"] == 75 and task["quiet"] == "no output for 75 s"
    assert "↳ no output for 75 s" in status_table(doc)
    assert "no output for 75 s" in "\n".join(render_tree(tree_from_status(doc), now=1075.0))
    # watch from the files (no server): the same words from the records
    silence = Silence(tmp_path, 60)
    drawn = render_tree(tree_from_records([job], [rec], silence=lambda w: silence.words(w, 1075.0)), now=1075.0)
    assert "no output for 75 s" in "\n".join(drawn)
    # under the threshold, off (0), or not running: nothing
    assert job_status("r", [job], [rec], tmp_path, now=1030.0, quiet_after=60)["results"]["tasks"][0]["quiet"] is None
    assert job_status("r", [job], [rec], tmp_path, now=1075.0, quiet_after=0)["results"]["tasks"][0]["quiet"] is None
    rec.status = WorkerStatus.SUCCESS
    assert job_status("r", [job], [rec], tmp_path, now=1075.0, quiet_after=60)["results"]["tasks"][0]["quiet"] is None


def test_a_worker_that_ends_refused_something_sends_worker_refused_with_its_refusals():
    job = JobRecord(id="r", root_id="r", request="do it", status=JobStatus.RUNNING)
    rec = _worker(status=WorkerStatus.SUCCESS)
    event = Event(seq=1, time=1.0, type="worker", job_id="r", root_id="r", status="success", message="done", worker="worker_1")
    seen = Seen()
    assert worker_types(seen, job, rec, event) == []  # nothing refused: nothing to tell
    rec.said_refused, rec.said_refused_total = [Refusal(RefusalKind.GIT_REF, None, "fatal: cannot lock ref 'refs/stash'")], 2
    assert worker_types(seen, job, rec, event) == []  # its log's words alone: no refusal to tell
    rec.refusals, rec.refusals_total = [Refusal(RefusalKind.ORCHESTRATOR, None, "[orchestrator] not taken", recorded=True)], 2
    assert worker_types(seen, job, rec, event) == ["worker.refused"]
    assert worker_types(seen, job, rec, event) == []  # once
    payload = worker_summary(rec, event)
    assert payload["status"] == "success" and payload["refusals_total"] == 2
    assert payload["refused"].startswith("2 refused: orchestrator: [orchestrator] not taken")
    assert payload["refusals"][0]["kind"] == "orchestrator"
    assert payload["said"].startswith("its log says (its own words): git-ref: fatal: cannot lock ref")


# -- a real sandboxed worker -------------------------------------------------------------------
@needs_bwrap
@pytest.mark.slow
def test_a_sandboxed_worker_refused_everything_outside_is_success_with_its_refusals_shown(tmp_path):
    host, folder = make_host(tmp_path)
    (host / "app.py").write_text("a change the user stashed\n")
    git(host, "stash", "-q", env=user_env())
    before = snapshot(host, folder)
    home = Path(os.environ.get("HOME") or "/root")
    task = (
        "echo work > mine.txt;"
        f" echo hacked > '/usr/orch-refusal-probe'; echo x > '{home}/.orch-refusal-probe'; echo x >> '{folder}/workspace/planted';"
        f" git -C '{host}' stash drop; git -C '{host}' branch -f main HEAD~1; exit 0"
    )
    engine = host_engine(folder, git={"isolation": "worktree"})
    try:
        job = run_job(engine, tasks=[task])
        w = workers(engine, job)["worker_1"]
        doc = engine.queries.status_document(job.id)
    finally:
        engine.shutdown(timeout=10)
    log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    assert w.status is WorkerStatus.SUCCESS and job.status is JobStatus.COMPLETED, log
    # No record outside the sandbox holds a refused write (bubblewrap's binds keep none): its shell's and
    # git's words, shown as such.
    paths = {r.path for r in w.said_refused}
    # (Not the host's files: at the repository's own path its sandbox shows its own checkout.)
    assert {"/usr/orch-refusal-probe", f"{home}/.orch-refusal-probe", f"{folder}/workspace/planted"} <= paths, (
        w.said_refused,
        log,
    )
    assert w.said_refused_total >= 5, (w.said_refused, log)  # the three writes, the stash drop and the branch move
    task_doc = doc["results"]["tasks"][0]
    assert task_doc["status"] == "success" and task_doc["said_refused_total"] == w.said_refused_total
    assert "/usr/orch-refusal-probe" in status_table(doc)
    final = (engine.workspace.job_dir(job.root_id) / "FINAL_RESULT.md").read_text()
    assert "## Refused" in final and f"{home}/.orch-refusal-probe" in final and "success, 0 refused, its log says" in final
    assert not (home / ".orch-refusal-probe").exists()
    assert snapshot(host, folder) == before


@pytest.mark.slow
def test_a_silent_worker_is_told_once_per_silence_as_an_event_that_watch_prints(make_engine):
    engine = make_engine(
        orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]},
        # (a second's silence: on a loaded machine the worker's start, before its first line, may
        # take half a second, a silence of its own, told as such)
        workers={"quiet_after": 1.0, "monitor_interval": 0.1},
    )
    job = run_job(engine, tasks=["echo start; sleep 3; echo end"])
    told = [e for e in engine.events.since(job.root_id) if e.type == "worker" and "no output for" in e.message]
    assert len(told) == 1 and told[0].status == "running" and told[0].worker == "worker_1", told
    assert "no output for" in engine.workspace.orchestrator_log(job.root_id).read_text()
    out = io.StringIO()
    ProgressView(out, tty=False).event(told[0].to_dict())  # watch without a terminal: one line per event
    assert "depth_0_worker_1" in out.getvalue() and "running" in out.getvalue() and "no output for" in out.getvalue()
