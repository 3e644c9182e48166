"""The attempt protocol's state machine (cluster/leases.py) on a real redis-server: claims,
leases, fencing tokens, a late result ignored, and a Redis that lost its data."""

from __future__ import annotations

import json
import os
import time
import zlib

import pytest

from orchestrator import protocol
from orchestrator.cluster.connect import connect
from orchestrator.cluster.leases import TOKEN_BLOCK, AttemptSpec, Leases, split_env
from orchestrator.cluster.names import Names
from orchestrator.cluster.secret_file import read_secret_file, write_secret_file

from .redisserver import RedisServer

pytestmark = pytest.mark.timeout(60)


def as_spec(raw: bytes | None) -> AttemptSpec:
    """The spec a claim handed over as text (unsigned here: no node verifies in these tests)."""
    assert raw is not None
    return AttemptSpec.from_json(raw)


def attempts_on(server: RedisServer, prefix: str) -> Leases:
    return Leases(connect(server.url), Names(prefix))


def spec(ops: Leases, attempt_id: str = "a1") -> AttemptSpec:
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
    assert claimed is not None and AttemptSpec.from_json(claimed) == s  # as written: the node verifies it
    assert ops.claim("a1", s.token, "node-b", lease=5) is None  # taken once
    assert ops.lease_holder("a1") == f"node-a:{s.token}"
    assert ops.started("a1", s.token, "node-a", 4242, "123", spawned_at=1234.5)
    assert ops.renew("a1", s.token, "node-a", 5, {"rss": 10})
    assert ops.finish("a1", s.token, "node-a", 0, None)
    record = ops.read("a1")
    assert record["state"] == "ended" and record["code"] == "0" and record["node"] == "node-a"
    assert ops.lease_holder("a1") is None
    events = ops.next_events(1)
    assert [(e["event"], e["token"]) for e in events] == [("started", s.token), ("ended", s.token)]
    assert events[0]["pid"] == 4242
    assert events[0]["spawned_at"] == 1234.5 and ops.read("a1")["started_at"] == "1234.5"  # the node's spawn time


def test_tokens_are_taken_in_blocks_and_never_repeat_across_servers_and_lost_attempts(redis_server, unique_prefix):
    one, two = attempts_on(redis_server, unique_prefix), attempts_on(redis_server, unique_prefix)
    fence = one.names.fence
    first = [one.new_token() for _ in range(3)]
    assert int(one.client.get(fence)) == TOKEN_BLOCK  # one INCRBY for three tokens
    s = spec(two)  # another server: a block of its own
    assert s.token == TOKEN_BLOCK + 1 and one.reserved_top == TOKEN_BLOCK and two.reserved_top == 2 * TOKEN_BLOCK
    two.claim("a1", s.token, "node-a", lease=0.1)
    time.sleep(0.3)
    lost = two.mark_lost("a1", s.token)  # an INCR past every block taken
    assert lost == 2 * TOKEN_BLOCK + 1
    rest = [one.new_token() for _ in range(TOKEN_BLOCK)]  # the first block runs out: a new one, past the INCR
    tokens = [*first, s.token, lost, *rest, *(two.new_token() for _ in range(TOKEN_BLOCK))]
    assert len(set(tokens)) == len(tokens)
    assert max(rest) <= one.reserved_top and min(rest[-3:]) > lost


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
    assert ops.next_control("a2", 1) == {"action": "terminate", "id": "a2", "token": s2.token, "signal": 15, "grace": 2.0}


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


