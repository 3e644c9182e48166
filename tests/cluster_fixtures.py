"""Real cluster nodes for the tests: ``start_node`` runs ``python -m orchestrator node`` as a
subprocess in its own process group, waits until it is registered in Redis, and returns a
``NodeProcess`` that stops it (``stop``: SIGTERM, the clean stop; ``kill``: SIGKILL, a crash).

    from .cluster_fixtures import start_node, write_server_marker
    write_server_marker(redis_server.url, prefix, tmp_path / "ws")   # what a server does at start
    with start_node(redis_server.url, prefix, name="n1", kinds="command", slots=2) as node:
        ...  # enqueue attempts (Attempts.enqueue); node.output() is what it logged

Each node gets a config file of the test's (``config``: sections to set, e.g. a kind's command
pointing nowhere), so the developer's own config.yaml never leaks in. Every node started is
stopped at the end of its ``with`` block (or by ``stop_all``), killed if it does not stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from orchestrator.cluster import registry
from orchestrator.cluster.connect import connect
from orchestrator.cluster.marker import server_marker, write_marker
from orchestrator.cluster.names import Names
from orchestrator.cluster.signing import SpecSigner, key_paths

ROOT = Path(__file__).resolve().parent.parent
_started: list[NodeProcess] = []


def write_server_marker(url: str, prefix: str, workspace: Path) -> SpecSigner:
    """The server's workspace marker (file and Redis) and its attempt-signing key, as a server
    writes them at start; the signer, for a test's ``Leases``."""
    workspace.mkdir(parents=True, exist_ok=True)
    signer = SpecSigner.for_workspace(workspace)
    write_marker(connect(url), Names(prefix), workspace)
    return signer


def servers_public_key(url: str, prefix: str) -> Path | None:
    """The public key the server under ``prefix`` wrote in its workspace (None: no server yet).
    The test hands it to its nodes in their own config (``distributed.verify_key_file``), as an
    operator copies it to each node."""
    found = server_marker(connect(url), Names(prefix))
    return key_paths(Path(found.workspace))[1] if found is not None else None


class NodeProcess:
    """A running node subprocess (its own process group), its output in a file."""

    def __init__(
        self, argv: list[str], url: str, prefix: str, name: str, folder: Path, env: dict[str, str] | None = None
    ) -> None:
        self.url, self.prefix, self.name, self.folder = url, prefix, name, folder
        self.log_path = folder / f"{name}.out"
        self.own_folder = False  # start_node made the folder: stop_all removes it
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=None if env is None else {**os.environ, **env},
            )
        _started.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def registered(self) -> registry.NodeInfo | None:
        found = [n for n in registry.read(connect(self.url), Names(self.prefix)) if n.name == self.name]
        return found[0] if found and found[0].alive else None

    def wait_registered(self, timeout: float = 30.0) -> NodeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node {self.name} exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            if self.registered() is not None:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"node {self.name} did not register within {timeout} s:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the clean stop), then SIGKILL to its group if it does not end in ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL the node's main process only (a crash): what dies with it is the node's business."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def _reap_group(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # anything of its group a failed test left
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def node_argv(url: str, prefix: str, *, name: str, kinds: str, slots: int, lease: float, config: Path | None) -> list[str]:
    argv = [sys.executable, "-m", "orchestrator"]
    if config is not None:
        argv += ["--config", str(config)]
    return argv + [
        "node", "--redis", url, "--prefix", prefix, "--name", name, "--kinds", kinds,
        "--slots", str(slots), "--lease", str(lease),
    ]  # fmt: skip


def start_node(
    url: str,
    prefix: str,
    *,
    name: str,
    kinds: str = "command",
    slots: int = 2,
    lease: float = 3.0,
    config: dict[str, Any] | None = None,
    folder: Path | None = None,
    wait: bool = True,
    env: dict[str, str] | None = None,
) -> NodeProcess:
    """Start a node and (``wait``) return once it is registered in Redis. ``config``: the node's
    settings (a dict of sections), written to a config file of its own; ``env``: variables added
    to its environment."""
    own = folder is None
    folder = folder or Path(tempfile.mkdtemp(prefix="orch-node-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    config = dict(config or {})
    key = servers_public_key(url, prefix)
    if key is not None and "verify_key_file" not in config.get("distributed", {}):
        config["distributed"] = {**config.get("distributed", {}), "verify_key_file": str(key)}
    path.write_text(yaml.safe_dump(config))
    node = NodeProcess(
        node_argv(url, prefix, name=name, kinds=kinds, slots=slots, lease=lease, config=path), url, prefix, name, folder, env
    )
    node.own_folder = own
    return node.wait_registered() if wait else node


def stop_all() -> None:
    """Stop every node this process started (a fixture's teardown), and remove the folders
    ``start_node`` made for them."""
    while _started:
        node = _started.pop()
        node.stop()
        if node.own_folder:
            shutil.rmtree(node.folder, ignore_errors=True)
