"""The node registry: each node publishes its ``NodeInfo`` at start and with every heartbeat;
the server reads them for ``GET /api/v1/nodes``, the dashboard and routing (a kind no live node
runs is refused at once rather than left in a queue nobody reads). A node of another protocol
version is refused here (``refused`` names both versions): nothing is routed to it, and it
listens on queues of its own version (names.Names.queue), so it takes nothing meant for this
server."""

from __future__ import annotations

import json
from typing import Any

import redis

from .. import __version__
from ..process.executor import NodeInfo as NodeInfo  # the record lives with the seam that reports it
from .names import PROTOCOL_VERSION, Names

# GET /api/v1/nodes answers {"executor": "local" | "rq", "nodes": [NodeInfo.to_dict() + heartbeat_age]};
# its OpenAPI schema is kept here, beside the record it describes.
NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "host", "kinds", "slots", "running", "heartbeat_at", "heartbeat_age", "alive"],
    "properties": {
        **{key: {"type": "string"} for key in ("name", "host", "version")},
        "protocol": {"type": "integer", "description": "the cluster protocol it speaks"},
        "refused": {"type": "string", "description": "why the server routes nothing to it (another protocol); empty: it does"},
        **{key: {"type": "number", "minimum": 0} for key in ("pid", "slots", "running", "started_at", "heartbeat_at")},
        **{
            key: {"type": "number", "minimum": 0, "description": f"bytes: its machine's {what} memory at its last heartbeat"}
            for key, what in (("memory_total", "total"), ("memory_available", "available"))
        },
        "heartbeat_age": {"type": "number", "minimum": 0, "description": "seconds since heartbeat_at, on the server's clock"},
        **{key: {"type": "array", "items": {"type": "string"}} for key in ("kinds", "attempts")},
        "alive": {"type": "boolean", "description": "its heartbeat key has not expired (one lease after its last heartbeat)"},
    },
}
NODES_SCHEMA = {"executor": {"type": "string", "enum": ["local", "rq"]}, "nodes": {"type": "array", "items": NODE_SCHEMA}}


def publish(client: redis.Redis, names: Names, info: NodeInfo, lease: float) -> None:
    """Write ``info`` and (re)start its liveness key, which expires ``lease`` seconds from now."""
    data = info.to_dict()
    data.pop("alive", None)
    data.pop("refused", None)
    pipe = client.pipeline(transaction=True)
    pipe.hset(names.nodes, info.name, json.dumps(data, separators=(",", ":")))
    pipe.set(names.node(info.name), str(info.pid), px=max(1, int(lease * 1000)))
    pipe.execute()


def forget(client: redis.Redis, names: Names, name: str) -> None:
    """A node that stops cleanly takes itself out of the registry."""
    pipe = client.pipeline(transaction=True)
    pipe.hdel(names.nodes, name)
    pipe.delete(names.node(name))
    pipe.execute()


def read(client: redis.Redis, names: Names) -> list[NodeInfo]:
    """Every registered node, by name, each with ``alive`` set from its liveness key."""
    raw: dict[bytes, bytes] = client.hgetall(names.nodes)  # type: ignore[assignment]
    found = []
    for value in raw.values():
        try:
            found.append(NodeInfo.from_dict(json.loads(value)))
        except (ValueError, TypeError):
            continue  # a garbled entry is skipped, not fatal to the listing
    found.sort(key=lambda n: n.name)
    if found:
        pipe = client.pipeline(transaction=False)
        for node in found:
            pipe.exists(names.node(node.name))
        for node, exists in zip(found, pipe.execute(), strict=True):
            node.alive = bool(exists)
            node.refused = refusal(node)
    return found


def refusal(node: NodeInfo) -> str:
    """Why this server routes nothing to ``node`` ("" when it does): another protocol version."""
    if node.protocol == PROTOCOL_VERSION:
        return ""
    return (
        f"node {node.name} (orchestrator {node.version or 'unknown'}, protocol {node.protocol}) is refused: "
        f"this server is orchestrator {__version__}, protocol {PROTOCOL_VERSION}; run the same version on both"
    )
