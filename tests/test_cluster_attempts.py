"""The attempt protocol's state machine (cluster/attempts.py) on a real redis-server: claims,
leases, fencing tokens, a late result ignored, and a Redis that lost its data."""

from __future__ import annotations

import json
import os
import time
import zlib

import pytest

from orchestrator import protocol
from orchestrator.cluster.attempts import Attempts, AttemptSpec, read_secret_file, split_env, write_secret_file
from orchestrator.cluster.connect import connect
from orchestrator.cluster.names import Names

from .redisserver import RedisServer

pytestmark = pytest.mark.timeout(60)


def attempts_on(server: RedisServer, prefix: str) -> Attempts:
    return Attempts(connect(server.url), Names(prefix))


def spec(ops: Attempts, attempt_id: str = "a1") -> AttemptSpec:
    s = AttemptSpec(
        id=attempt_id,
        token=ops.new_token(),
        kind="command",
        tag="root.job.worker_1",
        argv=["true"],
        cwd="/tmp",
        env={protocol.JOB_ID: "job"},
        log_path="/tmp/x.log",
        exit_file=None,
        lease=1.0,
    )
    ops.record(s)
    return s


def test_an_attempt_goes_queued_running_ended_and_the_server_hears_each_step(redis_server, unique_prefix):
    ops = attempts_on(redis_server, unique_prefix)
    s = spec(ops)
    assert ops.read("a1")["state"] == "queued"
    claimed = ops.claim("a1", s.token, "node-a", lease=5)
    assert claimed == s
    assert ops.claim("a1", s.token, "node-b", lease=5) is None  # taken once
    assert ops.lease_holder("a1") == f"node-a:{s.token}"
    assert ops.started("a1", s.token, "node-a", 4242, "123")
    assert ops.renew("a1", s.token, "node-a", 5, {"rss": 10})
    assert ops.finish("a1", s.token, "node-a", 0, None)
    record = ops.read("a1")
    assert record["state"] == "ended" and record["code"] == "0" and record["node"] == "node-a"
    assert ops.lease_holder("a1") is None
    events = ops.next_events(1)
    assert [(e["event"], e["token"]) for e in events] == [("started", s.token), ("ended", s.token)]
    assert events[0]["pid"] == 4242


def test_a_lost_attempt_is_fenced_and_its_late_result_is_ignored(redis_server, unique_prefix):
    ops = attempts_on(redis_server, unique_prefix)
    s = spec(ops)
    ops.claim("a1", s.token, "node-a", lease=0.3)
    assert ops.mark_lost("a1", s.token) == 0  # its lease still runs: not lost
    time.sleep(0.5)
    fresh = ops.mark_lost("a1", s.token)
    assert fresh > s.token and ops.read("a1")["state"] == "lost"
    assert not ops.renew("a1", s.token, "node-a", 5)  # the node learns it is fenced
    assert not ops.finish("a1", s.token, "node-a", 0, None)  # and its late result is ignored
    assert ops.read("a1")["state"] == "lost" and ops.next_events(0.1) == []


def test_a_queued_attempt_cancelled_is_never_claimed(redis_server, unique_prefix):
    ops = attempts_on(redis_server, unique_prefix)
    s = spec(ops)
    assert ops.cancel_queued("a1", s.token, -15)
    assert ops.claim("a1", s.token, "node-a", lease=5) is None
    assert ops.next_events(1)[0]["event"] == "ended"
    s2 = spec(ops, "a2")
    ops.claim("a2", s2.token, "node-a", lease=5)
    assert not ops.cancel_queued("a2", s2.token, -15)  # running: the node's kill ladder ends it instead
    ops.terminate("a2", s2.token, 15, 2.0)
    assert ops.next_control("a2", 1) == {"action": "terminate", "token": s2.token, "signal": 15, "grace": 2.0}


