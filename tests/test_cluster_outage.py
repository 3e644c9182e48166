"""A Redis outage under the rq executor is shown as such, on a real server against a real
redis-server that is stopped and started again: /health says the queue is unreachable (status
"degraded", not "ok"), and the node list is an error that says Redis, not an empty list."""

from __future__ import annotations

import signal

import pytest

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
