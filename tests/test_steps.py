"""After-attempt steps: run in order after a successful attempt, each able to pass, fail the
worker or ask for a retry; a broken step fails closed. Real quick workers (``sh -c``)."""

from __future__ import annotations

import pytest

from orchestrator.checkouts.checkout import Changes
from orchestrator.engine.attempts import Attempts
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.quality.steps import PASS, Step, StepContext, Verdict, fail, retry, run_steps

from .checkout_double import RecordingCheckout, seamed_engines
from .conftest import only_worker, run_job

pytestmark = pytest.mark.slow


@pytest.fixture
def seamed(tmp_path):
    with seamed_engines(tmp_path) as factory:
        yield factory


class Scripted(Step):
    """A step that notes what it saw and gives the verdicts it was given, one per call (the last one repeats)."""

    def __init__(self, name, *verdicts, seen=None):
        self.name = name
        self.verdicts = list(verdicts) or [PASS]
        self.seen = [] if seen is None else seen

    def run(self, ctx):
        self.seen.append(
            (
                self.name,
                ctx.attempt,
                ctx.status,
                ctx.directory,
                ctx.changes().files_created,
                ctx.parsed.output if ctx.parsed else None,
                ctx.record.name,
                len(ctx.record.attempts),
            )
        )
        return self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]


def log_of(engine, worker):
    return (engine.workspace.job_dir(worker.root_id) / worker.log_path).read_text()


def test_steps_run_in_order_after_a_successful_attempt_and_see_its_work(seamed):
    seen = []
    engine = seamed(steps=[Scripted("first", seen=seen), Scripted("second", seen=seen)])
    job = run_job(engine, "x", tasks=["echo made > a.txt; echo done"])
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.SUCCESS and worker.exit_reason == "exit code 0"
    folder = engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert seen == [
        ("first", 1, WorkerStatus.SUCCESS, folder, ["a.txt"], "done", "worker_1", 1),
        ("second", 1, WorkerStatus.SUCCESS, folder, ["a.txt"], "done", "worker_1", 1),
    ]
    # the steps' changes were asked of the Checkout once, and are the last attempt's final ones
    # (no step ran anything in its directory since: not asked again)
    assert [c[0] for c in engine.checkout.calls] == ["prepare", "changes", "cleanup"]


def test_steps_do_not_run_after_a_failed_attempt(seamed):
    step = Scripted("gate")
    engine = seamed(steps=[step])
    job = run_job(engine, "x", tasks=["exit 3"], config={"max_retries": 1})
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 2 and worker.exit_reason == "exit code 3"
    assert step.seen == []


def test_a_failing_step_fails_the_worker_with_its_reason_and_stops_the_steps_after_it(seamed):
    later = Scripted("merge")
    engine = seamed(steps=[Scripted("lint", fail("2 warnings in a.py")), later])
    job = run_job(engine, "x", tasks=["echo hi > a.py"], config={"max_retries": 2})
    worker = only_worker(engine, job)
    assert job.status is JobStatus.FAILED and worker.status is WorkerStatus.FAILED
    assert len(worker.attempts) == 1, "a failing step is not retried"
    assert worker.exit_reason == "step lint failed: 2 warnings in a.py" and worker.error == "2 warnings in a.py"
    assert "===== attempt 1 step lint failed: 2 warnings in a.py =====" in log_of(engine, worker)
    assert later.seen == []
    assert engine.checkout.calls[-1] == ("cleanup", "worker_1", False)
    assert worker.files_created == ["a.py"]


def test_a_step_asking_for_a_retry_gets_a_second_attempt_which_then_passes(seamed):
    # Given a gate that asks for a retry after the first attempt and passes the second
    gate = Scripted("gate", retry("tests failed"), PASS)
    engine = seamed(steps=[gate], workers={"retry_backoff": 0.3, "retry_backoff_max": 5})
    job = run_job(engine, "x", tasks=['echo "$ORCHESTRATOR_ATTEMPT" >> attempts.txt'], config={"max_retries": 2})
    worker = only_worker(engine, job)
    # Then the worker succeeded on its second attempt, after the ordinary backoff and log line
    assert worker.status is WorkerStatus.SUCCESS and len(worker.attempts) == 2
    assert worker.exit_reason == "exit code 0" and worker.error is None
    assert [s[1] for s in gate.seen] == [1, 2]
    assert worker.attempts[1].started_at - worker.attempts[0].ended_at >= 0.3
    log = log_of(engine, worker)
    assert "===== attempt 1 failed (step gate asked for a retry: tests failed); retry 1/2 in 0." in log
    assert "===== attempt 2/3 started " in log
    # and the Checkout reset the directory before the retry, once; the second attempt's steps'
    # changes are its final ones
    assert [c[0] for c in engine.checkout.calls] == ["prepare", "changes", "reset", "changes", "cleanup"]
    assert engine.checkout.calls[-1] == ("cleanup", "worker_1", True)


