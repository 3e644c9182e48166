"""A node runs only attempts the server signed (cluster/signing.py), verified with the key its
own config names, against a real redis-server and real ``python -m orchestrator node`` processes:
attempts written straight into Redis (unsigned, signed with another key, a field missing, a
signed one tampered with) never run, each is logged on the node with its reason and reported
refused, and the nodes go on serving; a node of another protocol is refused at its start and by
the server's routing, both versions named."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import pytest
import redis

from orchestrator import __version__
from orchestrator.cluster import registry
from orchestrator.cluster.connect import connect
from orchestrator.cluster.executor import RQExecutor
from orchestrator.cluster.leases import AttemptSpec, Leases
from orchestrator.cluster.names import PROTOCOL_VERSION, Names
from orchestrator.cluster.signing import REFUSED_CODE, SIGNED_FOR, Refused, SpecSigner, SpecVerifier, key_paths
from orchestrator.errors import ConfigError

from .cluster_fixtures import start_node, stop_all, write_server_marker
from .conftest import make_settings, wait_until

wait_for = functools.partial(wait_until, timeout=30.0)


@pytest.fixture(autouse=True)
def _stop_nodes():
    yield
    stop_all()


def a_spec(ws: Path, attempt_id: str, token: int, argv: list[str], sandbox: dict | None = None) -> AttemptSpec:
    return AttemptSpec(
        id=attempt_id,
        token=token,
        kind="command",
        tag=f"t.{attempt_id}",
        argv=argv,
        cwd=str(ws),
        env={"ORCHESTRATOR_JOB_ID": "job1"},
        log_path=str(ws / f"{attempt_id}.log"),
        exit_file=str(ws / f"{attempt_id}.exit"),
        lease=3.0,
        sandbox=sandbox,
    )


def write_straight(client: redis.Redis, names: Names, attempt_id: str, token: int, spec_text: str) -> None:
    """What anyone with the Redis password can do (redis-cli HSET + RPUSH): an attempt hash that
    says queued, and its job on the kind's queue, with no server involved."""
    client.hset(
        names.attempt(attempt_id),
        mapping={"token": token, "spec": spec_text, "kind": "command", "tag": "t", "state": "queued"},
    )
    client.rpush(f"rq:queue:{names.queue('command')}", f"{attempt_id}-{token}")


def ended(ops: Leases, attempt_id: str) -> dict[str, str] | None:
    found = ops.read(attempt_id)
    return found if found and found.get("state") == "ended" else None


# -- the verifier, alone ----------------------------------------------------------------------


def test_the_verifier_takes_only_the_servers_unexpired_spec_for_that_attempt(tmp_path):
    signer = SpecSigner.for_workspace(tmp_path / "ws")
    verifier = SpecVerifier.from_file(key_paths(tmp_path / "ws")[1])
    spec = a_spec(tmp_path, "a1", 7, ["true"], sandbox={"network": "deny"})
    signed = signer.sign(spec)
    assert verifier.verify(signed, "a1", 7) == spec
    with pytest.raises(Refused, match="not a1 token 8"):
        verifier.verify(signed, "a1", 8)  # another token's job: not this spec's
    with pytest.raises(Refused, match="expired"):
        verifier.verify(signed, "a1", 7, now=time.time() + SIGNED_FOR + 1)
    other = json.loads(signed)
    other["protocol"] = PROTOCOL_VERSION + 1
    with pytest.raises(Refused, match="does not verify"):  # the protocol is signed too
        verifier.verify(json.dumps(other), "a1", 7)
    with pytest.raises(Refused, match="not signed"):
        verifier.verify(spec.to_json(), "a1", 7)
    with pytest.raises(Refused, match="not JSON"):
        verifier.verify(b"\x80garbage", "a1", 7)
    with pytest.raises(Refused, match="holds no spec"):
        verifier.verify(None, "a1", 7)


def test_a_node_without_the_servers_key_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the server's public key .*distributed.verify_key_file"):
        SpecVerifier.from_file(tmp_path / "nowhere.pub")
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="holds no readable public key"):
        SpecVerifier.from_file(tmp_path / "bad.pub")


# -- real nodes --------------------------------------------------------------------------------


