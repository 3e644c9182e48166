"""The index's tables and the one place where SQLite and PostgreSQL differ.

Both backends hold the same four tables (plus ``meta``): ``jobs`` (one row per job of every
tree), ``tasks`` (one row per worker), ``events`` (the progress events, Kage Bunshin's
``progress_events`` table) and ``roots`` (per root tree, the marker of its records on disk when it was
last indexed: how staleness is seen). Every statement is written once with ``?`` placeholders;
``Dialect`` turns it into the backend's form (``%s`` for psycopg) and fills the three type
words that differ. Nothing else in the package knows which backend it talks to.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..workspace.layout import index_database

log = logging.getLogger("orchestrator.index")

SCHEMA_VERSION = "2"  # a different version on disk: the tables are dropped and rebuilt from the workspace

JOB_COLUMNS = (
    "id",
    "root_id",
    "parent_job_id",
    "depth",
    "status",
    "request",
    "created_at",
    "started_at",
    "ended_at",
    "workers",
    "planner",
    "planner_cost_usd",
    "merge",
    "selections",
    "error",
    "outcome",
)
TASK_COLUMNS = (
    "job_id",
    "name",
    "root_id",
    "depth",
    "task_id",
    "kind",
    "model",
    "status",
    "candidate",
    "selected",
    "cost_usd",
    "duration",
    "files_changed",
    "branch",
    "created_at",
)
EVENT_COLUMNS = ("root_id", "job_id", "worker", "kind", "type", "status", "message", "time")

DDL = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS roots (root_id TEXT PRIMARY KEY, marker TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, root_id TEXT NOT NULL, parent_job_id TEXT, depth INTEGER NOT NULL,
        status TEXT NOT NULL, request TEXT NOT NULL, created_at {real} NOT NULL, started_at {real},
        ended_at {real}, workers INTEGER NOT NULL, planner TEXT, planner_cost_usd {real}, merge TEXT,
        selections INTEGER NOT NULL, error TEXT, outcome TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (depth, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, depth, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_outcome ON jobs (outcome, depth, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_root ON jobs (root_id, created_at, id)",
    """CREATE TABLE IF NOT EXISTS tasks (
        job_id TEXT NOT NULL, name TEXT NOT NULL, root_id TEXT NOT NULL, depth INTEGER NOT NULL,
        task_id TEXT, kind TEXT NOT NULL, model TEXT, status TEXT NOT NULL, candidate INTEGER,
        selected INTEGER, cost_usd {real}, duration {real}, files_changed INTEGER NOT NULL, branch TEXT,
        created_at {real} NOT NULL, PRIMARY KEY (job_id, name))""",
    "CREATE INDEX IF NOT EXISTS tasks_by_root ON tasks (root_id)",
    """CREATE TABLE IF NOT EXISTS events (
        id {serial}, root_id TEXT NOT NULL, job_id TEXT NOT NULL, worker TEXT, kind TEXT,
        type TEXT NOT NULL, status TEXT NOT NULL, message TEXT NOT NULL, time {real} NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, id)",
    "CREATE INDEX IF NOT EXISTS events_by_root ON events (root_id)",
)
TABLES = ("events", "tasks", "jobs", "roots", "meta")


class Connection(Protocol):
    """What the index uses of a DB-API connection (sqlite3's and psycopg's alike)."""

    def cursor(self) -> Any: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Dialect:
    """The SQL differences, kept here: placeholders and three type words."""

    name: str
    placeholder: str
    real: str
    serial: str
    tables: str  # the names of the tables that exist

    def sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    def ddl(self) -> list[str]:
        return [s.format(real=self.real, serial=self.serial) for s in DDL]


SQLITE = Dialect(
    "sqlite", "?", "REAL", "INTEGER PRIMARY KEY AUTOINCREMENT", "SELECT name FROM sqlite_master WHERE type = 'table'"
)
POSTGRES = Dialect(
    "postgresql",
    "%s",
    "DOUBLE PRECISION",
    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
)


@functools.lru_cache(maxsize=64)  # the same few statements, asked for with every batch
def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """INSERT ... ON CONFLICT DO UPDATE: the same words in SQLite (3.24+) and PostgreSQL."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"


class Store:
    """A backend: how to connect, and the tables made ready (created, or rebuilt on a new schema)."""

    dialect: Dialect
    where: str  # for log lines: a path, or the server's host (never a password)

    def connect(self) -> Connection:
        raise NotImplementedError

    def prepare(self, conn: Connection, identity: str) -> bool:
        """Create the tables; True when they were new or dropped (everything must be indexed). They
        are dropped when made by another schema version or for another workspace (``identity``),
        or when one of them is missing."""
        cur = conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        cur.execute("SELECT key, value FROM meta")
        found = dict(cur.fetchall())
        wanted = {"schema": SCHEMA_VERSION, "workspace": identity}
        cur.execute(self.dialect.tables)
        complete = set(TABLES) <= {name for (name,) in cur.fetchall()}
        fresh = found != wanted or not complete
        if fresh:
            if found:
                log.info("job index at %s was made for another schema or workspace, or lost a table: rebuilding it", self.where)
            for table in TABLES:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in self.dialect.ddl():
            cur.execute(statement)
        if fresh:
            cur.executemany(self.dialect.sql("INSERT INTO meta (key, value) VALUES (?, ?)"), list(wanted.items()))
        conn.commit()
        return fresh


class SqliteStore(Store):
    """A file in the workspace (WAL: readers never wait for the writer). A file that is not a
    database, or not this one, is moved aside (``<name>.corrupt-<time>``) and rebuilt."""

    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL keeps it consistent; the workspace is the truth anyway
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, disk full: not corrupt
                raise
            raise Corrupt(self.path) from None
        return conn

    def prepare(self, conn: Connection, identity: str) -> bool:
        try:
            cur = conn.cursor()
            cur.execute("PRAGMA quick_check")
            if cur.fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            return super().prepare(conn, identity)
        except sqlite3.OperationalError:  # locked, read-only, disk full: not corrupt
            raise
        except sqlite3.DatabaseError:
            raise Corrupt(self.path) from None

    def move_aside(self) -> Path:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")
        return aside


class PostgresStore(Store):
    """A PostgreSQL server (psycopg 3), named by ``database.url``; imported only when used."""

    dialect = POSTGRES

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = describe_url(url)

    def connect(self) -> Connection:
        import psycopg

        conn: Connection = psycopg.connect(self.url, connect_timeout=5)
        return conn


class Corrupt(Exception):
    """The SQLite file is not a usable database."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is not a usable SQLite database")
        self.path = path


def describe_url(url: str) -> str:
    """A database URL without its user and password: what log lines may show."""
    scheme, _, rest = url.partition("://")
    host = rest.rpartition("@")[2].split("?")[0]
    return f"{scheme}://{host}"


def open_store(url: str, workspace_root: Path) -> Store:
    """``database.url``: empty for the SQLite file in the workspace, ``postgresql://...`` for a
    server (config/schema.py checks the form)."""
    if url:
        return PostgresStore(url)
    return SqliteStore(index_database(workspace_root))


@contextlib.contextmanager
def transaction(conn: Connection) -> Iterator[Any]:
    """A cursor whose work is committed at the end, or rolled back on an error."""
    cur = conn.cursor()
    try:
        yield cur
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
