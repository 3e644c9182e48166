"""The rq executor (orchestrator/cluster/executor.py) on a real redis-server: routing by kind,
the refusal of a kind no node runs, cancel while queued and while running, a lost attempt
fenced, a restarted server adopting what runs on a node, and Redis restarts with and without
its data. The Executor contract itself runs against it in tests/test_executor_contract.py."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
import yaml

from orchestrator.cluster import registry
from orchestrator.cluster.distribution import make_executor
from orchestrator.cluster.executor import RQExecutor
from orchestrator.cluster.names import PROTOCOL_VERSION
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine
from orchestrator.errors import ConfigError
from orchestrator.process.executor import LocalExecutor
from orchestrator.process.shim import read_exit_file

from .conftest import API_KEY, ROOT, make_settings, wait_until
from .redisserver import free_port
from .rqnode_double import NodeDouble, real_node

pytestmark = pytest.mark.timeout(120)
LEASE = 3.0


def rq_settings(tmp_path, server, prefix, **sections):
    return make_settings(
        tmp_path, distributed={"executor": "rq", "redis_url": server.url, "queue_prefix": prefix, "lease": LEASE}, **sections
    )


@pytest.fixture
def rq(tmp_path, redis_server, unique_prefix):
    made = []

    def factory(server=redis_server):
        executor = RQExecutor(rq_settings(tmp_path, server, unique_prefix))
        made.append(executor)
        return executor

    yield factory
    for executor in made:
        executor.close()


def start(executor, tmp_path, argv, tag, kind="command"):
    return executor.start(
        argv,
        cwd=tmp_path,
        env={**os.environ, "ORCHESTRATOR_ATTEMPT": "1", "ORCHESTRATOR_API_KEY": "secret-key"},
        log_path=tmp_path / f"{tag}.log",
        tag=tag,
        exit_file=tmp_path / f"{tag}.exit",
        kind=kind,
    )


def placed(executor, handle, timeout=15):
    """Wait until a node has started it (the one None a wait returns for that), as execution does."""
    deadline = time.monotonic() + timeout
    while not handle.node_told:
        assert time.monotonic() < deadline, "no node started the attempt"
        executor.wait(handle, 1)


def test_make_executor_follows_the_setting_and_a_bad_redis_refuses_the_start(tmp_path, redis_server, unique_prefix):
    assert isinstance(make_executor(make_settings(tmp_path)), LocalExecutor)
    with pytest.raises(ConfigError) as wrong:
        make_executor(rq_settings(tmp_path, type("S", (), {"url": redis_server.url_with("nope")})(), unique_prefix))
    assert "refused the password" in str(wrong.value) and "nope" not in str(wrong.value)
    dead = "redis://:pw@127.0.0.1:1/0"
    with pytest.raises(ConfigError, match="cannot reach Redis at redis://\\*\\*\\*@127.0.0.1:1/0"):
        make_executor(rq_settings(tmp_path, type("S", (), {"url": dead})(), unique_prefix))
    with pytest.raises(ConfigError, match="cannot reach Redis"):  # the engine (the server) refuses to start
        Engine(rq_settings(tmp_path, type("S", (), {"url": dead})(), unique_prefix))


def test_admission_reads_each_live_nodes_memory_from_its_heartbeat(rq):
    """Under rq the machines admission judges by are the live nodes, as their heartbeats say;
    a node too old to report its memory is left out, and locally it is this machine."""
    executor = rq()
    gb = 1 << 30
    fresh = registry.NodeInfo(
        "big", "h1", 1, ["claude"], 2, memory_total=64 * gb, memory_available=40 * gb, protocol=PROTOCOL_VERSION
    )
    old = registry.NodeInfo("old", "h2", 2, ["command"], 2, protocol=PROTOCOL_VERSION)
    for info in (fresh, old):
        registry.publish(executor.client, executor.names, info, LEASE)
    found = wait_until(lambda: executor.memory(), what="the listener to read the nodes' memory")
    assert [(m.name, m.total, m.available, m.kinds) for m in found] == [("big", 64 * gb, 40 * gb, frozenset({"claude"}))]
    here = LocalExecutor().memory()
    assert len(here) == 1 and here[0].name is None and 0 < here[0].available <= here[0].total


def test_a_kind_no_live_node_runs_is_refused_after_a_lease_with_the_command_to_start_one(
    rq, tmp_path, redis_server, unique_prefix
):
    executor = rq()
    began = time.monotonic()
    with pytest.raises(ConfigError) as none:
        start(executor, tmp_path, ["true"], "root.a.worker_1", kind="codex")
    assert time.monotonic() - began >= executor.lease  # it waited one lease for a node to come
    assert "no live node runs worker kind 'codex' (live nodes: none; waited 3s, distributed.lease)" in str(none.value)
    assert "python -m orchestrator node --kinds codex" in str(none.value)
    node = NodeDouble(redis_server.url, unique_prefix, name="n1", kinds=("command", "claude"))
    try:
        with pytest.raises(ConfigError, match=r"live nodes: n1 \(command, claude\)"):
            start(executor, tmp_path, ["true"], "root.a.worker_1", kind="codex")
        assert list(tmp_path.glob("*.secret")) == []  # nothing was left for a node
    finally:
        node.stop()


def test_a_node_that_registers_while_a_start_waits_gets_the_attempt(rq, tmp_path, redis_server, unique_prefix):
    """The server and its nodes started together (quick-start with nodes waiting for the marker):
    the first workers wait for a node of their kind instead of failing."""
    executor = rq()
    starting = threading.Timer(
        1.0, lambda: late.append(NodeDouble(redis_server.url, unique_prefix, name="late", kinds=("command",)))
    )
    late: list[NodeDouble] = []
    starting.start()
    try:
        handle = start(executor, tmp_path, ["true"], "root.a.worker_1", kind="command")
        placed(executor, handle)
        assert handle.node == "late" and executor.wait(handle, 30) == 0
    finally:
        starting.join()
        for node in late:
            node.stop()


def test_an_attempt_runs_on_a_node_with_nothing_secret_in_redis_and_its_sample_read(rq, tmp_path, redis_server, unique_prefix):
    executor = rq()
    node = NodeDouble(redis_server.url, unique_prefix, name="n1", lease=LEASE)
    try:
        argv = [sys.executable, "-c", "import os,time; print(os.environ['ORCHESTRATOR_API_KEY']); time.sleep(2.5)"]
        handle = start(executor, tmp_path, argv, "root.b.worker_1")
        assert handle.queued and handle.start_id == handle.id
        placed(executor, handle)
        assert (handle.node, handle.queued, handle.pid is not None) == ("n1", False, True)
        dump = b"".join(executor.client.dump(k) or b"" for k in executor.client.keys(f"{unique_prefix}*"))
        assert b"secret-key" not in dump  # the key went through the 0600 file, which the node deleted
        wait_until(lambda: executor.sample([handle]), timeout=10, what="a sample from a renewal")
        assert executor.sample([handle])[handle.tag].rss == 1234
        assert executor.wait(handle, 15) == 0
        assert (tmp_path / "root.b.worker_1.log").read_text() == "secret-key\n"
        assert executor.nodes()[0].name == "n1"
        executor.release(handle)
        wait_until(lambda: executor.client.ttl(executor.names.attempt(handle.id)) > 0, what="a TTL")  # kept a while, then gone
        assert executor.find("root.") == []
    finally:
        node.stop()


def test_a_release_makes_no_round_trip_on_the_workers_thread_and_the_listener_tells_redis(
    rq, tmp_path, redis_server, unique_prefix
):
    """The engine's worker thread releases an ended attempt before it frees its slot: the round
    trip that takes it out of the tree's index and puts a TTL on its hash is the listener's."""
    executor = rq()
    node = NodeDouble(redis_server.url, unique_prefix, name="n1", kinds=("command",))
    try:
        handle = start(executor, tmp_path, ["true"], "root.r.worker_1")
        placed(executor, handle)
        assert executor.wait(handle, 30) == 0
        index = executor.names.tree("root")
        assert executor.client.hget(index, handle.id) is not None and executor.client.ttl(executor.names.attempt(handle.id)) == -1
        threads: list[str] = []
        original = executor.client.pipeline

        def pipeline(*args, **kwargs):
            threads.append(threading.current_thread().name)
            return original(*args, **kwargs)

        executor.client.pipeline = pipeline
        executor.release(handle)
        assert threading.current_thread().name not in threads  # (each pipeline taken on the caller's thread)
        wait_until(lambda: executor.client.ttl(executor.names.attempt(handle.id)) > 0, timeout=5, what="the hash's TTL")
        assert executor.client.hget(index, handle.id) is None and "rq-executor" in threads
    finally:
        node.stop()


def test_an_attempt_runs_from_its_nodes_spawn_to_its_nodes_end_kept_within_what_the_server_saw(rq, tmp_path):
    executor = rq()
    info = registry.NodeInfo(
        name="n1", host="h", pid=1, kinds=["command"], slots=1, started_at=time.time(), protocol=PROTOCOL_VERSION
    )
    registry.publish(executor.client, executor.names, info, lease=60)  # a node that is registered and takes nothing
    handles = [start(executor, tmp_path, ["true"], f"root.s.worker_{i}") for i in range(3)]
    enqueued = [h.started_at for h in handles]
    time.sleep(0.05)
    before = time.time()
    for h, spawned in zip(handles, (enqueued[0] + 0.004, enqueued[1] - 60, time.time() + 60), strict=True):
        executor._apply({"id": h.id, "token": h.token, "event": "started", "node": "n1", "pid": 7, "spawned_at": spawned})
    after = time.time()
    assert handles[0].started_at == enqueued[0] + 0.004  # the node's spawn time
    assert handles[1].started_at == enqueued[1]  # a clock behind: not before its enqueue
    assert before <= handles[2].started_at <= after  # a clock ahead: not after it was heard
    assert all((h.node, h.pid, h.queued) == ("n1", 7, False) for h in handles)
    time.sleep(0.05)
    for h, exited in zip(handles[:2], (handles[0].started_at + 0.01, 0.0), strict=True):  # its end: its node's clock too
        executor._apply({"id": h.id, "token": h.token, "event": "ended", "node": "n1", "code": 0, "exited_at": exited})
    assert handles[0].ended_at == handles[0].started_at + 0.01
    assert handles[1].ended_at == handles[1].started_at  # never before its start
    assert [h.code for h in handles[:2]] == [0, 0]
    for h in handles:
        executor.release(h)


def test_a_nodes_event_wakes_the_thread_waiting_on_its_attempt_and_no_other(rq, tmp_path, monkeypatch):
    """Each worker thread waits on its own attempt: an event for one attempt must not wake the
    threads waiting on the others (at 24 at once, two events an attempt woke 48 threads)."""
    executor = rq()
    info = registry.NodeInfo(
        name="n1", host="h", pid=1, kinds=["command"], slots=2, started_at=time.time(), protocol=PROTOCOL_VERSION
    )
    registry.publish(executor.client, executor.names, info, lease=60)  # a node that is registered and takes nothing
    mine, other = (start(executor, tmp_path, ["true"], f"root.s.worker_{i}") for i in range(2))
    waits: dict[str, int] = {}
    real_wait = threading.Condition.wait

    def counted(self, timeout=None):
        name = threading.current_thread().name
        if name.startswith("waiter-"):
            waits[name] = waits.get(name, 0) + 1
        return real_wait(self, timeout)

    monkeypatch.setattr(threading.Condition, "wait", counted)
    answers: dict[str, object] = {}

    def waiter(label, handle):
        answers[label] = executor.wait(handle, 30)

    threads = [
        threading.Thread(target=waiter, args=(label, h), name=f"waiter-{label}")
        for label, h in (("mine", mine), ("other", other))
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: waits.get("waiter-mine") == 1 and waits.get("waiter-other") == 1, timeout=10)
    executor._apply({"id": mine.id, "token": mine.token, "event": "started", "node": "n1", "pid": 7})
    threads[0].join(10)
    assert answers == {"mine": None}  # placed: its wait returned for the execution to record the node
    executor._apply({"id": mine.id, "token": mine.token, "event": "ended", "node": "n1", "code": 0})
    time.sleep(0.3)
    assert waits["waiter-other"] == 1, "the thread waiting on the other attempt was woken by events that were not its own"
    executor._apply({"id": other.id, "token": other.token, "event": "ended", "node": "n1", "code": 0})
    threads[1].join(10)
    assert answers == {"mine": None, "other": None} and other.code == 0
    for h in (mine, other):
        executor.release(h)


def test_an_end_the_reconciler_reads_from_the_hash_is_the_nodes_clock_as_the_event_says(rq, tmp_path):
    """The listener and the reconciler both hear a node's end; whichever is first, the attempt ends
    when its node saw it end (before, the reconciler ended it when it read the hash, later than the
    node's next spawn on the same slot: two attempts at once on one slot, in the records)."""
    executor = rq()
    info = registry.NodeInfo(
        name="n1", host="h", pid=1, kinds=["command"], slots=1, started_at=time.time(), protocol=PROTOCOL_VERSION
    )
    registry.publish(executor.client, executor.names, info, lease=60)  # a node that is registered and takes nothing
    handle = start(executor, tmp_path, ["true"], "root.e.worker_1")
    claimed = executor.attempts.claim(handle.id, handle.token, "n1", 60)
    assert claimed is not None
    spawned = time.time()
    assert executor.attempts.started(handle.id, handle.token, "n1", 7, None, spawned)
    exited = spawned + 0.01
    time.sleep(0.05)
    assert executor.attempts.finish(handle.id, handle.token, "n1", 0, None, exited_at=exited)
    assert float(executor.attempts.read(handle.id)["ended_at"]) == exited
    # The reconciler first: on a copy the listener does not know (it may have heard the event by now)
    unheard = dataclasses.replace(handle, code=None, ended_at=None)
    executor._reconcile_one(unheard, executor.attempts.read(handle.id), False, time.monotonic())
    assert (unheard.code, unheard.started_at, unheard.ended_at) == (0, spawned, exited)
    executor.release(handle)


def test_cancel_of_a_queued_attempt_removes_it_and_no_node_ever_runs_it(rq, tmp_path, redis_server, unique_prefix):
    executor = rq()
    node = NodeDouble(redis_server.url, unique_prefix, name="full", slots=0)  # alive, no free slot
    try:
        handle = start(executor, tmp_path, ["sleep", "30"], "root.c.worker_1")
        assert executor.wait(handle, 0.5) is None and handle.queued
        assert executor.attempts.queue("command").count == 1
        assert executor.terminate(handle, grace=1) == "none"
        assert handle.exited and executor.wait(handle, 1) == -signal.SIGTERM
        assert executor.attempts.queue("command").count == 0
        assert executor.attempts.read(handle.id)["state"] == "cancelled"
        executor.release(handle)
        assert list(tmp_path.glob("*.secret")) == []  # the worker's key, which no node read
        node.slots = 4
        time.sleep(0.5)
        assert node.ran == []
    finally:
        node.stop()


def test_a_withheld_attempt_no_node_starts_waits_for_its_terminate_and_a_running_one_is_left_alone(
    rq, tmp_path, redis_server, unique_prefix
):
    executor = rq()
    node = NodeDouble(redis_server.url, unique_prefix, name="one", slots=1)
    try:
        running = start(executor, tmp_path, ["sleep", "30"], "root.w.worker_1")
        placed(executor, running)
        queued = start(executor, tmp_path, ["sleep", "30"], "root.w.worker_2")
        assert executor.wait(queued, 0.3) is None and queued.queued
        executor.withhold([running, queued])
        assert queued.withheld
        executor.withhold([queued])  # a second cancel of the job changes nothing
        assert queued.withheld and not queued.exited
        assert executor.attempts.read(queued.id)["state"] == "cancelled"
        assert executor.attempts.read(running.id)["state"] == "running"
        assert executor.terminate(running, grace=1) == "SIGTERM"  # its slot is free now
        node.slots = 2
        time.sleep(1)  # the node's loop, and the listener that reads the withheld one's "ended" event
        assert node.ran == [running.id]
        assert executor.wait(queued, 0) is None and not queued.exited  # only its own terminate ends it
        assert executor.terminate(queued, grace=1) == "none"
        assert executor.wait(queued, 1) == -signal.SIGTERM
        assert executor.attempts.queue("command").count == 0
        for handle in (running, queued):
            executor.release(handle)
    finally:
        node.stop()


def test_a_node_that_dies_loses_its_attempt_and_its_late_result_is_fenced(rq, tmp_path, redis_server, unique_prefix):
    executor = rq()
    node = NodeDouble(redis_server.url, unique_prefix, name="doomed", lease=LEASE)
    try:
        handle = start(executor, tmp_path, ["sleep", "60"], "root.d.worker_1")
        placed(executor, handle)
        token = handle.token
        node.die()
        began = time.monotonic()
        assert executor.wait(handle, 4 * LEASE) == -signal.SIGKILL
        assert handle.lost and handle.node == "doomed"
        assert time.monotonic() - began < 3 * LEASE  # lease expiry + a full lease + a reconcile
        assert not executor.attempts.finish(handle.id, token, "doomed", 0, None)  # too late: ignored
        assert executor.attempts.read(handle.id)["state"] == "lost"
    finally:
        node.stop()


def test_a_restarted_server_adopts_a_running_and_a_queued_attempt_from_redis(rq, tmp_path, redis_server, unique_prefix):
    first = rq()
    node = NodeDouble(redis_server.url, unique_prefix, name="n1", slots=1, lease=LEASE)
    try:
        running = start(first, tmp_path, [sys.executable, "-c", "import time; time.sleep(3); print('done')"], "root.e.worker_1")
        placed(first, running)
        waiting = start(first, tmp_path, ["true"], "root.e.worker_2")  # the one slot is taken: it waits
        first.close()  # the server stops (its listener with it); the node runs on
        second = rq()
        found = {f.tag: f for f in second.find("root.e.")}
        assert set(found) == {"root.e.worker_1", "root.e.worker_2"}
        assert (found["root.e.worker_1"].pid, found["root.e.worker_1"].start_id) == (running.pid, running.id)
        assert found["root.e.worker_1"].attempt == 1
        one = found["root.e.worker_1"]
        adopted = second.adopt(one.pid, one.start_id, tag=one.tag, started_at=running.started_at, exit_file=one.exit_file)
        assert (adopted.node, adopted.queued, adopted.code) == ("n1", False, None)
        two = found["root.e.worker_2"]
        queued = second.adopt(two.pid, two.start_id, tag=two.tag, started_at=waiting.started_at, exit_file=two.exit_file)
        placed(second, adopted)  # its record names its node first
        assert second.wait(adopted, 15) == 0
        placed(second, queued)
        assert second.wait(queued, 15) == 0 and queued.node == "n1"
        assert len(node.ran) == 2  # nothing ran twice
    finally:
        node.stop()


def test_an_attempt_redis_forgot_is_adopted_from_its_exit_file(rq, tmp_path):
    executor = rq()
    exit_file = tmp_path / "gone.exit"
    exit_file.write_text("exit 4\n")
    handle = executor.adopt(77, "a" * 32, tag="root.f.worker_1", started_at=time.time(), exit_file=exit_file)
    assert executor.wait(handle, 0) == 4 and read_exit_file(exit_file) == 4


@pytest.mark.parametrize("persist", [True, False], ids=["persisted", "data-lost"])
@pytest.mark.parametrize("real", [False, True], ids=["double", "real-node"])
def test_a_redis_restart_loses_no_attempt(tmp_path, fresh_redis, unique_prefix, persist, real):
    executor = RQExecutor(rq_settings(tmp_path, fresh_redis, unique_prefix))
    if real:
        node = real_node(tmp_path / "n1", fresh_redis.url, unique_prefix, name="n1", slots=1, lease=LEASE)
    else:
        node = NodeDouble(fresh_redis.url, unique_prefix, name="n1", slots=1, lease=LEASE)
    try:
        running = start(
            executor, tmp_path, [sys.executable, "-c", "import time; time.sleep(4); print('first')"], "root.g.worker_1"
        )
        placed(executor, running)
        queued = start(executor, tmp_path, [sys.executable, "-c", "print('second')"], "root.g.worker_2")
        old_token = queued.token
        fresh_redis.restart(persist=persist)
        # The running attempt's node renews (recreating its hash if Redis lost it) and reports its end;
        # the queued one runs once the slot is free: from its RQ job, or enqueued again by the server.
        assert executor.wait(running, 30) == 0 and not running.lost
        placed(executor, queued, timeout=30)
        assert executor.wait(queued, 15) == 0 and queued.node == "n1"
        assert (queued.token == old_token) is persist  # enqueued again (a new token) only when Redis lost it
        assert queued.token >= old_token  # the fencing counter never goes back, even when Redis lost it
        assert int(executor.client.get(executor.names.fence)) >= executor.attempts.reserved_top  # nor below a block taken
        assert (tmp_path / "root.g.worker_1.log").read_text() == "first\n"
        assert (tmp_path / "root.g.worker_2.log").read_text() == "second\n"
    finally:
        node.stop()
        executor.close()


def test_an_attempt_that_ended_unheard_before_redis_lost_its_data_is_never_run_again(tmp_path, fresh_redis, unique_prefix):
    """A node ran the attempt and reported its end, and Redis restarted empty before the server's
    listener heard a word of it (started, ended: the listener is held deaf here, as a busy one
    is): the server finds the attempt gone from Redis, still queued in its eyes, and reads its
    exit file instead of enqueuing it again (it ran twice)."""
    executor = RQExecutor(rq_settings(tmp_path, fresh_redis, unique_prefix))
    deaf, held = threading.Event(), threading.Event()
    hear, reconcile = executor.attempts.next_events, executor._reconcile

    def next_events(timeout, most=512):
        held.set()
        if deaf.is_set():
            time.sleep(min(timeout, 0.1))
            return []
        return hear(timeout, most)

    executor.attempts.next_events = next_events
    executor._reconcile = lambda: None if deaf.is_set() else reconcile()
    node = real_node(tmp_path / "n1", fresh_redis.url, unique_prefix, name="n1", slots=1, lease=LEASE)
    try:
        deaf.set()
        held.clear()
        wait_until(held.is_set, what="the listener's next round (the one under way when it was made deaf may hear)")
        handle = start(executor, tmp_path, ["sh", "-c", "echo ran >> runs.txt"], "root.k.worker_1")
        wait_until(lambda: (executor.attempts.read(handle.id) or {}).get("state") == "ended", what="its end, in Redis")
        assert handle.queued and read_exit_file(handle.exit_file) == 0  # the server heard nothing
        fresh_redis.restart(persist=False)
        deaf.clear()
        assert executor.wait(handle, 30) == 0
        assert (tmp_path / "runs.txt").read_text() == "ran\n"
        assert executor.attempts.queue("command").count == 0
    finally:
        node.stop()
        executor.close()


# -- a real engine whose workers run on nodes ---------------------------------------------------
def rq_engine(make_engine, server, prefix, **sections):
    distributed = {"executor": "rq", "redis_url": server.url, "queue_prefix": prefix, "lease": LEASE}
    return make_engine(distributed=distributed, **sections)


def test_a_job_runs_its_workers_on_real_nodes_and_each_record_names_its_node(make_engine, redis_server, unique_prefix, tmp_path):
    engine = rq_engine(make_engine, redis_server, unique_prefix, simulated={"duration": 0.5})  # the server first: its marker
    nodes = [
        real_node(tmp_path / f"n{i}", redis_server.url, unique_prefix, name=f"n{i}", kinds=kinds, slots=2, lease=LEASE)
        for i, kinds in ((1, ("simulated", "command")), (2, ("simulated",)))
    ]
    try:
        job = engine.submission.submit("spread", {"max_workers": 4}, [f"task {i}" for i in range(6)])
        assert engine.queries.wait(job.id, 60).status.value == "completed"
        workers = [engine.queries.find_worker(job.id, 0, f"worker_{i}") for i in range(1, 7)]
        assert [len(w.attempts) for w in workers] == [1] * 6
        assert all(w.node in ("n1", "n2") and w.attempts[0].node == w.node for w in workers)
        ops = engine.executor.attempts
        assert [ops.read(w.attempts[0].pid_start)["node"] for w in workers] == [w.node for w in workers]
        assert all(ops.read(w.attempts[0].pid_start)["state"] == "ended" for w in workers)
    finally:
        for node in nodes:
            node.stop()


def test_a_worker_of_a_kind_no_node_runs_fails_after_a_lease_saying_how_to_start_one(make_engine, redis_server, unique_prefix):
    node = NodeDouble(redis_server.url, unique_prefix, name="cmd-only", kinds=("command",))
    try:
        engine = rq_engine(make_engine, redis_server, unique_prefix)
        job = engine.submission.submit("nobody runs it", None, ["one"])
        assert engine.queries.wait(job.id, 30).status.value == "failed"
        worker = engine.queries.find_worker(job.id, 0, "worker_1")
        assert "no live node runs worker kind 'simulated' (live nodes: cmd-only (command); waited" in worker.error
        assert "python -m orchestrator node --kinds simulated" in worker.error
        assert len(worker.attempts) == 1 and node.ran == []  # refused, not retried
    finally:
        node.stop()


@pytest.mark.chaos  # ~15 s; the quick suite has the executor-level proof above
def test_a_worker_whose_node_dies_is_retried_on_another_and_counted_once(make_engine, redis_server, unique_prefix, tmp_path):
    # The attempt outlasts the second node's start (a process that registers: seconds under load;
    # with 3 s it once ended on doomed first at load average 25).
    engine = rq_engine(make_engine, redis_server, unique_prefix, simulated={"duration": 8}, workers={"max_retries": 1})
    doomed = real_node(tmp_path / "doomed", redis_server.url, unique_prefix, name="doomed", kinds=("simulated",), lease=LEASE)
    other = None
    try:
        job = engine.submission.submit("lost and retried", None, ["one"])
        wait_until(
            lambda: engine.queries.find_worker(job.id, 0, "worker_1").node == "doomed", timeout=20, what="running on doomed"
        )
        pid = engine.queries.find_worker(job.id, 0, "worker_1").attempts[0].pid
        other = real_node(tmp_path / "other", redis_server.url, unique_prefix, name="other", kinds=("simulated",), lease=LEASE)
        doomed.kill()
        assert engine.queries.wait(job.id, 60).status.value == "completed"
        worker = engine.queries.find_worker(job.id, 0, "worker_1")
        assert [(a.node, a.end_reason) for a in worker.attempts] == [("doomed", "lost"), ("other", "exit")]
        assert worker.status.value == "success" and worker.node == "other"
        assert engine.executor.attempts.read(worker.attempts[0].pid_start)["state"] == "lost"  # fenced for good
        assert not os.path.exists(f"/proc/{pid}")  # its worker died with its node
    finally:
        doomed.stop()
        if other is not None:
            other.stop()


@pytest.mark.chaos  # ~15 s; the quick suite has the executor-level proof above
def test_a_server_killed_mid_job_is_restarted_and_adopts_what_runs_and_waits_on_its_node(tmp_path, redis_server, unique_prefix):
    """The server is a real process, SIGKILLed while two workers run on a node and a third waits
    in the queue; the next server (an engine on the same home) takes all three over: none runs twice."""
    port = free_port()
    config = {
        "api": {"api_key": API_KEY, "port": port, "rate_limit_worker": 0},
        "orchestrator": {"worker": "simulated"},
        "simulated": {"duration": 4},
        "workers": {"kill_grace": 1, "retry_backoff": 0.05},
        "distributed": {"executor": "rq", "redis_url": redis_server.url, "queue_prefix": unique_prefix, "lease": LEASE},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "ORCHESTRATOR_HOME": str(tmp_path)}
    env.pop("ORCHESTRATOR_CONFIG", None)
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "api_server.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    engine = node = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(url), timeout=30, what="the server up")
        node = real_node(tmp_path / "n1", redis_server.url, unique_prefix, name="n1", kinds=("simulated",), slots=2, lease=LEASE)
        answer = requests.post(
            f"{url}/api/v1/orchestrate",
            json={"request": "survive a restart", "tasks": ["a", "b", "c"], "config": {"max_workers": 3}},
            headers={"X-API-Key": API_KEY},
            timeout=10,
        )
        assert answer.status_code in (200, 201, 202), answer.text
        root = answer.json()["job_id"]
        folder = tmp_path / "workspace" / f"job_{root}" / "state" / "workers"
        on_node = lambda: [json.loads(p.read_text()).get("node") for p in folder.glob("*.json")]  # noqa: E731
        wait_until(lambda: on_node().count("n1") == 2, timeout=30, what="two workers recorded on n1")
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        engine = Engine(load_settings(base_dir=tmp_path, environ={}))
        assert engine.takeover.recover() == [root]
        assert engine.queries.wait(root, 60).status.value == "completed"
        workers = [engine.queries.find_worker(root, 0, f"worker_{i}") for i in (1, 2, 3)]
        assert [len(w.attempts) for w in workers] == [1, 1, 1]  # adopted, never started again
        assert [(w.node, w.status.value) for w in workers] == [("n1", "success")] * 3
        ops = engine.executor.attempts
        assert [ops.read(w.attempts[0].pid_start)["state"] for w in workers] == ["ended"] * 3  # each ran once
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        if engine is not None:
            engine.shutdown(timeout=10)
        if node is not None:
            node.stop()


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.parametrize("queued_thread", ["prompt", "late"])
def test_cancel_of_a_job_ends_its_running_worker_on_the_node_and_its_queued_one_never_runs(
    make_engine, redis_server, unique_prefix, queued_thread
):
    node = NodeDouble(redis_server.url, unique_prefix, name="n1", kinds=("simulated",), slots=1, lease=LEASE)
    try:
        engine = rq_engine(make_engine, redis_server, unique_prefix, simulated={"duration": 30})
        if queued_thread == "late":  # as on a loaded machine: the running one's slot is free long before
            terminate = engine.executor.terminate

            def late(handle, **kwargs):
                if handle.queued:
                    time.sleep(2)
                return terminate(handle, **kwargs)

            engine.executor.terminate = late
        job = engine.submission.submit("cancel across", {"max_workers": 2}, ["one", "two"])
        workers = lambda: [engine.queries.find_worker(job.id, 0, f"worker_{i}") for i in (1, 2)]  # noqa: E731
        wait_until(lambda: sorted(str(w.node) for w in workers()) == ["None", "n1"], timeout=20, what="one runs, one waits")
        wait_until(lambda: all(w.status.value == "running" for w in workers()), timeout=10, what="both started")
        running_pid = next(iter(node.running.values())).pid
        began = time.monotonic()
        assert engine.cancel(job.id) is not None
        assert engine.queries.wait(job.id, 30).status.value == "cancelled"
        assert time.monotonic() - began < 10
        assert sorted(w.status.value for w in workers()) == ["cancelled", "cancelled"]
        assert not os.path.exists(f"/proc/{running_pid}") or b"zombie" in open(f"/proc/{running_pid}/status", "rb").read()
        node.slots = 2
        time.sleep(1)
        assert len(node.ran) == 1  # the queued one was taken off the queue, never run
    finally:
        node.stop()


def test_a_queued_attempts_running_record_reaches_the_disk_after_its_delay_and_a_placed_one_names_its_node(
    make_engine, redis_server, unique_prefix
):
    from orchestrator.engine.attempts import QUEUED_RECORD_DELAY

    node = NodeDouble(redis_server.url, unique_prefix, name="n1", kinds=("simulated",), slots=1, lease=LEASE)
    try:
        engine = rq_engine(make_engine, redis_server, unique_prefix, simulated={"duration": 30})
        job = engine.submission.submit("one runs, one waits", {"max_workers": 2}, ["one", "two"])
        on_disk = lambda: {w.name: w for w in engine.workspace.load_tree(job.id)[1]}  # noqa: E731
        began = time.monotonic()
        wait_until(
            lambda: sorted(str(w.node) for w in on_disk().values() if w.status.value == "running") == ["None", "n1"],
            timeout=20,
            what="both running records on disk: the placed one naming its node, the queued one none",
        )
        assert time.monotonic() - began >= QUEUED_RECORD_DELAY * 0.9  # the queued one's waited its delay
        queued = next(w for w in on_disk().values() if w.node is None)
        assert len(queued.attempts) == 1 and queued.attempts[0].node is None
        engine.cancel(job.id)
        assert engine.queries.wait(job.id, 30).status.value == "cancelled"
    finally:
        node.stop()


def test_a_queued_attempt_cancelled_while_redis_is_down_never_runs_once_it_is_back(tmp_path, fresh_redis, unique_prefix):
    executor = RQExecutor(rq_settings(tmp_path, fresh_redis, unique_prefix))
    node = NodeDouble(fresh_redis.url, unique_prefix, name="full", slots=0, lease=LEASE)
    try:
        handle = start(executor, tmp_path, ["sleep", "30"], "root.h.worker_1")
        fresh_redis.stop()  # a clean stop: its append-only file keeps the queued attempt
        assert executor.terminate(handle, grace=1) == "none" and handle.exited  # at once, though Redis is down
        fresh_redis.start()
        wait_until(lambda: executor.attempts.read(handle.id)["state"] == "cancelled", timeout=15, what="told to Redis")
        node.slots = 1
        time.sleep(1)
        assert node.ran == []
    finally:
        node.stop()
        executor.close()


def test_a_redis_that_loses_its_data_mid_job_loses_no_worker(make_engine, fresh_redis, unique_prefix, tmp_path):
    """Four workers on a node with two slots: two run, two wait in the queue when Redis restarts
    empty. The running ones are renewed back into Redis by their node; the queued ones are enqueued
    again by the server from its own handles. Every worker runs once and the job completes."""
    engine = rq_engine(make_engine, fresh_redis, unique_prefix, simulated={"duration": 3})
    node = real_node(tmp_path / "n1", fresh_redis.url, unique_prefix, name="n1", kinds=("simulated",), slots=2, lease=LEASE)
    try:
        job = engine.submission.submit("redis restart", {"max_workers": 4}, ["a", "b", "c", "d"])
        workers = lambda: [engine.queries.find_worker(job.id, 0, f"worker_{i}") for i in range(1, 5)]  # noqa: E731
        wait_until(lambda: [w.node for w in workers()].count("n1") == 2, timeout=20, what="two running, two queued")
        fresh_redis.restart(persist=False)
        assert engine.queries.wait(job.id, 60).status.value == "completed"
        assert [(len(w.attempts), w.node, w.status.value) for w in workers()] == [(1, "n1", "success")] * 4
        for w in workers():  # each ran once: its program's first line is in its log once
            assert engine.queries.read_log(w)[0].count("simulated worker:") == 1
    finally:
        node.stop()


def test_an_end_the_node_never_reported_is_read_from_the_exit_file_not_called_lost(rq, tmp_path, redis_server, unique_prefix):
    executor = rq()
    node = NodeDouble(redis_server.url, unique_prefix, name="mute", lease=LEASE, mute=True)
    try:
        handle = start(executor, tmp_path, ["sh", "-c", "exit 5"], "root.i.worker_1")
        placed(executor, handle)
        began = time.monotonic()
        assert executor.wait(handle, 4 * LEASE) == 5 and not handle.lost  # the shared file system says how it ended
        assert time.monotonic() - began >= 2.5  # after EXIT_FILE_GRACE without an "ended" from its node
    finally:
        node.stop()


def test_a_reconcile_while_start_enqueues_does_not_enqueue_the_attempt_twice(rq, tmp_path, redis_server, unique_prefix):
    executor = rq()
    node = NodeDouble(redis_server.url, unique_prefix, name="full", slots=0)  # alive, takes nothing
    enqueue, rounds = executor.attempts.enqueue, []

    def reconcile_first(spec, queue=None, **kwargs):  # the listener's round falls between the token and the enqueue
        if not rounds:
            rounds.append(1)
            executor._reconcile()
        enqueue(spec, queue, **kwargs)

    executor.attempts.enqueue = reconcile_first
    try:
        handle = start(executor, tmp_path, ["true"], "root.j.worker_1")
        executor.attempts.enqueue = enqueue
        executor._reconcile()
        assert executor.attempts.queue("command").count == 1
        assert executor.attempts.read(handle.id)["token"] == str(handle.token)
    finally:
        node.stop()
