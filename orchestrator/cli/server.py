"""Serving the API with waitress: the only module that imports waitress.

On SIGINT or SIGTERM the server stops taking requests, cancels running jobs
(their workers go down the kill ladder and are recorded as ``cancelled``) and
exits. Jobs are not left running unsupervised.

One server per folder: ``serve`` holds an exclusive lock on ``.server.lock`` in the folder for
its whole life and, once it listens, writes ``.server.json`` (pid, port, URL, process start time,
instance id), removed when it exits. The folder's scripts reach and signal only the server that
record names, after checking the pid, its start time and ``/health``'s instance id all agree.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import ConfigError
from ..process.ports import FolderPort, bind_error, choose_port, keep_port

if TYPE_CHECKING:  # config pulls in yaml; `spawn` registers next to us and must start light
    from ..config import Settings
    from ..config.live import ConfigWatch

log = logging.getLogger("orchestrator.server")
# Bind addresses whose URL, as this machine reaches it, is http://127.0.0.1:PORT (0.0.0.0, :: and ""
# bind every interface: reachable from other machines too, so they need api.allow_remote).
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::", "")


@dataclass
class RunningServer:
    """A waitress server on a thread (tests, ``orchestrator run``)."""

    server: Any
    thread: threading.Thread
    url: str
    api_key: str
    closing: threading.Event

    def close(self) -> None:
        self.closing.set()
        self.server.close()
        self.thread.join(5)


# What one response (a followed log, a download) may hold unsent before its handler waits for
# the client. waitress keeps up to this much of already-sent output in memory too, so it bounds
# each stream's memory; its default (16 MiB) would let 24 log followers hold 400 MB.
OUTPUT_HIGH_WATERMARK = 4 << 20
PORT_TRIES = 3  # choices of this folder's port when each is taken between its probe and its bind


def build(settings: Settings, engine: Any = None, *, port: int | None = None) -> tuple[Any, Any, str, str]:
    """Create (engine, waitress server, base URL, instance id) without running it. Refuses a busy port."""
    from waitress.server import create_server

    from ..api.app import create_app
    from ..api.request_context import EXTENSION
    from ..engine.core import Engine

    _refuse_unsafe(settings)
    engine = engine or Engine(settings)
    app = create_app(settings, engine)
    host = settings.api.host
    port = settings.api.port if port is None else port
    _check_port_free(host, port)
    try:
        server = create_server(
            app,
            host=host,
            port=port,
            threads=settings.api.threads,
            ident="orchestrator",
            # Flask enforces the cap with a JSON 413; waitress only stops bodies far beyond it.
            max_request_body_size=settings.api.max_body_bytes * 2 + 65536,
            expose_tracebacks=False,
            channel_timeout=max(120, int(settings.api.long_poll_max) + 30),
            connection_limit=1000,
            outbuf_high_watermark=OUTPUT_HIGH_WATERMARK,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise _port_in_use(host, port) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Check api.host and api.port.") from None
    effective = getattr(server, "effective_port", port)
    shown = "127.0.0.1" if host in LOCAL_HOSTS else host
    url = f"http://{shown}:{effective}"
    # Where workers (on any node) and the links the server sends out (webhooks, approval) reach the
    # API: api.public_url when set (a node on another machine cannot use 127.0.0.1), else this URL.
    engine.api_url = settings.api.public_url.rstrip("/") or url
    return engine, server, url, app.extensions[EXTENSION]["instance"]


def _refuse_unsafe(settings: Settings) -> None:
    """Before anything starts: a weak admin key, an address other machines reach (``check_bind``)."""
    from ..api.auth import check_admin_key

    check_admin_key(settings.api.api_key)
    check_bind(settings.api.host, settings.api.allow_remote)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the API on this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it resolves to whatever DNS says, another machine's reach
        return False


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse an address other machines can reach (including 0.0.0.0, :: and "", every interface)
    unless ``api.allow_remote`` says so: the API speaks plain HTTP with a key in a header."""
    if allow_remote or is_loopback(host):
        return
    raise ConfigError(
        f"api.host {host or '(empty: every interface)'!r} lets other machines reach the API; it listens on "
        "127.0.0.1 unless you set api.allow_remote: true. Better: keep api.host 127.0.0.1 and let a reverse "
        "proxy on this machine (nginx, caddy) serve it over TLS. If you do allow remote, put TLS in front of it "
        "all the same, keep api.api_key secret, and set api.public_url to the address nodes reach it at.",
        key="api.allow_remote",
    )


