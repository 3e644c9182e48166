"""The rq executor (orchestrator/cluster/executor.py) on a real redis-server: routing by kind,
the refusal of a kind no node runs, cancel while queued and while running, a lost attempt
fenced, a restarted server adopting what runs on a node, and Redis restarts with and without
its data. The Executor contract itself runs against it in tests/test_executor_contract.py."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from orchestrator.cluster.attempts import Attempts
from orchestrator.cluster.connect import connect
from orchestrator.cluster.executor import RQExecutor, make_executor
from orchestrator.cluster.names import Names
from orchestrator.errors import ConfigError
from orchestrator.executor import LocalExecutor
from orchestrator.runner import read_exit_file

from .conftest import make_settings, wait_until
from .rqnode_double import NodeDouble

pytestmark = pytest.mark.timeout(120)
LEASE = 3.0


def rq_settings(tmp_path, server, prefix, **sections):
    return make_settings(
        tmp_path, distributed={"executor": "rq", "redis_url": server.url, "queue_prefix": prefix, "lease": LEASE}, **sections
    )


@pytest.fixture
def rq(tmp_path, redis_server, unique_prefix):
    made = []

    def factory(server=redis_server, listen=True):
        executor = RQExecutor(rq_settings(tmp_path, server, unique_prefix), listen=listen)
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


def test_a_kind_no_live_node_runs_is_refused_at_once_with_the_command_to_start_one(rq, tmp_path, redis_server, unique_prefix):
    executor = rq()
    with pytest.raises(ConfigError) as none:
        start(executor, tmp_path, ["true"], "root.a.worker_1", kind="codex")
    assert "no live node runs worker kind 'codex' (live nodes: none)" in str(none.value)
    assert "python -m orchestrator node --redis REDIS_URL --kinds codex" in str(none.value)
    node = NodeDouble(redis_server.url, unique_prefix, name="n1", kinds=("command", "claude"))
    try:
        with pytest.raises(ConfigError, match=r"live nodes: n1 \(command, claude\)"):
            start(executor, tmp_path, ["true"], "root.a.worker_1", kind="codex")
        assert list(tmp_path.glob("*.secret")) == []  # nothing was left for a node
    finally:
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
        assert executor.client.ttl(executor.names.attempt(handle.id)) > 0  # kept a while, then gone
        assert executor.find("root.") == []
    finally:
        node.stop()


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
        assert list(tmp_path.glob("*.secret")) == []
        node.slots = 4
        time.sleep(0.5)
        assert node.ran == []
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
def test_a_redis_restart_loses_no_attempt(tmp_path, fresh_redis, unique_prefix, persist):
    executor = RQExecutor(rq_settings(tmp_path, fresh_redis, unique_prefix))
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
        assert executor.wait(running, 20) == 0 and not running.lost
        placed(executor, queued, timeout=20)
        assert executor.wait(queued, 15) == 0 and queued.node == "n1"
        assert (queued.token == old_token) is persist  # enqueued again (a new token) only when Redis lost it
        assert queued.token >= old_token  # the fencing counter never goes back, even when Redis lost it
        assert (tmp_path / "root.g.worker_1.log").read_text() == "first\n"
        assert (tmp_path / "root.g.worker_2.log").read_text() == "second\n"
        assert len(node.ran) == 2
    finally:
        node.stop()
        executor.close()