def test_a_terminate_reaches_the_node_worker_that_claimed_the_attempt_whenever_it_was_sent(fresh_redis, unique_prefix):
    """A node worker reads one control list of its own (attempt.Controls), not one per attempt: a
    terminate sent while the attempt was queued is moved onto it by the claim, one sent after the
    claim goes there directly, and one sent while Redis had lost the hash reaches it at the next
    renewal (which names the worker's list in the hash again). A claim without a worker's list
    (``claim``, or ``take`` without one) leaves the attempt's own list in use."""
    from rq.job import Job

    ops = attempts_on(fresh_redis, unique_prefix)
    lists = take_keys(ops, "command")
    worker, mine = f"rq:worker:{unique_prefix}-w", ops.names.worker_control(f"{unique_prefix}-w")
    prefix = Job.redis_job_namespace_prefix
    early = enqueued(ops, "e1")
    ops.terminate("e1", early.token, 15, 2.0)  # queued: no node worker's yet
    assert ops.client.llen(ops.names.control("e1")) == 1 and not ops.client.exists(mine)
    assert ops.take(worker, lists, "node-a", 5, prefix, control=mine).what == "claimed"
    assert ops.read("e1")["control"] == mine and not ops.client.exists(ops.names.control("e1"))
    assert ops.next_control_on(mine, 1) == {"action": "terminate", "id": "e1", "token": early.token, "signal": 15, "grace": 2.0}
    late = enqueued(ops, "e2")
    assert ops.take(worker, lists, "node-a", 5, prefix, control=mine).what == "claimed"
    ops.terminate("e2", late.token, 9, 0)
    assert 0 < ops.client.ttl(mine) <= 86400  # a dead worker's list does not stay
    assert ops.next_control_on(mine, 1)["id"] == "e2" and not ops.client.exists(ops.names.control("e2"))
    plain = enqueued(ops, "e3")
    assert ops.take(worker, lists, "node-a", 5, prefix).what == "claimed"  # no list of its own
    ops.terminate("e3", plain.token, 15, 1.0)
    assert "control" not in ops.read("e3") and ops.next_control("e3", 1)["id"] == "e3"

    fresh_redis.restart(persist=False)
    ops = attempts_on(fresh_redis, unique_prefix)
    ops.terminate("e2", late.token, 15, 3.0)  # the hash is gone: the attempt's own list
    assert ops.renew("e2", late.token, "node-a", 5, control=mine)
    assert ops.read("e2")["control"] == mine and not ops.client.exists(ops.names.control("e2"))
    assert ops.next_control_on(mine, 1) == {"action": "terminate", "id": "e2", "token": late.token, "signal": 15, "grace": 3.0}
    ops.terminate("e2", late.token, 9, 0)
    assert ops.next_control_on(mine, 1)["signal"] == 9


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

    from orchestrator.cluster.leases import RQ_FUNCTION, SERIALIZER, job_id

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


# -- the node's own dequeue (Leases.take, node.NodeWorker): RQ's queue, one round trip


def take_keys(ops: Leases, *kinds: str) -> list[tuple[str, str]]:
    return [(q.key, q.intermediate_queue_key) for q in (ops.queue(k) for k in kinds)]


def enqueued(ops: Leases, attempt_id: str, kind: str = "command") -> AttemptSpec:
    s = AttemptSpec(attempt_id, ops.new_token(), kind, f"root.{attempt_id}", ["true"], "/tmp", {}, "/tmp/x.log", None)
    ops.enqueue(s)
    return s


def test_take_pops_the_first_job_and_claims_its_attempt_in_one_step(redis_server, unique_prefix):
    from rq.job import Job

    from orchestrator.cluster.leases import job_id

    ops = attempts_on(redis_server, unique_prefix)
    lists = take_keys(ops, "command")
    worker = f"rq:worker:{unique_prefix}-w"
    assert ops.take(worker, lists, "node-a", 5, Job.redis_job_namespace_prefix) is None  # nothing queued
    assert ops.client.hget(worker, "state") == b"idle"
    first, second = enqueued(ops, "a1"), enqueued(ops, "a2")
    taken = ops.take(worker, lists, "node-a", 5, Job.redis_job_namespace_prefix)
    assert taken is not None and (taken.what, taken.job_id, taken.queue) == ("claimed", job_id("a1", first.token), 0)
    assert (
        taken.spec is not None and AttemptSpec.from_json(taken.spec) == first
    )  # from the attempt's hash: RQ's job is neither fetched nor decoded
    record = ops.read("a1")
    assert record["state"] == "running" and record["node"] == "node-a" and "claimed_at" in record
    assert ops.lease_holder("a1") == f"node-a:{first.token}"
    assert 4000 < ops.client.pttl(ops.names.lease("a1")) <= 5000
    assert ops.client.hget(worker, "state") == b"busy"
    assert not ops.client.exists(f"rq:job:{taken.job_id}")  # read by nobody after the claim
    assert ops.claim("a1", first.token, "node-b", lease=5) is None  # claimed once
    assert ops.queue("command").get_job_ids() == [job_id("a2", second.token)]  # first in, first out
    again = ops.take(worker, lists, "node-b", 5, Job.redis_job_namespace_prefix)
    assert again is not None and as_spec(again.spec) == second and ops.read("a2")["node"] == "node-b"
    assert ops.take(worker, lists, "node-b", 5, Job.redis_job_namespace_prefix) is None
    assert ops.client.llen(lists[0][1]) == 0  # nothing left on RQ's intermediate list


