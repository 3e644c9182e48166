"""Helpers of tests/test_task_views.py, used by other test files too."""

from __future__ import annotations

from orchestrator.models import Attempt, JobRecord, JobStatus, TaskNode, WorkerRecord
from orchestrator.outcomes import GateResult

T = 1_700_000_000.0

RESULT = "refs/heads/orchestrator/r1/result"

# Would end a label or the block, or be read as markup: a quote, a bracket, an arrow, "click", a
# "%%" comment, a code fence, "end", HTML, an entity code.
HOSTILE = 'x"] --> evil; click n1 call alert() %% ```\n end\n`{<b>}`|#35; ;'


def gate(name, status="passed", exit_code=0, required=True, duration=1.25):
    return GateResult(
        name=name,
        required=required,
        status=status,
        passed=status == "passed",
        exit_code=exit_code,
        duration=duration,
        log_path=f"logs/depth_0_worker_x.gate_{name}.log",
        commit="c" * 40,
        reason="" if status == "passed" else f"{name} gate: exit code {exit_code}",
    )


def node_worker(node, index, status, start=None, end=None, *, job_id="r1", depth=0, **kw):
    attempts = [Attempt(1, T + start, None if end is None else T + end)] if start is not None else []
    return WorkerRecord(
        job_id=job_id,
        root_id="r1",
        name=f"worker_{index}",
        index=index,
        depth=depth,
        task=kw.pop("task", f"task {node.id}"),
        kind="command",
        status=status,
        attempts=attempts,
        created_at=T,
        started_at=None if start is None else T + start,
        ended_at=None if end is None else T + end,
        log_path=f"logs/depth_{depth}_worker_{index}.log",
        dir_path=f"depth_{depth}/worker_{index}",
        **node.worker_fields(),
        **kw,
    )


DIAMOND = [TaskNode("a"), TaskNode("b", ["a"], "backend", ["src/b/**"]), TaskNode("c", ["a"]), TaskNode("d", ["b", "c"])]


def graph_job(nodes=DIAMOND, status=JobStatus.RUNNING, end=None, **kw):
    return JobRecord(
        id=kw.pop("id", "r1"),
        root_id="r1",
        request="a diamond",
        status=status,
        created_at=T,
        started_at=T,
        ended_at=None if end is None else T + end,
        tasks=[f"task {n.id}" for n in nodes],
        nodes=list(nodes),
        integration=kw.pop("integration", RESULT),
        **kw,
    )
