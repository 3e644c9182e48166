"""The cluster end to end: a real server on 127.0.0.1 with
``distributed.executor: rq``, a real redis-server and three real node processes on this machine
with different names, slots and kinds (tests/cluster_fixtures.py). Workers are the ``command``
kind (tests' worker.sh) and the ``simulated`` kind, routed by role.

* a 30-worker job spread over the nodes: each record names its node, every kind ran on a node
  that has it, and at most the sum of the slots ran at once (and that many did);
* a node SIGKILLed mid-job: its attempts are lost and retried on the others, each worker counted
  once, and nothing it ran is left;
* cancel of a tree across nodes: no tagged process left on the machine;
* a child job spawned by a worker running on a node.
(Server and Redis restarts mid-job: tests/test_cluster_executor.py; a node that lacks a kind and
a wrong password: tests/test_cluster_node.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process import procscan

from .cluster_fixtures import start_node, stop_all
from .conftest import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

WORKER_SH = """#!/bin/sh
# The cluster tests' worker: its subtask says what to do.
case "$1" in
  "sleep "*) sleep "${1#sleep }"; echo "slept on $(hostname)"; exit 0 ;;
  spawn) exec orchestrator-spawn --wait --json --request "child of a node worker" "sleep 0.2" ;;
  *) echo "unknown task $1" >&2; exit 2 ;;