def test_take_skips_a_cancelled_or_re_enqueued_attempt_without_claiming_it(redis_server, unique_prefix):
    from rq.job import Job

    ops = attempts_on(redis_server, unique_prefix)
    lists, worker, prefix = take_keys(ops, "command"), f"rq:worker:{unique_prefix}-w", Job.redis_job_namespace_prefix
    cancelled = enqueued(ops, "a1")
    assert ops.cancel_queued("a1", cancelled.token, -15)
    taken = ops.take(worker, lists, "node-a", 5, prefix)
    assert taken is not None and taken.what == "stale" and taken.spec is None
    assert ops.read("a1")["state"] == "cancelled" and ops.lease_holder("a1") is None
    assert not ops.client.exists(f"rq:job:{taken.job_id}")
    old = enqueued(ops, "a2")
    new = AttemptSpec("a2", ops.new_token(), "command", "root.a2", ["true"], "/tmp", {}, "/tmp/x.log", None)
    ops.enqueue(new)  # the same attempt again with a new token: the old job is fenced
    stale = ops.take(worker, lists, "node-a", 5, prefix)
    assert stale is not None and stale.what == "stale" and stale.job_id.endswith(f"-{old.token}")
    fresh = ops.take(worker, lists, "node-a", 5, prefix)
    assert (
        fresh is not None
        and fresh.what == "claimed"
        and fresh.spec is not None
        and AttemptSpec.from_json(fresh.spec).token == new.token
    )
    assert ops.lease_holder("a2") == f"node-a:{new.token}"


def test_take_leaves_a_job_that_is_no_attempt_of_ours_to_rq_on_its_intermediate_list(redis_server, unique_prefix):
    from rq.job import Job

    from orchestrator.cluster.leases import job_id

    ops = attempts_on(redis_server, unique_prefix)
    lists, worker, prefix = take_keys(ops, "command"), f"rq:worker:{unique_prefix}-w", Job.redis_job_namespace_prefix
    ops.queue("command").enqueue_call("os.remove", args=("/nonexistent",), job_id="evil")
    # an attempt whose id RQ's job id cannot carry as it is (. and :): RQ's own path reads its args
    odd = AttemptSpec("job1.w_2:a1", ops.new_token(), "command", "t", ["true"], "/tmp", {}, "/tmp/x.log", None)
    ops.enqueue(odd)
    for expected in ("evil", job_id("job1.w_2:a1", odd.token)):
        taken = ops.take(worker, lists, "node-a", 5, prefix)
        assert taken is not None and (taken.what, taken.job_id, taken.spec) == ("rq", expected, None)
        assert ops.client.exists(f"rq:job:{expected}")  # left for RQ (fetched, then refused or run)
    assert ops.client.lrange(lists[0][1], 0, -1) == [job_id("job1.w_2:a1", odd.token).encode(), b"evil"]
    assert ops.read("job1.w_2:a1")["state"] == "queued"  # attempt.run claims it on that path


def test_take_claims_a_job_a_blocking_move_took_and_reads_the_queues_in_order(redis_server, unique_prefix):
    from rq.job import Job

    ops = attempts_on(redis_server, unique_prefix)
    worker, prefix = f"rq:worker:{unique_prefix}-w", Job.redis_job_namespace_prefix
    lists = take_keys(ops, "command", "claude")
    later, sooner = enqueued(ops, "c1", "command"), enqueued(ops, "k1", "claude")
    moved = ops.client.blmove(lists[1][0], lists[1][1], 1)  # what node.NodeWorker's wait does: onto the intermediate list
    taken = ops.take(worker, lists, "node-a", 5, prefix, popped=(moved.decode(), 1))
    assert taken is not None and taken.what == "claimed" and as_spec(taken.spec) == sooner and taken.queue == 1
    assert ops.client.llen(lists[1][1]) == 0  # off the intermediate list
    first = ops.take(worker, lists, "node-a", 5, prefix)
    assert first is not None and as_spec(first.spec) == later and first.queue == 0
    # a job taken by a move whose attempt another worker has claimed meanwhile is not claimed twice
    again = enqueued(ops, "c2", "command")
    moved = ops.client.blmove(lists[0][0], lists[0][1], 1)
    assert ops.claim("c2", again.token, "node-b", lease=5) is not None
    lost = ops.take(worker, lists, "node-a", 5, prefix, popped=(moved.decode(), 0))
    assert lost is not None and lost.what == "stale" and ops.read("c2")["node"] == "node-b"


@pytest.mark.parametrize("blmpop", [True, False], ids=["blmpop", "blpop-lpop"])
def test_the_server_reads_every_waiting_event_in_order_in_one_call(redis_server, unique_prefix, blmpop):
    ops = attempts_on(redis_server, unique_prefix)
    ops._blmpop = blmpop  # False: what a Redis before 7.0 gets
    began = time.monotonic()
    assert ops.next_events(0.2) == [] and time.monotonic() - began >= 0.15  # it waited for one
    specs = [spec(ops, f"a{i}") for i in range(5)]
    for s in specs:
        ops.claim(s.id, s.token, "node-a", lease=5)
        ops.started(s.id, s.token, "node-a", 100, None)
    events = ops.next_events(1, most=3)
    assert [(e["id"], e["event"]) for e in events] == [(f"a{i}", "started") for i in range(3)]
    assert [e["id"] for e in ops.next_events(1)] == ["a3", "a4"]


