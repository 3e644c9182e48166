"""The result always passes (DESIGN §15): a root job's result branch moves only to a tree on which
the required gates that applied to the work in it passed. Real git in repositories made here, real
worker processes, real gate processes (``python3 -m unittest`` on a tiny package), and the user's
repository checked before and after."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from orchestrator.audit import signing_key
from orchestrator.audit.verify import verify
from orchestrator.cli import scripts
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.reports.status_document import job_status, status_table
from orchestrator.webhooks.event_types import job_summary
from orchestrator.workspace.stages import LEDGER

from .conftest import API_KEY, run_job, wait_until
from .helpers import webhooks as webhooks_helpers
from .helpers.gates import gate, gated
from .helpers.landing import result_of
from .helpers.served_home import served_home
from .helpers.webhooks import endpoint, hooks
from .helpers.worktree import git, host_engine, make_host, snapshot, user_env, workers
from .test_continue import finished_round

receivers = webhooks_helpers.receivers  # the fixture: a webhook receiver on 127.0.0.1

pytestmark = pytest.mark.slow
__all__ = ["gated"]  # the fixture, shared

CALC = "def total(xs):\n    return sum(xs)\n"
USE = "from calc import total\n\n\ndef doubled(xs):\n    return 2 * total(xs)\n"
TEST_CALC = (
    "import unittest\n\nfrom calc import total\nfrom use import doubled\n\n\n"
    "class T(unittest.TestCase):\n    def test_total(self):\n        self.assertEqual(total([1, 2]), 3)\n\n"
    "    def test_doubled(self):\n        self.assertEqual(doubled([1, 2]), 6)\n"
)
# worker tasks: each is run by `sh -c`, in the worker's checkout
RENAME = "sed -i s/total/sum_all/g calc.py use.py test_calc.py"
NEW_CALLER = "sh new_caller.sh"  # report.py calls total(), test_report.py tests it
NEW_CALLER_SH = """cat > report.py <<'END'
from calc import total


def report(xs):
    return "sum=%d" % total(xs)
END
cat > test_report.py <<'END'
import unittest

from report import report


class R(unittest.TestCase):
    def test_report(self):
        self.assertEqual(report([2]), "sum=2")