@pytest.mark.slow
def test_attempts_written_straight_into_redis_never_run_and_the_nodes_go_on_serving(redis_server, unique_prefix, tmp_path):
    ws = tmp_path / "ws"
    signer = write_server_marker(redis_server.url, unique_prefix, ws)
    names = Names(unique_prefix)
    client = connect(redis_server.url)
    ops = Leases(client, names, signer)
    nodes = [start_node(redis_server.url, unique_prefix, name=name, kinds="command", slots=2) for name in ("n1", "n2")]
    stranger = SpecSigner.for_workspace(tmp_path / "elsewhere")  # a key the nodes were never given
    canaries = {name: tmp_path / f"canary-{name}" for name in ("unsigned", "wrongkey", "missing", "tampered")}

    def touch(name: str) -> list[str]:
        return ["sh", "-c", f"touch {canaries[name]}"]

    write_straight(client, names, "unsigned", 901, a_spec(ws, "unsigned", 901, touch("unsigned")).to_json())
    write_straight(client, names, "wrongkey", 902, stranger.sign(a_spec(ws, "wrongkey", 902, touch("wrongkey"))))
    lacking = json.loads(signer.sign(a_spec(ws, "missing", 903, touch("missing"))))
    del lacking["sandbox"]  # one field missing (it once made the node's worker quit)
    write_straight(client, names, "missing", 903, json.dumps(lacking))
    # The server's own signature on a confined attempt, its sandbox then turned off in Redis.
    tampered = json.loads(signer.sign(a_spec(ws, "tampered", 904, touch("tampered"), sandbox={"network": "deny"})))
    tampered["sandbox"] = None
    write_straight(client, names, "tampered", 904, json.dumps(tampered))

    reasons = {
        "unsigned": "not signed",
        "wrongkey": "does not verify",
        "missing": "lacks the field(s) sandbox",
        "tampered": "does not verify",
    }
    for attempt_id, reason in reasons.items():
        record = wait_for(lambda a=attempt_id: ended(ops, a), what=f"{attempt_id} to be refused")
        assert record["code"] == str(REFUSED_CODE) and record["note"].startswith("refused by node n")
        assert reason in record["note"]
        logged = "".join(node.output() for node in nodes)
        assert f"attempt {attempt_id} (token {record['token']}) refused by node" in logged and reason in logged
    assert not [name for name, path in canaries.items() if path.exists()], "a refused attempt ran"
    # Both nodes serve on: real attempts signed by the server run, on either.
    for i in range(4):
        ops.enqueue(a_spec(ws, f"real{i}", ops.new_token(), ["sh", "-c", f"echo ran {i}"]))
    for i in range(4):
        record = wait_for(lambda i=i: ended(ops, f"real{i}"), what=f"real attempt {i} to end")
        assert record["code"] == "0" and (ws / f"real{i}.log").read_text() == f"ran {i}\n"
    assert all(node.process.poll() is None for node in nodes)
    assert "quitting" not in "".join(node.output() for node in nodes)
    assert not [name for name, path in canaries.items() if path.exists()]


@pytest.mark.slow
def test_a_signed_attempt_put_back_in_redis_does_not_run_twice_on_its_node(redis_server, unique_prefix, tmp_path):
    ws = tmp_path / "ws"
    signer = write_server_marker(redis_server.url, unique_prefix, ws)
    names = Names(unique_prefix)
    client = connect(redis_server.url)
    ops = Leases(client, names, signer)
    node = start_node(redis_server.url, unique_prefix, name="solo", kinds="command", slots=1)
    counter = tmp_path / "runs"
    spec = a_spec(ws, "once", ops.new_token(), ["sh", "-c", f"echo x >> {counter}"])
    ops.enqueue(spec)
    wait_for(lambda: ended(ops, "once"), what="the attempt to end")
    signed = ops.read("once")["spec"]
    write_straight(client, names, "once", spec.token, signed)  # the same signed spec, queued again
    record = wait_for(lambda: ended(ops, "once") if "replay" in (ops.read("once") or {}).get("note", "") else None)
    assert record["code"] == str(REFUSED_CODE) and "already ran on this node" in record["note"]
    assert counter.read_text() == "x\n"
    assert "a replay" in node.output()