def test_a_step_retrying_past_max_retries_fails_the_worker_saying_so(seamed):
    gate = Scripted("gate", retry("still red"))
    engine = seamed(steps=[gate])
    job = run_job(engine, "x", tasks=["true"], config={"max_retries": 1})
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 2 and len(gate.seen) == 2
    assert worker.exit_reason == "step gate asked for a retry: still red; no retries left (max_retries=1)"
    assert worker.error == "still red"
    log = log_of(engine, worker)
    assert "===== attempt 1 failed (step gate asked for a retry: still red); retry 1/1 in " in log
    assert "===== attempt 2 failed (step gate asked for a retry: still red; no retries left (max_retries=1)) =====" in log


def test_a_step_that_raises_fails_closed(seamed):
    class Boom(Step):
        name = "boom"

        def run(self, ctx):
            raise RuntimeError("kaput")

    engine = seamed(steps=[Boom()])
    job = run_job(engine, "x", tasks=["true"], config={"max_retries": 2})
    worker = only_worker(engine, job)
    assert job.status is JobStatus.FAILED and worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1
    assert worker.exit_reason == "step boom failed: raised RuntimeError: kaput"
    assert "===== attempt 1 step boom failed: raised RuntimeError: kaput =====" in log_of(engine, worker)


def test_with_no_steps_the_after_attempt_path_is_never_taken(seamed, monkeypatch):
    # Without steps an attempt's end is handled as before the seam (no extra sweep, no context)
    def never(self, number, outcome):
        raise AssertionError("_after_attempt ran without steps")

    monkeypatch.setattr(Attempts, "_after_attempt", never)
    engine = seamed()
    job = run_job(engine, "x", tasks=["true", "exit 2"], config={"max_retries": 1})
    assert job.status is JobStatus.PARTIAL and engine.steps == ()


# -- run_steps on its own (no process) -----------------------------------------------------
def _context(tmp_path):
    from orchestrator.models import WorkerRecord
    from orchestrator.process.runner import Wakeup

    class NoChanges(RecordingCheckout):
        def changes(self, record):
            self.note("changes")
            return Changes()

    record = WorkerRecord(
        job_id="0123456789ab", root_id="0123456789ab", name="worker_1", index=1, depth=0, task="t", kind="command"
    )
    checkout = NoChanges(None)
    return StepContext(
        record=record,
        directory=tmp_path,
        attempt=1,
        status=WorkerStatus.SUCCESS,
        exit_reason="exit code 0",
        parsed=None,
        checkout=checkout,
        cancel=Wakeup(),
    ), checkout


def test_run_steps_stops_at_the_first_step_that_does_not_pass(tmp_path):
    ctx, checkout = _context(tmp_path)
    seen = []
    steps = [Scripted("a", seen=seen), Scripted("b", retry("again"), seen=seen), Scripted("c", seen=seen)]
    assert run_steps(steps, ctx) == ("b", Verdict("retry", "again"))
    assert [s[0] for s in seen] == ["a", "b"]
    assert checkout.calls == [("changes",)], "the changes are asked once per attempt"
    assert run_steps([Scripted("a")], ctx) is None and run_steps([], ctx) is None


def test_run_steps_fails_closed_on_a_step_returning_no_verdict(tmp_path):
    class Sloppy(Step):
        name = "sloppy"

        def run(self, ctx):
            return True

    ctx, _ = _context(tmp_path)
    assert run_steps([Sloppy(), Scripted("never")], ctx) == (
        "sloppy",
        fail("returned True, not PASS, fail(reason) or retry(reason)"),
    )
    assert run_steps([Scripted("odd", Verdict("maybe"))], ctx)[1].action == "fail"