END
"""
UNITTEST = gate("tests", [sys.executable, "-m", "unittest", "-q"], required=True, timeout=60)


def add_package(host: Path) -> None:
    """The tiny package the workers change: committed on the host's branch (the jobs' base)."""
    for name, text in (
        ("calc.py", CALC),
        ("use.py", USE),
        ("test_calc.py", TEST_CALC),
        (".gitignore", ".env\n__pycache__/\n"),
        ("new_caller.sh", NEW_CALLER_SH),
    ):
        (host / name).write_text(text)
    git(host, "add", "-A")
    git(host, "commit", "--no-verify", "-qm", "calc", env=user_env())


def unittest_on(host: Path, commit: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """The project's own tests on ``commit``'s tree, in a checkout of our own."""
    where = tmp / f"check_{commit[:8]}"
    git(host, "worktree", "add", "-q", "--detach", str(where), commit)
    try:
        return subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=where, capture_output=True, text=True)
    finally:
        git(host, "worktree", "remove", "--force", str(where))


def test_the_rename_and_a_new_caller_of_the_old_name_the_result_passes_and_the_breaker_is_left_out_named(gated, tmp_path):
    host, folder, make = gated
    add_package(host)
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=[RENAME, NEW_CALLER], config={"gates": [UNITTEST], "max_retries": 0}, timeout=120)
    found = workers(engine, job)
    # each passed its gate alone, on its own branch
    assert all(w.status is WorkerStatus.SUCCESS and w.gates and w.gates[0].passed for w in found.values()), [
        (w.status, w.exit_reason, w.gates) for w in found.values()
    ]
    merge = job.merge
    assert merge is not None and merge.outcome is not None
    assert list(merge.merged) == ["worker_1"]
    (left,) = merge.left_out
    assert left["worker"] == "worker_2" and left["combination"] == "worker_1"
    assert left["reason"].startswith(
        "breaks the combination with worker_1: tests failed: ImportError: cannot import name 'total'"
    )
    # the result branch holds the rename alone, and passes the project's tests
    result = result_of(host, job.id)
    assert result == merge.result_commit
    assert git(host, "show", f"{result}:calc.py") == CALC.replace("total", "sum_all")
    assert "report.py" not in git(host, "ls-tree", "--name-only", result)
    assert unittest_on(host, result, tmp_path).returncode == 0
    # the job says so: not completed, the combination named in its notes
    assert job.status is JobStatus.PARTIAL
    assert any("left out: worker_2 (breaks the combination with worker_1: tests failed: ImportError" in n for n in job.notes)
    # every surface says which combination failed and why: status table, FINAL_RESULT.md, check-status's exit code
    doc = job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
    assert doc["status"] == "partial" and doc["merge"]["left_out"][0]["combination"] == "worker_1"
    assert "left out: worker_2 (breaks the combination with worker_1: tests failed: ImportError" in status_table(doc)
    final = engine.workspace.final_report(job.root_id).read_text()
    assert "- Left out: `worker_2` (breaks the combination with worker_1: tests failed: ImportError" in final
    assert scripts.status_exit_code(doc) == scripts.exit_code(doc) == 3
    # ... the webhooks' payload, and the signed record (which verifies)
    named = {"worker": "worker_2", "combination": "worker_1", "reason": left["reason"]}
    assert job_summary(engine.queries.get_job(job.id))["merge"]["left_out"] == [named]
    record = json.loads((engine.workspace.job_dir(job.root_id) / "RECORD.json").read_text())
    (row,) = [j for j in record["jobs"] if j["id"] == job.id]
    assert row["merge"]["left_out"] == [named]
    public = signing_key.load_or_create(engine.workspace.root).public_key()
    assert verify(engine.workspace.job_dir(job.root_id), public, lambda ref: git(host, "rev-parse", ref).strip())[1] == []
    # the merged tree's gate runs are in the stage ledger, with their verdicts
    entries = [json.loads(line) for line in (engine.workspace.state_dir(job.root_id) / LEDGER).read_text().splitlines()]
    mine = [e for e in entries if e["key"].startswith(f"result gate {job.id} ") and e["event"] == "verdict"]
    # the pair, and the pair once more (only the whole batch failed); worker_1 alone is the very
    # tree its own gate passed on: not run again
    assert [(e["verdict"]["passed"], e["verdict"]["workers"]) for e in mine] == [(False, ["worker_1", "worker_2"])] * 2
    assert mine[1]["key"] == mine[0]["key"] + " run 2"
    assert snapshot(host, folder) == before


def test_disjoint_workers_that_pass_together_land_whole_after_one_gate_run_on_their_merge(gated, tmp_path):
    host, folder, make = gated
    add_package(host)
    before = snapshot(host, folder)
    engine = make()
    job = run_job(
        engine, "x", tasks=[RENAME, "echo notes > notes.txt"], config={"gates": [UNITTEST], "max_retries": 0}, timeout=120
    )
    assert job.status is JobStatus.COMPLETED
    assert job.merge is not None and list(job.merge.merged) == ["worker_1", "worker_2"] and job.merge.left_out == ()
    result = result_of(host, job.id)
    assert unittest_on(host, result, tmp_path).returncode == 0
    log = engine.workspace.logs_dir(job.root_id) / f"{job.id}.result_gate_tests.log"
    assert log.read_text().count("===== gate tests passed =====") == 1
    assert not (engine.workspace.job_dir(job.root_id) / "result_gate" / "tree").exists()  # its worktree removed
    assert snapshot(host, folder) == before


# -- a server killed during the gates of a batch ---------------------------------------------------

# Where a kill -9 stops the server, and the gate runs the ledger then starts: once the gate reached its
# verdict (that verdict kept, never run again), or in the middle of its run (cut off, run once more).
KILL_POINTS = [
    ("result_gate_verdict", ["", " run 2"]),
    ("result_gate_running.tests", ["", "", " run 2"]),
]


@pytest.mark.chaos
@pytest.mark.parametrize(
    ("failpoint", "started"),
    KILL_POINTS,
    ids=["between-two-runs", "during-the-batch-gate"],
)
def test_kill_9_during_a_batch_gate_or_a_bisection_gates_nothing_twice_that_had_a_verdict(tmp_path, failpoint, started):
    host, folder = make_host(tmp_path)
    add_package(host)
    served = served_home(tmp_path, host, ["sh", "-c", "{task}"])  # (its folder outside the host)
    home, url, start = served.home, served.url, served.start
    before = snapshot(host, folder)

    server = start(f"{failpoint}=1")
    try:
        config = {"gates": [UNITTEST], "max_retries": 0}
        answer = requests.post(
            url + "/api/v1/orchestrate",
            json={"request": "x", "tasks": [RENAME, NEW_CALLER], "config": config},
            headers={"X-API-Key": API_KEY},
            timeout=30,
        )
        job_id = answer.json()["job_id"]
        assert server.wait(120) == -signal.SIGKILL
        assert result_of(host, job_id) is None  # the ref never moved to the failing pair
        assert snapshot(host, folder) == before
        server = start()
        done = requests.get(f"{url}/api/v1/jobs/{job_id}/wait?timeout=90", headers={"X-API-Key": API_KEY}, timeout=120).json()
        assert done["status"] == "partial"
        job_dir = home / "workspace" / f"job_{job_id}"
        merge = json.loads((job_dir / "state" / "jobs" / f"{job_id}.json").read_text())["merge"]
        assert merge["merged"] == ["worker_1"]
        assert [w["worker"] for w in merge["left_out"]] == ["worker_2"]
        assert merge["left_out"][0]["reason"].startswith("breaks the combination with worker_1: tests failed: ImportError")
        # a verdict reached before the kill is kept: the pair is run once, plus the search's re-run
        # of it, plus the one run the kill cut off (if it cut one off), never more
        entries = [json.loads(line) for line in (job_dir / "state" / LEDGER).read_text().splitlines()]
        gate_runs = [e["key"] for e in entries if e["key"].startswith(f"result gate {job_id} ") and e["event"] == "started"]
        pair = gate_runs[0]
        assert gate_runs == [pair + suffix for suffix in started]
        verdicts = [e["key"] for e in entries if e["key"].startswith(f"result gate {job_id} ") and e["event"] == "verdict"]
        assert verdicts == [pair, pair + " run 2"]
        log = (job_dir / "logs" / f"{job_id}.result_gate_tests.log").read_text()
        assert log.count("===== gate tests: ") == len(started)
        if len(started) == 3:  # the cut-off run is said to be run again
            events = (job_dir / "logs").glob("*")
            assert any("re-run: the server stopped during it" in p.read_text(errors="replace") for p in events if p.is_file())
        assert unittest_on(host, merge["result_commit"], tmp_path).returncode == 0
        assert snapshot(host, folder) == before
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(60)


# The breaker of the first round it is sent back: it says so in its log and waits to be killed with the
# server; in any later round it moves its caller to the new name.
KILLED_IN_ITS_FIRST_ROUND = [
    "bash",
    "-c",
    'if grep -q "ImportError" "$1"; then'
    " if [ ! -e .round-cut ]; then touch .round-cut; echo WAITING-FOR-THE-KILL; sleep 120; fi;"
    " rm -f .round-cut; sed -i s/total/sum_all/g report.py test_report.py;"
    " else {task}; fi",
    "worker",
    "{prompt_file}",
]


@pytest.mark.chaos
def test_kill_9_during_a_round_sent_back_the_job_is_not_ended_and_the_next_server_sends_it_back_again(tmp_path):
    """The job has not ended while its breaker's round runs (running over REST, no result yet of that
    round); the server killed then, the next one ends the cut-off round failed (counted), sends the
    breaker back for its second round, and the job then ends completed."""
    host, folder = make_host(tmp_path)
    add_package(host)
    served = served_home(tmp_path, host, KILLED_IN_ITS_FIRST_ROUND)
    home, url, headers, start = served.home, served.url, served.headers, served.start
    before = snapshot(host, folder)

    server = start()
    try:
        config = {"gates": [UNITTEST], "max_retries": 0, "gates_retry": 2}
        answer = requests.post(
            url + "/api/v1/orchestrate",
            json={"request": "x", "tasks": [RENAME, NEW_CALLER], "config": config},
            headers=headers,
            timeout=30,
        )
        job_id = answer.json()["job_id"]
        job_dir = home / "workspace" / f"job_{job_id}"
        log = job_dir / "logs" / "depth_0_worker_2.log"
        wait_until(lambda: log.exists() and "WAITING-FOR-THE-KILL" in log.read_text(errors="replace"), timeout=120)
        shown = requests.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        assert shown["status"] == "running", shown["status"]  # its breaker's round runs: not ended
        assert (job_dir / "state" / "sending-back").exists()
        first = result_of(host, job_id)
        assert first is not None and unittest_on(host, first, tmp_path).returncode == 0  # worker_1's, gated
        server.kill()
        server.wait(30)
        server = start()
        done = requests.get(f"{url}/api/v1/jobs/{job_id}/wait?timeout=150", headers=headers, timeout=200).json()
        assert done["status"] == "completed", done.get("notes")
        record = json.loads((job_dir / "state" / "workers" / "depth_0_worker_2.json").read_text())
        rounds = record["rounds"]
        assert [r["state"] for r in rounds] == ["failed", "success"], rounds
        assert rounds[0]["exit_reason"].startswith("lost: the server stopped during the round")
        assert all(r["sent_back"] for r in rounds)
        merge = json.loads((job_dir / "state" / "jobs" / f"{job_id}.json").read_text())["merge"]
        assert merge["left_out"] == [] and merge["merged"] == ["worker_1", "worker_2"]
        result = merge["result_commit"]
        assert result == result_of(host, job_id) and unittest_on(host, result, tmp_path).returncode == 0
        assert ".round-cut" not in git(host, "ls-tree", "--name-only", result).split()
        assert not (job_dir / "state" / "sending-back").exists()
        assert snapshot(host, folder) == before
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(60)


# -- a continue round onto the result: gated with the rest -----------------------------------------

SHELL_LINE = ["bash", "-c", "{task}\n{feedback}"]  # the guide's shell line, the feedback its next line
EITHER_NAME = (
    "cat > report.py <<'END'\n"
    "import calc\n\n\n"
    "def report(xs):\n"
    '    return "sum=%d" % getattr(calc, "sum_all", getattr(calc, "total", None))(xs)\n'
    "END"
)


def test_a_breaker_continued_lands_only_once_its_round_passes_with_the_rest_and_the_job_then_reads_completed(tmp_path):
    host, folder = make_host(tmp_path)
    add_package(host)
    engine = host_engine(folder, orchestrator={"worker": "command", "command": SHELL_LINE})
    try:
        before = snapshot(host, folder)
        job = run_job(engine, "x", tasks=[RENAME, NEW_CALLER], config={"gates": [UNITTEST], "max_retries": 0}, timeout=120)
        assert job.status is JobStatus.PARTIAL and [w["worker"] for w in job.merge.left_out] == ["worker_2"]
        result_1 = result_of(host, job.id)
        # a round that passes alone but still breaks the rename: not merged, the result unchanged
        engine.continue_worker(job.id, "worker_2", "echo more >> notes.txt")
        rec = finished_round(engine, job, "worker_2", 2)
        note = rec.rounds[-1].merge_note or ""
        assert rec.rounds[-1].state == "success" and rec.rounds[-1].result_commit is None, note
        assert note.startswith("not merged: the round's work breaks the result with worker_1: tests failed: ImportError"), note
        assert result_of(host, job.id) == result_1
        assert engine.queries.get_job(job.id).status is JobStatus.PARTIAL
        # a round whose work works with either name: merged, and the job reads completed
        engine.continue_worker(job.id, "worker_2", EITHER_NAME)
        rec = finished_round(engine, job, "worker_2", 3)
        assert rec.rounds[-1].result_commit == result_of(host, job.id) != result_1, rec.rounds[-1].merge_note
        done = engine.queries.get_job(job.id)
        assert done.status is JobStatus.COMPLETED and done.merge.left_out == ()
        assert list(done.merge.merged) == ["worker_1", "worker_2"]
        assert unittest_on(host, result_of(host, job.id), tmp_path).returncode == 0
        assert snapshot(host, folder) == before
    finally:
        engine.shutdown(timeout=10)


def test_the_result_gate_runs_in_the_workers_sandbox_a_write_to_the_host_path_lands_in_its_checkout(gated, tmp_path):
    """With ``workers.sandbox: on`` the merged tree's gate runs confined as a worker's: the checkout is
    shown at the repository's own path, so a gate that writes there writes its own checkout, never
    the user's (which a gate run unconfined would)."""
    host, folder, make = gated
    add_package(host)
    before = snapshot(host, folder)
    engine = make(workers={"sandbox": "on"})
    probe = f"echo escaped > {str(host / 'PWNED')!r}; exec {sys.executable} -m unittest -q"
    tests = gate("tests", probe, shell=True, required=True, timeout=60)
    job = run_job(engine, "x", tasks=[RENAME, NEW_CALLER], config={"gates": [tests], "max_retries": 0}, timeout=120)
    assert job.merge is not None and list(job.merge.merged) == ["worker_1"], job.notes
    assert job.merge.left_out[0]["reason"].startswith("breaks the combination with worker_1: tests failed: ImportError")
    log = (engine.workspace.logs_dir(job.root_id) / f"{job.id}.result_gate_tests.log").read_text()
    assert "===== gate tests failed" in log
    assert not (host / "PWNED").exists()
    assert snapshot(host, folder) == before


