"""``python -m orchestrator node`` as real subprocesses against a real redis-server: it runs
attempts (cluster/attempt.py) with the local runner and reports them, obeys terminate, stops a
fenced attempt, advertises only the kinds it has, refuses a wrong password and a workspace it
cannot see, takes its processes with it when SIGKILLed (sweeping the rest when it comes back),
and rides out a Redis restart."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis

from orchestrator import protocol
from orchestrator.cluster.connect import connect
from orchestrator.cluster.leases import RQ_FUNCTION, AttemptSpec, Leases
from orchestrator.cluster.marker import MARKER_FILE
from orchestrator.cluster.names import Names
from orchestrator.cluster.secret_file import write_secret_file
from orchestrator.cluster.signing import SpecSigner, key_paths
from orchestrator.process.cgroups import SPARE, Enforcement, hierarchies, spare_owner
from orchestrator.process.procscan import parent_of, process_alive
from orchestrator.process.runner import ProcessRunner
from orchestrator.workers.environment import SPAWN_BIN

from .cluster_fixtures import ROOT, start_node, stop_all, write_server_marker
from .conftest import wait_until
from .redisserver import RedisServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _stop_nodes():
    yield
    stop_all()


def ops_on(url: str, prefix: str, signer: SpecSigner | None = None) -> Leases:
    return Leases(connect(url), Names(prefix), signer)


def enqueue(ops: Leases, ws: Path, attempt_id: str, argv: list[str], *, kind: str = "command", lease: float = 3.0) -> AttemptSpec:
    spec = AttemptSpec(
        id=attempt_id,
        token=ops.new_token(),
        kind=kind,
        tag=f"{ops.names.prefix}.{attempt_id}",
        argv=argv,
        cwd=str(ws),
        env={"ORCHESTRATOR_JOB_ID": "job1"},
        log_path=str(ws / f"{attempt_id}.log"),
        exit_file=str(ws / f"{attempt_id}.exit"),
        lease=lease,
    )
    ops.enqueue(spec)
    return spec


wait_for = functools.partial(wait_until, timeout=20.0)  # the nodes here take seconds to start


def state(ops: Leases, attempt_id: str) -> str | None:
    record = ops.read(attempt_id)
    return record.get("state") if record else None


def setup(server: RedisServer, prefix: str, tmp_path: Path) -> tuple[Leases, Path]:
    ws = tmp_path / "ws"
    signer = write_server_marker(server.url, prefix, ws)
    return ops_on(server.url, prefix, signer), ws


def test_a_node_runs_an_attempt_writes_its_log_and_reports_start_and_end(redis_server, unique_prefix, tmp_path):
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    node = start_node(redis_server.url, unique_prefix, name="n1", kinds="command", slots=2)
    info = node.registered()
    assert info is not None and info.kinds == ["command"] and info.slots == 2 and info.pid == node.pid
    assert 0 < info.memory_available <= info.memory_total  # what the server's admission by memory reads
    spec = enqueue(ops, ws, "a1", ["sh", "-c", 'echo hi; echo "job=$ORCHESTRATOR_JOB_ID"; exit 3'])
    wait_for(lambda: state(ops, "a1") == "ended", what="the attempt to end")
    record = ops.read("a1")
    assert record["code"] == "3" and record["node"] == "n1" and record["kill_rung"] == "none"
    assert (ws / "a1.log").read_text() == "hi\njob=job1\n"
    assert (ws / "a1.exit").read_text() == "exit 3\n"
    events = ops.next_events(1)
    assert [(e["event"], e["token"], e.get("node")) for e in events] == [
        ("started", spec.token, "n1"),
        ("ended", spec.token, "n1"),
    ]
    assert events[1]["code"] == 3
    # The node's own clock: before its spawn, and when it saw the end (the server records both).
    assert spec.enqueued_at <= events[0]["spawned_at"] <= events[1]["exited_at"] <= events[1]["at"]
    assert node.stop() == 0
    assert node.registered() is None  # a clean stop leaves the registry


def test_a_node_waits_for_the_servers_marker_and_refuses_a_workspace_it_cannot_see(redis_server, unique_prefix, tmp_path):
    ws = tmp_path / "ws"
    key = {"distributed": {"verify_key_file": str(key_paths(ws)[1])}}  # where the server will write it
    node = start_node(redis_server.url, unique_prefix, name="early", wait=False, config=key)
    wait_for(lambda: "waiting for a server" in node.output(), what="the node to say it waits")
    write_server_marker(redis_server.url, unique_prefix, ws)
    node.wait_registered()
    (ws / MARKER_FILE).unlink()  # this "machine" no longer sees the workspace at that path
    late = start_node(redis_server.url, unique_prefix, name="late", wait=False)
    assert late.process.wait(30) == 2
    assert f"cannot see the server's workspace at {ws.resolve()}" in late.output()
    assert "Traceback" not in late.output()


def test_a_wrong_redis_password_is_a_clear_error_without_the_password(redis_server, unique_prefix, tmp_path):
    wrong = "not-the-password-4711"
    found = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "node",
            "--redis",
            redis_server.url_with(wrong),
            "--prefix",
            unique_prefix,
            "--kinds",
            "command",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = found.stdout + found.stderr
    assert found.returncode == 2, said
    assert "refused the password" in said and "--redis" in said
    assert wrong not in said and redis_server.password not in said and "Traceback" not in said
    # Without --redis (which ps shows), the URL comes from the node's settings, e.g. the environment.
    env = {**os.environ, "ORCHESTRATOR__DISTRIBUTED__REDIS_URL": redis_server.url_with(wrong)}
    found = subprocess.run(
        [sys.executable, "-m", "orchestrator", "node", "--prefix", unique_prefix, "--kinds", "command"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = found.stdout + found.stderr
    assert found.returncode == 2 and "refused the password" in said and "distributed.redis_url" in said, said
    assert wrong not in said


def test_a_bad_node_name_is_refused_before_anything_starts(redis_server, unique_prefix):
    found = subprocess.run(
        [sys.executable, "-m", "orchestrator", "node", "--redis", redis_server.url, "--prefix", unique_prefix, "--name", "a b/c"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 2 and "--name 'a b/c' is not a valid node name" in found.stderr, found.stderr


def test_a_node_advertises_and_takes_only_the_kinds_it_has(redis_server, unique_prefix, tmp_path):
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    # Its config may be the server's (executor rq): it still checks its own PATH.
    config = {"orchestrator": {"claude_command": str(tmp_path / "no-such-claude")}, "distributed": {"executor": "rq"}}
    node = start_node(redis_server.url, unique_prefix, name="nc", kinds="claude,command", config=config)
    assert node.registered().kinds == ["command"]
    assert "not taking kind claude" in node.output() and "no-such-claude" in node.output()
    enqueue(ops, ws, "c1", ["sh", "-c", "exit 0"], kind="claude")
    enqueue(ops, ws, "k1", ["sh", "-c", "exit 0"], kind="command")
    wait_for(lambda: state(ops, "k1") == "ended", what="the command attempt to end")
    assert state(ops, "c1") == "queued"  # nobody here takes claude
    # A node with none of its kinds usable does not start.
    none = start_node(redis_server.url, unique_prefix, name="nn", kinds="claude", config=config, wait=False)
    assert none.process.wait(30) == 2
    assert "none of the kinds claude can run here" in none.output()


def test_a_job_that_calls_anything_but_attempt_run_is_refused(redis_server, unique_prefix, tmp_path):
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    start_node(redis_server.url, unique_prefix, name="nj")
    victim = tmp_path / "keep-me"
    victim.write_text("x")
    queue = ops.queue("command")
    job = queue.enqueue_call("os.remove", args=(str(victim),), job_id="evil")
    registry = queue.failed_job_registry
    wait_for(lambda: "evil" in registry.get_job_ids(), what="the job to be failed")
    job.refresh()
    assert "refused" in (job.latest_result().exc_string or "") and RQ_FUNCTION in job.latest_result().exc_string
    assert victim.exists()
    enqueue(ops, ws, "ok1", ["sh", "-c", "exit 0"])  # and the node goes on taking attempts
    wait_for(lambda: state(ops, "ok1") == "ended", what="the next attempt")


def test_the_worker_gets_the_nodes_environment_and_the_secret_file_once(redis_server, unique_prefix, tmp_path):
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    config = {"workers": {"inherit_env": False, "env": {"NODE_CREDENTIAL": "the-nodes-own"}}}
    start_node(redis_server.url, unique_prefix, name="ne", config=config)
    secret = ws / "s1.secret"
    write_secret_file(secret, {protocol.API_KEY: "worker-key-1"})
    script = 'echo "$NODE_CREDENTIAL|$ORCHESTRATOR_API_KEY|$ORCHESTRATOR_JOB_ID|${PYTEST_CURRENT_TEST:-absent}|$ORCHESTRATOR_PYTHON"; echo "$PATH"'
    spec = AttemptSpec(
        id="s1",
        token=ops.new_token(),
        kind="command",
        tag=f"{unique_prefix}.s1",
        argv=["sh", "-c", script],
        cwd=str(ws),
        # A server that (wrongly) sent its own PATH: the node keeps its own.
        env={protocol.JOB_ID: "job9", "PATH": "/server/only/bin"},
        log_path=str(ws / "s1.log"),
        exit_file=None,
        secret_env_file=str(secret),
    )
    ops.enqueue(spec)
    wait_for(lambda: state(ops, "s1") == "ended", what="the attempt to end")
    first, path = (ws / "s1.log").read_text().splitlines()
    assert first == f"the-nodes-own|worker-key-1|job9|absent|{sys.executable}"
    # the node's orchestrator commands first, not its interpreter's folder: `python` is the user's
    assert path.split(os.pathsep)[0] == SPAWN_BIN and os.path.dirname(sys.executable) not in path.split(os.pathsep)[:2]
    assert "/server/only/bin" not in path
    assert not secret.exists()  # read once, then gone


def test_a_missing_command_is_reported_as_127_with_a_line_in_the_log(redis_server, unique_prefix, tmp_path):
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    start_node(redis_server.url, unique_prefix, name="nm")
    enqueue(ops, ws, "m1", ["no-such-program-here", "--x"])
    wait_for(lambda: state(ops, "m1") == "ended", what="the attempt to end")
    record = ops.read("m1")
    assert record["code"] == "127" and "no-such-program-here" in record["note"] and "nm" in record["note"]
    assert "no-such-program-here" in (ws / "m1.log").read_text()


@pytest.mark.parametrize("how", ["SIGTERM to the node", "Ctrl+C (SIGINT to its process group)"])
def test_a_clean_stop_ends_the_running_attempts_and_reports_them(redis_server, unique_prefix, tmp_path, how):
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    node = start_node(redis_server.url, unique_prefix, name="ns", slots=2)
    specs = [enqueue(ops, ws, f"s{i}", ["sh", "-c", "sleep 60 & sleep 61; wait"]) for i in (1, 2)]
    for spec in specs:
        wait_for(lambda spec=spec: ops.read(spec.id).get("started_at"), what="the attempts to start")
    wait_for(lambda: node.registered() and node.registered().running == 2, what="the node to publish both")
    if how.startswith("SIGTERM"):
        assert node.stop() == 0
    else:
        os.killpg(node.pid, signal.SIGINT)  # what a terminal sends: the node and its pool's workers
        assert node.process.wait(30) == 0
    for spec in specs:
        record = ops.read(spec.id)
        assert record["state"] == "ended" and record["kill_rung"] == "SIGTERM" and record["note"] == "node stopping"
        assert ProcessRunner().tagged(spec.run_tag) == []
    assert node.registered() is None and "Traceback" not in node.output()


def test_terminate_through_control_runs_the_kill_ladder_and_leaves_no_tagged_process(redis_server, unique_prefix, tmp_path):
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    start_node(redis_server.url, unique_prefix, name="nt")
    # It ignores SIGTERM, and so does the child it leaves in the background: SIGKILL ends them.
    spec = enqueue(ops, ws, "t1", ["sh", "-c", "trap '' TERM; sleep 60 & sleep 61; wait"])
    wait_for(lambda: ops.read("t1").get("started_at"), what="the attempt to start")
    wait_for(lambda: len(ProcessRunner().tagged(spec.run_tag)) >= 3, what="its processes")
    ops.terminate("t1", spec.token, signal.SIGTERM, 0.5)
    wait_for(lambda: state(ops, "t1") == "ended", what="the attempt to end")
    record = ops.read("t1")
    assert record["kill_rung"] == "SIGKILL" and record["code"] == str(-signal.SIGKILL)
    assert ProcessRunner().tagged(spec.run_tag) == []


def test_a_fenced_attempt_is_stopped_by_its_node_and_its_result_ignored(redis_server, unique_prefix, tmp_path):
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    start_node(redis_server.url, unique_prefix, name="nf", lease=3.0)
    spec = enqueue(ops, ws, "f1", ["sh", "-c", "sleep 60 & sleep 61; wait"], lease=1.5)
    wait_for(lambda: ops.read("f1").get("started_at"), what="the attempt to start")
    wait_for(lambda: ProcessRunner().tagged(spec.run_tag), what="its processes")
    # The server re-enqueued it (a new token) without an RQ job: the running one is fenced.
    again = AttemptSpec(**{**spec.__dict__, "token": ops.new_token()})
    ops.record(again)
    wait_for(lambda: not ProcessRunner().tagged(spec.run_tag), timeout=15, what="the node to end the fenced attempt")
    record = ops.read("f1")
    assert record["state"] == "queued" and record["token"] == str(again.token)  # its late end was not recorded


def test_a_second_run_of_an_attempt_outlives_the_end_of_the_first(redis_server, unique_prefix, tmp_path):
    """Redis lost an attempt a node was running before the server heard of it, and the server
    enqueued it again: a second run of the same worker starts beside the first. The first, fenced
    at its next renewal, is stopped, and its sweep takes its own run's processes only: the second
    runs to its end (it was SIGKILLed by the first's sweep when both carried the worker's tag)."""
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    start_node(redis_server.url, unique_prefix, name="ns", slots=2, lease=6.0)
    spec = enqueue(ops, ws, "s1", ["sh", "-c", "sleep 4; echo ran >> runs.txt"], lease=6.0)
    wait_for(lambda: ops.read("s1").get("started_at"), what="the first run to start")
    again = AttemptSpec(**{**spec.__dict__, "token": ops.new_token()})
    ops.enqueue(again)  # a new hash and RQ job, as the server enqueues an attempt Redis lost
    wait_for(lambda: ops.read("s1").get("started_at") and ops.read("s1")["token"] == str(again.token), what="the second run")
    assert spec.run_tag != again.run_tag and spec.run_tag.startswith(f"{spec.tag}.")
    wait_for(lambda: state(ops, "s1") == "ended", timeout=30, what="the second run's end")
    assert ops.read("s1")["code"] == "0" and ops.read("s1")["token"] == str(again.token)
    assert (ws / "runs.txt").read_text() == "ran\n"  # the first was stopped before its line, the second wrote it


def test_a_sigkilled_node_takes_its_processes_and_its_successor_sweeps_the_rest(redis_server, unique_prefix, tmp_path):
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    node = start_node(redis_server.url, unique_prefix, name="nk", slots=2)
    # Two grandchildren out of the worker's process group (the supervisor kills the group when the
    # lifeline of the node's worker closes; these only the successor's sweep by tag reaches).
    spec = enqueue(ops, ws, "k1", ["sh", "-c", "setsid sleep 300 & setsid sleep 301 & wait"], lease=3)
    wait_for(lambda: ops.read("k1").get("started_at"), what="the attempt to start")
    worker = int(ops.read("k1")["pid"])
    # Three tagged, two of them exec'd into sleep (each is a forked sh, then setsid, first)
    sleeping = lambda: [pid for pid in ProcessRunner().tagged(spec.run_tag) if _argv0(pid) == "sleep"]  # noqa: E731
    wait_for(lambda: len(ProcessRunner().tagged(spec.run_tag)) == 3 and len(sleeping()) == 2, what="sh and its two sleeps")
    # The node's supervisor starts the worker, with no shim: its tree is the supervisor's, not the node's.
    supervisor = parent_of(worker)
    assert supervisor is not None and supervisor not in _node_tree(node.pid) and Path(_argv0(worker)).name == "sh"
    tree = [*_node_tree(node.pid), worker, *_node_tree(worker), supervisor]
    sleeps = {pid for pid in ProcessRunner().tagged(spec.run_tag) if _argv0(pid) == "sleep"}
    assert len(sleeps) == 2 and len(set(tree) - sleeps) >= 4  # two pool workers (one runs the attempt), sh, supervisor
    node.kill()
    # The parent-death signal takes the pool's workers; the supervisor sees the lifeline close and
    # kills the worker's group (sh), then leaves once its last child is gone.
    alive = lambda: [(pid, _argv0(pid)) for pid in set(tree) - sleeps if process_alive(pid, None)]  # noqa: E731
    wait_for(lambda: not alive(), timeout=30, what=f"the node's tree to die: {alive()}")
    assert not process_alive(worker, None)
    assert set(ProcessRunner().tagged(spec.run_tag)) == sleeps  # a grandchild in a session of its own is not in the group
    start_node(redis_server.url, unique_prefix, name="nk2", slots=1)  # another node on this host
    wait_for(lambda: not ProcessRunner().tagged(spec.run_tag), timeout=30, what="the sweep of the dead node's leftovers")
    host_dir = next((ws / ".cluster" / "nodes").iterdir())
    assert sorted(p.name for p in host_dir.iterdir()) == ["nk2.attempts", "nk2.json"]


@pytest.mark.parametrize("persist", [False, True])
def test_a_redis_restart_loses_no_running_attempt(fresh_redis, unique_prefix, tmp_path, persist):
    ops, ws = setup(fresh_redis, unique_prefix, tmp_path)
    node = start_node(fresh_redis.url, unique_prefix, name="nr", lease=3)
    spec = enqueue(ops, ws, "r1", ["sh", "-c", "sleep 6; echo done; exit 5"], lease=6)
    wait_for(lambda: ops.read("r1").get("started_at"), what="the attempt to start")
    # Down for longer than RQ's monitoring interval (node.MONITOR_INTERVAL), shorter than the lease.
    fresh_redis.stop(signal.SIGTERM if persist else signal.SIGKILL)
    if not persist:
        for path in fresh_redis.folder.glob("appendonly*"):
            shutil.rmtree(path)
    time.sleep(3)
    fresh_redis.start()
    ops = ops_on(fresh_redis.url, unique_prefix)
    wait_for(lambda: state(ops, "r1") == "ended", timeout=30, what="the attempt's end to reach Redis")
    record = ops.read("r1")
    assert record["code"] == "5" and record["node"] == "nr" and record["token"] == str(spec.token)
    assert (ws / "r1.log").read_text() == "done\n"
    events = [e["event"] for e in ops.next_events(1)]
    assert events == (["started", "ended"] if persist else ["ended"])  # without its data, "started" is gone
    wait_for(node.registered, timeout=10, what="the node to publish itself again")
    enqueue(ops, ws, "r2", ["sh", "-c", "exit 0"])  # and it takes new work
    wait_for(lambda: state(ops, "r2") == "ended", timeout=30, what="a new attempt after the restart")
    assert "quitting" not in node.output(), node.output()  # no RQ worker quit (its attempt would have died)


def _argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def _node_tree(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), its own process excluded."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_an_attempt_whose_node_cannot_reach_redis_for_a_lease_is_ended(fresh_redis, unique_prefix, tmp_path):
    ops, ws = setup(fresh_redis, unique_prefix, tmp_path)
    start_node(fresh_redis.url, unique_prefix, name="nu", lease=3)
    spec = enqueue(ops, ws, "u1", ["sh", "-c", "sleep 60 & sleep 61; wait"], lease=1.5)
    wait_for(lambda: ops.read("u1").get("started_at"), what="the attempt to start")
    fresh_redis.stop(signal.SIGTERM)  # its data (append-only) is kept
    # Its lease has expired in everyone's eyes: the server will retry it elsewhere, so it must end.
    wait_for(lambda: not ProcessRunner().tagged(spec.run_tag), timeout=15, what="the node to end the attempt")
    fresh_redis.start()
    ops = ops_on(fresh_redis.url, unique_prefix)
    wait_for(lambda: state(ops, "u1") == "ended", timeout=20, what="its end to be reported")
    record = ops.read("u1")
    assert record["note"] == "Redis unreachable for longer than the lease" and record["kill_rung"] == "SIGTERM"


def test_the_lease_a_claim_takes_is_renewed_in_time_whatever_lease_the_server_asked(redis_server, unique_prefix, tmp_path):
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    start_node(redis_server.url, unique_prefix, name="nl", lease=1.5)  # the claim's lease: 1.5 s
    spec = enqueue(ops, ws, "l1", ["sleep", "30"], lease=30)  # the server's: renewed every 10 s from then on
    wait_for(lambda: ops.read("l1").get("started_at"), what="the attempt to start")
    time.sleep(2.5)
    assert ops.lease_holder("l1") == f"nl:{spec.token}"
    ops.terminate("l1", spec.token, signal.SIGTERM, 1.0)
    wait_for(lambda: state(ops, "l1") == "ended", what="the attempt to end")


def test_a_second_node_with_a_live_nodes_name_on_the_same_host_is_refused(redis_server, unique_prefix, tmp_path):
    setup(redis_server, unique_prefix, tmp_path)
    first = start_node(redis_server.url, unique_prefix, name="same")
    second = start_node(redis_server.url, unique_prefix, name="same", wait=False)
    assert second.process.wait(30) == 2
    assert f"a node named same already runs on this host (pid {first.pid})" in second.output()
    assert first.registered() is not None and first.process.poll() is None


def test_a_sandboxed_attempt_cannot_reach_the_nodes_supervisor(redis_server, unique_prefix, tmp_path):
    """The node's supervisor (its socket starts processes unconfined) is hidden from a sandboxed
    attempt, which still runs under the shim with its exact status."""
    from orchestrator.process.backends import probe

    support = probe()
    if not support.available:
        pytest.skip(f"no sandbox on this machine: {support.reason}")
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    start_node(redis_server.url, unique_prefix, name="nb", slots=1)
    enqueue(ops, ws, "b0", ["sh", "-c", "exit 0"])  # the node's supervisor starts with its first attempt
    wait_for(lambda: state(ops, "b0") == "ended", what="the first attempt's end")
    record = json.loads(next((ws / ".cluster" / "nodes").glob("*/nb.json")).read_text())
    folder = Path(record["supervisor_dir"])
    assert any(p.name.endswith(".sock") for p in folder.iterdir())
    code = (
        "import os, socket, sys; d = sys.argv[1]; print('sees', sorted(os.listdir(d)) if os.path.isdir(d) else 'nothing')\n"
        "for size in (0, 5 << 20, 200 << 20, 4096 << 20):\n"
        "    try: s = socket.socket(socket.AF_UNIX); s.connect(os.path.join(d, f'supervisor-{size}.sock')); print('REACHED', size)\n"
        "    except OSError as e: print('refused', e.errno)\n"
        "sys.exit(7)\n"
    )
    spec = AttemptSpec(
        id="b1",
        token=ops.new_token(),
        kind="command",
        tag=f"{ops.names.prefix}.b1",
        argv=[sys.executable, "-c", code, str(folder)],
        cwd=str(ws),
        env={"ORCHESTRATOR_JOB_ID": "job1"},
        log_path=str(ws / "b1.log"),
        exit_file=str(ws / "b1.exit"),
        lease=3.0,
        sandbox={"writable": [str(ws)]},
    )
    ops.enqueue(spec)
    wait_for(lambda: state(ops, "b1") == "ended", what="the sandboxed attempt's end")
    log = (ws / "b1.log").read_text()
    assert ops.read("b1")["code"] == "7", log
    assert "sees []" in log and "REACHED" not in log and log.count("refused") == 4, log


def _probe(script: str, redis_url: str, queue: str) -> subprocess.CompletedProcess[str]:
    """Run a NodeWorker probe in a process of its own (a NodeWorker dies with its parent); it must exit 0."""
    done = subprocess.run([sys.executable, "-c", script, redis_url, queue], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


SUSPENSION_PROBE = """
import sys, time
import rq.worker.base
from rq import Queue
from rq.exceptions import StopRequested
from rq.suspension import suspend
from orchestrator.cluster import node
from orchestrator.cluster.connect import connect