def test_a_node_recreates_its_attempt_after_redis_lost_its_data(fresh_redis, unique_prefix):
    ops = attempts_on(fresh_redis, unique_prefix)
    s = spec(ops)
    ops.claim("a1", s.token, "node-a", lease=5)
    fresh_redis.restart(persist=False)
    ops = attempts_on(fresh_redis, unique_prefix)
    assert ops.read("a1") is None
    assert ops.renew("a1", s.token, "node-a", 5)  # recreated from what the node knows
    assert ops.read("a1")["state"] == "running" and ops.lease_holder("a1") == f"node-a:{s.token}"
    assert ops.finish("a1", s.token, "node-a", 3, None)
    assert ops.read("a1")["code"] == "3"


def test_persisted_redis_keeps_the_queue_state(fresh_redis, unique_prefix):
    ops = attempts_on(fresh_redis, unique_prefix)
    s = spec(ops)
    fresh_redis.restart(persist=True)
    ops = attempts_on(fresh_redis, unique_prefix)
    assert ops.read("a1")["state"] == "queued" and ops.claim("a1", s.token, "node-a", 5) is not None


def test_nothing_secret_travels_in_the_spec(tmp_path):
    env = {
        "PATH": "/x",
        "HOME": "/root",
        "ANTHROPIC_API_KEY": "server-secret",
        "FROM_WORKERS_ENV": "w",
        protocol.API_KEY: "worker-key",
        protocol.JOB_ID: "j1",
        "TMPDIR": "/ws/tmp",
    }
    public, secret = split_env(
        env, {"PATH": "/x", "HOME": "/root", "ANTHROPIC_API_KEY": "server-secret"}, {"FROM_WORKERS_ENV": "w"}
    )
    assert public == {protocol.JOB_ID: "j1", "TMPDIR": "/ws/tmp"}
    assert secret == {protocol.API_KEY: "worker-key"}
    path = tmp_path / "attempt.env"
    write_secret_file(path, secret)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert read_secret_file(str(path)) == secret and not path.exists()


def test_a_node_sees_the_servers_marker_only_at_the_same_path(redis_server, unique_prefix, tmp_path):
    from orchestrator.cluster.marker import MARKER_FILE, Marker, check_marker, server_marker, write_marker

    client, names = connect(redis_server.url), Names(unique_prefix)
    assert server_marker(client, names) is None
    (tmp_path / "ws").mkdir()
    written = write_marker(client, names, tmp_path / "ws")
    assert server_marker(client, names) == written and check_marker(written) is None
    elsewhere = Marker(str(tmp_path / "other"), written.token)
    assert "cannot see the server's workspace" in (check_marker(elsewhere) or "")
    (tmp_path / "ws" / MARKER_FILE).write_text('{"token": "stale"}')
    assert "not the running server's" in (check_marker(written) or "")


def test_enqueue_puts_a_json_job_of_id_and_token_on_the_kinds_queue(redis_server, unique_prefix):
    from rq.job import Job

    from orchestrator.cluster.attempts import RQ_FUNCTION, SERIALIZER, job_id

    ops = attempts_on(redis_server, unique_prefix)
    # an attempt id with the characters the key names allow and RQ's job ids do not (. and :)
    s = AttemptSpec(
        id="job1.w_2:a1",
        token=ops.new_token(),
        kind="command",
        tag="t",
        argv=["true"],
        cwd="/tmp",
        env={},
        log_path="/tmp/x.log",
        exit_file=None,
    )
    ops.enqueue(s)
    assert ops.read("job1.w_2:a1")["state"] == "queued"
    (queued,) = ops.queue("command").get_job_ids()
    assert queued == job_id("job1.w_2:a1", s.token)
    job = Job.fetch(queued, connection=ops.client, serializer=SERIALIZER)
    assert job.func_name == RQ_FUNCTION and tuple(job.args) == ("job1.w_2:a1", s.token)
    data = json.loads(zlib.decompress(ops.client.hget(f"rq:job:{queued}", "data")))  # RQ compresses it
    assert data[0] == RQ_FUNCTION and data[2] == ["job1.w_2:a1", s.token]  # JSON, never pickle