def test_a_three_way_interaction_leaves_out_the_third_and_lands_the_pair_that_passes(gated, tmp_path):
    """Any two plugins pass the project's test, three do not: the later of the smallest failing set
    (the third) is left out, named with the two it broke the result with."""
    host, folder, make = gated
    add_package(host)
    (host / "plugins").mkdir()
    (host / "plugins" / "README").write_text("one file per plugin\n")
    (host / "test_plugins.py").write_text(
        "import os\nimport unittest\n\n\nclass P(unittest.TestCase):\n    def test_at_most_two(self):\n"
        "        found = sorted(f for f in os.listdir('plugins') if f.endswith('.py'))\n"
        "        self.assertLessEqual(len(found), 2, f'too many plugins: {found}')\n"
    )
    git(host, "add", "-A")
    git(host, "commit", "--no-verify", "-qm", "plugins", env=user_env())
    before = snapshot(host, folder)
    engine = make()
    tasks = [f"echo 'NAME = {n!r}' > plugins/{n}.py" for n in ("a", "b", "c")]
    job = run_job(engine, "x", tasks=tasks, config={"gates": [UNITTEST], "max_retries": 0}, timeout=120)
    assert all(w.gates and w.gates[0].passed for w in workers(engine, job).values())
    merge = job.merge
    assert merge is not None and list(merge.merged) == ["worker_1", "worker_2"]
    (left,) = merge.left_out
    assert left["worker"] == "worker_3" and left["combination"] == "worker_1, worker_2"
    assert left["reason"].startswith(
        "breaks the combination with worker_1, worker_2: tests failed: AssertionError: 3 not less than"
    ), left
    assert unittest_on(host, result_of(host, job.id), tmp_path).returncode == 0
    assert job.status is JobStatus.PARTIAL
    assert snapshot(host, folder) == before


