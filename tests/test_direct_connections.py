"""A sandboxed worker's direct TCP connection to a loopback port nobody allowed (not through its
proxy), with ``workers.sandbox_network`` ``allow``, ``allow`` with a listed loopback port, and ``none``
(issue 48, "refusals recorded out of band"): the worker cannot connect, the listener there sees
nothing, and the refusal was decided outside the worker (network/direct.py: its seccomp filter hands
every connect() over) and is in its network record, which status and check-status read; under both
backends (Landlock: the host's loopback, which its rules would refuse unrecorded; bubblewrap: its own
network namespace, where nothing listens there). A listed loopback port is reached directly.

A real server, real sandboxes, a TCP listener on 127.0.0.1; tests/test_network_allow.py's fixtures.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

import pytest

from orchestrator.models import WorkerStatus
from orchestrator.network.direct import REASON
from orchestrator.outcomes import RefusalKind
from orchestrator.reports.status_document import status_table

from .test_network_allow import backend, run, serve, served  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONNECTS = """
import json, socket, sys
seen = {}
for port in sys.argv[1:]:
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()
        seen[port] = "connected"
    except OSError as exc:
        seen[port] = type(exc).__name__
print(json.dumps(seen))
"""


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener():
    found = Listener()
    yield found
    found.close()


@pytest.mark.parametrize("network", ["allow", "allow-list", "none"])
def test_a_direct_connection_to_a_port_not_allowed_reaches_nothing_and_is_recorded(
    served,  # noqa: F811
    backend,  # noqa: F811
    listener,
    tmp_path,
    network,
):
    listed = serve("127.0.0.1") if network == "allow-list" else None  # a loopback service listed with its port
    try:
        workers: dict[str, object] = {"sandbox_network": "none" if network == "none" else "allow"}
        if listed is not None:
            workers["sandbox_allow"] = [f"127.0.0.1:{listed.server_address[1]}"]
        engine = served(**workers)
        script = tmp_path / "connects.py"
        script.write_text(CONNECTS)
        ports = [str(listener.port)] + ([str(listed.server_address[1])] if listed is not None else [])
        worker = run(engine, f"'{sys.executable}' '{script}' {' '.join(ports)}")
    finally:
        if listed is not None:
            listed.shutdown()
            listed.server_close()
    log = engine.workspace.worker_log(worker.root_id, worker.depth, worker.name).read_text()
    seen = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])
    denied = f"127.0.0.1:{listener.port}"

    assert worker.status is WorkerStatus.SUCCESS, log
    assert seen[str(listener.port)] != "connected", seen  # the worker could not connect...
    assert listener.accepted == 0  # ...and the listener saw nothing
    if listed is not None:
        assert seen[str(listed.server_address[1])] == "connected", seen  # the listed port is reached directly
    recorded = [r for r in worker.refusals if r.recorded and r.kind is RefusalKind.NETWORK and r.path == denied]
    doc = engine.queries.status_document(worker.job_id)
    (task,) = doc["results"]["tasks"]
    table = status_table(doc)  # check-status's table
    assert seen[str(listener.port)] == "PermissionError", seen  # refused before a packet left (EACCES)
    assert len(recorded) == 1 and REASON in recorded[0].line, worker.refusals  # from its network record
    assert f"network {denied}" in task["refused"] and f"network {denied}" in table, (task, table)
    assert any(r["path"] == denied and r["recorded"] for r in task["refusals"]), task["refusals"]
