"""Shared-checkout locks: the lock table (conflicts, waits, leases on a driven
clock, renewal, release rules), then the API on a real waitress server and ``orchestrator-lock``
run by real worker processes of a folder-isolation job contending for one path.

Each test that takes ``backend`` runs on both tables: ``PathLocks`` (memory) and
``RedisPathLocks`` (cluster/locks.py, on a real redis-server); tests/test_cluster_locks.py has
what only Redis does (several servers, a Redis restart)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.checkouts.locks import LockTable, PathLocks, check_paths, overlaps
from orchestrator.clock import SYSTEM_CLOCK, Clock
from orchestrator.cluster.connect import connect
from orchestrator.cluster.locks import RedisPathLocks
from orchestrator.cluster.names import Names
from orchestrator.config.schema import TasksSettings
from orchestrator.engine.core import SPAWN_BIN
from orchestrator.errors import Conflict, Forbidden, InvalidParameter, JobNotFound
from orchestrator.testing import FakeClock

from .conftest import observed, wait_until

LOCK = str(Path(SPAWN_BIN) / "orchestrator-lock")
ROOT = "0123456789ab"
JOB = ROOT


class Backend:
    """Makes lock tables of one kind. Redis expires leases on its own (real) time, so a test that
    waits for a lease's end runs there on the system clock with leases scaled by ``scale``."""

    def __init__(self, redis_url: str | None = None, prefix: str = "") -> None:
        self.redis_url, self.prefix = redis_url, prefix
        self.scale = 1.0 if redis_url is None else 0.3
        self.made: list[LockTable] = []

    def table(self, clock: Clock = SYSTEM_CLOCK, timeout: float = 5.0, lease: float = 300.0) -> LockTable:
        settings = TasksSettings(lock_timeout=timeout, lock_lease=lease)
        made: LockTable
        if self.redis_url is None:
            made = PathLocks(clock, settings)
        else:
            made = RedisPathLocks(connect(self.redis_url), Names(self.prefix), clock, settings, owns_client=True)
        self.made.append(made)
        return made

    def timekeeper(self, auto: bool = False):
        """(clock, advance): a fake clock for memory, real time for Redis."""
        if self.redis_url is None:
            clock = FakeClock(auto=auto)
            return clock, clock.advance
        return SYSTEM_CLOCK, time.sleep


@pytest.fixture(params=["memory", pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.slow])])
def backend(request):
    if request.param == "memory":
        made = Backend()
    else:
        made = Backend(request.getfixturevalue("redis_server").url, request.getfixturevalue("unique_prefix"))
    yield made
    for one in made.made:
        one.close()


# -- the table ---------------------------------------------------------------------------------
def test_paths_conflict_when_equal_or_one_holds_the_other():
    assert overlaps("src", "src/a.py") and overlaps("src/a.py", "src") and overlaps("a", "a")
    assert overlaps(".", "x/y") and overlaps("x", ".")
    assert not overlaps("src/a.py", "src/a.pyc") and not overlaps("src", "srcs/a") and not overlaps("a/b", "a/c")


def test_paths_are_normalised_and_escaping_or_malformed_ones_are_422s_naming_the_entry():
    assert check_paths(["./src//a.py", "docs/", "src/a.py", ".", "a b"]) == ["src/a.py", "docs", ".", "a b"]
    for bad, index in ((["ok", "../x"], 1), (["/etc/passwd"], 0), (["a/../../b"], 0), (["C:/x"], 0), (["~/x"], 0)):
        with pytest.raises(InvalidParameter) as caught:
            check_paths(bad)
        assert caught.value.details["field"] == f"paths[{index}]"
        assert "escapes the shared folder" in caught.value.message
    for bad in ([], "a", [""], [3], ["a\0b"], ["x"] * 101):
        with pytest.raises(InvalidParameter) as caught:
            check_paths(bad)
        assert caught.value.details["field"].startswith("paths")


