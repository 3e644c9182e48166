"""A test-only stand-in for a node (cluster/node.py), for the rq executor's unit tests: it
speaks the attempt protocol (claim, started, renew with a sample, finish, the control list)
and runs each attempt as a real process under the local runner (shim, kill ladder, exit
file). ``die()`` plays a node SIGKILLed: it stops renewing and reporting, and its processes
die with it. The real node's tests and the end-to-end ones use ``python -m orchestrator node``."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import redis
from rq import Queue

from orchestrator.cluster import registry
from orchestrator.cluster.connect import connect
from orchestrator.cluster.leases import SERIALIZER, AttemptSpec, Leases
from orchestrator.cluster.names import PROTOCOL_VERSION, Names
from orchestrator.cluster.secret_file import read_secret_file
from orchestrator.process.runner import CommandNotFound, ProcessRunner


class NodeDouble:
    def __init__(
        self, url: str, prefix: str, *, name: str = "double", kinds=("command",), slots: int = 4, lease: float = 3, mute=False
    ):
        self.client = connect(url)
        self.names = Names(prefix)
        self.ops = Leases(self.client, self.names)
        self.name, self.kinds, self.slots, self.lease = name, list(kinds), slots, lease
        self.runner = ProcessRunner()
        self.running: dict[str, object] = {}
        self.busy = 0  # slots taken (from the dequeue to the report)
        self._lock = threading.Lock()
        self.dead = threading.Event()
        self.mute = mute  # it never reports an end (as a node that dies just after its worker did)
        self.stopped = threading.Event()
        self.ran: list[str] = []  # attempt ids it claimed
        self.tokens: dict[str, int] = {}  # attempt id -> the token it claimed it with
        self.info = registry.NodeInfo(
            name, socket.gethostname(), os.getpid(), self.kinds, slots, started_at=time.time(), protocol=PROTOCOL_VERSION
        )
        registry.publish(self.client, self.names, self.info, lease)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _retry(self, call, *args, **kwargs):
        """Redis may restart under it (a test does that): try again until it answers."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return call(*args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if time.monotonic() > deadline or self.dead.is_set():
                    raise
                time.sleep(0.1)

    def _loop(self) -> None:
        queues = [Queue(self.names.queue(k), connection=self.client, serializer=SERIALIZER) for k in self.kinds]
        beat = 0.0
        while not (self.dead.is_set() or self.stopped.is_set()):
            if time.monotonic() - beat > self.lease / 3:
                self.info.running, self.info.heartbeat_at = len(self.running), time.time()
                self._retry(registry.publish, self.client, self.names, self.info, self.lease)
                beat = time.monotonic()
            if self.busy >= self.slots:
                time.sleep(0.05)
                continue
            found = self._retry(Queue.dequeue_any, queues, None, connection=self.client, serializer=SERIALIZER)
            if found is None:
                time.sleep(0.05)
                continue
            attempt_id, token = found[0].args
            with self._lock:
                self.busy += 1
            threading.Thread(target=self._slot, args=(attempt_id, token), daemon=True).start()

    def _slot(self, attempt_id: str, token: int) -> None:
        try:
            self._run(attempt_id, token)
        finally:
            with self._lock:
                self.busy -= 1

    def _run(self, attempt_id: str, token: int) -> None:
        raw = self._retry(self.ops.claim, attempt_id, token, self.name, self.lease)
        spec = AttemptSpec.from_json(raw) if raw is not None else None  # (the real node verifies its signature)
        if spec is None:
            return
        self.ran.append(attempt_id)
        self.tokens[attempt_id] = token
        env = {**os.environ, **spec.env, **read_secret_file(spec.secret_env_file)}
        try:
            handle = self.runner.spawn(
                spec.argv,
                cwd=Path(spec.cwd),
                env=env,
                log_path=Path(spec.log_path),
                tag=spec.run_tag,
                exit_file=Path(spec.exit_file) if spec.exit_file else None,
            )
        except (CommandNotFound, OSError):
            self.ops.finish(attempt_id, token, self.name, 127, None, note="could not start")
            return
        self.running[attempt_id] = handle
        self._retry(self.ops.started, attempt_id, token, self.name, handle.pid, handle.start_id)
        renewed = time.monotonic()
        code = None
        while code is None:
            if self.dead.is_set():
                return  # a dead node tells nothing more
            message = self._retry(self.ops.next_control, attempt_id, 0.05)
            if message and message.get("token") == token:
                self.runner.terminate(handle, grace=float(message["grace"]), first_signal=int(message["signal"]))
            if time.monotonic() - renewed > self.lease / 3:
                sample = {"rss": 1234, "processes": 1, "cpu_seconds": 0.5}
                if not self._retry(self.ops.renew, attempt_id, token, self.name, self.lease, sample, handle.pid):
                    self.runner.terminate(handle, grace=0.5)  # fenced: no longer ours
                renewed = time.monotonic()
            code = self.runner.wait(handle, 0.05)
        self.running.pop(attempt_id, None)
        if not self.dead.is_set() and not self.mute:
            self._retry(self.ops.finish, attempt_id, token, self.name, code, handle.kill_rung)

    def die(self) -> None:
        """As if SIGKILLed: no renewal, no report, its processes gone with it, its heartbeat left to expire."""
        self.dead.set()
        for handle in list(self.running.values()):
            try:
                os.killpg(handle.pid, signal.SIGKILL)  # type: ignore[attr-defined]
            except OSError:
                pass
            handle.popen.wait(5)  # type: ignore[attr-defined]  (reaped, as its parent's death would)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        registry.forget(self.client, self.names, self.name)


def real_node(folder: Path, url: str, prefix: str, *, name: str, kinds=("command",), slots: int = 2, lease: float = 3):
    """``python -m orchestrator node`` (tests/cluster_fixtures.py), with settings of its own in
    which the command kind has a program (its kinds are checked at start)."""
    from .cluster_fixtures import start_node

    config = {"orchestrator": {"command": ["sh", "-c", "{task}"]}}
    return start_node(url, prefix, name=name, kinds=",".join(kinds), slots=slots, lease=lease, config=config, folder=folder)
