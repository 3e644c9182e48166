"""A real Redis server for the tests, started by them: Debian's ``redis-server`` (.ci/run
installs it) in a temporary folder, on a free 127.0.0.1 port, with a password, stopped at the
end. A test may restart it (with or without its data: ``persist``) or kill it. Skips, saying
why, only when the binary is absent; under CI (``CI`` set) that fails instead.

Use the ``redis_server`` fixture (one server per test module) and give each test its own
``distributed.queue_prefix`` (``unique_prefix``), or the ``fresh_redis`` fixture (a server of
the test's own, for tests that restart or kill it)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server process of the test's. ``url`` carries the password."""

    def __init__(self, folder: Path, *, password: str | None = None, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            why = "redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)"
            if os.environ.get("CI"):
                pytest.fail(why)  # CI must prove the rq executor, not skip it
            pytest.skip(why)
        self.binary = binary
        self.folder = folder
        self.password = password if password is not None else secrets.token_hex(12)
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def url_with(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--requirepass",
            self.password,
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--logfile",
            str(self.folder / "redis.log"),
        ]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.folder / 'redis.log').read_text()[-2000:]}")
            if self._ready():
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 20 s")

    def _ready(self) -> bool:
        """It answers PING: listening is not enough, as a restart loading its append-only file answers
        every command with "LOADING" (under load, longer than a test's next call took to come)."""
        import redis

        try:
            with redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=0.5) as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: a clean shutdown, which writes the append-only file if on; SIGKILL: a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self, *, persist: bool) -> None:
        """Stop and start again on the same port: with ``persist`` false its data is gone."""
        self.stop(signal.SIGTERM if persist else signal.SIGKILL)
        if not persist:
            for path in self.folder.glob("appendonly*"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
            for path in self.folder.glob("*.rdb"):
                path.unlink()
        self.start()


def running(appendonly: bool = False) -> Iterator[RedisServer]:
    folder = Path(tempfile.mkdtemp(prefix="orch-redis-"))
    server = RedisServer(folder, appendonly=appendonly)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from running()


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A server of this test's own, with its append-only file on (so a restart may keep its data)."""
    yield from running(appendonly=True)


@pytest.fixture
def unique_prefix() -> str:
    return f"t{secrets.token_hex(4)}"
