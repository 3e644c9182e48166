"""Chaos: workers that always recurse, a deep tree on two slots, and a hanging tree cancelled whole."""

from __future__ import annotations

import json
import time

import pytest

from orchestrator.models import WorkerStatus

from ..conftest import wait_until
from .conftest import command_worker, metric, tagged_alive

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def records(engine, root_id, filename):
    """Every JSON line the fake CLI wrote to ``filename`` in any worker folder of the tree."""
    _, workers = engine.queries.snapshot(root_id)
    found = []
    for w in workers:
        path = engine.workspace.worker_dir(root_id, w.depth, w.name) / filename
        if path.is_file():
            found.extend({**json.loads(line), "worker": w.name} for line in path.read_text().splitlines())
    return found


def test_recursion_bomb_is_capped_and_refused_fast(make_live):
    # Given workers that always ask for 3 children, max depth 3, at most 20 workers per root
    deadline = 20.0
    live = make_live(
        orchestrator=command_worker(),
        recursion={"max_workers_per_root": 20, "max_children_per_worker": 3, "tree_deadline": deadline},
        # The server's refusal time on 2 cores: unconfined, since 20 sandbox starts (bubblewrap, a cgroup
        # each) around the refusals once pushed one to 181 ms (the sandbox's cost: bench/bench_sandbox.py)
        workers={"sandbox": "off"},
    )
    job_id = live.submit(request="bomb", tasks=["recurse 3 0.1"], config={"max_recursion_depth": 3}).json()["job_id"]
    doc = live.wait(job_id, 60)
    jobs, workers = live.engine.queries.snapshot(job_id)
    spawns = records(live.engine, job_id, "spawns.jsonl")
    # Then the tree stopped growing at its caps: each accepted request adds 3 workers, so 6 of
    # them make 1 + 18 = 19 <= 20 workers and a seventh finds no room. Which 6 depends on who
    # asks first (usually the 3 depth-1 workers and 2 of the 9 depth-2 ones; under load a
    # depth-1 worker may ask after its cousins' subtrees filled the tree); in every order the
    # depth-3 workers are refused by depth and everyone else by the tree's size
    assert len(workers) == 19 and max(w.depth for w in workers) == 3
    assert len(spawns) == len(workers), "every worker asked exactly once"
    accepted = [s for s in spawns if s["status"] == 202]
    refused = [s for s in spawns if s["status"] != 202]
    assert len(accepted) == 6 and len(refused) == 13
    assert all(s["status"] == 422 for s in refused), {s["status"] for s in refused}
    leaves = sum(1 for w in workers if w.depth == 3)
    assert sum("Max recursion depth reached" in s["message"] for s in refused) == leaves
    assert sum("recursion.max_workers_per_root" in s["message"] for s in refused) == len(refused) - leaves
    # and the refused ones did their work themselves, so the whole tree completes in its deadline
    assert doc["status"] == "completed" and all(w.status.ok for w in workers)
    root = next(j for j in jobs if j.is_root)
    assert root.ended_at - root.created_at < deadline
    assert not any("tree_deadline" in note for note in root.notes)
    assert tagged_alive(job_id) == []
    # Refusals are answered at once, never after waiting on the tree (a child job's planning, the
    # /wait long-poll, the 20 s deadline): the server's own clock (its request-duration histogram)
    # puts every one under 2.5 s (its bucket after 1 s) with the tree's workers starting around them
    # on 2 cores, and CI's other suites beside (one took just over 1 s there). The shares under
    # 100 ms and 1 s are figures to report (speed belongs in bench/).
    registry = live.engine.metrics.registry
    labels = {"method": "POST", "route": "/api/v1/orchestrate", "status": "422"}
    answered = registry.get_sample_value("orchestrator_http_request_duration_seconds_count", labels)
    within = registry.get_sample_value("orchestrator_http_request_duration_seconds_bucket", {**labels, "le": "2.5"})
    second = registry.get_sample_value("orchestrator_http_request_duration_seconds_bucket", {**labels, "le": "1.0"})
    fast = registry.get_sample_value("orchestrator_http_request_duration_seconds_bucket", {**labels, "le": "0.1"})
    assert answered == len(refused) and within == answered, (within, answered)
    metric("recursion_refusals_answered_within_100ms", fast / answered * 100, "%")
    metric("recursion_refusals_answered_within_1s", second / answered * 100, "%")
    # The worker's own clock adds its TCP round trip and its share of 2 busy cores (about 10
    # interpreters start at once here): a figure to report. It stays far below anything that
    # waited on the tree (a child job's planning, the /wait long-poll, the 20 s deadline).
    slowest = metric("recursion_refusal_latency_max_at_worker", max(s["latency"] for s in refused) * 1000, "ms")
    assert 0.05 < slowest < 2500