esac
"""
ROLES = {"cmd": {"worker": "command"}, "sim": {"worker": "simulated"}}
# name, kinds, slots
NODES = (("n1", "command,simulated", 3), ("n2", "command", 2), ("n3", "simulated", 2))


@pytest.fixture
def cluster(tmp_path, make_live, redis_server, unique_prefix):
    worker = tmp_path / "worker.sh"
    worker.write_text(WORKER_SH)
    worker.chmod(0o755)
    command = [str(worker), "{task}"]
    live = make_live(
        orchestrator={"worker": "command", "command": command},
        distributed={"executor": "rq", "redis_url": redis_server.url, "queue_prefix": unique_prefix, "lease": 3},
        workers={"global_max_workers": 64, "max_workers_limit": 32, "max_retries": 2, "default_timeout": 120},
        recursion={"max_workers_per_root": 200},
        simulated={"duration": 0.6, "recurse": False},
        tasks={"roles": ROLES},
        git={"isolation": "folder"},
    )
    nodes = {
        name: start_node(
            redis_server.url,
            unique_prefix,
            name=name,
            kinds=kinds,
            slots=slots,
            lease=3,
            config={"orchestrator": {"command": command}},
            folder=tmp_path / "nodes",
        )
        for name, kinds, slots in NODES
    }
    try:
        yield live, nodes
    finally:
        stop_all()


def tasks(n: int, role: str, text: str, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{i}", "task": text, "role": role} for i in range(1, n + 1)]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    running = best = 0
    for _, step in edges:
        running += step
        best = max(best, running)
    return best


def tagged_left(root_id: str) -> dict[str, list[int]]:
    return procscan.scan(lambda tag: tag.startswith(f"{root_id}."))


def test_a_30_worker_job_spreads_over_three_nodes_by_kind_within_the_sum_of_their_slots(cluster):
    live, _ = cluster
    engine = live.engine
    plan = tasks(18, "cmd", "sleep 0.6", "c") + tasks(12, "sim", "Write notes", "s")
    job = engine.submission.submit("thirty workers on three nodes", {"max_workers": 30}, plan)
    done = engine.queries.wait(job.id, 180)
    _, workers = engine.queries.snapshot(job.id)
    assert done.status is JobStatus.COMPLETED, [(w.name, w.status.value, w.exit_reason) for w in workers]
    assert len(workers) == 30 and all(w.status is WorkerStatus.SUCCESS for w in workers)
    by_kind: dict[str, set[str]] = {}
    for w in workers:
        assert w.node is not None and w.attempts[-1].node == w.node, w
        by_kind.setdefault(w.kind, set()).add(w.node)
    assert by_kind["command"] <= {"n1", "n2"} and by_kind["simulated"] <= {"n1", "n3"}, by_kind  # routed by kind
    assert {node for nodes in by_kind.values() for node in nodes} == {"n1", "n2", "n3"}  # every node took work
    spans = [(w.attempts[-1].started_at, w.attempts[-1].ended_at or 0.0) for w in workers]
    assert most_at_once(spans) == sum(slots for _, _, slots in NODES)  # global concurrency = the sum of slots
    for name, _, slots in NODES:
        mine = [(a, b) for (a, b), w in zip(spans, workers, strict=True) if w.node == name]
        assert most_at_once(mine) <= slots, name
    assert tagged_left(job.id) == {}


def test_a_node_killed_mid_job_loses_its_attempts_to_the_others_and_each_worker_counts_once(
    cluster, redis_server, unique_prefix, tmp_path
):
    live, nodes = cluster
    engine = live.engine
    job = engine.submission.submit("a node dies", {"max_workers": 10}, tasks(10, "cmd", "sleep 4", "c"))

    def on_n2():
        _, workers = engine.queries.snapshot(job.id)
        return [w for w in workers if w.node == "n2" and w.status is WorkerStatus.RUNNING]

    victims = {w.name for w in wait_until(on_n2, 60, "a worker running on n2")}
    nodes["n2"].kill()  # SIGKILL: no goodbye, its leases just stop being renewed
    done = engine.queries.wait(job.id, 180)
    _, workers = engine.queries.snapshot(job.id)
    assert done.status is JobStatus.COMPLETED, [(w.name, w.status.value, w.exit_reason) for w in workers]
    assert len(workers) == 10 and all(w.status is WorkerStatus.SUCCESS for w in workers)
    for w in workers:
        if w.name in victims:
            first, last = w.attempts[0], w.attempts[-1]
            assert first.node == "n2" and first.end_reason == "lost", w.attempts
            assert last.node == "n1" and last.end_reason == "exit", w.attempts  # the other node with the kind
        assert sum(1 for a in w.attempts if a.end_reason == "exit" and a.exit_code == 0) == 1  # counted once
    assert tagged_left(job.id) == {}  # what the dead node ran died with it
    # It comes back under the same name on the same machine: it sweeps its previous life, and works.
    back = start_node(
        redis_server.url,
        unique_prefix,
        name="n2",
        kinds="command",
        slots=2,
        lease=3,
        config={"orchestrator": {"command": engine.settings.orchestrator.command}},
        folder=tmp_path / "nodes",
    )
    assert back.registered() is not None
    again = engine.queries.wait(
        engine.submission.submit("after the restart", {"max_workers": 4}, tasks(4, "cmd", "sleep 0.2", "c")).id, 60
    )
    assert again.status is JobStatus.COMPLETED


def test_cancel_of_a_tree_spread_over_nodes_leaves_no_tagged_process_anywhere(cluster):
    live, _ = cluster
    engine = live.engine
    plan = tasks(4, "cmd", "sleep 60", "c") + tasks(1, "cmd", "spawn", "p")
    job = engine.submission.submit("a tree to cancel", {"max_workers": 5, "max_recursion_depth": 1}, plan)

    def spread():
        jobs, workers = engine.queries.snapshot(job.id)
        running = [w for w in workers if w.status is WorkerStatus.RUNNING and w.node]
        return running if len({w.node for w in running}) >= 2 and len(jobs) >= 2 else None

    wait_until(spread, 90, "workers running on two nodes and the child job")
    engine.cancel(job.id)
    done = engine.queries.wait(job.id, 60)
    assert done.status is JobStatus.CANCELLED
    jobs, workers = engine.queries.snapshot(job.id)
    assert all(w.status.terminal for w in workers) and all(j.status.terminal for j in jobs)
    wait_until(lambda: tagged_left(job.id) == {}, 30, "every tagged process of the tree gone")


def test_a_worker_on_a_node_starts_a_child_job_through_the_api(cluster):
    live, _ = cluster
    engine = live.engine
    job = engine.submission.submit(
        "a node worker spawns", {"max_workers": 1, "max_recursion_depth": 1}, tasks(1, "cmd", "spawn", "p")
    )
    done = engine.queries.wait(job.id, 120)
    jobs, workers = engine.queries.snapshot(job.id)
    assert done.status is JobStatus.COMPLETED, [(w.name, w.status.value, w.exit_reason, w.output[-300:]) for w in workers]
    parent = next(w for w in workers if w.depth == 0)
    child = next(w for w in workers if w.depth == 1)
    assert parent.node and child.node and parent.child_job_ids == [child.job_id]
    assert parent.status is WorkerStatus.RECURSIVE_SUCCESS and child.status is WorkerStatus.SUCCESS
    assert Path(engine.workspace.job_dir(job.id)).exists() and len(jobs) == 2
