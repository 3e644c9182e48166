"""A loopback server that answers each connection with b"hi" and closes: a destination for the egress tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def echo_server() -> Iterator[int]:
    """Its port on 127.0.0.1, while the block runs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hi")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        # Its thread ended before the socket is closed: a thread still in accept() would take the
        # connections of the next socket given the same descriptor (another test's server).
        server.shutdown(socket.SHUT_RDWR)
        thread.join(5)
        server.close()