def test_a_connection_of_connect_never_reads_the_redis_packages_metadata(redis_server, monkeypatch):
    """Each connection made for distributed.redis_url, by the server's pool or a node worker's (RQ's
    pool copies the client's connection settings), says its client's version without reading the
    package's metadata (about 1 ms of CPU a connection): the version is given with it."""
    import redis
    import redis.utils
    from rq.connections import parse_connection

    read: list[str] = []
    real = redis.utils.get_lib_version
    monkeypatch.setattr(redis.utils, "get_lib_version", lambda: read.append("metadata") or real())
    client = connect(redis_server.url)
    held = [client.connection_pool.get_connection() for _ in range(3)]  # three at once: three connections
    for connection in held:
        client.connection_pool.release(connection)
    client_class, connection_class, kwargs = parse_connection(client)  # a node worker's, as RQ's pool makes it
    other = client_class(connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs))
    assert other.ping() and client.ping()
    assert read == []
    other.close()
    client.close()


def test_a_node_workers_protocol_client_never_reads_the_redis_packages_metadata(redis_server, monkeypatch):
    """The client a node worker runs its attempts' protocol with (attempt.shared_ops: its main thread's
    connection and its control thread's) gives its version with each connection, as ``connect``'s do:
    left to redis-py, the first read of the metadata in a worker process cost 5-6 ms of CPU."""
    import redis.utils

    from orchestrator.cluster import attempt

    read: list[str] = []
    real = redis.utils.get_lib_version
    monkeypatch.setattr(redis.utils, "get_lib_version", lambda: read.append("metadata") or real())
    client = attempt.client_for(redis_server.url)
    held = [client.connection_pool.get_connection() for _ in range(2)]  # the main thread's and the control thread's
    for connection in held:
        client.connection_pool.release(connection)
    assert client.ping() and read == []
    client.close()


def test_a_read_secret_file_is_emptied_and_its_inode_serves_the_next_attempts_key(tmp_path):
    from orchestrator.cluster.secret_file import SPARES

    # Given the first attempt's key written in a folder (its spares folder made then) and read by its node
    first, second = tmp_path / "a.1.secret", tmp_path / "b.1.secret"
    write_secret_file(first, {protocol.API_KEY: "key-one"})
    inode = os.stat(first).st_ino
    assert read_secret_file(str(first)) == {protocol.API_KEY: "key-one"} and not first.exists()
    # Then the read file is emptied and handed back, not deleted
    [spare] = (tmp_path / SPARES).iterdir()
    assert spare.stat().st_ino == inode and spare.stat().st_size == 0
    # When the next attempt's key is written
    write_secret_file(second, {protocol.API_KEY: "key-two"})
    # Then it is in that same inode, 0600, holding the new key alone
    assert os.stat(second).st_ino == inode and oct(os.stat(second).st_mode & 0o777) == "0o600"
    assert read_secret_file(str(second)) == {protocol.API_KEY: "key-two"}


def test_a_spare_that_is_not_as_a_fresh_file_is_deleted_never_written(tmp_path):
    from orchestrator.cluster.secret_file import SPARES

    # Given spares that are not as a fresh file would be: a hard link to a file elsewhere (it would carry
    # the key there), one with content, one another user could read, and a folder
    spares = tmp_path / SPARES
    spares.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")
    os.link(elsewhere, spares / "linked")
    (spares / "full").write_text("old")
    (spares / "open").touch(mode=0o644)
    os.chmod(spares / "open", 0o644)
    (spares / "folder").mkdir()
    # When a key is written
    target = tmp_path / "c.1.secret"
    write_secret_file(target, {protocol.API_KEY: "k"})
    # Then none of them holds it: the key is in a new private file and the file elsewhere is untouched
    assert elsewhere.read_text() == "" and os.stat(target).st_nlink == 1
    assert oct(os.stat(target).st_mode & 0o777) == "0o600" and json.loads(target.read_text()) == {protocol.API_KEY: "k"}
    assert sorted(p.name for p in spares.iterdir()) == ["folder"]  # the files taken and refused are deleted


def test_without_a_spares_folder_a_read_secret_file_is_deleted(tmp_path):
    path = tmp_path / "d.1.secret"
    path.write_text(json.dumps({protocol.API_KEY: "k"}))
    os.chmod(path, 0o600)
    assert read_secret_file(str(path)) == {protocol.API_KEY: "k"} and list(tmp_path.iterdir()) == []
