"""Whether a TCP port can be listened on now: the one probe behind the server's own port check,
quick-start's choice of a free port and the port reserved for each worktree worker."""

from __future__ import annotations

import socket


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
