"""Whether a TCP port can be listened on now: the one probe behind the server's own port check,
the port this folder's server keeps, and the port reserved for each worktree worker.

A folder's server listens on ``api.port`` while it is free. When another program holds it, the
server takes a free port and keeps it (``.server.port`` beside ``.server.json``): the next start
uses it again while it is free, so the dashboard's links and bookmarks stay valid across restarts
instead of moving to a new random port each time."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

PORT_FILE = ".server.port"  # in the folder: {"api_port": the configured port, "port": the one kept instead}


def bind_error(host: str, port: int) -> OSError | None:
    """The error binding ``host:port`` gives now (with SO_REUSEADDR, as most servers bind), or
    None when a server could listen there. An IPv6 host is probed over IPv6."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


@dataclass(frozen=True)
class FolderPort:
    """Where this folder's server is to listen, and why (``choose_port``)."""

    port: int  # to listen on; 0: a new free port, the system's choice
    configured: int  # api.port
    kept: int | None  # the port this folder kept instead of api.port, if any
    busy: tuple[int, ...]  # the ports found in use by another program, in the order tried

    def note(self, listening: int) -> str:
        """The line saying where the server listens when that is not api.port ("" when it is)."""
        if self.configured == 0:
            return ""
        if not self.busy:
            if listening == self.configured:
                return ""
            return (
                f"listening on this folder's port {listening}, kept since port {self.configured} (api.port) was in use "
                f"(delete {PORT_FILE} to go back to api.port)"
            )
        if listening == self.configured:
            return f"this folder's port {self.kept} is in use by another program now: back on port {self.configured} (api.port)"
        if self.kept is None:
            said = f"port {self.configured} is in use by another program (api.port; not this folder's server)"
        else:
            said = f"this folder's port {self.kept} is in use by another program now, and port {self.configured} (api.port) too"
        return f"{said}: this folder's server takes port {listening} and keeps it for its next starts while it is free"


def kept_port(base_dir: Path, configured: int) -> int | None:
    """The port this folder kept instead of ``configured``; None when there is none (or it was
    kept for another api.port, or the file is unreadable)."""
    try:
        data = json.loads((base_dir / PORT_FILE).read_text(encoding="utf-8"))
        port = data["port"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if data.get("api_port") != configured or not isinstance(port, int) or not 0 < port < 65536:
        return None
    return port


def choose_port(base_dir: Path, host: str, configured: int) -> FolderPort:
    """The port kept for this folder while it is free, else ``configured`` while it is free, else
    a new one (0). ``configured`` 0 means any port each time: nothing is kept."""
    if configured == 0:
        return FolderPort(0, 0, None, ())
    kept = kept_port(base_dir, configured)
    busy: list[int] = []
    for port in dict.fromkeys(p for p in (kept, configured) if p is not None):
        if bind_error(host, port) is None:
            return FolderPort(port, configured, kept, tuple(busy))
        busy.append(port)
    return FolderPort(0, configured, kept, tuple(busy))


def keep_port(base_dir: Path, configured: int, listening: int) -> None:
    """Remember ``listening`` as this folder's port when it is not api.port (forget it when it is)."""
    path = base_dir / PORT_FILE
    if listening == configured or configured == 0:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"api_port": configured, "port": listening}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
