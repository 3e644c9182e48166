"""Helpers of tests/test_nodes_api.py, used by other test files too."""

from __future__ import annotations

import pytest

from orchestrator.cli.server import start_in_thread
from orchestrator.cluster.connect import connect
from orchestrator.cluster.names import Names
from orchestrator.cluster.registry import NodeInfo, read
from orchestrator.engine.core import Engine
from orchestrator.process.executor import LocalExecutor

from ..conftest import API_KEY, make_settings


class RegistryExecutor(LocalExecutor):
    """Attempts run here, but the machines are the registry's: the ``nodes()`` contract the rq
    executor keeps (None: this server; else every registered node, alive or not)."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self.client, self.names = connect(url, setting="distributed.redis_url"), Names(prefix)

    def nodes(self) -> list[NodeInfo] | None:
        return read(self.client, self.names)


@pytest.fixture
def serve(tmp_path):
    """A real server on 127.0.0.1 whose engine uses the given executor (None: the local one):
    (its URL, its engine)."""
    started = []

    def factory(executor=None, **sections):
        settings = make_settings(tmp_path, api={"api_key": API_KEY, "host": "127.0.0.1", "port": 0}, **sections)
        engine = Engine(settings, executor=executor)
        server = start_in_thread(settings, engine, port=0)
        started.append((server, engine))
        return server.url, engine

    yield factory
    for server, engine in started:
        engine.shutdown(timeout=10)
        server.close()


def node(name: str, kinds: list[str], slots: int, running: int, beat: float) -> NodeInfo:
    return NodeInfo(name=name, host=f"{name}.lan", pid=4000 + slots, kinds=kinds, slots=slots, running=running,
                    started_at=beat - 30, heartbeat_at=beat, attempts=[f"a{i}" for i in range(running)])  # fmt: skip
