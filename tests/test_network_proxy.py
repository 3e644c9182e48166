"""The workers' egress proxy over real sockets on 127.0.0.0/8 only: CONNECT, plain HTTP and SOCKS5
through a Unix-socket or a loopback-port listener, refusals answered and counted, a fixed-target
listener, malformed input, streaming, and the listener's and the proxy's lifetimes. Names are
resolved by an injected resolver: no test asks a real DNS, and no packet leaves the machine."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import struct
import tempfile
import threading
import time

import pytest

from orchestrator.network.policy import Endpoint, Policy
from orchestrator.network.proxy import Outcome, Proxy, Refusal

NAMES = {"echo.test": ["127.0.0.1"], "rebind.example.com": ["10.0.0.5"], "both.example.com": ["10.0.0.5", "127.0.0.1"]}


async def fake_resolver(host, port):
    if host not in NAMES:
        raise OSError(f"unknown name {host}")
    return NAMES[host]


class Server:
    """A loopback server running ``handle(conn)`` per connection in a thread; counts its accepts."""

    def __init__(self, handle, host="127.0.0.1"):
        self.sock = socket.create_server((host, 0))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.handle, self.accepted, self.heads = handle, 0, []
        self.threads = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _run(self, conn):
        with conn:
            try:
                self.handle(self, conn)
            except OSError:
                pass

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self.thread.join(5)
        for thread in self.threads:
            thread.join(5)


def echo(server, conn):
    while data := conn.recv(65536):
        conn.sendall(data)


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            break
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def http_answer(server, conn):
    head, rest = read_head(conn)
    server.heads.append(head)
    length = next((int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")), 0)
    while len(rest) < length:
        rest += conn.recv(65536)
    body = b"got " + rest
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


@pytest.fixture
def echo_server():
    server = Server(echo)
    yield server
    server.close()


@pytest.fixture
def other_server():
    """A server on 127.0.0.2 that no policy lists: it must never see a connection."""
    server = Server(echo, host="127.0.0.2")
    yield server
    server.close()


@pytest.fixture
def http_server():
    server = Server(http_answer)
    yield server
    server.close()


@pytest.fixture
def sock_dir():
    folder = tempfile.mkdtemp(prefix="proxy-", dir="/tmp")  # short: a socket path is at most 107 bytes
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def proxy():
    proxy = Proxy(resolver=fake_resolver)
    yield proxy
    proxy.stop()


@pytest.fixture(params=["unix", "tcp"])
def door(request, proxy, sock_dir):
    """A way to open a listener: on a Unix socket, or on a port of 127.0.0.1."""

    def open_listener(policy, **kwargs):
        if request.param == "unix":
            return proxy.open(policy, unix_path=os.path.join(sock_dir, "w1.sock"), **kwargs)
        return proxy.open(policy, tcp_port=0, **kwargs)

    return open_listener


def dial(listener):
    if listener.path is not None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(5)
        try:
            conn.connect(listener.path)
        except OSError:
            conn.close()
            raise
    else:
        conn = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    return conn


def recv_all(conn):
    data = b""
    while more := conn.recv(65536):
        data += more
    return data


def connect_through(listener, authority):
    conn = dial(listener)
    conn.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    head, rest = read_head(conn)
    return conn, head, rest


def socks(listener, host, port, *, command=1):
    conn = dial(listener)
    conn.sendall(b"\x05\x01\x00")
    assert conn.recv(2) == b"\x05\x00"
    if isinstance(host, bytes):
        address = b"\x01" + host
    else:
        address = b"\x03" + bytes([len(host)]) + host.encode()
    conn.sendall(bytes([5, command, 0]) + address + struct.pack("!H", port))
    reply = b""
    while len(reply) < 10:
        more = conn.recv(10 - len(reply))
        if not more:
            break
        reply += more
    return conn, reply


def test_connect_reaches_an_allowed_endpoint(door, echo_server):
    listener = door(Policy.parse([], always=[Endpoint("127.0.0.1", echo_server.port)]))
    conn, head, _ = connect_through(listener, f"127.0.0.1:{echo_server.port}")
    with conn:
        assert head.startswith("HTTP/1.1 200")
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        conn.shutdown(socket.SHUT_WR)  # a half-close reaches the server, whose end comes back
        assert recv_all(conn) == b""
    assert listener.tally.connections == 1 and listener.tally.total == 0


def test_connect_to_an_unlisted_address_is_refused_answered_and_counted(door, echo_server, other_server):
    seen = []
    listener = door(Policy.parse([f"127.0.0.2:{other_server.port + 1}"]), on_refusal=seen.append)
    for count in (1, 2):
        conn, head, body = connect_through(listener, f"127.0.0.2:{other_server.port}")
        with conn:
            body += recv_all(conn)
        assert head.startswith("HTTP/1.1 403 Forbidden")
        assert "\r\nX-Orchestrator-Refused: not in workers.sandbox_allow\r\n" in head
        assert (
            body
            == f"orchestrator proxy: 127.0.0.2:{other_server.port} refused: not in workers.sandbox_allow (workers.sandbox_allow)\n".encode()
        )
        assert seen[-1] == Refusal("127.0.0.2", other_server.port, "not in workers.sandbox_allow", count)
    assert listener.tally.refused() == [seen[-1]] and listener.tally.total == 2 and listener.tally.connections == 0
    assert other_server.accepted == 0


def test_a_loopback_address_listed_literally_is_reached(proxy, sock_dir, other_server):
    listener = proxy.open(Policy.parse([f"127.0.0.2:{other_server.port}"]), unix_path=os.path.join(sock_dir, "w.sock"))
    conn, head, _ = connect_through(listener, f"127.0.0.2:{other_server.port}")
    with conn:
        assert head.startswith("HTTP/1.1 200")
        conn.sendall(b"two")
        assert conn.recv(3) == b"two"


def test_plain_http_is_forwarded_in_origin_form_without_proxy_headers(door, http_server):
    listener = door(Policy.parse(["127.0.0.1"]))
    conn = dial(listener)
    with conn:
        conn.sendall(
            b"POST http://127.0.0.1:%d/v1/messages?stream=1 HTTP/1.1\r\nHost: wrong.example\r\n"
            b"Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive, X-Hop\r\n"
            b"X-Hop: 1\r\nX-Api-Key: k\r\nContent-Length: 5\r\n\r\nhello" % http_server.port
        )
        answer = recv_all(conn)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"\r\n\r\ngot hello")
    (head,) = http_server.heads
    lines = head.split("\r\n")
    assert lines[0] == "POST /v1/messages?stream=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{http_server.port}" in lines and "Connection: close" in lines
    assert "X-Api-Key: k" in lines and "Content-Length: 5" in lines
    assert not [line for line in lines if line.lower().startswith(("proxy-", "x-hop", "connection: keep"))]


def test_plain_http_to_a_refused_host_is_answered_403(door):
    listener = door(Policy.parse(["*"]))
    conn = dial(listener)
    with conn:
        conn.sendall(b"GET http://10.0.0.5/latest/meta-data HTTP/1.1\r\nHost: 10.0.0.5\r\n\r\n")
        answer = recv_all(conn).decode()
    assert answer.startswith("HTTP/1.1 403 Forbidden")
    assert "X-Orchestrator-Refused: a private address (10.0.0.5) that workers.sandbox_allow does not list" in answer


def test_socks5_connects_a_resolved_name_and_an_ipv4_address(door, echo_server):
    listener = door(Policy.parse(["echo.test"], always=[Endpoint("127.0.0.1", echo_server.port)]))
    for host in ("echo.test", socket.inet_aton("127.0.0.1")):
        conn, reply = socks(listener, host, echo_server.port)
        with conn:
            assert reply[:2] == b"\x05\x00"
            conn.sendall(b"socks")
            assert conn.recv(5) == b"socks"
    assert listener.tally.connections == 2


def test_socks5_refused_by_the_policy_replies_not_allowed(door, other_server):
    seen = []
    listener = door(Policy.parse([]), on_refusal=seen.append)
    conn, reply = socks(listener, socket.inet_aton("127.0.0.2"), other_server.port)
    with conn:
        assert reply[:2] == b"\x05\x02"
        assert recv_all(conn) == b""
    assert seen == [Refusal("127.0.0.2", other_server.port, "not in workers.sandbox_allow", 1)]
    assert other_server.accepted == 0


def test_a_name_resolving_to_a_private_address_is_refused_before_any_connect(proxy, sock_dir):
    # Given a name a wildcard allows, whose (injected) DNS answer is 10.0.0.5, and a connector that records
    dialled = []

    async def connector(address, port):
        dialled.append((address, port))
        raise OSError("a test never connects here")

    guarded = Proxy(resolver=fake_resolver, connector=connector)
    try:
        listener = guarded.open(Policy.parse(["*.example.com"]), unix_path=os.path.join(sock_dir, "g.sock"))
        # When the worker asks for it by CONNECT and by SOCKS
        conn, head, _ = connect_through(listener, "rebind.example.com:443")
        conn.close()
        conn, reply = socks(listener, "rebind.example.com", 443)
        conn.close()
    finally:
        guarded.stop()
    # Then both are refused for the address, and nothing was dialled
    reason = "a private address (10.0.0.5) that workers.sandbox_allow does not list"
    assert head.startswith("HTTP/1.1 403") and f"X-Orchestrator-Refused: {reason}" in head
    assert reply[:2] == b"\x05\x02"
    assert listener.tally.refused() == [Refusal("rebind.example.com", 443, reason, 2)]
    assert dialled == []


def test_only_the_allowed_address_of_a_name_is_dialled(proxy, sock_dir, echo_server):
    listener = proxy.open(Policy.parse(["*.example.com", "127.0.0.1"]), unix_path=os.path.join(sock_dir, "b.sock"))
    conn, head, _ = connect_through(listener, f"both.example.com:{echo_server.port}")
    with conn:
        assert head.startswith("HTTP/1.1 200")  # 10.0.0.5 skipped, 127.0.0.1 listed literally
        conn.sendall(b"x")
        assert conn.recv(1) == b"x"


def test_a_fixed_listener_forwards_to_its_target_and_still_checks_it(proxy, sock_dir, echo_server, other_server):
    api = Endpoint("127.0.0.1", echo_server.port, "the orchestrator's API")
    fixed = proxy.open(Policy.parse([], always=[api]), unix_path=os.path.join(sock_dir, "api.sock"), target=api)
    with dial(fixed) as conn:
        conn.sendall(b"GET /api/v1/jobs HTTP/1.1\r\n\r\n")  # raw: the bytes are not read as a proxy request
        assert conn.recv(100) == b"GET /api/v1/jobs HTTP/1.1\r\n\r\n"
    seen = []
    unlisted = proxy.open(Policy.parse([]), tcp_port=0, target=Endpoint("127.0.0.2", other_server.port), on_refusal=seen.append)
    with dial(unlisted) as conn:
        assert recv_all(conn) == b""
    assert seen == [Refusal("127.0.0.2", other_server.port, "not in workers.sandbox_allow", 1)]
    assert other_server.accepted == 0 and fixed.tally.connections == 1


def test_an_unreachable_destination_answers_502_saying_so_and_is_recorded_apart_from_refusals(door):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    seen = []
    listener = door(Policy.parse(["127.0.0.1", "nowhere.test"]), on_refusal=seen.append)
    for authority in (f"127.0.0.1:{port}", "nowhere.test:443"):
        conn, head, rest = connect_through(listener, authority)
        body = rest + recv_all(conn)
        conn.close()
        assert head.startswith("HTTP/1.1 502 Bad Gateway"), head
        assert "x-orchestrator-unreachable: " in head.lower(), head
        assert f"orchestrator proxy: allowed host {authority} could not be reached: ".encode() in body, body
    conn, reply = socks(listener, socket.inet_aton("127.0.0.1"), port)
    conn.close()
    assert reply[:2] == b"\x05\x05"
    assert listener.tally.total == 0 and listener.tally.refused() == []  # not refusals
    unreached = {(r.host, r.port): r for r in listener.tally.unreached()}
    assert set(unreached) == {("127.0.0.1", port), ("nowhere.test", 443)}, unreached
    assert unreached[("127.0.0.1", port)].count == 2  # CONNECT, then SOCKS
    assert unreached[("127.0.0.1", port)].reason == f"connection refused at 127.0.0.1:{port}"
    assert unreached[("nowhere.test", 443)].reason.startswith("its name did not resolve: ")  # a failed DNS lookup
    assert [r.outcome for r in seen] == [Outcome.UNREACHABLE] * 3


@pytest.mark.parametrize(
    "sent, answer",
    [
        (b"\x00\x01garbage\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET https://x.example/ HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"CONNECT no-port HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"CONNECT a b:1 HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET http://x/ HTTP/1.1\r\n folded: header\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET http://x/ HTTP/1.1\r\nX: " + b"a" * 70000, b"HTTP/1.1 431 Request Header Fields Too Large"),
        (b"\x05\x01", b""),  # truncated SOCKS greeting
        (b"\x05\x01\x02", b"\x05\xff"),  # SOCKS with username/password only
        (b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", b"\x05\x00\x05\x07"),  # BIND
        (b"\x05\x01\x00\x05\x01\x00\x09", b"\x05\x00\x05\x08"),  # an unknown address type
        (b"\x05\x01\x00\x04\x01\x00\x01", b"\x05\x00"),  # SOCKS4 in a SOCKS5 request: closed
        (b"GET", b""),  # a head cut short
    ],
)
def test_malformed_input_is_answered_or_closed_and_the_proxy_goes_on(door, echo_server, sent, answer):
    listener = door(Policy.parse(["127.0.0.1"]))
    with dial(listener) as conn:
        conn.sendall(sent)
        conn.shutdown(socket.SHUT_WR)
        try:
            got = recv_all(conn)
        except ConnectionResetError:  # the proxy closed with the client's bytes unread
            got = b""
    assert got.startswith(answer)
    conn, head, _ = connect_through(listener, f"127.0.0.1:{echo_server.port}")
    with conn:
        assert head.startswith("HTTP/1.1 200")


def test_a_streamed_response_is_passed_on_chunk_by_chunk(door):
    acks = queue.Queue()

    def stream(server, conn):
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        for i in range(5):
            conn.sendall(b"data: %d\n\n" % i)
            acks.get(timeout=5)  # the next chunk only once the client has this one

    server = Server(stream)
    try:
        listener = door(Policy.parse(["127.0.0.1"]))
        conn = dial(listener)
        with conn:
            conn.sendall(b"GET http://127.0.0.1:%d/events HTTP/1.1\r\n\r\n" % server.port)
            head, got = read_head(conn)
            for i in range(5):
                while f"data: {i}\n\n".encode() not in got:
                    got += conn.recv(100)
                acks.put(i)
            assert recv_all(conn) == b""
        assert head.startswith("HTTP/1.1 200 OK")
    finally:
        server.close()


def test_closing_a_listener_ends_its_tunnels_and_removes_its_socket(proxy, sock_dir, echo_server):
    path = os.path.join(sock_dir, "c.sock")
    listener = proxy.open(Policy.parse(["127.0.0.1"]), unix_path=path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    conn, head, _ = connect_through(listener, f"127.0.0.1:{echo_server.port}")
    with conn:
        assert head.startswith("HTTP/1.1 200")
        listener.close()
        try:
            assert conn.recv(1) == b""
        except ConnectionResetError:
            pass
    assert not os.path.exists(path)
    listener.close()  # again: nothing
    with pytest.raises(FileNotFoundError):
        dial(listener)


def test_a_listener_opens_again_at_its_path_and_only_a_socket_is_replaced(proxy, sock_dir, echo_server):
    path = os.path.join(sock_dir, "r.sock")
    left = socket.socket(socket.AF_UNIX)  # a socket file a stopped server left behind
    left.bind(path)
    left.close()
    first = proxy.open(Policy.parse(["127.0.0.1"]), unix_path=path)
    second = proxy.open(Policy.parse(["127.0.0.1"]), unix_path=path)  # the server restarted
    first.close()  # does not remove the second's socket
    conn, head, _ = connect_through(second, f"127.0.0.1:{echo_server.port}")
    conn.close()
    assert head.startswith("HTTP/1.1 200")
    plain = os.path.join(sock_dir, "file")
    open(plain, "w").close()
    with pytest.raises(ValueError, match="is not a socket"):
        proxy.open(Policy.parse([]), unix_path=plain)
    with pytest.raises(ValueError, match="exactly one"):
        proxy.open(Policy.parse([]))


def test_a_failing_callback_does_not_end_the_proxy(door, echo_server):
    def broken(*_):
        raise RuntimeError("the caller's bug")

    listener = door(Policy.parse(["127.0.0.1"]), on_refusal=broken, on_connect=broken)
    conn, head, _ = connect_through(listener, "127.0.0.2:9")
    conn.close()
    assert head.startswith("HTTP/1.1 403")
    conn, head, _ = connect_through(listener, f"127.0.0.1:{echo_server.port}")
    conn.close()
    assert head.startswith("HTTP/1.1 200")


def test_stop_closes_everything_and_leaves_no_thread(sock_dir, echo_server):
    proxy = Proxy(resolver=fake_resolver)
    path = os.path.join(sock_dir, "s.sock")
    listener = proxy.open(Policy.parse(["127.0.0.1"]), unix_path=path)
    conn, head, _ = connect_through(listener, f"127.0.0.1:{echo_server.port}")
    thread = proxy._thread  # its own: another test's sandboxed workers may have started the shared proxy
    assert thread is not None
    proxy.stop()
    proxy.stop()
    with conn:
        try:
            assert conn.recv(1) == b""
        except ConnectionResetError:
            pass
    assert not os.path.exists(path) and listener.closed
    assert not thread.is_alive()
    proxy.start()  # and it starts again
    assert proxy.open(Policy.parse([]), tcp_port=0).port
    again = proxy._thread
    assert again is not None and again is not thread
    proxy.stop()
    assert not again.is_alive()


def test_shared_is_one_started_proxy():
    from orchestrator.network import proxy as module

    assert module.shared() is module.shared() and module.shared().running
    module.shared().stop()
    module._shared = None


def test_a_slow_head_is_answered_408_and_a_silent_client_closed(door, monkeypatch):
    from orchestrator.network import proxy as module

    monkeypatch.setattr(module, "HEAD_TIMEOUT", 0.2)
    listener = door(Policy.parse([]))
    with dial(listener) as conn:
        conn.sendall(b"GET http://x.example/ HTTP/1.1\r\n")
        assert recv_all(conn).startswith(b"HTTP/1.1 408 Request Timeout")
    with dial(listener) as conn:
        assert recv_all(conn) == b""
    with dial(listener) as conn:
        conn.sendall(b"\x05\x01\x00\x05")  # a SOCKS request that stops halfway
        assert recv_all(conn) == b"\x05\x00"


def test_a_refused_request_with_a_body_still_gets_its_answer(door):
    listener = door(Policy.parse([]))
    with dial(listener) as conn:
        conn.sendall(b"POST http://x.example/upload HTTP/1.1\r\nContent-Length: 200000\r\n\r\n" + b"b" * 200000)
        answer = recv_all(conn)
    assert answer.startswith(b"HTTP/1.1 403 Forbidden")


def test_many_tunnels_at_once_each_reach_their_own_end(door, echo_server):
    listener = door(Policy.parse(["127.0.0.1"]))
    results = []

    def one(i):
        conn, head, _ = connect_through(listener, f"127.0.0.1:{echo_server.port}")
        with conn:
            payload = b"%d:" % i * 10000
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            results.append(recv_all(conn) == payload)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [True] * 20 and listener.tally.connections == 20


def test_a_listener_holds_at_most_its_cap_of_connections_and_serves_again_below_it(sock_dir, echo_server, monkeypatch):
    from orchestrator.network import proxy as module

    monkeypatch.setattr(module, "MAX_CONNECTIONS", 3)
    proxy = Proxy(resolver=fake_resolver)
    try:
        listener = proxy.open(Policy.parse(["127.0.0.1"]), unix_path=os.path.join(sock_dir, "cap.sock"))
        held = [connect_through(listener, f"127.0.0.1:{echo_server.port}")[0] for _ in range(3)]
        extra = socket.socket(socket.AF_UNIX)
        extra.connect(listener.path)
        extra.settimeout(5)
        try:
            assert extra.recv(1) == b""  # closed at once, before any answer
        except ConnectionResetError:
            pass
        extra.close()
        for conn in held:
            conn.close()
        deadline = time.monotonic() + 5
        while len(listener._tasks) >= 3 and time.monotonic() < deadline:  # the tunnels end as their clients go
            time.sleep(0.01)
        conn, head, _ = connect_through(listener, f"127.0.0.1:{echo_server.port}")
        conn.close()
        assert " 200 " in head.split("\r\n", 1)[0]
    finally:
        proxy.stop()
