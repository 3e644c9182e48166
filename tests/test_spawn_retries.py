"""A retried worker's spawn (engine/submission.Submission.spawn): a retry's spawn of the request an
earlier attempt of the same worker spawned gets that child job back, running or ended, so one
subtask never makes two child jobs of one request; an ended child's work, reset out of the
retry's checkout, is brought back in. A real server on 127.0.0.1, real command workers running the
real spawn helper, a real host repository made here and snapshotted around each job."""

from __future__ import annotations

import pytest

from orchestrator.cli.server import start_in_thread
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine
from orchestrator.models import JobStatus, WorkerStatus

from .conftest import API_KEY, run_job
from .helpers.worktree import git, make_host, snapshot, workers

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path):
    """A host repository, and a real server on its orchestrator folder whose workers run ``sh -c {task}``."""
    host, folder = make_host(tmp_path)
    settings = load_settings(
        base_dir=folder,
        environ={},
        overrides={
            "workers": {"retry_backoff": 0.05, "retry_backoff_max": 0.2, "kill_grace": 0.5, "default_timeout": 120},
            "orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]},
            "api": {"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
        },
    )
    engine = Engine(settings)
    server = start_in_thread(settings, engine, port=0)
    yield host, folder, engine
    engine.shutdown(timeout=10)
    server.close()


def children_of(engine: Engine, root_id: str) -> list[str]:
    """Every child job of the tree, from the workspace (what a restart would find)."""
    return sorted(j.id for j in engine.queries.list_jobs() if j.root_id == root_id and not j.is_root)


# Each attempt: some work, the child job (same request each time), a look at its file, six lines
# of output, then a failure.
ALWAYS_FAILS = (  # (a task is one line: ";" between its commands)
    'echo "attempt $ORCHESTRATOR_ATTEMPT" > mine.txt; '
    'orchestrator-spawn --wait "echo from the child > child.txt"; echo "spawn exit $?"; '
    'if [ -f child.txt ]; then echo "child.txt is here"; else echo "child.txt is missing"; fi; '
    'for i in 1 2 3 4 5; do echo "step $i"; done; '
    "echo 'giving up' >&2; exit 3"
)


def test_a_worker_retried_after_its_spawn_makes_one_child_job_and_its_error_holds_its_output(served):
    host, folder, engine = served
    before = snapshot(host, folder)
    job = run_job(engine, "spawn then fail", tasks=[ALWAYS_FAILS], config={"max_retries": 2}, timeout=240)
    rec = workers(engine, job)["worker_1"]
    assert rec.status is WorkerStatus.FAILED and len(rec.attempts) == 3, rec
    # One child job for the three attempts: the first started it, the retries got it back
    (child_id,) = children_of(engine, job.root_id)
    assert rec.child_job_ids == [child_id]
    assert rec.reused_children == {child_id: 3}
    child = engine.queries.get_job(child_id)
    assert child.status is JobStatus.COMPLETED and child.parent_attempt == 1 and child.spawn_key
    log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    assert log.count(f"child job {child_id} reused, not started again") == 2, log
    assert log.count("spawn exit 0") == 3
    # Each retry started from its checkpoint (the child's merge reset away) and had the child's work brought back
    assert log.count("child.txt is here") == 3 and "child.txt is missing" not in log, log
    assert log.count(f"child job {child_id} reused by attempt") == 2
    # Its error: its exit and the end of its output, several lines of it
    head, *lines = (rec.error or "").splitlines()
    assert head == "exit code 3; the end of its output:", rec.error
    assert lines[-7:] == ["child.txt is here", "step 1", "step 2", "step 3", "step 4", "step 5", "giving up"], rec.error
    assert snapshot(host, folder) == before


# Attempt 1 starts the child without waiting and fails at once (the child still runs); attempt 2
# sends the same request, waits, and succeeds with the child's work in its checkout.
FAILS_ONCE = (
    'if [ "$ORCHESTRATOR_ATTEMPT" = 1 ]; then '
    'orchestrator-spawn --request child "sleep 2; echo from the child > child.txt"; echo "attempt 1 fails"; exit 1; '
    "fi; "
    'orchestrator-spawn --wait --request child "sleep 2; echo from the child > child.txt" || exit 9; '
    "cat child.txt; echo mine > mine.txt"
)


def test_a_retry_reuses_its_earlier_attempts_running_child_and_succeeds_with_its_work(served):
    host, folder, engine = served
    before = snapshot(host, folder)
    job = run_job(engine, "spawn, fail, retry", tasks=[FAILS_ONCE], config={"max_retries": 1}, timeout=240)
    rec = workers(engine, job)["worker_1"]
    assert rec.status is WorkerStatus.RECURSIVE_SUCCESS, (rec.status, rec.exit_reason, rec.error)
    assert len(rec.attempts) == 2
    (child_id,) = children_of(engine, job.root_id)
    assert rec.reused_children == {child_id: 2}
    log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    assert f"child job {child_id} reused, not started again" in log and "from the child" in log, log
    assert "it is running; its work merges into your branch when it ends" in log, log  # reused while it ran
    assert job.status is JobStatus.COMPLETED
    result = f"orchestrator/{job.id}/result"
    assert git(host, "show", f"{result}:child.txt") == "from the child\n"
    assert git(host, "show", f"{result}:mine.txt") == "mine\n"
    assert snapshot(host, folder) == before


# Attempt 2 writes its own child.txt before it spawns the same request: the ended child's work
# conflicts with it, so the spawn is refused and nothing of the child's is brought in.
CONFLICTS = (
    'if [ "$ORCHESTRATOR_ATTEMPT" = 2 ]; then echo mine > child.txt; fi; '
    'orchestrator-spawn --wait "echo from the child > child.txt"; echo "spawn exit $?"; exit 3'
)


def test_a_reused_childs_work_that_conflicts_with_the_retrys_checkout_refuses_the_spawn(served):
    host, folder, engine = served
    before = snapshot(host, folder)
    job = run_job(engine, "spawn, fail, conflict", tasks=[CONFLICTS], config={"max_retries": 1}, timeout=240)
    rec = workers(engine, job)["worker_1"]
    assert rec.status is WorkerStatus.FAILED and len(rec.attempts) == 2
    (child_id,) = children_of(engine, job.root_id)
    assert rec.reused_children == {}  # refused: not reused
    log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    assert f"child job {child_id}, which an earlier attempt started for the same request, cannot be reused: its work" in log, log
    assert "conflicts with your checkout in: child.txt" in log and "spawn exit 1" in log, log
    assert git(host, "show", f"{rec.commit}:child.txt") == "mine\n"  # the retry's own work, nothing of the child's
    assert snapshot(host, folder) == before
