"""orchestrator.testing as a user uses it: their own config.yaml and after-attempt step, run by
an engine on the shipped fakes (no process, no real time), as in the module's docstring."""

from __future__ import annotations

import time

from orchestrator.config import load_settings
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.quality.steps import PASS, Step, retry
from orchestrator.testing import Rig, Script, claude_result, no_processes

USER_CONFIG = """\
orchestrator:
  worker: claude
workers:
  max_retries: 1
  retry_backoff: 30
  default_timeout: 600
git:
  isolation: folder
"""


def user_settings(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(USER_CONFIG)
    return load_settings(config, base_dir=tmp_path, environ={})


class TestsMustPass(Step):
    """A user's step: an attempt whose output does not say the tests passed is tried again."""

    name = "tests-pass"

    def run(self, ctx):
        said = ctx.parsed.output if ctx.parsed else ""
        return PASS if "tests passed" in said else retry("the tests did not pass")


def test_a_users_config_runs_on_the_fakes_in_fake_time(tmp_path):
    # Given the user's config (one retry after 30 s, a 600 s timeout) and a worker that fails once
    settings = user_settings(tmp_path)
    started = time.monotonic()
    with no_processes(), Rig(settings) as rig:
        rig.fake.script("worker_1", Script(exit=1, output=claude_result(error=True)), Script(output=claude_result()))
        rig.fake.script("worker_2", Script(hang=True))
        # When a job of two tasks runs
        job = rig.run(["Write a.txt", "Write b.txt"])
        workers = rig.workers(job)
    # Then the first worker succeeded on its retry, 30 fake seconds after its failure, the
    # hanging one timed out after 600 fake seconds, and none of it took real time
    assert job.status is JobStatus.PARTIAL
    first, second = workers["worker_1"], workers["worker_2"]
    assert first.status is WorkerStatus.SUCCESS and len(first.attempts) == 2
    assert first.attempts[1].started_at - first.attempts[0].ended_at >= 30
    assert second.status is WorkerStatus.TIMEOUT
    assert second.attempts[0].ended_at - second.attempts[0].started_at >= 600
    assert [h.argv[0] for h in rig.fake.handles][:1] == ["claude"]
    assert time.monotonic() - started < 10


def test_a_users_step_judges_the_attempts_of_the_fakes(tmp_path):
    # Given the user's step, and a worker whose first attempt's output does not say the tests passed
    with no_processes(), Rig(user_settings(tmp_path), steps=[TestsMustPass()]) as rig:
        rig.fake.script(
            "worker_1", Script(output=claude_result(text="3 failed")), Script(output=claude_result(text="tests passed"))
        )
        # When it runs
        job = rig.run(["Fix the tests"])
        worker = rig.workers(job)["worker_1"]
    # Then the step asked for a second attempt, which it let through
    assert job.status is JobStatus.COMPLETED
    assert worker.status is WorkerStatus.SUCCESS and len(worker.attempts) == 2
    assert len(rig.fake.attempts("worker_1")) == 2
