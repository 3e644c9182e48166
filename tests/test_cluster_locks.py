"""What only the Redis lock table does (cluster/locks.py), on a real
redis-server: two servers on one Redis exclude each other and wake each other's waiters, grants
stay exclusive under a race of both, a lock whose holder was killed expires by itself, a Redis
restart with and without its data, Redis gone, a wrong password, and the engine's choice of
table by ``distributed.executor``. The rules both tables share are tests/test_locks.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis.connection

from orchestrator.checkouts.locks import PathLocks
from orchestrator.clock import SYSTEM_CLOCK
from orchestrator.cluster import locks as cluster_locks
from orchestrator.cluster.connect import connect
from orchestrator.cluster.distribution import path_locks
from orchestrator.cluster.locks import RedisPathLocks
from orchestrator.cluster.names import Names
from orchestrator.config.schema import TasksSettings
from orchestrator.errors import ConfigError, Conflict, Forbidden, Unavailable

from .conftest import make_settings, observed, wait_until
from .redisserver import RedisServer

pytestmark = pytest.mark.timeout(90)

ROOT = "0123456789ab"
JOB = ROOT
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tables():
    """Makes "servers": RedisPathLocks of their own connection on one Redis and prefix."""
    made: list[RedisPathLocks] = []

    def make(server: RedisServer, prefix: str, lease: float = 300.0, timeout: float = 5.0) -> RedisPathLocks:
        settings = TasksSettings(lock_timeout=timeout, lock_lease=lease)
        one = RedisPathLocks(connect(server.url), Names(prefix), SYSTEM_CLOCK, settings, where="test", owns_client=True)
        made.append(one)
        return one

    yield make
    for one in made:
        one.close()


def test_two_servers_on_one_redis_exclude_each_other_and_wake_each_others_waiters(
    redis_server, unique_prefix, tables, monkeypatch
):
    monkeypatch.setattr(cluster_locks, "RECHECK", 30.0)  # only the release's message can wake the waiter in time
    one, two = tables(redis_server, unique_prefix), tables(redis_server, unique_prefix)
    held = one.acquire(ROOT, JOB, "worker_1", ["src"], wait=0)
    with pytest.raises(Conflict) as caught:
        two.acquire(ROOT, JOB, "worker_2", ["src/app.py"], wait=0)
    assert caught.value.message.startswith(f"locked by worker worker_1 of job {JOB} (paths: src;")
    assert [lock.lock_id for lock in two.locks(ROOT)] == [held.lock_id]
    assert two.acquire(ROOT, JOB, "worker_2", ["docs"], wait=0).worker == "worker_2"
    with pytest.raises(Forbidden, match="held by worker_1, not worker worker_2"):
        two.release(ROOT, held.lock_id, "worker_2")
    # another prefix is another server's: it sees none of these
    assert tables(redis_server, unique_prefix + "x").locks(ROOT) == []
    got = []
    waiter = threading.Thread(target=lambda: got.append(two.acquire(ROOT, JOB, "worker_2", ["src"], wait=20)))
    waiter.start()
    time.sleep(0.3)
    assert not got
    released = time.monotonic()
    one.release(ROOT, held.lock_id, "worker_1")
    waiter.join(10)
    assert got and got[0].worker == "worker_2"
    assert time.monotonic() - released < 2  # the pub/sub message, not the (30 s) re-check
    # a worker's end, seen by the server that did not grant its locks, frees them for everyone
    one.acquire(ROOT, JOB, "worker_3", ["a"], wait=0)
    one.acquire(ROOT, JOB, "worker_3", ["b"], wait=0)
    assert sorted(lock.paths[0] for lock in two.release_worker(ROOT, "worker_3")) == ["a", "b"]
    assert sorted(lock.paths[0] for lock in one.locks(ROOT)) == ["docs", "src"]


def test_a_server_restart_keeps_the_locks_its_workers_hold(redis_server, unique_prefix, tables):
    before = tables(redis_server, unique_prefix)
    held = before.acquire(ROOT, JOB, "worker_1", ["src"], wait=0)
    before.close()  # the server stops; under rq its workers run on, on their nodes
    after = tables(redis_server, unique_prefix)
    assert [lock.lock_id for lock in after.locks(ROOT)] == [held.lock_id]
    with pytest.raises(Conflict, match="locked by worker worker_1"):
        after.acquire(ROOT, JOB, "worker_2", ["src"], wait=0)
    assert after.acquire(ROOT, JOB, "worker_1", ["src"], wait=0).lock_id == held.lock_id  # its renewal
    assert [lock.lock_id for lock in after.release_worker(ROOT, "worker_1")] == [held.lock_id]
    assert after.locks(ROOT) == []


def test_grants_stay_exclusive_when_two_servers_race_for_overlapping_paths(redis_server, unique_prefix, tables):
    servers = [tables(redis_server, unique_prefix), tables(redis_server, unique_prefix)]
    inside = 0
    most = 0
    grants = 0
    count = threading.Lock()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        nonlocal inside, most, grants
        table = servers[n % 2]
        try:
            for i in range(5):
                paths = ["shared"] if (n + i) % 2 else ["shared/data.txt", f"own/{n}"]
                lock = table.acquire(ROOT, JOB, f"worker_{n}", paths, wait=60)
                with count:
                    inside += 1
                    most = max(most, inside)
                    grants += 1
                time.sleep(0.003)
                with count:
                    inside -= 1
                table.release(ROOT, lock.lock_id, f"worker_{n}")
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert grants == 60 and most == 1
    assert servers[0].locks(ROOT) == []


HOLDER = textwrap.dedent(
    """
    import sys, time
    from orchestrator.clock import SYSTEM_CLOCK
    from orchestrator.cluster.connect import connect
    from orchestrator.cluster.locks import RedisPathLocks
    from orchestrator.cluster.names import Names
    from orchestrator.config.schema import TasksSettings

    url, prefix, root = sys.argv[1:4]
    table = RedisPathLocks(connect(url), Names(prefix), SYSTEM_CLOCK, TasksSettings(lock_lease=2.0))
    lock = table.acquire(root, root, "worker_1", ["a"], wait=0)
    print(lock.lock_id, flush=True)
    time.sleep(600)
    """
)


def test_a_lock_whose_server_was_killed_frees_itself_at_its_leases_end(redis_server, unique_prefix, tables):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_server.url, unique_prefix, ROOT], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None
        lock_id = holder.stdout.readline().strip()
        taken = time.monotonic()
        holder.kill()  # a crashed server: nobody releases it
        holder.wait(10)
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    other = tables(redis_server, unique_prefix)
    assert [lock.lock_id for lock in other.locks(ROOT)] == [lock_id]
    got = other.acquire(ROOT, JOB, "worker_2", ["a/b"], wait=20)
    waited = time.monotonic() - taken
    assert got.worker == "worker_2"
    assert 1.5 < waited < 3.5  # the 2 s lease ended it (not the 20 s wait)
    assert [lock.worker for lock in other.locks(ROOT)] == ["worker_2"]


def test_a_redis_restart_keeps_the_locks_with_its_data_and_loses_them_without(fresh_redis, unique_prefix, tables, monkeypatch):
    monkeypatch.setattr(cluster_locks, "RECHECK", 30.0)
    one, two = tables(fresh_redis, unique_prefix), tables(fresh_redis, unique_prefix)
    held = one.acquire(ROOT, JOB, "worker_1", ["a"], lease=60, wait=0)
    fresh_redis.restart(persist=True)  # append-only file: the lock and its expiry survive
    (kept,) = two.locks(ROOT)
    assert (kept.lock_id, kept.expires_at) == (held.lock_id, held.expires_at)
    with pytest.raises(Conflict):
        two.acquire(ROOT, JOB, "worker_2", ["a"], wait=0)
    fresh_redis.restart(persist=False)  # its data gone: so are the locks (the servers do not re-create them)
    assert one.locks(ROOT) == [] and two.locks(ROOT) == []
    theirs = two.acquire(ROOT, JOB, "worker_2", ["a"], wait=0)
    # the old holder's renewal (orchestrator-lock's) now meets the new holder
    with pytest.raises(Conflict, match="locked by worker worker_2"):
        one.acquire(ROOT, JOB, "worker_1", ["a"], wait=0)
    # each listener subscribed again: a release wakes a waiter on the other server at once
    got = []
    waiter = threading.Thread(target=lambda: got.append(one.acquire(ROOT, JOB, "worker_1", ["a"], wait=20)))
    waiter.start()
    time.sleep(1.0)
    released = time.monotonic()
    two.release(ROOT, theirs.lock_id, "worker_2")
    waiter.join(10)
    assert got and got[0].worker == "worker_1" and got[0].lock_id != held.lock_id
    assert time.monotonic() - released < 2
    # Redis gone: a request is a 503 that names it (never its password); a worker's end is logged
    fresh_redis.stop()
    with pytest.raises(Unavailable) as caught:
        one.acquire(ROOT, JOB, "worker_3", ["b"], wait=0)
    assert "the path locks live in Redis at test (distributed.redis_url), which does not answer" in caught.value.message
    assert fresh_redis.password not in caught.value.message
    assert one.release_worker(ROOT, "worker_1") == []


def test_the_engine_keeps_its_locks_in_redis_only_under_rq(redis_server, unique_prefix, tmp_path):
    local = path_locks(SYSTEM_CLOCK, make_settings(tmp_path))
    assert isinstance(local, PathLocks)
    rq = {"executor": "rq", "redis_url": redis_server.url, "queue_prefix": unique_prefix}
    table = path_locks(SYSTEM_CLOCK, make_settings(tmp_path, distributed=rq, tasks={"lock_lease": 120}))
    try:
        assert isinstance(table, RedisPathLocks)
        lock = table.acquire(ROOT, JOB, None, ["src"], wait=0)
        client = connect(redis_server.url)
        key = Names(unique_prefix).lock(ROOT, lock.lock_id)
        assert json.loads(client.get(key))["paths"] == ["src"]  # type: ignore[arg-type]
        assert 119_000 < client.pttl(key) <= 120_000  # Redis ends the lease
        assert client.smembers(Names(unique_prefix).locks(ROOT)) == {lock.lock_id.encode()}
    finally:
        table.close()


def test_an_engine_under_rq_keeps_its_locks_in_redis_and_closes_the_table_at_shutdown(redis_server, unique_prefix, tmp_path):
    from orchestrator.engine.core import Engine

    rq = {"executor": "rq", "redis_url": redis_server.url, "queue_prefix": unique_prefix}
    engine = Engine(make_settings(tmp_path, distributed=rq))
    try:
        table = engine.locks
        assert isinstance(table, RedisPathLocks) and table.names.prefix == unique_prefix
        assert table._listener.is_alive()
    finally:
        engine.shutdown(timeout=10)
    assert not table._listener.is_alive()


def test_a_wrong_or_missing_redis_password_is_a_clear_error(redis_server, unique_prefix, tmp_path):
    for url, words in (
        (redis_server.url_with("not-the-password"), "refused the password: set the right one in distributed.redis_url"),
        (f"redis://127.0.0.1:{redis_server.port}/0", "requires a password: add it to distributed.redis_url"),
    ):
        settings = make_settings(tmp_path, distributed={"executor": "rq", "redis_url": url, "queue_prefix": unique_prefix})
        with pytest.raises(ConfigError) as caught:
            path_locks(SYSTEM_CLOCK, settings)
        assert words in caught.value.message and "not-the-password" not in caught.value.message


def test_orchestrator_lock_retakes_its_lock_after_redis_lost_it_and_releases_the_new_one(
    make_live, fresh_redis, unique_prefix, tmp_path
):
    live = make_live(orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]}, git={"isolation": "folder"})
    live.engine.locks.close()  # the Redis table injected (the engine's workers stay local here)
    live.engine.locks = RedisPathLocks(
        connect(fresh_redis.url), Names(unique_prefix), SYSTEM_CLOCK, live.engine.settings.tasks, owns_client=True
    )
    job_id = live.submit(request="idle", tasks=["true"]).json()["job_id"]
    live.wait(job_id)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env.update(ORCHESTRATOR_PYTHON=sys.executable, ORCHESTRATOR_API_URL=live.url, ORCHESTRATOR_API_KEY=live.key)
    env["ORCHESTRATOR_JOB_ID"] = job_id
    base = f"/api/v1/jobs/{job_id}/locks"
    go = tmp_path / "go"
    lock_bin = str(REPO / "orchestrator" / "bin" / "orchestrator-lock")
    wait_for = f"while [ ! -e '{go}' ]; do sleep 0.02; done"
    proc = subprocess.Popen(
        [lock_bin, "a", "--lease", "1.5", "--", "sh", "-c", wait_for], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: live.call("GET", base).json()["locks"], what="the lock")
        (first,) = live.call("GET", base).json()["locks"]
        fresh_redis.restart(persist=False)
        assert live.call("GET", base).json()["locks"] == []
        wait_until(lambda: live.call("GET", base).json()["locks"], timeout=10, what="the renewal's new lock")
        (again,) = live.call("GET", base).json()["locks"]
        assert again["lock_id"] != first["lock_id"] and again["paths"] == ["a"]
    finally:
        go.touch()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "could not release" not in err
    assert live.call("GET", base).json()["locks"] == []  # the new lock released, not left to its lease


@pytest.fixture
def rq_live(tmp_path, redis_server, unique_prefix):
    """A real server whose settings say ``distributed.executor: rq`` (so its lock table is the
    engine's own choice), its workers kept on this machine by an explicit LocalExecutor: the
    locks' way through the API, orchestrator-lock and a worker's end, without nodes."""
    from orchestrator.cli.server import start_in_thread
    from orchestrator.engine.core import Engine
    from orchestrator.process.executor import LocalExecutor

    from .conftest import API_KEY, Live

    settings = make_settings(
        tmp_path,
        orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]},
        workers={"max_retries": 0, "sandbox_writable": [str(observed(tmp_path))]},  # where a test's workers keep a journal
        git={"isolation": "folder"},
        api={"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
        distributed={"executor": "rq", "redis_url": redis_server.url, "queue_prefix": unique_prefix},
    )
    engine = Engine(settings, executor=LocalExecutor())
    server = start_in_thread(settings, engine, port=0)
    yield Live(server.url, API_KEY, engine)
    engine.shutdown(timeout=10)
    server.close()


def test_workers_contend_through_orchestrator_lock_on_a_server_whose_locks_are_in_redis(
    rq_live, redis_server, unique_prefix, tmp_path
):
    assert isinstance(rq_live.engine.locks, RedisPathLocks)
    journal, go = observed(tmp_path) / "journal", tmp_path / "go"  # the workers write the journal, only read go
    step = f"echo start $ORCHESTRATOR_WORKER_ID >> '{journal}'; while [ ! -e '{go}' ]; do sleep 0.02; done; echo end $ORCHESTRATOR_WORKER_ID >> '{journal}'"
    task = f'orchestrator-lock shared/data.txt --wait 60 -- sh -c "{step}"'
    job_id = rq_live.submit(request="two", tasks=[task, task], config={"max_workers": 2}).json()["job_id"]
    base = f"/api/v1/jobs/{job_id}/locks"
    wait_until(lambda: rq_live.call("GET", base).json()["locks"], what="the first worker's lock")
    (held,) = rq_live.call("GET", base).json()["locks"]
    client = connect(redis_server.url)
    names = Names(unique_prefix)
    assert client.smembers(names.locks(job_id)) == {held["lock_id"].encode()}  # in Redis, under the prefix
    assert json.loads(client.get(names.lock(job_id, held["lock_id"])))["worker"] == held["worker"]  # type: ignore[arg-type]
    time.sleep(0.5)
    assert journal.read_text().count("start") == 1  # the other waits
    go.touch()
    doc = rq_live.wait(job_id)
    assert doc["status"] == "completed", doc
    lines = journal.read_text().split("\n")[:-1]
    assert [line.split()[0] for line in lines] == ["start", "end", "start", "end"]
    assert lines[0].split()[1] == lines[1].split()[1] != lines[2].split()[1] == lines[3].split()[1]
    assert rq_live.call("GET", base).json()["locks"] == []
    assert client.exists(names.locks(job_id)) == 0


def test_on_a_server_whose_locks_are_in_redis_a_lock_dies_with_its_worker(rq_live, tmp_path):
    go = tmp_path / "go"
    # the helper is killed (no release), the worker's process lives on until go appears
    task = f"orchestrator-lock held --lease 600 -- sh -c 'kill -KILL $PPID'; while [ ! -e '{go}' ]; do sleep 0.02; done"
    job_id = rq_live.submit(request="dies", tasks=[task]).json()["job_id"]
    base = f"/api/v1/jobs/{job_id}/locks"
    wait_until(lambda: rq_live.call("GET", base).json()["locks"], what="the lock")
    time.sleep(0.3)
    assert [lock["paths"] for lock in rq_live.call("GET", base).json()["locks"]] == [["held"]]
    go.touch()
    rq_live.wait(job_id)
    assert rq_live.call("GET", base).json()["locks"] == []


def test_a_workers_end_releases_its_locks_and_no_others_in_one_round_trip(redis_server, unique_prefix, tables, monkeypatch):
    """Every worker's end calls ``release_worker``, most of them holding no lock: one round trip to
    Redis each (it was a WATCH, the index, the read script and the reset), and only its own locks go."""
    table = tables(redis_server, unique_prefix)
    mine = [table.acquire(ROOT, JOB, "worker_1", [p], wait=0) for p in ("a", "b")]
    table.acquire(ROOT, JOB, "worker_2", ["c"], wait=0)
    table.acquire(ROOT, JOB, None, ["d"], wait=0)  # the admin key's (no worker)
    expired = table.acquire(ROOT, JOB, "worker_1", ["e"], lease=0.05, wait=0)  # gone by its lease, still in the index
    time.sleep(0.2)
    table.release_worker(ROOT, "worker_0")  # (a script's first call in a Redis loads it: a round trip once per Redis)
    sent: list[object] = []
    caller = threading.current_thread()
    real = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):  # each send is one round trip (a pipeline sends once)
        if threading.current_thread() is caller:
            sent.append(command)
        return real(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    gone = table.release_worker(ROOT, "worker_1")
    assert (sorted(lock.lock_id for lock in gone), len(sent)) == (sorted(lock.lock_id for lock in mine), 1)
    assert expired.lock_id not in {lock.lock_id for lock in gone}
    assert table.release_worker(ROOT, "worker_9") == [] and len(sent) == 2  # none held: one round trip too
    monkeypatch.undo()
    assert sorted(lock.paths[0] for lock in table.locks(ROOT)) == ["c", "d"]
