"""Serving the API with waitress: the only module that imports waitress.

On SIGINT or SIGTERM the server stops taking requests, cancels running jobs
(their workers go down the kill ladder and are recorded as ``cancelled``) and
exits. Jobs are not left running unsupervised.
"""
from __future__ import annotations

import argparse
import errno
import logging
import secrets
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:  # config pulls in yaml; `spawn` registers next to us and must start light
    from .config import Settings

log = logging.getLogger("orchestrator.server")
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


def build(settings: Settings, engine: Any = None, *, port: int | None = None) -> tuple[Any, Any, str]:
    """Create (engine, waitress server, base URL) without running it. Refuses a busy port."""
    from waitress.server import create_server

    from .api.app import create_app
    from .api.auth import check_admin_key
    from .engine import Engine

    check_admin_key(settings.api.api_key)
    engine = engine or Engine(settings)
    app = create_app(settings, engine)
    host = settings.api.host
    port = settings.api.port if port is None else port
    _check_port_free(host, port)
    try:
        server = create_server(
            app, host=host, port=port, threads=settings.api.threads, ident="orchestrator",
            # Flask enforces the cap with a JSON 413; waitress only stops bodies far beyond it.
            max_request_body_size=settings.api.max_body_bytes * 2 + 65536, expose_tracebacks=False,
            channel_timeout=max(120, int(settings.api.long_poll_max) + 30), connection_limit=1000,
            outbuf_high_watermark=OUTPUT_HIGH_WATERMARK,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use (another orchestrator? try curl http://{host}:{port}/health). "
                "Stop it, or set api.port in config.yaml (or ORCHESTRATOR__API__PORT).", port=port) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Check api.host and api.port.") from None
    effective = getattr(server, "effective_port", port)
    shown = "127.0.0.1" if host in LOCAL_HOSTS else host
    url = f"http://{shown}:{effective}"
    engine.api_url = url
    return engine, server, url


def _check_port_free(host: str, port: int) -> None:
    """Refuse a busy port ourselves: waitress leaks its socket when its own bind fails."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use (another orchestrator? try curl http://{host}:{port}/health). "
                    "Stop it, or set api.port in config.yaml (or ORCHESTRATOR__API__PORT).", port=port) from None


def start_in_thread(settings: Settings, engine: Any = None, *, port: int = 0) -> RunningServer:
    engine, server, url = build(settings, engine, port=port)
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
    local = settings.replace(api={"api_key": key, "host": "127.0.0.1", "port": 0})
    engine.settings = local
    return start_in_thread(local, engine, port=0)


def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM, then cancel running jobs and exit 0."""
    from .prune import start_retention

    configure_logging(settings)
    engine, server, url = build(settings)
    for root_id in engine.recover():
        log.warning("recovered job tree %s: the server had stopped while it ran", root_id)
    retention = start_retention(engine, settings)  # orchestrator.retention_days: None when off
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()
        server.close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("orchestrator API listening on %s (workspace %s, %d threads)", url, settings.workspace_root, settings.api.threads)
    print(f"orchestrator API listening on {url}", flush=True)
    try:
        server.run()
    except (OSError, ValueError):
        if not stop.is_set():
            raise
    if retention is not None:
        retention.set()
    log.info("stopping: cancelling running jobs (kill ladder, grace %.1fs)", settings.workers.kill_grace)
    engine.shutdown(timeout=settings.workers.kill_grace + 30)
    log.info("stopped")
    return 0


def configure_logging(settings: Settings) -> None:
    from .logs import JsonFormatter

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
    from .config import load_settings

    settings = load_settings(args.config, overrides={"api": api} if api else None)
    return serve(settings)