client = connect(sys.argv[1])
reads = []
real = rq.worker.base.is_suspended
rq.worker.base.is_suspended = lambda *a, **k: reads.append(1) or real(*a, **k)
worker = node.NodeWorker([Queue(sys.argv[2], connection=client)], connection=client)
for _ in range(5):  # a worker's loop before five jobs in a row
    worker.check_for_suspension(False)
print("reads", len(reads))
suspend(client)
worker._suspension_read = time.monotonic() - node.MONITOR_INTERVAL  # the interval has passed
try:
    worker.check_for_suspension(True)
except StopRequested:
    print("suspended")
"""


def test_a_node_worker_reads_rqs_suspension_once_an_interval_not_before_every_attempt(fresh_redis, unique_prefix):
    """RQ reads its suspension key before every job: a round trip an attempt. A node's worker reads
    it once per MONITOR_INTERVAL, and still stops on ``rq suspend`` once the interval has passed.
    (A process of its own: a NodeWorker dies with its parent; a Redis of its own: RQ's suspension
    key has no prefix.)"""
    done = _probe(SUSPENSION_PROBE, fresh_redis.url, f"{unique_prefix}-command")
    assert done.stdout.split("\n")[:2] == ["reads 1", "suspended"], done.stdout + done.stderr


HEARTBEAT_PROBE = """
import sys, threading, time
from rq import Queue
from orchestrator.cluster import node
from orchestrator.cluster.connect import connect