def _check_port_free(host: str, port: int) -> None:
    """Refuse a busy port ourselves: waitress leaks its socket when its own bind fails."""
    if port == 0:
        return
    failed = bind_error(host, port)
    if failed is not None and failed.errno == errno.EADDRINUSE:
        raise _port_in_use(host, port)


def _port_in_use(host: str, port: int) -> ConfigError:
    return ConfigError(
        f"port {port} on {host} is already in use (another orchestrator? try curl http://{host}:{port}/health). "
        "Stop it, or name another port (--port, or api.port in config.yaml); "
        "without --port, python api_server.py takes a free port for this folder and keeps it.",
        port=port,
    )


def start_in_thread(settings: Settings, engine: Any = None, *, port: int = 0) -> RunningServer:
    engine, server, url, _ = build(settings, engine, port=port)
    closing = threading.Event()

    def run() -> None:
        try:
            server.run()
        except (OSError, ValueError):
            if not closing.is_set():  # closing the socket under the loop ends it this way
                raise

    thread = threading.Thread(target=run, name="waitress", daemon=True)
    thread.start()
    return RunningServer(server=server, thread=thread, url=url, api_key=settings.api.api_key, closing=closing)


def embedded_server(engine: Any, settings: Settings) -> RunningServer:
    """A loopback API for ``orchestrator run`` so its workers can start child jobs.
    Uses the configured key, or a random one that lives as long as the run."""
    key = settings.api.api_key or secrets.token_urlsafe(32)
    local = settings.replace(api={"api_key": key, "host": "127.0.0.1", "port": 0, "public_url": ""})
    engine.settings = local
    return start_in_thread(local, engine, port=0)


RECORD_NAME = ".server.json"
LOCK_NAME = ".server.lock"


@dataclass(frozen=True)
class ServerRecord:
    """What ``.server.json`` holds: written by the server itself once it listens."""

    pid: int
    port: int
    url: str
    started_at: float  # the process's start time (psutil), so a reused pid is never mistaken for it
    instance: str  # also in GET /health; not a secret
    base_dir: str
    note: str = ""  # why it listens where it does when that is not api.port (ports.FolderPort.note)


def record_path(base_dir: Path | str) -> Path:
    return Path(base_dir) / RECORD_NAME


