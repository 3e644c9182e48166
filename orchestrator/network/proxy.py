"""The workers' egress proxy: one asyncio loop in a daemon thread, a listener per worker or doors shared by all.

A sandboxed worker has no route out; a bridge in its network namespace carries each of its TCP
connections to a Unix socket this proxy listens on (or, where there is no namespace, the worker
talks to a port on 127.0.0.1). The listener a connection arrives on says whose it is: its
:class:`~orchestrator.network.policy.Policy`, its :class:`Tally` and where a refusal is reported; a
shared door (:attr:`Listener.identify`) asks, per connection, whose listener it is.

A listener without a ``target`` speaks the proxy protocols, told apart by the first byte: SOCKS5
(0x05: CONNECT, no authentication), HTTP ``CONNECT host:port`` (a tunnel), or a plain HTTP request
in absolute form (``GET http://host/path``), forwarded in origin form with its hop-by-hop and
``Proxy-*`` headers dropped and ``Connection: close``. A listener with a ``target`` forwards every
connection to that one endpoint as is (the worker's way to the orchestrator's API, say).

Each destination is checked by name, resolved once, each address checked, and the first allowed
address connected to by IP: the connection goes where the check looked, never to a second answer
of the DNS. A refusal answers 403 with ``X-Orchestrator-Refused: <reason>`` (SOCKS: reply 0x02) and
is counted per (host, port); an allowed destination that cannot be reached (its name does not resolve,
its connection fails) answers 502 saying so (``X-Orchestrator-Unreachable: <reason>``) and is counted
apart, as :attr:`Outcome.UNREACHABLE`. Both are reported to the listener's ``on_refusal``.
Bytes are copied as they arrive (a model's streamed answer is not held back) with backpressure, and
an end of one direction is passed on as a half-close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import logging
import os
import socket
import stat
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .policy import SETTING, Endpoint, Policy, normal_host

log = logging.getLogger("orchestrator.network")

CONNECT_TIMEOUT = 10.0  # seconds to resolve and connect upstream
HEAD_TIMEOUT = 30.0  # seconds to read an HTTP head or a SOCKS handshake
HEAD_LIMIT = 64 * 1024  # bytes of an HTTP head
CHUNK = 256 * 1024  # bytes read at a time; an upstream stream holds at most about twice this unread
LINGER_SECONDS = 1.0  # after an error answer, how long unread input is still read (and dropped)
LINGER_BYTES = 1 << 20  # and how much of it
CALL_TIMEOUT = 15.0  # seconds another thread waits for the proxy's loop to open or close a listener
BACKLOG = 128  # connections a listener holds before it accepts them (and before the loop takes it over)
# Connections one listener (one worker) holds open at once; past it a new one is closed at once: a
# worker opening connections in a loop must not take the server's file descriptors.
MAX_CONNECTIONS = 256

# SOCKS5 reply codes (RFC 1928).
SOCKS_OK = 0x00
SOCKS_FAILURE = 0x01
SOCKS_NOT_ALLOWED = 0x02
SOCKS_HOST_UNREACHABLE = 0x04
SOCKS_REFUSED = 0x05
SOCKS_COMMAND = 0x07
SOCKS_ADDRESS_TYPE = 0x08

# Request headers that are about this hop, not the request (RFC 9110 7.6.1), and never forwarded.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "host"})

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_T = TypeVar("_T")


class Outcome(str, Enum):
    """What became of a connection the proxy reports: refused by the policy, or allowed and not reached."""

    REFUSED = "refused"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Refusal:
    """A destination a listener refused (or, ``outcome`` UNREACHABLE, could not reach), its reason,
    and how often so far (this time included)."""

    host: str
    port: int
    reason: str
    count: int
    outcome: Outcome = Outcome.REFUSED


class Tally:
    """A listener's counts: refusals per (host, port), their total, and connections allowed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused: dict[tuple[str, int], Refusal] = {}
        self._unreached: dict[tuple[str, int], Refusal] = {}
        self._total = 0
        self._connections = 0

    def refuse(self, host: str, port: int, reason: str) -> Refusal:
        with self._lock:
            before = self._refused.get((host, port))
            refusal = Refusal(host, port, reason, before.count + 1 if before else 1)
            self._refused[(host, port)] = refusal
            self._total += 1
            return refusal

    def unreachable(self, host: str, port: int, reason: str) -> Refusal:
        """An allowed destination not reached (counted apart: not a refusal)."""
        with self._lock:
            before = self._unreached.get((host, port))
            found = Refusal(host, port, reason, before.count + 1 if before else 1, Outcome.UNREACHABLE)
            self._unreached[(host, port)] = found
            return found

    def unreached(self) -> list[Refusal]:
        """One per allowed (host, port) not reached, in the order first seen, with the latest count."""
        with self._lock:
            return list(self._unreached.values())

    def connected(self) -> None:
        with self._lock:
            self._connections += 1

    def refused(self) -> list[Refusal]:
        """One per refused (host, port), in the order first refused, with the latest count and reason."""
        with self._lock:
            return list(self._refused.values())

    @property
    def total(self) -> int:
        with self._lock:
            return self._total

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections


