"""What the workers' egress proxy adds to a streamed model response, and to a bulk download.

    .venv/bin/python bench/bench_proxy.py [--chunks 200] [--rounds 10] [--mb 50]

This process runs the proxy (orchestrator/network/proxy.py) as the server does, with one Unix-socket
listener whose policy lists 127.0.0.1. A child process stands for the world outside it: a loopback
server that streams Server-Sent Events, and the worker's side (what the sandbox's bridge would
carry). Each round, in alternating order, the child makes one request directly over TCP and one
through a CONNECT tunnel of the listener, and on each it plays ping-pong ``--chunks`` times: it
sends one byte, the server answers with one SSE chunk (the size of a streamed model delta), and the
time until the whole chunk is back is one sample. Added latency = a percentile of the proxied
samples minus the same percentile of the direct ones. Then ``--mb`` MB are sent by the server and
read by the child, directly and through the tunnel, ``--rounds`` times interleaved: the proxied
throughput as a share of the direct one (median of each).

A measurement, not a test: exit 0 whatever the figures; 1 when the child failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.network.policy import Policy  # noqa: E402
from orchestrator.network.proxy import Proxy  # noqa: E402

TARGET_MS = 2.0  # the proxy's added latency per streamed chunk, p50
CHUNK = b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello, wor"}}\n\n'


# The world: the streaming server and the client (run in the child process).


def serve(conn: socket.socket) -> None:
    """One request: ``GET /stream`` answers an SSE chunk per byte received; ``GET /bulk/<n>`` sends n bytes."""
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b""
        while b"\r\n\r\n" not in head:
            more = conn.recv(4096)
            if not more:
                return
            head += more
        path = head.split(b" ", 2)[1].decode()
        if path.startswith("/bulk/"):
            size = int(path.rsplit("/", 1)[1])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"x" * (1 << 20)
            while size > 0:
                conn.sendall(block[: min(size, len(block))])
                size -= len(block)
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        while conn.recv(1):
            conn.sendall(CHUNK)


def start_server() -> int:
    server = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(server.getsockname()[1])


def open_stream(via: str | None, port: int, path: str) -> socket.socket:
    """A connection to the server, direct (``via`` None) or through the listener at ``via``; the
    request sent and the response head read."""
    if via is None:
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(via)
        conn.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % port)
        assert read_head(conn).startswith(b"HTTP/1.1 200"), "the tunnel was not opened"
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert read_head(conn).startswith(b"HTTP/1.1 200")
    return conn


def read_head(conn: socket.socket) -> bytes:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        more = conn.recv(1)  # byte by byte: nothing of the body is read with the head
        if not more:
            raise ConnectionError("closed before the head ended")
        head += more
    return head


def ping_pong(via: str | None, port: int, chunks: int) -> list[float]:
    """Seconds from each byte sent to its whole chunk received."""
    samples = []
    with open_stream(via, port, "/stream") as conn:
        for _ in range(chunks):
            start = time.perf_counter()
            conn.sendall(b".")
            got = 0
            while got < len(CHUNK):
                got += len(conn.recv(65536))
            samples.append(time.perf_counter() - start)
    return samples


def download(via: str | None, port: int, size: int) -> float:
    """Seconds to read ``size`` bytes of body."""
    start = time.perf_counter()
    with open_stream(via, port, f"/bulk/{size}") as conn:
        got = 0
        while got < size:
            more = conn.recv(1 << 20)
            if not more:
                raise ConnectionError(f"closed after {got} of {size} bytes")
            got += len(more)
    return time.perf_counter() - start


def world(via: str, chunks: int, rounds: int, mb: float) -> dict[str, list[float]]:
    port = start_server()
    found: dict[str, list[float]] = {"direct": [], "proxied": [], "direct_s": [], "proxied_s": []}
    size = int(mb * 1_000_000)
    for turn in range(rounds):
        ways = [("direct", None), ("proxied", via)]
        for name, path in ways if turn % 2 == 0 else reversed(ways):
            found[name] += ping_pong(path, port, chunks)
    for turn in range(rounds):
        ways = [("direct", None), ("proxied", via)]
        for name, path in ways if turn % 2 == 0 else reversed(ways):
            found[f"{name}_s"].append(download(path, port, size))
    return found


# The proxy's side (this process).


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=200, help="SSE chunks per request")
    parser.add_argument("--rounds", type=int, default=10, help="requests (and downloads) each way, interleaved")
    parser.add_argument("--mb", type=float, default=50.0, help="megabytes per download")
    parser.add_argument("--world", metavar="SOCKET", help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args(argv)
    if args.world:
        print(json.dumps(world(args.world, args.chunks, args.rounds, args.mb)))
        return 0

    folder = tempfile.mkdtemp(prefix="bench-proxy-")
    proxy = Proxy()
    try:
        listener = proxy.open(Policy.parse(["127.0.0.1"]), unix_path=os.path.join(folder, "worker.sock"))
        assert listener.path is not None
        child = [sys.executable, __file__, "--world", listener.path, *(argv if argv is not None else sys.argv[1:])]
        done = subprocess.run(child, capture_output=True, text=True, timeout=600)
        connections = listener.tally.connections
    finally:
        proxy.stop()
        shutil.rmtree(folder, ignore_errors=True)
    if done.returncode != 0:
        print(f"the client failed (exit {done.returncode}):\n{done.stderr}", file=sys.stderr)
        return 1
    found = json.loads(done.stdout)
    report(found, args, connections, os.getloadavg())
    return 0


def report(found: dict[str, list[float]], args: argparse.Namespace, connections: int, load: tuple[float, ...]) -> None:
    direct = found["direct"]
    ms = {(way, p): percentile(found[way], p) * 1000 for way in ("direct", "proxied") for p in (0.5, 0.99)}
    added50, added99 = ms["proxied", 0.5] - ms["direct", 0.5], ms["proxied", 0.99] - ms["direct", 0.99]
    size = args.mb * 1_000_000
    rate = {way: size / statistics.median(found[f"{way}_s"]) / 1e6 for way in ("direct", "proxied")}
    print(f"streamed chunks: {len(direct)} each way ({args.rounds} requests of {args.chunks}), {len(CHUNK)} bytes each")
    print(f"{'way':<10}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'direct':<10}{ms['direct', 0.5]:>10.3f}{ms['direct', 0.99]:>10.3f}")
    print(f"{'proxied':<10}{ms['proxied', 0.5]:>10.3f}{ms['proxied', 0.99]:>10.3f}")
    print(f"{'added':<10}{added50:>10.3f}{added99:>10.3f}")
    print(f"bulk: {args.mb:g} MB x {args.rounds} each way: direct {rate['direct']:.0f} MB/s, proxied {rate['proxied']:.0f} MB/s")
    print(f"the listener allowed {connections} connections; load average {' '.join(f'{x:.2f}' for x in load)}")
    verdict = "met" if added50 <= TARGET_MS else "not met"
    print(f"RESULT proxy added latency p50 = {added50:.3f} ms (target <= {TARGET_MS:g} ms) {verdict}; p99 = {added99:.3f} ms")
    print(
        f"RESULT proxy throughput = {rate['proxied'] / rate['direct']:.2f}x direct ({rate['proxied']:.0f} / {rate['direct']:.0f} MB/s)"
    )


if __name__ == "__main__":
    sys.exit(main())