# -- a graph's integration branch ------------------------------------------------------------------


def test_a_graph_s_integration_branch_moves_only_to_a_passing_tree_and_a_dependent_never_starts_from_a_broken_tip(
    tmp_path,
):
    """Task ``rename`` and task ``caller`` (later) each pass their gate; merged into the graph's
    integration branch together they fail it, so ``caller`` is not merged (it fails, naming the
    combination), the branch stays at the rename, and ``report``, which waits on both, never starts
    from the broken tip."""
    host, folder = make_host(tmp_path)
    add_package(host)
    engine = host_engine(folder)
    try:
        before = snapshot(host, folder)
        tasks = [
            {"id": "rename", "task": RENAME},
            {"id": "caller", "task": f"sleep 2; {NEW_CALLER}"},
            {"id": "report", "task": "echo done > done.txt", "depends_on": ["rename", "caller"]},
        ]
        job = run_job(engine, "x", tasks=tasks, config={"gates": [UNITTEST], "max_retries": 0}, timeout=120)
        by_task = {w.task_id: w for w in workers(engine, job).values()}
        caller = by_task["caller"]
        assert caller.gates and caller.gates[0].passed  # it passed alone
        assert caller.status is WorkerStatus.FAILED, caller.exit_reason
        assert "breaks the combination with worker_1: tests failed: ImportError: cannot import name 'total'" in (
            caller.exit_reason or ""
        )
        assert by_task["report"].status is WorkerStatus.SKIPPED and by_task["report"].attempts == []
        tip = result_of(host, job.id)
        assert tip is not None and git(host, "show", f"{tip}:calc.py") == CALC.replace("total", "sum_all")
        assert "report.py" not in git(host, "ls-tree", "--name-only", tip)
        assert unittest_on(host, tip, tmp_path).returncode == 0
        assert snapshot(host, folder) == before
    finally:
        engine.shutdown(timeout=10)