@dataclass(eq=False)
class Listener:
    """One worker's door: a Unix socket (``path``) or a port on 127.0.0.1 (``port``)."""

    policy: Policy
    path: str | None = None
    port: int | None = None
    target: Endpoint | None = None
    on_refusal: Callable[[Refusal], None] | None = None
    on_connect: Callable[[str, int], None] | None = None
    tally: Tally = field(default_factory=Tally)
    _proxy: Proxy | None = field(default=None, repr=False)
    _server: asyncio.AbstractServer | None = field(default=None, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    _inode: tuple[int, int] | None = field(default=None, repr=False)
    closed: bool = False
    # A door shared by many workers (network/egress.py): each connection's own listener (its worker's
    # policy, tally and reports, never listening itself), found from the accepted socket by what the
    # kernel says of its peer; None: nobody's, and the connection is closed unanswered.
    identify: Callable[[socket.socket], Listener | None] | None = field(default=None, repr=False)

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting, end its open connections and remove its socket file (without ``wait``: soon)."""
        if self._proxy is not None:
            self._proxy.close(self, wait=wait)


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Unreachable(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Malformed(Exception):
    """Input that is not the protocol: the connection is closed (after an answer where there is one)."""


class Proxy:
    """The proxy's loop and listeners. Every public method may be called from any thread but the
    proxy's own, and returns when done."""

    def __init__(self, *, resolver: Resolver | None = None, connector: Connector | None = None) -> None:
        self._resolver = resolver or _resolve
        self._connector = connector or _connect
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listeners: set[Listener] = set()  # touched in the loop's thread only

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the loop's thread (once: a running proxy is left as it is)."""
        with self._lock:
            if self.running:
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(target=self._run, args=(loop, ready), name="orchestrator-proxy", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread

    def stop(self) -> None:
        """Close every listener and connection, stop the loop and join its thread (again: nothing)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(CALL_TIMEOUT)
        except Exception:  # the loop is stopped below whatever went wrong
            log.warning("proxy: closing its listeners failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CALL_TIMEOUT)
        if not thread.is_alive():
            loop.close()

    def open(
        self,
        policy: Policy,
        *,
        unix_path: str | None = None,
        tcp_port: int | None = None,
        target: Endpoint | None = None,
        on_refusal: Callable[[Refusal], None] | None = None,
        on_connect: Callable[[str, int], None] | None = None,
        wait: bool = True,
        identify: Callable[[socket.socket], Listener | None] | None = None,
    ) -> Listener:
        """A new listener on ``unix_path`` (a socket there is replaced; mode 0600) or on 127.0.0.1's
        ``tcp_port`` (0: any free port). ``target``: forward every connection there, as is.

        The socket is bound and listening when this returns (made in the caller's thread: a
        connection that comes before the loop takes it over waits in the kernel's backlog); without
        ``wait`` the loop takes it over later, and this costs no hop between threads. ``identify``: a
        shared door (:attr:`Listener.identify`); ``policy`` then holds for no connection."""
        if (unix_path is None) == (tcp_port is None):
            raise ValueError("a listener needs exactly one of unix_path and tcp_port")
        self.start()
        listener = Listener(policy, unix_path, tcp_port, target, on_refusal, on_connect, _proxy=self, identify=identify)
        sock = _listening(listener)
        try:
            done = self._submit(self._open(listener, sock))
        except BaseException:
            sock.close()
            raise
        if wait:
            return done.result(CALL_TIMEOUT)
        done.add_done_callback(_logged)
        return listener

    def close(self, listener: Listener, *, wait: bool = True) -> None:
        """Close ``listener`` (see :meth:`Listener.close`); a closed one or a stopped proxy: nothing.
        Without ``wait``, the loop closes it later (its socket file and connections with it)."""
        if listener.closed or not self.running:
            listener.closed = True
            return
        done = self._submit(self._close(listener))
        if wait:
            done.result(CALL_TIMEOUT)
        else:
            done.add_done_callback(_logged)

    def later(self, function: Callable[..., object], *args: object) -> None:
        """Run ``function(*args)`` in the proxy's thread, after what was submitted before (a folder of
        listeners removed once they are closed); nobody waits for it, and what it raises is logged."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the proxy is not running")
        loop.call_soon_threadsafe(_guarded, function, args)

    def _submit(self, coroutine: Coroutine[object, object, _T]) -> concurrent.futures.Future[_T]:
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("the proxy is not running")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("the proxy's own thread cannot wait for its loop")
        return asyncio.run_coroutine_threadsafe(coroutine, loop)

    def _call(self, coroutine: Coroutine[object, object, _T]) -> _T:
        return self._submit(coroutine).result(CALL_TIMEOUT)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    async def _open(self, listener: Listener, sock: socket.socket) -> Listener:
        """The loop takes over ``sock`` (bound and listening: :func:`_listening`)."""
        serve = functools.partial(self._serve, listener)
        try:
            if listener.path is not None:
                server = await asyncio.start_unix_server(serve, sock=sock, limit=HEAD_LIMIT)
            else:
                server = await asyncio.start_server(serve, sock=sock, limit=HEAD_LIMIT)
        except BaseException:
            sock.close()
            raise
        listener._server = server
        if listener.closed:  # closed before the loop got to it
            server.close()
            return listener
        self._listeners.add(listener)
        return listener

    async def _close(self, listener: Listener) -> None:
        if listener.closed:
            return
        listener.closed = True
        if listener._server is None:  # not yet taken over by the loop: its socket file goes now, its socket then
            _unlink_own(listener)
            return
        self._listeners.discard(listener)
        if listener._server is not None:
            listener._server.close()
        tasks = set(listener._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CALL_TIMEOUT / 3)
        if listener._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(listener._server.wait_closed(), CALL_TIMEOUT / 3)
        _unlink_own(listener)  # only its own socket: a listener opened since at the same path keeps its file

    async def _shutdown(self) -> None:
        for listener in list(self._listeners):
            await self._close(listener)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=CALL_TIMEOUT / 3)

    # One connection.

    async def _serve(self, door: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        listener = door
        if door.identify is not None:  # a shared door: the connection is its worker's, or nobody's
            found = door.identify(writer.get_extra_info("socket"))
            if found is None:
                writer.transport.abort()
                return
            listener = found
        listener._tasks.add(task)
        cancelled = False
        try:
            if listener.closed or door.closed:  # (after the add: a close since sees the task, or it sees this)
                return
            if len(listener._tasks) > MAX_CONNECTIONS:
                log.warning("proxy: a worker holds %d connections open: a new one is closed", MAX_CONNECTIONS)
                cancelled = True
                return
            _nodelay(writer)
            if listener.target is not None:
                await self._fixed(listener, reader, writer)
                return
            first = await asyncio.wait_for(reader.readexactly(1), HEAD_TIMEOUT)
            if first == b"\x05":
                await self._socks(listener, reader, writer)
            else:
                await self._http(listener, first, reader, writer)
        except asyncio.CancelledError:
            cancelled = True  # the listener closes: end here, dropping what is unsent
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.TimeoutError, _Malformed) as exc:
            log.debug("proxy: a connection ended: %r", exc)
        except Exception:  # never let one connection's input take the loop down
            log.debug("proxy: a connection failed", exc_info=True)
        finally:
            listener._tasks.discard(task)
            _shut(writer, abort=cancelled)

    async def _fixed(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert listener.target is not None
        try:
            upstream = await self._upstream(listener, listener.target.host, listener.target.port)
        except (_Refused, _Unreachable) as exc:
            log.debug("proxy: fixed %s:%s not reached: %s", listener.target.host, listener.target.port, exc)
            return
        await _tunnel((reader, writer), upstream)

    async def _http(self, listener: Listener, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            return await _answer(
                reader, writer, 431, "Request Header Fields Too Large", f"a request head is at most {HEAD_LIMIT} bytes"
            )
        except asyncio.TimeoutError:
            return await _answer(reader, writer, 408, "Request Timeout", f"no request head within {HEAD_TIMEOUT:g} s")
        request = _parse_head(head)
        if request is None:
            return await _answer(reader, writer, 400, "Bad Request", "not an HTTP/1 request")
        method, url, version, headers = request
        if method == "CONNECT":
            destination = _authority(url)
            if destination is None:
                return await _answer(reader, writer, 400, "Bad Request", "CONNECT takes host:port")
            host, port = destination
            forwarded = b""
        else:
            parsed = _absolute(url)
            if parsed is None:
                return await _answer(
                    reader, writer, 400, "Bad Request", "a proxy request names an absolute http:// URL (https: use CONNECT)"
                )
            host, port, path = parsed
            forwarded = _forwarded_head(method, path, version, host, port, headers)
        try:
            upstream = await self._upstream(listener, host, port)
        except _Refused as exc:
            return await _refused(reader, writer, host, port, exc.reason)
        except _Unreachable as exc:
            text = f"orchestrator proxy: allowed host {_shown(host, port)} could not be reached: {exc}"
            return await _answer(
                reader, writer, 502, "Bad Gateway", text, f"X-Orchestrator-Unreachable: {_header_safe(str(exc))}\r\n"
            )
        if method == "CONNECT":
            await _tunnel((reader, writer), upstream, to_client=b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            # A forwarded request's exchange ends with its answer: Connection: close asked for no other.
            await _tunnel((reader, writer), upstream, to_upstream=forwarded, until_upstream_ends=True)

    async def _socks(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = await asyncio.wait_for(_socks_request(reader, writer), HEAD_TIMEOUT)
        try:
            upstream = await self._upstream(listener, host, port)
        except _Refused:
            return await _socks_reply(writer, SOCKS_NOT_ALLOWED)
        except _Unreachable as exc:
            return await _socks_reply(writer, exc.code)
        await _tunnel((reader, writer), upstream, to_client=_SOCKS_OK_REPLY)

    async def _upstream(self, listener: Listener, host: str, port: int) -> Streams:
        """Check ``host:port`` by name, resolve it once, check each address, connect to the first
        allowed one by IP. Raises _Refused (counted) or _Unreachable."""
        key = normal_host(host)
        if key is None or not 0 < port < 65536:
            raise _Unreachable(SOCKS_HOST_UNREACHABLE, "not a valid host name or port")
        verdict = listener.policy.check_name(key, port)
        if not verdict.allowed:
            raise self._refuse(listener, key, port, verdict.reason)
        if _is_ip(key):
            addresses: Sequence[str] = [key]
        else:
            try:
                addresses = await asyncio.wait_for(self._resolver(key, port), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                raise self._unreachable(
                    listener, key, port, SOCKS_HOST_UNREACHABLE, f"its name did not resolve: {exc or 'timed out'}"
                ) from None
        allowed, refused = [], None
        for address in dict.fromkeys(addresses):
            verdict = listener.policy.check_address(key, port, address)
            if verdict.allowed:
                allowed.append(address)
            elif refused is None:
                refused = verdict
        if not allowed:
            if refused is None:
                raise self._unreachable(listener, key, port, SOCKS_HOST_UNREACHABLE, "its name has no address")
            raise self._refuse(listener, key, port, refused.reason)
        try:
            upstream = await self._dial(allowed, port)
        except _Unreachable as exc:
            raise self._unreachable(listener, key, port, exc.code, str(exc)) from None
        listener.tally.connected()
        _notify(listener.on_connect, key, port)
        return upstream

    async def _dial(self, addresses: Sequence[str], port: int) -> Streams:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        failure = _Unreachable(SOCKS_HOST_UNREACHABLE, "no address")
        for address in addresses:
            try:
                upstream = await asyncio.wait_for(self._connector(address, port), max(deadline - loop.time(), 0.001))
            except ConnectionRefusedError:
                failure = _Unreachable(SOCKS_REFUSED, f"connection refused at {_shown(address, port)}")
            except (OSError, asyncio.TimeoutError) as exc:
                failure = _Unreachable(
                    SOCKS_HOST_UNREACHABLE,
                    f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc or 'timed out'} at {_shown(address, port)}",
                )
            else:
                _nodelay(upstream[1])
                return upstream
        raise failure

    @staticmethod
    def _refuse(listener: Listener, host: str, port: int, reason: str) -> _Refused:
        refusal = listener.tally.refuse(host, port, reason)
        log.debug("proxy: refused %s: %s", _shown(host, port), reason)
        _notify(listener.on_refusal, refusal)
        return _Refused(reason)

    @staticmethod
    def _unreachable(listener: Listener, host: str, port: int, code: int, reason: str) -> _Unreachable:
        found = listener.tally.unreachable(host, port, reason)
        log.debug("proxy: %s not reached: %s", _shown(host, port), reason)
        _notify(listener.on_refusal, found)
        return _Unreachable(code, reason)


def refuse(listener: Listener, host: str, port: int, reason: str) -> Refusal:
    """Count and report a refusal of ``listener``'s worker that no request carried (a shared door its
    plan does not name: network/egress.py), as the proxy reports its own."""
    refusal = listener.tally.refuse(host, port, reason)
    _notify(listener.on_refusal, refusal)
    return refusal


def _notify(callback: Callable[..., None] | None, *args: object) -> None:
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:  # the caller's code: its failure must not end the connection or the loop
        log.warning("proxy: a listener's callback failed", exc_info=True)


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def _connect(address: str, port: int) -> Streams:
    return await asyncio.open_connection(address, port, limit=CHUNK)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _shut(writer: asyncio.StreamWriter, *, abort: bool = False) -> None:
    if abort:
        writer.transport.abort()
    else:
        writer.close()


def _listening(listener: Listener) -> socket.socket:
    """``listener``'s socket, bound and listening (its port, or its file's identity, recorded)."""
    if listener.path is not None:
        _clear_socket_path(listener.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(listener.path)
            os.chmod(listener.path, 0o600)
            info = os.stat(listener.path)
            listener._inode = (info.st_dev, info.st_ino)
            sock.listen(BACKLOG)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", listener.port or 0))
            sock.listen(BACKLOG)
        except BaseException:
            sock.close()
            raise
        listener.port = sock.getsockname()[1]
    sock.setblocking(False)
    return sock


def _unlink_own(listener: Listener) -> None:
    """Remove ``listener``'s socket file, only its own: one opened since at the same path keeps its file."""
    if listener.path is not None and listener._inode is not None:
        with contextlib.suppress(OSError):
            info = os.stat(listener.path)
            if (info.st_dev, info.st_ino) == listener._inode:
                os.unlink(listener.path)


def _guarded(function: Callable[..., object], args: tuple[object, ...]) -> None:
    try:
        function(*args)
    except Exception:
        log.warning("proxy: %r failed", function, exc_info=True)


def _logged(done: concurrent.futures.Future[Any]) -> None:
    """A listener opened or closed without waiting: its failure is logged (nobody waits to see it)."""
    if not done.cancelled() and done.exception() is not None:
        log.warning("proxy: a listener's open or close failed: %r", done.exception())


def _clear_socket_path(path: str) -> None:
    """Remove a socket left at ``path`` (a restarted server listens there again); refuse anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"{path} exists and is not a socket: the proxy will not replace it")
    os.unlink(path)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy until the end, then pass the end on (half-close); False when either side failed."""
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
        return True
    except (OSError, RuntimeError) as exc:  # a reset, or a write after the other side closed
        log.debug("proxy: a copy ended: %r", exc)
        return False


async def _tunnel(
    client: Streams,
    upstream: Streams,
    *,
    to_client: bytes = b"",
    to_upstream: bytes = b"",
    until_upstream_ends: bool = False,
) -> None:
    """Write the opening bytes (a reply, a forwarded head), then copy both ways until both ends are
    done (or upstream's, or either side fails). Owns ``upstream``: entered as soon as it is
    connected, it closes it on every way out."""
    pipes: list[asyncio.Future[bool]] = []
    cancelled = False
    try:
        client[1].write(to_client)
        upstream[1].write(to_upstream)
        out = asyncio.ensure_future(_pipe(client[0], upstream[1]))
        back = asyncio.ensure_future(_pipe(upstream[0], client[1]))
        pipes = [out, back]
        pending: set[asyncio.Future[bool]] = {out, back}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not f.result() for f in done) or (until_upstream_ends and back in done):
                break
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        _shut(upstream[1], abort=cancelled)  # first: a second cancel during the wait below cannot skip it
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]] | None:
    """(method, target, version, headers) of an HTTP/1 request head, or None."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        return None
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name or "\t" in name:
            return None  # no colon, or whitespace around the name (a folded line included)
        headers.append((name, value.strip()))
    return parts[0].upper(), parts[1], parts[2], headers


def _authority(text: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port`` or ``[v6]:port``."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not host:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host, int(port)) if normal_host(host) is not None and 0 < int(port) < 65536 else None


def _absolute(url: str) -> tuple[str, int, str] | None:
    """(host, port, origin-form path) of an absolute ``http://`` URL."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        return None
    if parts.scheme.lower() != "http" or not parts.hostname or normal_host(parts.hostname) is None:
        return None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, path


def _forwarded_head(method: str, path: str, version: str, host: str, port: int, headers: list[tuple[str, str]]) -> bytes:
    named = {t.strip().lower() for n, v in headers if n.lower() == "connection" for t in v.split(",")}
    named -= {"content-length", "transfer-encoding"}  # the body is passed on as framed
    kept = [
        (n, v)
        for n, v in headers
        if n.lower() not in HOP_BY_HOP and not n.lower().startswith("proxy-") and n.lower() not in named
    ]
    authority = _shown(host, port) if port != 80 else _shown(host, port).rsplit(":", 1)[0]
    lines = [f"{method} {path} {version}", f"Host: {authority}", *(f"{n}: {v}" for n, v in kept), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, code: int, phrase: str, text: str, extra: str = ""
) -> None:
    """Answer, end the write side, and read what the client still sends (its request's body, say)
    for a moment: a socket closed with input unread is reset, and the reset can overtake the answer."""
    body = (text + "\n").encode("utf-8", "replace")
    writer.write(
        f"HTTP/1.1 {code} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1", "replace")
        + body
    )
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.LimitOverrunError):
        left = LINGER_BYTES
        while left > 0 and (data := await asyncio.wait_for(reader.read(CHUNK), LINGER_SECONDS)):
            left -= len(data)