def read_record(base_dir: Path | str) -> ServerRecord | None:
    try:
        data = json.loads(record_path(base_dir).read_text(encoding="utf-8"))
        return ServerRecord(
            pid=int(data["pid"]),
            port=int(data["port"]),
            url=str(data["url"]),
            started_at=float(data["started_at"]),
            instance=str(data["instance"]),
            base_dir=str(data["base_dir"]),
            note=str(data.get("note") or ""),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def process_start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def health_instance(url: str, timeout: float = 2.0) -> str | None:
    """The instance id /health answers at ``url`` (standard library only; never through a proxy), or None."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/health", timeout=timeout) as answer:
            return str(json.loads(answer.read()).get("instance") or "") or None
    except (OSError, ValueError):
        return None


def check_record(record: ServerRecord, timeout: float = 2.0) -> str | None:
    """None when the record names a live server of this folder; else why it does not."""
    started = process_start_time(record.pid)
    if started is None:
        return f"pid {record.pid} is not running"
    if abs(started - record.started_at) > 0.05:
        return f"pid {record.pid} is another process now (it started at a different time)"
    seen = health_instance(record.url, timeout)
    if seen != record.instance:
        return (
            f"{record.url}/health does not answer as this folder's server (instance {seen or 'none'}, expected {record.instance})"
        )
    return None


def folder_server(base_dir: Path | str) -> ServerRecord | None:
    """This folder's running server, verified, or None."""
    record = read_record(base_dir)
    return record if record is not None and check_record(record) is None else None


def try_lock(path: Path) -> IO[str] | None:
    """An exclusive, non-blocking flock on ``path`` (kept while the returned file stays open)."""
    import fcntl

    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the process's life)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def folder_lock_held(base_dir: Path | str) -> bool:
    """True while some server of this folder runs (it holds ``.server.lock``)."""
    handle = try_lock(Path(base_dir) / LOCK_NAME)
    if handle is None:
        return True
    handle.close()
    return False


def _claim_folder(settings: Settings) -> IO[str]:
    base = Path(settings.base_dir)
    lock = try_lock(base / LOCK_NAME)
    if lock is None:
        record = read_record(base)
        where = f" (pid {record.pid}, {record.url})" if record else ""
        raise ConfigError(
            f"this folder ({base}) already has a running API server{where}: one server per folder. "
            "Use it, or stop it first with ./quick-start.sh --stop."
        )
    return lock


def _write_record(settings: Settings, url: str, port: int, instance: str, note: str) -> ServerRecord:
    record = ServerRecord(
        pid=os.getpid(),
        port=port,
        url=url,
        started_at=process_start_time(os.getpid()) or time.time(),
        instance=instance,
        base_dir=str(settings.base_dir),
        note=note,
    )
    path = record_path(settings.base_dir)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return record


def _remove_record(settings: Settings, record: ServerRecord) -> None:
    if read_record(settings.base_dir) == record:
        record_path(settings.base_dir).unlink(missing_ok=True)


def serve(settings: Settings, exact_port: bool = False, watch: ConfigWatch | None = None) -> int:
    """Run until SIGINT/SIGTERM, then cancel running jobs and exit 0. It listens on the port this
    folder keeps (ports.choose_port: api.port unless another program holds it), or, with
    ``exact_port`` (``--port``), on api.port or not at all. ``watch``: its config file, looked at
    before each new job (config/live.py)."""
    from ..process.runner import sweep_dead_servers
    from ..retention.lifetime import start_retention

    configure_logging(settings)
    lock = _claim_folder(settings)  # noqa: F841 (held, by staying open, until this process ends)
    base = Path(settings.base_dir)
    choice, (engine, server, url, instance) = _build_on_folder_port(settings, base, exact_port)
    engine.submission.config_watch = watch
    listening = int(getattr(server, "effective_port", settings.api.port))
    note = ""
    if choice is not None:
        keep_port(base, choice.configured, listening)
        note = choice.note(listening)
    retention = None
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()
        server.close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    record = _write_record(settings, url, listening, instance, note)
    try:
        for root_id in engine.takeover.recover():
            log.warning("recovered job tree %s: the server had stopped while it ran", root_id)
        sweep_dead_servers()
        retention = start_retention(engine, settings)  # orchestrator.retention_days: None when off
        log.info(
            "orchestrator API listening on %s (workspace %s, %d threads)", url, settings.workspace_root, settings.api.threads
        )
        if note:
            log.warning("%s", note)
        print(f"orchestrator API listening on {url}", flush=True)
        try:
            if not stop.is_set():
                server.run()
        except (OSError, ValueError):
            if not stop.is_set():
                raise
        if retention is not None:
            retention.set()
        log.info("stopping: cancelling running jobs (kill ladder, grace %.1fs)", settings.workers.kill_grace)
        engine.shutdown(timeout=settings.workers.kill_grace + 30)
        log.info("stopped")
    finally:
        _remove_record(settings, record)
    return 0


def _build_on_folder_port(
    settings: Settings, base: Path, exact_port: bool
) -> tuple[FolderPort | None, tuple[Any, Any, str, str]]:
    """``build`` on the port this folder keeps (ports.choose_port), or with ``exact_port`` on api.port
    or not at all (no choice: None). A port found free can be taken before the bind by another
    folder's server started at the same moment: it is then chosen again (it is busy now)."""
    if exact_port:
        return None, build(settings)
    from ..engine.core import Engine

    _refuse_unsafe(settings)
    engine = Engine(settings)  # made once, bound to each port in turn: it is the slow part of a start
    for _ in range(PORT_TRIES):
        choice = choose_port(base, settings.api.host, settings.api.port)
        try:
            return choice, build(settings, engine, port=choice.port)
        except ConfigError as exc:
            taken = exc
            if not choice.port or exc.details.get("port") != choice.port:
                break
    engine.shutdown(timeout=10)
    raise taken


def configure_logging(settings: Settings) -> None:
    from ..workspace.logs import JsonFormatter

    settings.log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(settings.log_dir / "server.log", encoding="utf-8")
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if settings.logging.enable_structured else plain)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(plain)
    root = logging.getLogger()
    root.setLevel(settings.logging.level)
    root.handlers[:] = [handler, console]
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def cmd_serve(args: argparse.Namespace) -> int:
    api: dict[str, Any] = {}
    if args.host:
        api["host"] = args.host
    if args.port is not None:
        api["port"] = args.port
    from ..config import load_settings
    from ..config.live import ConfigWatch
    from ..config.settings import config_file

    overrides = {"api": api} if api else None
    settings = load_settings(args.config, overrides=overrides)
    watch = ConfigWatch(
        settings, config_file(args.config, settings.base_dir), lambda: load_settings(args.config, overrides=overrides)
    )
    return serve(settings, exact_port=args.port is not None, watch=watch)