# -- back to the worker: a breaker sent back with the failing output, its checkout brought up --------

# A command worker that reads its prompt file: told of the ImportError, it moves its caller to the new
# name (which only works in a checkout that holds the rename); else it runs its task.
FIXES_WHEN_TOLD = [
    "bash",
    "-c",
    'if grep -q "ImportError" "$1"; then sed -i s/total/sum_all/g report.py test_report.py; else {task}; fi',
    "worker",
    "{prompt_file}",
]
# The same, but it never acts on what it is told: it runs its task again.
DEAF_TO_IT = ["bash", "-c", "{task}", "worker", "{prompt_file}"]


def _ended_after_rounds(engine, job):
    """The job as its wait returned: ended only once its breakers' rounds sent back were over (no
    round runs, and it ended after the last of them)."""
    assert job.status.terminal and not engine.continuing.busy(job.root_id), job.status
    _, found = engine.queries.snapshot(job.root_id)
    rounds = [r for w in found for r in w.rounds]
    assert all(r.ended_at is not None and r.ended_at <= job.ended_at for r in rounds), [r.to_dict() for r in rounds]
    assert not (engine.workspace.state_dir(job.root_id) / "sending-back").exists()
    return job


def test_a_breaker_that_takes_feedback_is_sent_back_fixes_its_caller_on_the_result_and_the_job_completes(tmp_path, receivers):
    host, folder = make_host(tmp_path)
    add_package(host)
    receiver = receivers()
    engine = host_engine(
        folder,
        orchestrator={"worker": "command", "command": FIXES_WHEN_TOLD},
        **hooks(endpoint(receiver, ["job.completed", "job.partial", "job.failed"])),
    )
    try:
        before = snapshot(host, folder)
        config = {"gates": [UNITTEST], "max_retries": 0, "gates_retry": 1}
        job = run_job(engine, "x", tasks=[RENAME, NEW_CALLER], config=config, timeout=120)
        done = _ended_after_rounds(engine, job)
        rec = workers(engine, job)["worker_2"]
        assert len(rec.rounds) == 1, [r.to_dict() for r in rec.rounds]  # one round sent back, counted
        sent = rec.rounds[0]
        # what it was told: the combination and why, what the others changed, the gate's output
        assert "breaks the combination with worker_1: tests failed: ImportError: cannot import name 'total'" in sent.feedback
        assert "calc.py" in sent.feedback and "===== gate tests failed" in sent.feedback
        assert sent.state == "success" and sent.result_commit is not None, sent.merge_note
        assert done.status is JobStatus.COMPLETED, done.notes
        assert done.merge.left_out == () and list(done.merge.merged) == ["worker_1", "worker_2"]
        assert any("worker worker_2 sent back (1 of 1 rounds): breaks the combination with worker_1" in n for n in done.notes)
        result = result_of(host, job.id)
        assert result == sent.result_commit
        tree = git(host, "ls-tree", "--name-only", result).split()
        assert "report.py" in tree and git(host, "show", f"{result}:calc.py") == CALC.replace("total", "sum_all")
        assert "sum_all" in git(host, "show", f"{result}:report.py")
        assert unittest_on(host, result, tmp_path).returncode == 0
        doc = job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
        assert doc["status"] == "completed" and scripts.status_exit_code(doc) == 0
        # one end told, once its round landed: job.completed, never a job.partial before it
        wait_until(lambda: receiver.requests, what="the job's end delivered")
        assert receiver.types() == ["job.completed"]
        assert json.loads(receiver.requests[0]["body"])["job"]["merge"]["left_out"] == []
        # watch's events say it was sent back
        logs = [p for p in engine.workspace.logs_dir(job.root_id).glob("*") if p.is_file()]
        assert any("continue round 2 started (sent back: it broke the result)" in p.read_text(errors="replace") for p in logs)
        assert snapshot(host, folder) == before
    finally:
        engine.shutdown(timeout=10)


