"""Helpers of tests/test_scripts.py, used by other test files too."""

from __future__ import annotations

import socket


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
