"""A worker that tries the network every way a sandboxed worker might (tests/test_network_allow.py):
through its proxy variables to an allowed and a denied loopback server, SOCKS5 to the denied one,
straight to each (no proxy), and this server's API at ORCHESTRATOR_API_URL. Prints one
JSON object: each way's outcome. Talks to 127.0.0.0/8 only.

    net_worker.py ALLOWED_PORT DENIED_ADDRESS DENIED_PORT
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.parse


def proxy() -> tuple[str, int]:
    url = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
    return url.hostname or "", url.port or 0


def connect_through(host: str, port: int) -> str:
    """HTTP CONNECT through the proxy, then a GET in the tunnel: the first line back."""
    with socket.create_connection(proxy(), timeout=10) as s:
        s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = _head(s)
        status = head.split(b"\r\n", 1)[0].decode()
        if " 200" not in status:
            refused = [line for line in head.split(b"\r\n") if line.lower().startswith(b"x-orchestrator-refused")]
            return f"{status} {refused[0].decode() if refused else ''}".strip()
        s.sendall(f"GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return _head(s).split(b"\r\n", 1)[0].decode() + " " + s.recv(100).decode(errors="replace")


def socks(host: str, port: int) -> str:
    with socket.create_connection(proxy(), timeout=10) as s:
        s.sendall(b"\x05\x01\x00")
        s.recv(2)
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
        reply = s.recv(10)
        return f"socks reply {reply[1]}"


def direct(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=5):
            return "connected"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror}"


def api() -> str:
    url = urllib.parse.urlsplit(os.environ["ORCHESTRATOR_API_URL"])
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(f"GET /health HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n\r\n".encode())
        return _head(s).split(b"\r\n", 1)[0].decode()


def _head(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def main() -> None:
    allowed, denied_host, denied = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    seen: dict[str, str] = {"proxy": os.environ.get("HTTPS_PROXY", "")}
    for name, attempt in (
        ("allowed", lambda: connect_through("127.0.0.1", allowed)),
        ("denied", lambda: connect_through(denied_host, denied)),
        ("denied again", lambda: connect_through(denied_host, denied)),
        ("socks denied", lambda: socks(denied_host, denied)),
        ("direct", lambda: direct("127.0.0.1", allowed)),
        ("direct denied", lambda: direct(denied_host, denied)),
        ("api", api),
    ):
        try:
            seen[name] = attempt()
        except Exception as exc:  # noqa: BLE001 - each way's outcome, whatever it is
            seen[name] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
