"""A Redis outage under the rq executor is shown as such, on a real server against a real
redis-server that is stopped and started again: /health says the queue is unreachable (status
"degraded", not "ok"), and the node list is an error that says Redis, not an empty list."""

from __future__ import annotations

import signal

import pytest

from orchestrator.reports.status_document import status_table

from .cluster_fixtures import start_node, stop_all
from .conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_health_says_the_queue_is_unreachable_while_redis_is_down(fresh_redis, unique_prefix, make_live):
    live = make_live(distributed={"executor": "rq", "redis_url": fresh_redis.url, "queue_prefix": unique_prefix, "lease": 3})
    health = live.call("GET", "/health").json()
    assert (health["status"], health["queue"]) == ("ok", "ok")
    fresh_redis.stop(signal.SIGTERM)
    try:
        down = wait_until(
            lambda: (h := live.call("GET", "/health").json())["status"] == "degraded" and h, timeout=20, what="degraded"
        )
        assert down["queue"].startswith("unreachable since 20") and down["queue_unreachable_since"] > 0
        nodes = live.call("GET", "/api/v1/nodes")
        assert nodes.status_code == 503 and "is Redis up at distributed.redis_url" in nodes.text
    finally:
        fresh_redis.start()
    back = wait_until(lambda: (h := live.call("GET", "/health").json())["status"] == "ok" and h, timeout=30, what="ok again")
    assert back["queue"] == "ok" and "queue_unreachable_since" not in back


def test_status_says_a_worker_on_a_node_is_unknown_while_the_queue_is_down(fresh_redis, unique_prefix, make_live, tmp_path):
    worker = tmp_path / "worker.sh"
    worker.write_text("#!/bin/sh\nsleep 30\n")
    worker.chmod(0o755)
    command = [str(worker), "{task}"]
    live = make_live(
        orchestrator={"worker": "command", "command": command},
        distributed={"executor": "rq", "redis_url": fresh_redis.url, "queue_prefix": unique_prefix, "lease": 30},
        git={"isolation": "folder"},
        tasks={"roles": {"cmd": {"worker": "command"}}},
    )
    start_node(
        fresh_redis.url,
        unique_prefix,
        name="n1",
        kinds="command",
        slots=1,
        lease=30,
        config={"orchestrator": {"command": command}},
    )
    try:
        engine = live.engine
        job = engine.submission.submit(
            "one sleeper on a node", {"max_workers": 1}, [{"id": "t1", "role": "cmd", "task": "sleep"}]
        )
        wait_until(
            lambda: "on n1:" in status_table(engine.queries.status_document(job.id)), timeout=30, what="its node to start it"
        )
        up = engine.queries.status_document(job.id)
        assert up["queue"] is None and " running " in status_table(up)
        fresh_redis.stop(signal.SIGTERM)
        try:
            wait_until(lambda: live.call("GET", "/health").json()["status"] == "degraded", timeout=20, what="degraded")
            doc = live.call("GET", f"/api/v1/jobs/{job.id}/status").json()
            assert doc["queue"].startswith("unreachable since ")
            table = status_table(doc)
            row = next(line for line in table.splitlines() if line.startswith("worker_1"))
            assert "unknown (queue unreachable)" in row and " running " not in row
            assert f"queue:     {doc['queue']}" in table
        finally:
            fresh_redis.start()
    finally:
        stop_all()