@pytest.mark.slow
def test_a_node_of_another_protocol_is_refused_at_its_start_with_both_versions_named(redis_server, unique_prefix, tmp_path):
    ws = tmp_path / "ws"
    write_server_marker(redis_server.url, unique_prefix, ws)
    client = connect(redis_server.url)
    names = Names(unique_prefix)
    marker = json.loads(client.get(names.marker))
    marker.update(protocol=1, version="0.0.9")  # a server of an older version
    client.set(names.marker, json.dumps(marker))
    node = start_node(redis_server.url, unique_prefix, name="newer", wait=False)
    assert node.process.wait(30) == 2
    said = node.output()
    assert f"node newer (orchestrator {__version__}, protocol {PROTOCOL_VERSION}) is refused by the server" in said
    assert "(orchestrator 0.0.9, protocol 1)" in said and "Traceback" not in said
    assert registry.read(client, names) == []  # it never registered


@pytest.mark.slow
def test_the_server_routes_nothing_to_a_node_of_another_protocol_and_says_why(redis_server, unique_prefix, tmp_path):
    settings = make_settings(
        tmp_path, distributed={"executor": "rq", "redis_url": redis_server.url, "queue_prefix": unique_prefix, "lease": 3}
    )
    executor = RQExecutor(settings)
    try:
        old = registry.NodeInfo("old1", "h", 1, ["command"], 2, version="0.0.9")  # too old to say: protocol 1
        registry.publish(executor.client, executor.names, old, 30)
        (found,) = executor.nodes() or []
        assert found.alive and found.refused == (
            f"node old1 (orchestrator 0.0.9, protocol 1) is refused: this server is orchestrator {__version__}, "
            f"protocol {PROTOCOL_VERSION}; run the same version on both"
        )
        with pytest.raises(ConfigError, match=r"no live node runs worker kind 'command' \(live nodes: none.*protocol 1"):
            executor.start(["true"], cwd=tmp_path, env={}, log_path=tmp_path / "x.log", tag="t.x", kind="command")
        assert executor.memory() == []  # nor is its memory counted
    finally:
        executor.close()


@pytest.mark.slow
def test_a_worker_on_a_node_gets_no_redis_password_from_the_nodes_environment(redis_server, unique_prefix, tmp_path):
    ws = tmp_path / "ws"
    signer = write_server_marker(redis_server.url, unique_prefix, ws)
    ops = Leases(connect(redis_server.url), Names(unique_prefix), signer)
    # Where an operator may well have put it: the node's environment (the worker inherits it).
    env = {
        "REDIS_URL": redis_server.url,
        "REDISCLI_AUTH": redis_server.password,
        "QUEUE_DSN": redis_server.url,  # under any name: its value holds the password
        "NODE_OWN_THING": "kept",
    }
    start_node(redis_server.url, unique_prefix, name="ne", config={"workers": {"inherit_env": True}}, env=env)
    ops.enqueue(a_spec(ws, "envdump", ops.new_token(), ["sh", "-c", "env"]))
    record = wait_for(lambda: ended(ops, "envdump"), what="the attempt to end")
    dumped = (ws / "envdump.log").read_text()
    assert record["code"] == "0" and "NODE_OWN_THING=kept" in dumped  # the node's environment does reach it
    assert redis_server.password not in dumped
    assert not [line for line in dumped.splitlines() if line.upper().startswith("REDIS")]


@pytest.mark.slow
def test_a_restarted_server_reads_back_only_attempts_it_signed(redis_server, unique_prefix, tmp_path):
    settings = make_settings(
        tmp_path, distributed={"executor": "rq", "redis_url": redis_server.url, "queue_prefix": unique_prefix, "lease": 3}
    )
    executor = RQExecutor(settings)
    try:
        client, names = executor.client, executor.names
        ours = a_spec(tmp_path, "ours", executor.attempts.new_token(), ["true"])
        ours.tag = "root1.w1"
        executor.attempts.record(ours)
        forged = a_spec(tmp_path, "forged", 5, ["sh", "-c", "touch /tmp/never"])
        forged.tag = "root1.w2"
        client.hset(names.attempt("forged"), mapping={"token": 5, "spec": forged.to_json(), "state": "running", "pid": 1})
        client.hset(names.tree("root1"), mapping={"ours": "root1.w1", "forged": "root1.w2"})
        assert [f.start_id for f in executor.find("root1")] == ["ours"]
        assert executor.adopt(1, "forged", tag="root1.w2", started_at=time.time(), exit_file=None).spec is None
    finally:
        executor.close()