def test_a_conflicting_request_gets_409_naming_the_holder_and_an_unrelated_one_is_granted(backend):
    locks = backend.table()
    held = locks.acquire(ROOT, JOB, "worker_1", ["src"], wait=0)
    assert locks.acquire(ROOT, JOB, "worker_2", ["docs/a.md"], wait=0).paths == ["docs/a.md"]
    assert locks.acquire("ba9876543210", "ba9876543210", "worker_2", ["src"], wait=0)  # another tree
    with pytest.raises(Conflict) as caught:
        locks.acquire(ROOT, JOB, "worker_2", ["src/app.py"], wait=0)
    assert caught.value.message.startswith(f"locked by worker worker_1 of job {JOB} (paths: src; its lease ends in 300s)")
    assert caught.value.details["holder"]["lock_id"] == held.lock_id


def test_a_holders_own_locks_never_conflict_and_the_same_paths_again_renew_the_same_lock(backend):
    clock = FakeClock(auto=False)  # (Redis: the lease is real time; only the records' wall time moves)
    locks = backend.table(clock, lease=10)
    first = locks.acquire(ROOT, JOB, "worker_1", ["src", "docs"], wait=0)
    clock.advance(6)
    again = locks.acquire(ROOT, JOB, "worker_1", ["docs", "src"], wait=0)
    assert again.lock_id == first.lock_id and again.expires_at == clock.time() + 10
    inner = locks.acquire(ROOT, JOB, "worker_1", ["src/a.py"], wait=0)
    assert inner.lock_id != first.lock_id
    assert [lock.lock_id for lock in locks.locks(ROOT)] == [first.lock_id, inner.lock_id]


def test_an_expired_lease_frees_itself_on_the_engines_clock(backend):
    clock, advance = backend.timekeeper()  # Redis: its own clock ends the lease
    scale = backend.scale
    locks = backend.table(clock, lease=10 * scale)
    locks.acquire(ROOT, JOB, "worker_1", ["a"], wait=0)
    advance((9.5 if scale == 1 else 6) * scale)
    with pytest.raises(Conflict):
        locks.acquire(ROOT, JOB, "worker_2", ["a"], wait=0)
    advance((1 if scale == 1 else 5) * scale)
    assert locks.locks(ROOT) == []
    assert locks.acquire(ROOT, JOB, "worker_2", ["a"], wait=0).worker == "worker_2"


def test_a_waiting_request_is_granted_when_the_lease_ends_within_its_wait(backend):
    clock, _ = backend.timekeeper(auto=True)  # memory: a wait jumps the clock to the next lease end
    lease = 10 * backend.scale
    locks = backend.table(clock, lease=lease)
    locks.acquire(ROOT, JOB, "worker_1", ["a"], wait=0)
    start = clock.monotonic()
    assert locks.acquire(ROOT, JOB, "worker_2", ["a"], wait=30).worker == "worker_2"
    if backend.redis_url is None:
        assert clock.monotonic() - start == pytest.approx(10)
    else:  # woken at the lease's end (not by the 1 s re-check, nor the 30 s wait)
        assert lease - 0.05 <= clock.monotonic() - start < lease + 0.9


def test_a_waiting_request_runs_as_soon_as_the_holder_lets_go(backend):
    locks = backend.table()
    held = locks.acquire(ROOT, JOB, "worker_1", ["a"], wait=0)
    got = []
    waiter = threading.Thread(target=lambda: got.append(locks.acquire(ROOT, JOB, "worker_2", ["a/b"], wait=20)))
    waiter.start()
    time.sleep(0.3)
    assert not got  # still waiting
    released = time.monotonic()
    locks.release(ROOT, held.lock_id, "worker_1")
    waiter.join(10)
    assert got and got[0].worker == "worker_2"
    assert time.monotonic() - released < 2


def test_a_lock_dies_with_its_worker_and_wakes_a_waiter(backend):
    locks = backend.table()
    locks.acquire(ROOT, JOB, "worker_1", ["a"], wait=0)
    locks.acquire(ROOT, JOB, "worker_1", ["b"], wait=0)
    keep = locks.acquire(ROOT, JOB, "worker_3", ["c"], wait=0)
    got = []
    waiter = threading.Thread(target=lambda: got.append(locks.acquire(ROOT, JOB, "worker_2", ["a"], wait=20)))
    waiter.start()
    time.sleep(0.2)
    assert sorted(lock.paths[0] for lock in locks.release_worker(ROOT, "worker_1")) == ["a", "b"]
    waiter.join(10)
    assert got and [lock.lock_id for lock in locks.locks(ROOT)] == [keep.lock_id, got[0].lock_id]


