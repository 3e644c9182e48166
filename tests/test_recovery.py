"""engine/recovery.py's reading of the exit files a restart finds (no process: files the test writes)."""

from __future__ import annotations

import signal

from orchestrator.engine.recovery import Fate, decide
from orchestrator.models import Attempt, EndReason, WorkerRecord, WorkerStatus
from orchestrator.process.shim import FoundAttempt


def test_an_unrecorded_end_its_keeper_made_at_the_deadline_is_settled_as_a_timeout(tmp_path):
    """Attempt 1's record lacks its end; its exit file says its shim stopped it at its deadline (no
    server watched it): settled as a timeout, not as a plain signal death. Attempt 2 runs on, adopted."""
    worker = WorkerRecord(
        job_id="j", root_id="j", name="worker_1", index=1, depth=0, task="t", kind="command", status=WorkerStatus.RUNNING
    )
    worker.attempts.append(Attempt(number=1, started_at=100.0))
    (tmp_path / "exit.1").write_text(f"signal {signal.SIGTERM.value}\ndeadline shim\n")
    (tmp_path / "exit.2").write_bytes(b"\n" * 32)
    shim = FoundAttempt(pid=1, tag="j.worker_1", start_id=None, exit_file=tmp_path / "exit.2", attempt=2)
    fate = decide(worker, [shim], lambda n: tmp_path / f"exit.{n}", max_attempts=3)
    assert fate.fate is Fate.ADOPT and fate.attempt is not None and fate.attempt.number == 2
    first = worker.attempts[0]
    assert first.end_reason is EndReason.TIMEOUT and first.signal == signal.SIGTERM and first.ended_at is not None
