"""A real PostgreSQL server for the tests, started by them: Debian's ``postgresql`` package
(``initdb``, ``pg_ctl``; .ci/run installs it) in a temporary folder, on a free 127.0.0.1 port,
with password authentication, stopped at the end of the session. Skips, saying why, only when
the binaries are absent. As root (a container), the server runs as the ``postgres`` user, since
PostgreSQL refuses to run as root. Under CI (``CI`` set) missing binaries fail instead."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DEBIAN_BIN = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(DEBIAN_BIN.glob(f"*/bin/{name}"), reverse=True)  # Debian keeps them off PATH
    return str(versions[0]) if versions else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as(uid: int | None, argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, user=uid)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")


@contextlib.contextmanager
def running_server() -> Iterator[Server]:
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if not (initdb and pg_ctl):
        why = "PostgreSQL's initdb and pg_ctl are not installed (Debian: apt-get install postgresql; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI must prove the PostgreSQL backend, not skip it
        pytest.skip(why)
    uid = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else None
    # As root, a folder the postgres user may enter (pytest's own temp folders are root's, mode 700).
    folder = Path(tempfile.mkdtemp(prefix="orch-pg-", dir="/tmp" if uid is not None else None))
    password = secrets.token_hex(12)
    (folder / "pw").write_text(password)
    if uid is not None:
        os.chown(folder, uid, -1)
        os.chown(folder / "pw", uid, -1)
    server = Server("127.0.0.1", free_port(), "orchestrator", password)
    data = folder / "data"
    try:
        _run_as(
            uid, [initdb, "-D", str(data), "-U", server.user, "--auth=scram-sha-256", f"--pwfile={folder / 'pw'}", "-E", "UTF8"]
        )
        options = f"-p {server.port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off"
        _run_as(uid, [pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "-t", "60", "start"])
        try:
            yield server
        finally:
            _run_as(uid, [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    with running_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: Server) -> str:
    """A fresh database on the session's server, for one test."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.url(name)