def test_only_the_holder_or_the_admin_releases_and_an_unknown_lock_is_404(backend):
    locks = backend.table()
    held = locks.acquire(ROOT, JOB, "worker_1", ["a"], wait=0)
    with pytest.raises(Forbidden, match="held by worker_1, not worker worker_2"):
        locks.release(ROOT, held.lock_id, "worker_2")
    assert locks.release(ROOT, held.lock_id, None).lock_id == held.lock_id
    with pytest.raises(JobNotFound):
        locks.release(ROOT, held.lock_id, "worker_1")


def test_a_worker_that_ended_while_it_waited_is_granted_nothing(backend):
    locks = backend.table()
    with pytest.raises(Conflict, match="no longer running"):
        locks.acquire(ROOT, JOB, "worker_1", ["a"], wait=0, alive=lambda: False)
    assert locks.locks(ROOT) == []


# -- the API and orchestrator-lock on a real server --------------------------------------------
def until_file(path: Path) -> str:
    return f"while [ ! -e {shlex.quote(str(path))} ]; do sleep 0.02; done"


def lock_server(make_live, backend, command=("sh", "-c", "{task}"), writable=()):
    """A server whose lock table is ``backend``'s (Redis: injected, the engine's workers staying
    local: the API, orchestrator-lock and a worker's end are what these tests prove); its workers
    may also write the folders in ``writable`` (workers.sandbox_writable)."""
    live = make_live(
        orchestrator={"worker": "command", "command": list(command)},
        workers={"max_retries": 0, "sandbox_writable": [str(path) for path in writable]},
        git={"isolation": "folder"},
    )
    if backend.redis_url is not None:
        live.engine.locks.close()
        tasks = live.engine.settings.tasks
        live.engine.locks = backend.table(live.engine.clock, tasks.lock_timeout, tasks.lock_lease)
    return live


@pytest.mark.slow
def test_two_workers_contend_for_one_path_through_orchestrator_lock(make_live, tmp_path, backend):
    journal = observed(tmp_path) / "journal"  # outside the workers' folder: in their workers.sandbox_writable
    live = lock_server(make_live, backend, writable=[journal.parent])
    out = shlex.quote(str(journal))
    step = f"echo start $ORCHESTRATOR_WORKER_ID >> {out}; sleep 0.5; echo end $ORCHESTRATOR_WORKER_ID >> {out}"
    task = f"orchestrator-lock shared/data.txt --wait 60 -- sh -c {shlex.quote(step)}"
    job_id = live.submit(request="two", tasks=[task, task], config={"max_workers": 2}).json()["job_id"]
    doc = live.wait(job_id)
    assert doc["status"] == "completed", doc
    lines = journal.read_text().split("\n")[:-1]
    # one worker's command ran to its end before the other's started: never interleaved
    assert [line.split()[0] for line in lines] == ["start", "end", "start", "end"]
    assert lines[0].split()[1] == lines[1].split()[1] != lines[2].split()[1] == lines[3].split()[1]
    assert live.call("GET", f"/api/v1/jobs/{job_id}/locks").json()["locks"] == []


@pytest.mark.slow
def test_with_a_short_wait_the_second_worker_gets_409_naming_the_holder_and_fails(make_live, tmp_path, backend):
    live = lock_server(make_live, backend)
    go = tmp_path / "go"
    holder = f"orchestrator-lock shared --wait 5 -- sh -c {shlex.quote(until_file(go))}"
    job_id = live.submit(request="one", tasks=[holder], config={"max_workers": 1}).json()["job_id"]
    wait_until(lambda: live.call("GET", f"/api/v1/jobs/{job_id}/locks").json()["locks"], what="worker_1's lock")
    (held,) = live.call("GET", f"/api/v1/jobs/{job_id}/locks").json()["locks"]
    assert (held["worker"], held["job_id"], held["paths"]) == ("worker_1", job_id, ["shared"])
    # a second worker of the same tree (a child job's) asks for a path inside it with a short wait
    engine = live.engine
    key = engine.credentials.issue(job_id, job_id, "worker_1")
    child = live.submit(
        key=key,
        request="contender",
        tasks=["orchestrator-lock shared/x.txt --wait 0.5 -- echo never; echo exit=$? >&2; exit 9"],
    ).json()["job_id"]
    doc = live.wait(child)
    go.touch()
    live.wait(job_id)
    (contender,) = doc["results"]["tasks"]
    log = live.call("GET", f"/api/v1/jobs/{child}/workers/{contender['worker_id']}/log").text
    assert f"orchestrator-lock: locked by worker worker_1 of job {job_id} (paths: shared;" in log
    assert "waited 0.5s for it to let go" in log and "exit=75" in log and "never" not in log