def test_cancel_during_a_round_sent_back_stops_it_and_the_job_ends_with_what_landed(tmp_path):
    host, folder = make_host(tmp_path)
    add_package(host)
    engine = host_engine(folder, orchestrator={"worker": "command", "command": KILLED_IN_ITS_FIRST_ROUND})
    try:
        before = snapshot(host, folder)
        config = {"gates": [UNITTEST], "max_retries": 0, "gates_retry": 2}
        job = engine.submission.submit("x", config, [RENAME, NEW_CALLER])
        log = engine.workspace.worker_log(job.root_id, 0, "worker_2")
        wait_until(lambda: log.exists() and "WAITING-FOR-THE-KILL" in log.read_text(errors="replace"), timeout=120)
        assert engine.queries.get_job(job.id).status is JobStatus.RUNNING  # not ended while its round runs
        engine.cancel(job.id)
        done = engine.queries.wait(job.id, 120)
        assert done.status is JobStatus.PARTIAL, done.notes
        rec = workers(engine, job)["worker_2"]
        assert [r.state for r in rec.rounds] == ["cancelled"]  # one round, stopped; no second sent
        assert "cancel requested: no more workers sent back; the job ends with what landed" in done.notes
        assert [w["worker"] for w in done.merge.left_out] == ["worker_2"]
        assert unittest_on(host, result_of(host, job.id), tmp_path).returncode == 0
        assert snapshot(host, folder) == before
    finally:
        engine.shutdown(timeout=10)