async def _refused(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int, reason: str) -> None:
    text = f"orchestrator proxy: {_shown(host, port)} refused: {reason} ({SETTING})"
    await _answer(reader, writer, 403, "Forbidden", text, f"X-Orchestrator-Refused: {_header_safe(reason)}\r\n")


def _header_safe(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _socks_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int]:
    """The greeting (after its first byte) and the request of a SOCKS5 client: its (host, port)."""
    methods = await reader.readexactly((await reader.readexactly(1))[0])
    if 0x00 not in methods:
        writer.write(b"\x05\xff")  # only "no authentication": the listener says who the client is
        await writer.drain()
        raise _Malformed("no acceptable SOCKS method")
    writer.write(b"\x05\x00")
    version, command, _, kind = await reader.readexactly(4)
    if version != 5:
        raise _Malformed(f"SOCKS version {version}")
    if command != 1:
        await _socks_reply(writer, SOCKS_COMMAND)
        raise _Malformed(f"SOCKS command {command}")
    if kind == 1:
        host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
    elif kind == 3:
        name = await reader.readexactly((await reader.readexactly(1))[0])
        host = name.decode("ascii", "replace")
    elif kind == 4:
        host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
    else:
        await _socks_reply(writer, SOCKS_ADDRESS_TYPE)
        raise _Malformed(f"SOCKS address type {kind}")
    port = int.from_bytes(await reader.readexactly(2), "big")
    if port == 0 or normal_host(host) is None:
        await _socks_reply(writer, SOCKS_HOST_UNREACHABLE)
        raise _Malformed("not a valid SOCKS destination")
    return host, port


_SOCKS_OK_REPLY = bytes([5, SOCKS_OK, 0, 1, 0, 0, 0, 0, 0, 0])  # bound to 0.0.0.0:0: clients do not use it


async def _socks_reply(writer: asyncio.StreamWriter, code: int) -> None:
    writer.write(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
    await writer.drain()


_shared: Proxy | None = None
_shared_lock = threading.Lock()


def shared() -> Proxy:
    """This process's proxy, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Proxy()
        _shared.start()
        return _shared