@pytest.mark.slow
def test_a_lock_dies_when_its_worker_process_ends(make_live, tmp_path, backend):
    live = lock_server(make_live, backend)
    go = tmp_path / "go"
    # the helper is killed (no release), the worker's process lives on until go appears
    task = f"orchestrator-lock held --lease 600 -- sh -c 'kill -KILL $PPID'; {until_file(go)}"
    job_id = live.submit(request="dies", tasks=[task]).json()["job_id"]
    wait_until(lambda: live.call("GET", f"/api/v1/jobs/{job_id}/locks").json()["locks"], what="the lock")
    time.sleep(0.3)
    assert [lock["paths"] for lock in live.call("GET", f"/api/v1/jobs/{job_id}/locks").json()["locks"]] == [["held"]]
    go.touch()
    live.wait(job_id)
    assert live.call("GET", f"/api/v1/jobs/{job_id}/locks").json()["locks"] == []


@pytest.mark.slow
def test_lock_routes_lease_expiry_bad_bodies_and_who_may_release(make_live, tmp_path, backend):
    live = lock_server(make_live, backend)
    go = tmp_path / "go"
    job_id = live.submit(request="two", tasks=[until_file(go)] * 2, config={"max_workers": 2}).json()["job_id"]
    engine = live.engine
    wait_until(lambda: all(engine.worker_running(job_id, w) for w in ("worker_1", "worker_2")), what="both workers")
    one, two = (engine.credentials.issue(job_id, job_id, w) for w in ("worker_1", "worker_2"))
    base = f"/api/v1/jobs/{job_id}/locks"
    try:
        mine = live.call("POST", base, key=one, json={"paths": ["src"], "wait": 0})
        assert mine.status_code == 201, mine.text
        lock = mine.json()
        assert set(lock) == {"lock_id", "paths", "worker", "job_id", "acquired_at", "expires_at"}
        assert (lock["worker"], lock["job_id"]) == ("worker_1", job_id)
        # another worker cannot release it, nor take it
        refused = live.call("DELETE", f"{base}/{lock['lock_id']}", key=two)
        assert refused.status_code == 403 and "held by worker_1, not worker worker_2" in refused.json()["message"]
        busy = live.call("POST", base, key=two, json={"paths": ["src/a.py"], "wait": 0.2})
        assert busy.status_code == 409 and f"locked by worker worker_1 of job {job_id}" in busy.json()["message"]
        # bad bodies: 422 naming the field
        for body, field in (
            ({"paths": ["../x"]}, "paths[0]"),
            ({"paths": ["ok", "/abs/path"]}, "paths[1]"),
            ({"paths": "x"}, "paths"),
            ({"paths": ["x"], "lease": 0}, "lease"),
            ({"paths": ["x"], "wait": -1}, "wait"),
            ({"paths": ["x"], "holder": "me"}, "holder"),
            ([], "body"),
        ):
            answer = live.call("POST", base, key=two, json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert answer.json()["details"]["field"] == field
        assert live.call("DELETE", f"{base}/not-a-lock", key=two).status_code == 422
        assert live.call("DELETE", f"{base}/lk-{'0' * 16}", key=two).status_code == 404
        # a worker credential stays in its own tree
        other = live.submit(request="other", tasks=["true"]).json()["job_id"]
        live.wait(other)
        assert live.call("POST", f"/api/v1/jobs/{other}/locks", key=one, json={"paths": ["x"]}).status_code == 403
        # the holder releases; the admin key may release anyone's
        assert live.call("DELETE", f"{base}/{lock['lock_id']}", key=one).status_code == 204
        theirs = live.call("POST", base, key=two, json={"paths": ["src"], "wait": 0}).json()
        assert live.call("DELETE", f"{base}/{theirs['lock_id']}").status_code == 204
        # a lease ends by itself
        asked = time.monotonic()
        short = live.call("POST", base, json={"paths": ["tmp"], "lease": 3, "wait": 0})
        assert short.status_code == 201 and short.json()["worker"] is None
        assert short.json()["expires_at"] - short.json()["acquired_at"] == pytest.approx(3)
        assert [x["paths"] for x in live.call("GET", base, key=two).json()["locks"]] == [["tmp"]]
        wait_until(lambda: live.call("GET", base).json()["locks"] == [], timeout=15, what="the lease's end")
        assert time.monotonic() - asked >= 2.9
    finally:
        go.touch()
    live.wait(job_id)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["a"], "no command: put it after --"),
        (["--", "true"], "no PATH to lock"),
        (["a", "--"], "no command after --"),
        (["a", "--wait", "soon", "--", "true"], "--wait 'soon' is not a number of seconds"),
        (["a", "--bogus", "--", "true"], "unknown option --bogus"),
    ],
)
def test_orchestrator_lock_usage_errors_exit_2(argv, words):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    done = subprocess.run(
        [LOCK, *argv], env={**env, "ORCHESTRATOR_PYTHON": sys.executable}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and words in done.stderr and "usage: orchestrator-lock" in done.stderr


def test_orchestrator_lock_outside_a_worker_says_so():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    done = subprocess.run(
        [LOCK, "a", "--", "true"], env={**env, "ORCHESTRATOR_PYTHON": sys.executable}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "orchestrator-lock runs inside a worker" in done.stderr


@pytest.mark.slow
def test_orchestrator_lock_passes_the_exit_code_and_releases_on_failure_and_on_sigterm(make_live, tmp_path, backend):
    import signal

    live = lock_server(make_live, backend)
    job_id = live.submit(request="idle", tasks=["true"]).json()["job_id"]
    live.wait(job_id)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env.update(
        ORCHESTRATOR_PYTHON=sys.executable,
        ORCHESTRATOR_API_URL=live.url,
        ORCHESTRATOR_API_KEY=live.key,  # the admin key: the holder is "admin"
        ORCHESTRATOR_JOB_ID=job_id,
    )
    base = f"/api/v1/jobs/{job_id}/locks"

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LOCK, *argv], env=env, capture_output=True, text=True, timeout=60)

    done = run("a", "--", "sh", "-c", "exit 7")
    assert done.returncode == 7, done.stderr
    assert live.call("GET", base).json()["locks"] == []
    missing = run("a", "--", "no-such-command-here")
    assert missing.returncode == 127 and "cannot run 'no-such-command-here'" in missing.stderr
    assert live.call("GET", base).json()["locks"] == []
    # interrupted: the signal goes on to CMD, the lock is released, the code says which signal
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [LOCK, "a/b", "--", "sh", "-c", f"touch {shlex.quote(str(started))}; exec sleep 30"],
        env=env,
    )
    wait_until(started.exists, what="the command's start")
    assert [lock["paths"] for lock in live.call("GET", base).json()["locks"]] == [["a/b"]]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 128 + signal.SIGTERM
    assert live.call("GET", base).json()["locks"] == []


@pytest.mark.slow
def test_the_python_client_takes_renews_lists_and_releases_locks(make_live, backend):
    from orchestrator.api.client import OrchestratorClient

    live = lock_server(make_live, backend)
    job_id = live.submit(request="idle", tasks=["true"]).json()["job_id"]
    live.wait(job_id)
    client = OrchestratorClient(live.url, live.key)
    lock = client.lock(job_id, ["src", "docs"], lease=60, wait=0)
    assert lock["worker"] is None and lock["paths"] == ["src", "docs"]
    assert client.lock(job_id, ["docs", "src"], wait=0)["lock_id"] == lock["lock_id"]  # renewed
    assert [x["lock_id"] for x in client.locks(job_id)["locks"]] == [lock["lock_id"]]
    client.unlock(job_id, lock["lock_id"])
    assert client.locks(job_id)["locks"] == []
    with pytest.raises(JobNotFound):
        client.unlock(job_id, lock["lock_id"])
