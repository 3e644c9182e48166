"""GET /api/v1/nodes on a real waitress server, its nodes read from a real redis-server's node
registry (cluster/registry.py), as the rq executor's ``nodes()`` reads them."""

from __future__ import annotations

import time

import pytest
import requests

from orchestrator.api.client import OrchestratorClient
from orchestrator.cluster.connect import connect
from orchestrator.cluster.names import Names
from orchestrator.cluster.registry import NODE_SCHEMA, publish

from .conftest import API_KEY, fake_command, wait_until
from .helpers import nodes_api as nodes_api_helpers
from .helpers.nodes_api import RegistryExecutor, node

# The fixture this file shares with other test files (tests/helpers/nodes_api.py).
serve = nodes_api_helpers.serve

pytestmark = pytest.mark.timeout(60)


def get(url: str, path: str, key: str = API_KEY) -> requests.Response:
    return requests.get(url + path, headers={"X-API-Key": key}, timeout=30)


def test_nodes_lists_each_registered_node_with_its_heartbeat_age_and_whether_it_is_alive(redis_server, unique_prefix, serve):
    # Given two nodes in the registry: one heartbeating, one whose heartbeat expired 3 s ago
    client, names = connect(redis_server.url), Names(unique_prefix)
    now = time.time()
    publish(client, names, node("node-b", ["claude", "command"], 4, 2, now), lease=60)
    publish(client, names, node("node-a", ["codex"], 1, 0, now - 3), lease=0.05)
    time.sleep(0.2)  # node-a's liveness key expires
    url, _ = serve(RegistryExecutor(redis_server.url, unique_prefix))
    # When the admin asks the server for its nodes
    answer = get(url, "/api/v1/nodes")
    # Then each node is listed, by name, with its kinds, slots, running count, heartbeat and age, and liveness
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["executor"] == "rq"
    assert [(n["name"], n["host"], n["kinds"], n["slots"], n["running"], n["alive"]) for n in doc["nodes"]] == [
        ("node-a", "node-a.lan", ["codex"], 1, 0, False),
        ("node-b", "node-b.lan", ["claude", "command"], 4, 2, True),
    ]
    a, b = doc["nodes"]
    assert a["heartbeat_at"] == pytest.approx(now - 3) and b["heartbeat_at"] == pytest.approx(now)
    assert 3.0 <= a["heartbeat_age"] <= 3.0 + 10 and 0.0 <= b["heartbeat_age"] <= 10
    assert a["heartbeat_age"] - b["heartbeat_age"] == pytest.approx(3.0, abs=0.15)
    assert b["attempts"] == ["a0", "a1"]
    # And every entry has the fields its OpenAPI schema requires, of the stated types
    served = get(url, "/openapi.json").json()["paths"]["/api/v1/nodes"]["get"]["responses"]["200"]
    assert served["content"]["application/json"]["schema"]["properties"]["nodes"]["items"] == NODE_SCHEMA
    kinds = {"string": str, "number": (int, float), "integer": int, "array": list, "boolean": bool}
    for entry in doc["nodes"]:
        assert set(NODE_SCHEMA["required"]) <= set(entry)
        for key, schema in NODE_SCHEMA["properties"].items():
            assert isinstance(entry[key], kinds[schema["type"]]), (key, entry[key])
    # And the Python client answers the same document
    with OrchestratorClient(api_url=url, api_key=API_KEY) as api:
        assert [n["name"] for n in api.nodes()["nodes"]] == ["node-a", "node-b"]


def test_nodes_under_the_local_executor_is_empty_and_says_so(serve):
    url, _ = serve()
    answer = get(url, "/api/v1/nodes")
    assert answer.status_code == 200
    assert answer.json() == {"executor": "local", "nodes": []}


def test_a_worker_credential_cannot_list_nodes(redis_server, unique_prefix, serve):
    # Given a running worker's credential (scoped to its own job tree)
    url, engine = serve(
        RegistryExecutor(redis_server.url, unique_prefix), orchestrator={"worker": "command", "command": fake_command()}
    )
    job = engine.submission.submit("x", tasks=["hang"])
    wait_until(lambda: engine.worker_running(job.id, "worker_1"), what="a running worker")
    cred = engine.credentials.issue(job.id.split("-")[0], job.id, "worker_1")
    assert get(url, f"/api/v1/jobs/{job.id}", key=cred).status_code == 200  # a live credential
    # When it asks for the cluster's nodes, then it is refused, saying to use the admin key
    answer = get(url, "/api/v1/nodes", key=cred)
    assert answer.status_code == 403
    assert "admin API key" in answer.json()["message"]
    assert get(url, "/api/v1/nodes", key="wrong-key-0123456789abcdefghij").status_code == 401


def test_nodes_is_a_503_naming_the_setting_when_redis_is_down(fresh_redis, unique_prefix, serve):
    # Given a server whose node registry's Redis has stopped
    url, _ = serve(RegistryExecutor(fresh_redis.url, unique_prefix))
    assert get(url, "/api/v1/nodes").status_code == 200
    fresh_redis.stop()
    # When the admin asks for the nodes, then the answer is a 503 that says where to look (no password in it)
    answer = get(url, "/api/v1/nodes")
    assert answer.status_code == 503, answer.text
    assert "distributed.redis_url" in answer.json()["message"]
    assert fresh_redis.password not in answer.text