def test_depth_three_tree_completes_on_two_global_slots(make_live):
    # Given a global limit of 2 workers and a tree of fan-out 2, depth 3 (15 workers, 8 leaves
    # each working 0.2 s once refused by depth)
    work = 0.2
    live = make_live(
        orchestrator=command_worker(),
        workers={"global_max_workers": 2},
        recursion={"max_children_per_worker": 3, "tree_deadline": 120},
    )
    started = time.time()
    job_id = live.submit(request="deep", tasks=[f"recurse 2 {work}"], config={"max_recursion_depth": 3}).json()["job_id"]
    doc = live.wait(job_id, 90)
    took = time.time() - started
    # Then it completes (waiting parents lent their slots: no deadlock) ...
    assert doc["status"] == "completed"
    _, workers = live.engine.queries.snapshot(job_id)
    assert len(workers) == 15 and {w.depth for w in workers} == {0, 1, 2, 3}
    assert all(w.status is (WorkerStatus.SUCCESS if w.depth == 3 else WorkerStatus.RECURSIVE_SUCCESS) for w in workers)
    # ... and never ran more than 2 leaves' work at once
    spans = records(live.engine, job_id, "work.jsonl")
    assert len(spans) == 8
    edges = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak <= 2
    assert tagged_alive(job_id) == []
    metric("depth3_tree_on_2_slots", took, "s")
    assert 8 * work / 2 <= took < 60  # 8 leaves of 0.2 s on 2 slots cannot take less


def test_hanging_tree_cancelled_from_the_root_goes_whole_and_refuses_children(make_live):
    # Given a 3-level tree (1 + 2 + 4 workers) whose leaves hang ignoring SIGTERM; on SIGTERM
    # every worker asks for one more child job
    grace = 1.0
    live = make_live(orchestrator=command_worker(), workers={"kill_grace": grace})
    job_id = live.submit(request="x", tasks=["recurse-hang 2"], config={"max_recursion_depth": 2}).json()["job_id"]

    def leaves_hanging():
        _, workers = live.engine.queries.snapshot(job_id)
        logs = [live.engine.workspace.worker_log(job_id, 2, w.name) for w in workers if w.depth == 2]
        return len(logs) == 4 and all(p.is_file() and "leaf: hanging" in p.read_text(errors="replace") for p in logs)

    wait_until(leaves_hanging, timeout=30, what="the 4 leaves hanging")
    # When the root is cancelled
    started = time.time()
    assert live.call("POST", f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    doc = live.wait(job_id, 30)
    wait_until(lambda: tagged_alive(job_id) == [], timeout=10, what="no process of the tree left")
    took = time.time() - started
    # Then every job and worker is cancelled, and the children asked for during it got 409
    jobs, workers = live.engine.queries.snapshot(job_id)
    assert doc["status"] == "cancelled" and len(jobs) == 4 and {j.status.value for j in jobs} == {"cancelled"}
    assert len(workers) == 7 and {w.status for w in workers} == {WorkerStatus.CANCELLED}
    during = [s for s in records(live.engine, job_id, "spawns.jsonl") if s["at"] >= started]
    assert len(during) == 7 and {s["status"] for s in during} == {409}, [(s["worker"], s["status"]) for s in during]
    metric("tree_cancel_to_all_gone", took, "s")
    assert grace <= took <= grace + 2.0
