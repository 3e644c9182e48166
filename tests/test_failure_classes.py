"""Failure classes: auth and bad_request are never retried, transient failures
are retried under workers.transient_retries with their own backoff, and the class is recorded.

The adapter is the only fake here: a ``command`` kind whose parser reads an HTTP status the way
an AI CLI adapter reads its CLI's structured output. The workers are real ``sh -c`` processes."""

from __future__ import annotations

import dataclasses
import re

import pytest

from orchestrator.engine.attempts import transient_delay
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.reports.status_document import job_status
from orchestrator.workers.adapters import KINDS
from orchestrator.workers.adapters.base import ParsedResult, class_of_http_status, tail_chars
from orchestrator.workers.adapters.command import CommandAdapter

from .conftest import run_job

pytestmark = pytest.mark.slow

# Attempt N of the worker prints what the Nth word of its subtask says: "ok", "fail", or an
# HTTP status, optionally with a retry-after ("429:0.6").
SCRIPT = r"""
set -- $1
shift $((ORCHESTRATOR_ATTEMPT - 1))
case $1 in
  ok) echo "all done"; exit 0 ;;
  fail) echo "plain failure"; exit 1 ;;
  *:*) echo "API error: HTTP ${1%%:*} (retry-after ${1#*:})"; exit 147 ;;
  *) echo "API error: HTTP $1 from the model service"; exit 144 ;;
esac
"""


class ClassifyingAdapter(CommandAdapter):
    """Reads "HTTP <status>" and "retry-after <s>" as an AI CLI adapter reads its CLI's JSON."""

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        result = ParsedResult(output=tail_chars(text, max_chars))
        found = re.search(r"API error: HTTP (\d{3})[^\n]*", text)
        if found:
            result.failure_class = class_of_http_status(int(found.group(1)))
            result.error = found.group(0)
            result.ok = False
            result.retryable = result.failure_class not in ("auth", "bad_request")
            after = re.search(r"retry-after ([\d.]+)", found.group(0))
            result.retry_after = float(after.group(1)) if after else None
        return result


@pytest.fixture
def classifying(monkeypatch, make_engine):
    monkeypatch.setitem(KINDS, "command", dataclasses.replace(KINDS["command"], adapter=ClassifyingAdapter))

    def factory(**workers):
        return make_engine(
            orchestrator={"worker": "command", "command": ["sh", "-c", SCRIPT, "sh", "{task}"]},
            workers={"retry_backoff": 0.05, "retry_backoff_max": 0.2, **workers},
        )

    return factory


def _worker(engine, job):
    _, workers = engine.queries.snapshot(job.root_id)
    return next(w for w in workers if w.job_id == job.id)


def _status_task(engine, job):
    jobs, workers = engine.queries.snapshot(job.root_id)
    return job_status(job.id, jobs, workers, engine.workspace.job_dir(job.root_id))["results"]["tasks"][0]


@pytest.mark.parametrize("status, kind", [(401, "auth"), (403, "auth"), (400, "bad_request")])
def test_auth_and_bad_request_fail_once_at_once_with_the_clis_message(classifying, status, kind):
    engine = classifying()
    job = run_job(engine, "x", tasks=[f"{status} {status} ok"], config={"max_retries": 2})
    worker = _worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1
    assert worker.failure_class == kind and worker.attempts[0].failure_class == kind
    assert worker.error == f"API error: HTTP {status} from the model service"
    assert "not retried" in worker.exit_reason and worker.attempts[0].exit_code == 144
    task = _status_task(engine, job)
    assert task["failure_class"] == kind and task["attempts"] == 1
    final = (engine.workspace.job_dir(job.root_id) / "FINAL_RESULT.md").read_text()
    assert f"- Failure class: {kind} (not retried" in final and f"[{kind}]" in final


def test_transient_failures_are_retried_even_with_max_retries_0(classifying):
    engine = classifying()
    job = run_job(engine, "x", tasks=["529 503 ok"], config={"max_retries": 0})
    worker = _worker(engine, job)
    assert worker.status is WorkerStatus.SUCCESS and job.status is JobStatus.COMPLETED
    assert [a.failure_class for a in worker.attempts] == ["transient", "transient", None]
    assert worker.failure_class is None  # it succeeded in the end; each attempt keeps its class
    gaps = [b.started_at - a.ended_at for a, b in zip(worker.attempts, worker.attempts[1:])]
    # Transient pauses start at 4 x retry_backoff (0.2 s) and double: longer than ordinary ones.
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4
    log = (engine.workspace.job_dir(job.root_id) / worker.log_path).read_text()
    assert "transient retry 1/5" in log and "transient retry 2/5" in log


def test_the_two_budgets_are_separate(classifying):
    """One ordinary retry (max_retries 1) and two transient ones in the same worker."""
    engine = classifying(transient_retries=2)
    job = run_job(engine, "x", tasks=["429 fail 503 ok"], config={"max_retries": 1})
    worker = _worker(engine, job)
    assert worker.status is WorkerStatus.SUCCESS and len(worker.attempts) == 4
    assert [a.failure_class for a in worker.attempts] == ["transient", None, "transient", None]