def test_a_breaker_whose_kind_cannot_take_feedback_is_left_out_at_once(tmp_path):
    host, folder = make_host(tmp_path)
    add_package(host)
    engine = host_engine(folder, orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]})
    try:
        before = snapshot(host, folder)
        config = {"gates": [UNITTEST], "max_retries": 0, "gates_retry": 1}
        job = run_job(engine, "x", tasks=[RENAME, NEW_CALLER], config=config, timeout=120)
        done = _ended_after_rounds(engine, job)
        assert workers(engine, job)["worker_2"].rounds == []
        assert done.status is JobStatus.PARTIAL
        (left,) = done.merge.left_out
        assert left["worker"] == "worker_2" and left["combination"] == "worker_1"
        assert any(
            n.startswith("left out: worker_2 (breaks the combination with worker_1: tests failed: ImportError")
            and "not sent back: its kind cannot take feedback (orchestrator.command" in n
            for n in done.notes
        ), done.notes
        assert snapshot(host, folder) == before
    finally:
        engine.shutdown(timeout=10)


def test_the_simulated_worker_cannot_take_feedback(tmp_path):
    from orchestrator.config import Settings
    from orchestrator.workers.adapters import get_adapter

    assert (
        get_adapter("simulated").feedback_refusal(Settings(base_dir=tmp_path))
        == "the simulated worker runs the same script whatever it is told"
    )


def test_a_breaker_whose_rounds_are_spent_is_left_out_with_the_combination_named(tmp_path):
    host, folder = make_host(tmp_path)
    add_package(host)
    engine = host_engine(folder, orchestrator={"worker": "command", "command": DEAF_TO_IT})
    try:
        before = snapshot(host, folder)
        config = {"gates": [UNITTEST], "max_retries": 0, "gates_retry": 1}
        job = run_job(engine, "x", tasks=[RENAME, NEW_CALLER], config=config, timeout=120)
        result_1 = result_of(host, job.id)
        done = _ended_after_rounds(engine, job)
        rec = workers(engine, job)["worker_2"]
        assert len(rec.rounds) == 1 and rec.rounds[0].result_commit is None, [r.to_dict() for r in rec.rounds]
        assert done.status is JobStatus.PARTIAL
        (left,) = done.merge.left_out
        assert left["worker"] == "worker_2" and left["combination"] == "worker_1"
        assert left["reason"].startswith("breaks the combination with worker_1: tests failed: ImportError"), left
        assert left["reason"].endswith("; not fixed by 1 round(s) sent back"), left
        assert result_of(host, job.id) == result_1
        assert unittest_on(host, result_1, tmp_path).returncode == 0
        final = engine.workspace.final_report(job.root_id).read_text()
        assert "- Left out: `worker_2` (breaks the combination with worker_1: tests failed: ImportError" in final
        assert "not fixed by 1 round(s) sent back" in final
        # status JSON and table, check-status's exit code, a webhook delivery's job: the combination and why
        doc = job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
        assert doc["merge"]["left_out"][0]["reason"] == left["reason"]
        assert "not fixed by 1 round(s) sent back" in status_table(doc)
        assert scripts.status_exit_code(doc) == 3
        assert job_summary(done)["merge"]["left_out"] == [dict(left)]
        assert snapshot(host, folder) == before
    finally:
        engine.shutdown(timeout=10)
