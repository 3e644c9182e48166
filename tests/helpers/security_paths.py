"""Helpers of tests/test_security_paths.py, used by other test files too."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from ..conftest import API_KEY


# -- helpers ---------------------------------------------------------------------------
def raw_request(
    url: str,
    method: str,
    target: str | bytes,
    *,
    key: str | bytes | None = API_KEY,
    headers: dict[str, bytes] | None = None,
    body: bytes = b"",
    raw_body: bytes | None = None,
    timeout: float = 30,
) -> tuple[int, dict, bytes]:
    """Send exactly these bytes as one HTTP/1.1 request; returns (status, headers, body).
    ``raw_body`` goes out as it is, with no Content-Length (e.g. a chunked body)."""
    parts = urlsplit(url)
    target = target.encode("utf-8") if isinstance(target, str) else target
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    if raw_body is None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if key is not None:
        lines.append(b"X-API-Key: " + (key.encode("utf-8") if isinstance(key, str) else key))
    lines += [name.encode() + b": " + value for name, value in (headers or {}).items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        try:
            sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + (body if raw_body is None else raw_body))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed) before it read everything; read that answer
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    return (
        (int(status_line.split()[1]) if status_line.startswith("HTTP/") else 0),
        {k.lower(): v for k, v in fields.items()},
        rest,
    )