client = connect(sys.argv[1])
worker = node.NodeWorker([Queue(sys.argv[2], connection=client)], connection=client, job_monitoring_interval=0.1)
beats = []
real = worker.heartbeat
worker.heartbeat = lambda *a, **k: beats.append(time.monotonic()) or real(*a, **k)
started = []
real_start = threading.Thread.start
threading.Thread.start = lambda self: started.append(self.name) or real_start(self)
for _ in range(5):  # five short attempts
    with worker._beating():
        pass
with worker._beating():  # a long one
    time.sleep(1.0)
    during = len(beats)
ended = time.monotonic()
time.sleep(0.5)
print("threads", started.count("rq-heartbeat"), "beats", "yes" if during >= 3 else during,
      "after", sum(1 for t in beats if t > ended + 0.15))
"""


def test_a_node_worker_keeps_one_heartbeat_thread_that_beats_only_while_an_attempt_runs(redis_server, unique_prefix):
    """RQ's worker heartbeat while an attempt runs comes from one thread the worker keeps, not
    one started and joined per attempt; it beats every interval during an attempt and not after."""
    done = _probe(HEARTBEAT_PROBE, redis_server.url, f"{unique_prefix}-command")
    assert done.stdout.strip() == "threads 1 beats yes after 0", done.stdout + done.stderr


SPARES = any(version is Enforcement.CGROUP_V1 for version, _ in hierarchies().bases.values())


def _spares_by_process(pids: set[int]) -> dict[int, list[str]]:
    """The spare cgroups (cgroups.Confined's, named ``<SPARE><pid>.<start>-<runner>-<n>``) of processes ``pids``."""
    found: dict[int, list[str]] = {}
    for cgroup in hierarchies().find_prefix(SPARE):
        owner = spare_owner(cgroup.name)
        if owner is not None and owner[0] in pids:
            found.setdefault(owner[0], []).append(cgroup.name)
    return found


@pytest.mark.skipif(not SPARES, reason="spare cgroups are v1's (v2 cannot rename a cgroup), made by a user who may")
def test_a_node_worker_runs_its_attempts_with_one_runner_whose_spare_cgroup_goes_with_it(redis_server, unique_prefix, tmp_path):
    """A node's worker keeps one runner for its attempts: an ended attempt's cgroup (a spare) is the
    next one's, not a cgroup left behind per attempt while the worker lives; and the worker's spares
    are removed when it leaves (a clean stop), not left to another process's look for a dead one's."""
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    node = start_node(redis_server.url, unique_prefix, name="ns", slots=1)  # under the default caps: a cgroup each
    for n in range(4):
        enqueue(ops, ws, f"c{n}", ["true"])
        wait_for(lambda n=n: state(ops, f"c{n}") == "ended", what=f"attempt c{n} to end")
        assert ops.read(f"c{n}")["code"] == "0"
    # The node's processes once an attempt has run: a node is registered before its pool has forked
    # its workers, so a look right after the start can miss the one that runs them.
    workers = set(_node_tree(node.pid))
    spares = _spares_by_process(workers)
    # One spare, the last attempt's, named by one runner (one made per attempt left four, one each)
    assert [len(names) for names in spares.values()] == [1], spares
    assert len({name.rsplit("-", 1)[0] for names in spares.values() for name in names}) == 1, spares
    assert node.stop() == 0
    assert _spares_by_process(workers) == {}


def test_a_node_workers_kept_control_thread_hands_each_terminate_to_the_attempt_it_names_at_once(
    redis_server, unique_prefix, monkeypatch
):
    """One thread a node worker keeps (attempt.Controls) reads the worker's control list for all its
    attempts. A terminate reaches the attempt it names as soon as it is pushed: the second attempt's
    too, though the thread had been reading since the first (its read is on the worker's list, not
    on the last attempt's, where it would wait out a read of WORKER_CONTROL_WAIT, 30 s here); one
    the thread read before its attempt was registered (the claim moved it there first) is handed
    over at the registration; one for an attempt that has ended stops nothing."""
    from orchestrator.cluster import attempt
    from orchestrator.process.runner import Wakeup

    monkeypatch.setattr(attempt, "WORKER_CONTROL_WAIT", 30.0)
    ops = Leases(redis.Redis.from_url(redis_server.url), Names(unique_prefix))  # no socket timeout: a read of 30 s
    key = ops.names.worker_control(f"{unique_prefix}-w")
    controls = attempt.Controls(ops, key, grace=5.0)
    wakes: list[Wakeup] = []

    def stop() -> attempt._Stop:
        wakes.append(Wakeup())
        return attempt._Stop(wakes[-1])

    def push(attempt_id: str, token: int, signum: int = signal.SIGTERM) -> None:
        message = {"action": "terminate", "id": attempt_id, "token": token, "signal": signum, "grace": 1.5}
        ops.client.rpush(key, json.dumps(message))

    try:
        first = stop()
        controls.register("a1", 1, first)
        time.sleep(0.5)  # the thread is in its read of the worker's list
        push("a1", 1)
        wait_until(lambda: first.reason is not None, timeout=10.0, what="the first attempt's terminate")
        assert (first.reason, first.signal, first.grace) == ("terminate", signal.SIGTERM, 1.5)
        controls.unregister("a1", 1)
        second = stop()
        controls.register("a2", 2, second)
        push("a1", 1)  # late, for the ended attempt: stops nothing
        time.sleep(0.5)
        push("a2", 1)  # the right attempt, another token: stops nothing
        push("a2", 2, signal.SIGKILL)
        wait_until(lambda: second.reason is not None, timeout=10.0, what="the second attempt's terminate")
        assert second.signal == signal.SIGKILL
        controls.unregister("a2", 2)
        push("a3", 3, signal.SIGINT)  # read before a3 is registered
        wait_until(lambda: not ops.client.exists(key), timeout=10.0, what="the thread to read it")
        third = stop()
        controls.register("a3", 3, third)
        assert third.reason == "terminate" and third.signal == signal.SIGINT  # handed over at once
        controls.unregister("a3", 3)
        push("a3", 3)
        wait_until(lambda: not ops.client.exists(key), timeout=10.0, what="the thread to read it")
        fourth = stop()
        controls.register("a4", 4, fourth)
        time.sleep(0.3)
        assert fourth.reason is None  # a3's late terminate was not a4's
    finally:
        controls.close()
        for wake in wakes:
            wake.close()


def test_a_terminate_sent_while_queued_or_to_a_workers_next_attempt_ends_it_on_the_node(redis_server, unique_prefix, tmp_path):
    """On a real node (one slot: one worker runs every attempt): a terminate the server sent while
    the attempt was still queued ends it as soon as it starts (the claim moved it onto the worker's
    control list), and one sent to the worker's next attempt ends that one."""
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    queued = enqueue(ops, ws, "q1", ["sleep", "60"])
    ops.terminate("q1", queued.token, signal.SIGTERM, 2.0)  # no node yet
    start_node(redis_server.url, unique_prefix, name="nq", slots=1)
    wait_for(lambda: state(ops, "q1") == "ended", what="the attempt terminated while queued to end")
    record = ops.read("q1")
    # Ended by the kill ladder, not run out. The signal it died of varies when the terminate lands
    # while its process is still starting (here, as an ordinary user: -9 with the rung SIGTERM, or
    # the ladder's SIGKILL after the grace): process/runner.py's, not the delivery's.
    assert record["kill_rung"] in {"SIGTERM", "SIGKILL"} and record["code"] in {str(-signal.SIGTERM), str(-signal.SIGKILL)}, (
        record
    )
    control = record["control"]
    assert control.startswith(f"{unique_prefix}:worker-control:")
    enqueue(ops, ws, "q2", ["true"])
    wait_for(lambda: state(ops, "q2") == "ended", what="the next attempt to end")
    later = enqueue(ops, ws, "q3", ["sleep", "60"])
    wait_for(lambda: ops.read("q3").get("started_at"), what="the third attempt to start")
    assert ops.read("q3")["control"] == control  # the same worker, the same list
    ops.terminate("q3", later.token, signal.SIGTERM, 2.0)
    wait_for(lambda: state(ops, "q3") == "ended", what="the third attempt to end")
    assert ops.read("q3")["kill_rung"] == "SIGTERM" and ProcessRunner().tagged(later.run_tag) == []


def _dead_servers_leftovers(base: Path) -> list[Path]:
    """What a server of this user's that has ended leaves (network/egress.py, process/cgroups.py): its
    registrations file (its flock not held, nothing live in it), its shared folder and, where spares
    exist, a spare cgroup of its own (a directory per hierarchy)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = [base / f"registrations-{gone.pid}-00000000.jsonl", base / f"shared-{gone.pid}"]
    left[0].write_text("")
    left[1].mkdir(mode=0o700)
    if SPARES:
        for version, folder in hierarchies().bases.values():
            if version is Enforcement.CGROUP_V1:
                left.append(folder / f"{SPARE}{gone.pid}.1-1-1")
                left[-1].mkdir()
    return left


def test_a_node_clears_what_dead_servers_left_as_it_starts_and_before_it_replaces_a_dead_worker(
    redis_server, unique_prefix, tmp_path
):
    """A node clears what dead servers left (registrations files, shared folders, spare cgroups) once,
    before it forks its workers, which do not each sweep again at their first attempt; and again
    before it forks a worker in place of one that died (what that worker left goes then)."""
    ops, ws = setup(redis_server, unique_prefix, tmp_path)
    tmp = Path(tempfile.mkdtemp(prefix="node-sweep-", dir="/tmp"))  # the node's sockets folder under it
    base = tmp / f"orchestrator-net-{os.getuid()}"
    base.mkdir(mode=0o700)
    left: list[Path] = []
    try:
        left = _dead_servers_leftovers(base)
        node = start_node(redis_server.url, unique_prefix, name="nw", slots=1, env={"TMPDIR": str(tmp)})
        assert [path for path in left if path.exists()] == []  # registered: swept before (no attempt ran)
        # Its worker, forked: killed as a crash would, after another dead server left its things
        wait_for(lambda: len(_node_workers(node.pid)) == 1, what="the node's worker")
        (worker,) = _node_workers(node.pid)
        left = _dead_servers_leftovers(base)
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: _node_workers(node.pid) not in ([], [worker]), what="a worker in place of the dead one")
        assert [path for path in left if path.exists()] == []
        enqueue(ops, ws, "w1", ["true"])  # the new worker runs attempts
        wait_for(lambda: state(ops, "w1") == "ended", what="the attempt to end")
        assert ops.read("w1")["code"] == "0"
    finally:
        for path in left:
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        shutil.rmtree(tmp, ignore_errors=True)


def _node_workers(pid: int) -> list[int]:
    """The node's RQ workers: its own children (forked by its pool)."""
    return sorted(child for child in _node_tree(pid) if parent_of(child) == pid)


@pytest.mark.parametrize("gone", [True, False], ids=["cgroup-empty", "cannot-tell"])
def test_a_node_tells_an_attempts_end_before_its_sweep_only_when_its_cgroup_proves_nothing_runs(monkeypatch, tmp_path, gone):
    """The server frees the worker's slot when it hears the end; the sweep (the cgroup's removal)
    came first, on the slot's way. Now it comes after the end is told where the attempt's cgroup
    holds no task (``ProcessRunner.tree_gone``, proven on the kernel in test_cgroups.py); else first,
    as before: the end is never told while a process of the attempt may run."""
    from orchestrator.cluster import attempt
    from orchestrator.process.runner import Wakeup

    from .conftest import make_settings

    order: list[str] = []

    class Runner:
        perl = "perl"

        def spawn(self, argv, **kwargs):
            return type("H", (), {"pid": 4242, "start_id": "s", "started_at": time.time(), "cap_hit": None, "kill_rung": None})()

        def wait(self, handle, timeout, wake=None):
            return 0

        def tree_gone(self, tag):
            order.append("asked")
            return gone

        def sweep(self, tag, since=0.0):
            order.append("sweep")

        def release(self, handle):
            order.append("release")

    class Ops:
        def started(self, *args):
            return True

        def finish(self, *args):
            order.append("finish")
            return True

    monkeypatch.setattr(attempt, "runner_for", lambda ctx, supervised=True: Runner())
    ctx = attempt.NodeContext("n1", "redis://127.0.0.1:1/0", Names("p"), 30.0, make_settings(tmp_path), tmp_path, None, tmp_path)  # type: ignore[arg-type]
    spec = AttemptSpec("a1", 3, "command", "root.a.worker_1", ["true"], str(tmp_path), {}, str(tmp_path / "log"), None)
    wake = Wakeup()
    assert attempt._run(ctx, Ops(), spec, attempt._Stop(wake), wake, control="p:control:w") == 0  # type: ignore[arg-type]
    assert order == (["asked", "finish", "sweep", "release"] if gone else ["asked", "sweep", "release", "finish"])