def test_the_transient_budget_runs_out(classifying):
    engine = classifying(transient_retries=2)
    job = run_job(engine, "x", tasks=["429 429 429 429 ok"], config={"max_retries": 3})
    worker = _worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 3  # max_retries is not spent on them
    assert worker.failure_class == "transient"
    assert "gave up after 2 transient retries (workers.transient_retries)" in worker.exit_reason
    assert _status_task(engine, job)["failure_class"] == "transient"
    final = (engine.workspace.job_dir(job.root_id) / "FINAL_RESULT.md").read_text()
    assert "- Failure class: transient (rate limit, overload or server error" in final


def test_a_retry_after_is_honoured(classifying):
    engine = classifying(transient_backoff_max=5)
    job = run_job(engine, "x", tasks=["429:0.8 ok"], config={"max_retries": 0})
    worker = _worker(engine, job)
    assert worker.status is WorkerStatus.SUCCESS
    assert worker.attempts[0].retry_after == 0.8
    assert worker.attempts[1].started_at - worker.attempts[0].ended_at >= 0.8  # not the 0.2 s backoff


def test_a_retry_after_beyond_the_cap_fails_at_once_saying_so(classifying):
    engine = classifying(transient_backoff_max=1)
    job = run_job(engine, "x", tasks=["429:30 ok"], config={"max_retries": 2}, timeout=20)
    worker = _worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1
    assert "asked to wait 30s, longer than workers.transient_backoff_max=1s" in worker.exit_reason


def test_an_unclassified_failure_still_uses_max_retries(classifying):
    engine = classifying()
    job = run_job(engine, "x", tasks=["fail fail fail ok"], config={"max_retries": 1})
    worker = _worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 2
    assert worker.failure_class is None and all(a.failure_class is None for a in worker.attempts)


def test_transient_delay_bounds():
    assert transient_delay(1, 4.0, 120.0, None) >= 4.0
    assert 8.0 <= transient_delay(2, 4.0, 120.0, None) <= 10.0
    assert transient_delay(10, 4.0, 120.0, None) == 120.0  # capped, jitter included
    assert transient_delay(1, 4.0, 120.0, 90.0) == 90.0  # the service's wait, when longer
    assert transient_delay(1, 4.0, 120.0, 121.0) is None  # longer than the cap: give up


def test_a_restarted_server_keeps_what_earlier_attempts_spent_of_the_transient_budget(classifying):
    """The server died while attempt 2 ran, having recorded attempt 1 as transient: the next
    server adopts attempt 2 (ended meanwhile, 429 again) and, the budget of 1 spent, stops."""
    import json

    engine = classifying(transient_retries=1)
    job = run_job(engine, "x", tasks=["429 429 ok"], config={"max_retries": 0})
    worker = _worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and [a.failure_class for a in worker.attempts] == ["transient", "transient"]
    engine.shutdown()
    ws = engine.workspace
    path = ws.worker_record_path(job.id, 0, "worker_1")
    data = json.loads(path.read_text())  # the record as it was while attempt 2 ran
    data.update(status="running", ended_at=None, exit_reason="", error=None, failure_class=None)
    data["attempts"][1].update(ended_at=None, exit_code=None, end_reason=None, failure_class=None, retry_after=None)
    path.write_text(json.dumps(data))
    record = json.loads(ws.job_record_path(job.id).read_text())
    record.update(status="running", ended_at=None)
    ws.job_record_path(job.id).write_text(json.dumps(record))
    fresh = classifying(transient_retries=1)
    assert fresh.takeover.recover() == [job.id]
    assert fresh.queries.wait(job.id, 30).status is JobStatus.FAILED
    worker = _worker(fresh, job)
    assert [a.failure_class for a in worker.attempts] == ["transient", "transient"]  # no third attempt
    assert "gave up after 1 transient retry" in worker.exit_reason
    assert ws.worker_log(job.id, 0, "worker_1").read_text().count(" started ") == 2


class PayingAdapter(ClassifyingAdapter):
    """Like a CLI that reports what each attempt cost ("cost 0.25 tokens 100/10")."""

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        result = super().parse(text, exit_code, max_chars=max_chars)
        found = re.search(r"cost ([\d.]+) tokens (\d+)/(\d+)", text)
        if found:
            result.cost_usd, result.tokens_in, result.tokens_out = float(found.group(1)), int(found.group(2)), int(found.group(3))
        return result


def test_a_retried_worker_costs_what_every_attempt_spent(monkeypatch, make_engine):
    # Given a worker whose first two attempts hit an overload after spending, and whose third succeeds
    monkeypatch.setitem(KINDS, "command", dataclasses.replace(KINDS["command"], adapter=PayingAdapter))
    script = 'echo "cost 0.25 tokens 100/10"; ' + SCRIPT
    engine = make_engine(
        orchestrator={"worker": "command", "command": ["sh", "-c", script, "sh", "{task}"]},
        workers={"retry_backoff": 0.05, "retry_backoff_max": 0.2},
    )
    job = run_job(engine, "x", tasks=["529 fail ok"], config={"max_retries": 1})
    worker = _worker(engine, job)
    # Then it is charged for all three, not for the last one alone
    assert worker.status is WorkerStatus.SUCCESS and len(worker.attempts) == 3
    assert worker.cost_usd == pytest.approx(0.75)
    assert (worker.tokens_in, worker.tokens_out) == (300, 30)
    assert _status_task(engine, job)["cost_usd"] == pytest.approx(0.75)
