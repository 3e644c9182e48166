"""The spawn helper's HTTP path, standard library only: POST orchestrate, long-poll wait, status.

``orchestrator-spawn`` runs once per child job inside every AI worker, so its start-up is
on the hand-off's critical path: importing ``orchestrator.api.client`` (``requests``) costs
about ten times Python's own start-up, ``http.client`` (the ``email`` package) several
milliseconds more, and even ``json`` and ``socket`` (through ``re``, ``enum`` and
``selectors``) about 20 ms on a loaded 2-core machine against 1 ms for the C modules behind
them (measured). So this module speaks the little HTTP/1.1 it needs over one ``_socket`` per
request (``Connection: close``) and reads and writes JSON with ``_json``'s scanner and
encoder, falling back to ``socket``/``json`` where those are missing; an ``https://`` URL
goes through ``http.client`` instead.

It keeps the Python client's contract (``orchestrator/api/client.py``), which takes the rules
it shares from here (``error_of``, ``rate_limited``, the constants):

* Errors come back as the server's own classes (``ERRORS_BY_CODE``), with ``status_code``;
  a 429 is waited out as ``Retry-After`` asks (up to ``RATE_LIMIT_RETRIES`` waits of at most
  ``MAX_RETRY_AFTER`` s), then raised as ``RateLimited`` naming the server's limit.
* GET retries on any connection error, timeout or 5xx; POST only on failures before the
  request was sent (refused, DNS, connect timeout), since the server may have created the job.
* ``wait`` long-polls and waits out a server that cannot be reached (it is restarting and
  re-adopts its workers) for up to ``outage`` seconds in a row.
* Redirects are never followed (the key would go to another host): an error says so.
"""

from __future__ import annotations

import os
import time

from .. import protocol
from ..errors import (
    ERRORS_BY_CODE,
    TERMINAL_STATUSES,
    AuthenticationError,
    ConfigError,
    Conflict,
    Forbidden,
    JobNotFound,
    OrchestratorError,
    PayloadTooLarge,
    RateLimited,
    ServerUnreachable,
    Unavailable,
    ValidationError,
)

try:  # the C modules behind socket and json (see the module docstring)
    import _socket
except ImportError:  # pragma: no cover - a Python without it
    import socket as _socket  # type: ignore[no-redef]
try:
    import _json
except ImportError:  # pragma: no cover
    _json = None  # type: ignore[assignment]
TYPE_CHECKING = False  # typing's import costs the helper's start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

URL_ENV = protocol.API_URL
KEY_ENV = protocol.API_KEY
TERMINAL = frozenset(TERMINAL_STATUSES)
AT_REST = TERMINAL | {"waiting"}  # nothing runs: ended, or waiting for a person's approval (delivery/approval.py)
START_HINT = "start the server with `./quick-start.sh --start` (or `python api_server.py`)"
TIMEOUT = 30.0  # seconds per request, on top of a long-poll's hold
RETRIES = 3
BACKOFF = 0.2
RATE_LIMIT_RETRIES = 3
MAX_RETRY_AFTER = 60.0
MAX_BODY = 64 * 1024 * 1024  # a status document is far smaller; a runaway peer is cut off
_BY_STATUS: dict[int, type[OrchestratorError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: Forbidden,
    404: JobNotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ConfigError,
    429: RateLimited,
    503: Unavailable,
}
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SPACE = " \t\n\r"


class _ScanContext:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``: the defaults of ``json.loads``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__
    memo: dict = {}


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# typeshed wants a JSONDecoder; _ScanContext has the attributes the scanner reads, and typing.cast
# would import typing at start-up (see the module docstring)
_SCAN = _json.make_scanner(_ScanContext()) if _json is not None else None  # type: ignore[arg-type]
_ENCODE = (
    _json.make_encoder(None, _not_serializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    if _json is not None
    else None
)


def loads(data: bytes | str) -> Any:
    """``json.loads`` of a UTF-8 document; ValueError if it is not one JSON value."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    if _SCAN is None:  # pragma: no cover
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _SCAN(text, start)
    except StopIteration:
        raise ValueError("not a JSON document") from None
    if text[end:].strip(_SPACE):
        raise ValueError("extra data after the JSON document")
    return value


def dumps(value: Any) -> str:
    """``json.dumps(value)``: same separators, ASCII only."""
    if _ENCODE is None:  # pragma: no cover
        import json

        return json.dumps(value)
    return "".join(_ENCODE(value, 0))


class _NotSent(OSError):
    """A transport failure before any byte of the request left (a retry cannot duplicate it)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Response:
    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        self.status, self.reason, self.headers, self.body = status, reason, headers, body


class SpawnClient:
    """The worker's side of the API, from ``ORCHESTRATOR_API_URL`` and ``ORCHESTRATOR_API_KEY``."""

    def __init__(self, api_url: str | None = None, api_key: str | None = None) -> None:
        api_url = (api_url or os.environ.get(URL_ENV) or "").strip().rstrip("/")
        api_key = api_key or os.environ.get(KEY_ENV) or ""
        if not api_url or not api_key:
            missing = [
                f"{what} (set {env})"
                for what, env, value in (("the API URL", URL_ENV, api_url), ("the API key", KEY_ENV, api_key))
                if not value
            ]
            raise ValidationError("OrchestratorClient needs " + " and ".join(missing))
        scheme, sep, rest = api_url.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise ValidationError(f"api_url must start with http:// or https://, e.g. http://localhost:8000 (got {api_url!r})")
        if any(c in api_key for c in "\r\n\0"):
            raise ValidationError(f"{KEY_ENV} holds a line break or NUL; set it to the key alone")
        netloc, _, prefix = rest.partition("/")
        self.api_url = api_url
        self._key = api_key
        self._https = scheme.lower() == "https"
        self._prefix = "/" + prefix if prefix else ""
        self._host_header = netloc
        self._host, self._port = _split_host(netloc, 443 if self._https else 80)

    # --- the three calls spawn makes ------------------------------------------------
    def orchestrate(self, request: str, tasks: list[Any] | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"request": request, "config": dict(config or {})}
        if tasks is not None:
            body["tasks"] = list(tasks)
        return self._request("POST", "/api/v1/orchestrate", body=body)

    def status(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/jobs/{_quote(job_id)}/status")

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 30.0, outage: float = 120.0) -> dict[str, Any]:
        """Long-poll until the job is terminal or ``timeout`` seconds pass (None: no limit); a
        server that cannot be reached is waited for up to ``outage`` seconds in a row."""
        path = f"/api/v1/jobs/{_quote(job_id)}/wait"
        return long_poll(
            lambda hold: self._request("GET", path, query=f"?timeout={seconds(hold)}", timeout=hold + TIMEOUT),
            timeout,
            poll,
            outage,
        )

    # --- orchestrator-lock's calls (cli/lock.py) -------------------------------------------
    def lock(self, job_id: str, paths: list[str], lease: float | None = None, wait: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"paths": list(paths)}
        body.update({k: v for k, v in (("lease", lease), ("wait", wait)) if v is not None})
        hold = (3600.0 if wait is None else wait) + TIMEOUT  # the server waits at most 3600 s
        return self._request("POST", f"/api/v1/jobs/{_quote(job_id)}/locks", body=body, timeout=hold)

    def unlock(self, job_id: str, lock_id: str) -> None:
        self._request("DELETE", f"/api/v1/jobs/{_quote(job_id)}/locks/{_quote(lock_id)}")

    # --- transport ------------------------------------------------------------------
    def _request(self, method: str, path: str, *, body: Any = None, query: str = "", timeout: float = TIMEOUT) -> Any:
        data = None if body is None else dumps(body).encode()
        waits: list[float] = []
        while True:
            resp = self._send(method, path, query, data, timeout)
            if resp.status != 429:
                return self._handle(resp, method, path)
            err = error_of(resp.status, resp.reason, resp.body, resp.headers.get("retry-after"))
            delay = err.retry_after if err.retry_after is not None else _delay(len(waits))  # type: ignore[attr-defined]
            if len(waits) >= RATE_LIMIT_RETRIES or delay > MAX_RETRY_AFTER:
                raise rate_limited(err, method, path, waits, delay, RATE_LIMIT_RETRIES, MAX_RETRY_AFTER)
            time.sleep(delay)
            waits.append(delay)

    def _send(self, method: str, path: str, query: str, data: bytes | None, timeout: float) -> _Response:
        """One request, retried on transport failures and (GET) 5xx as the module docstring says."""
        for attempt in range(RETRIES + 1):
            last_try = attempt == RETRIES
            try:
                resp = self._exchange(method, self._prefix + path + query, data, timeout)
            except OSError as exc:
                not_sent = isinstance(exc, _NotSent)
                if last_try or not (method == "GET" or not_sent):
                    raise self._unreachable(method, path, exc, attempt + 1) from None
            else:
                if not (resp.status >= 500 and not last_try and method == "GET"):
                    return resp
            time.sleep(_delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(self, method: str, target: str, data: bytes | None, timeout: float) -> _Response:
        head = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self._host_header}",
            f"X-API-Key: {self._key}",
            "Accept: application/json",
            "Connection: close",
            "User-Agent: orchestrator-spawn",
        ]
        if data is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        if self._https:
            return self._exchange_tls(method, target, data, timeout, head)
        try:
            sock = _connect(self._host, self._port, min(timeout, TIMEOUT))
        except OSError as exc:  # refused, DNS, connect timeout: nothing was sent
            raise _NotSent(exc) from exc
        try:
            sock.settimeout(timeout)
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (data or b""))
            return _read_response(_Stream(sock))
        finally:
            sock.close()

    def _exchange_tls(self, method: str, target: str, data: bytes | None, timeout: float, head: list[str]) -> _Response:
        import http.client  # only for https://: its import costs the plain path several ms

        conn = http.client.HTTPSConnection(self._host, self._port, timeout=min(timeout, TIMEOUT))
        try:
            try:
                conn.connect()
            except OSError as exc:
                raise _NotSent(exc) from exc
            conn.sock.settimeout(timeout)
            headers = dict(line.split(": ", 1) for line in head[1:])
            headers.pop("Host")
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            body = resp.read(MAX_BODY + 1)
            return _Response(resp.status, resp.reason, {k.lower(): v for k, v in resp.getheaders()}, body)
        except http.client.HTTPException as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()

    def _handle(self, resp: _Response, method: str, path: str) -> Any:
        if resp.status >= 400:
            raise error_of(resp.status, resp.reason, resp.body, resp.headers.get("retry-after"))
        if 300 <= resp.status < 400:
            # Not followed: the key would be resent to whatever host the Location names.
            raise OrchestratorError(
                f"{method} {path} was redirected to {resp.headers.get('location')!r}; "
                f"set {URL_ENV} to the server's final address",
                status_code=resp.status,
            )
        if resp.status == 204:  # no content (a DELETE)
            return None
        try:
            return loads(resp.body)
        except ValueError:
            raise OrchestratorError(
                f"{method} {path} returned non-JSON ({resp.headers.get('content-type', 'no content type')}); "
                f"is {self.api_url} the orchestrator API?"
            ) from None

    def _unreachable(self, method: str, path: str, exc: BaseException, attempts: int) -> ServerUnreachable:
        cause = exc.cause if isinstance(exc, _NotSent) else exc
        url = self.api_url + path
        if method == "GET" or isinstance(exc, _NotSent):
            hint = START_HINT
        else:
            hint = "the request may have reached the server, so it was not retried (check list_jobs())"
        err = ServerUnreachable(
            f"Cannot reach the orchestrator API at {self.api_url} ({type(cause).__name__} on {method} "
            f"{url} after {attempts} attempt{'s' if attempts > 1 else ''}); {hint}.",
            url=url,
            attempts=attempts,
        )
        err.status_code = None  # type: ignore[attr-defined]
        return err


# --- helpers ------------------------------------------------------------------------------


def _connect(host: str, port: int, timeout: float) -> Any:
    """A connected TCP socket to the first address of ``host`` that answers."""
    # An ASCII host as bytes: a str one goes through the idna codec (its import costs ~1 ms).
    name = host.encode("ascii") if host.isascii() else host
    last: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last if last is not None else OSError(f"no address for {host!r}")


class _Stream:
    """Buffered reads on a socket: what ``_read_response`` needs of ``socket.makefile("rb")``."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def readline(self, limit: int) -> bytes:
        while b"\n" not in self.buffer and len(self.buffer) < limit and self._fill():
            pass
        end = self.buffer.find(b"\n")
        cut = min(end + 1 if end >= 0 else len(self.buffer), limit)
        line = bytes(self.buffer[:cut])
        del self.buffer[:cut]
        return line

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size and self._fill():
            pass
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def _read_response(stream: Any) -> _Response:
    """Status line, headers, then the body by Content-Length, chunks, or to the end."""
    line = stream.readline(65537)
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"bad status line {line[:80]!r}")
    status, reason = int(parts[1]), (parts[2].strip() if len(parts) > 2 else "")
    headers: dict[str, str] = {}
    while True:
        raw = stream.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int(stream.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += stream.read(size)
            stream.readline(3)
            if len(body) > MAX_BODY:
                raise ConnectionError("response body over 64 MiB")
        return _Response(status, reason, headers, bytes(body))
    length = headers.get("content-length")
    body = stream.read(int(length)) if length and length.isdigit() else stream.read(MAX_BODY + 1)
    if length and length.isdigit() and len(body) < int(length):
        raise ConnectionError(f"connection closed after {len(body)} of {length} bytes")
    return _Response(status, reason, headers, body)


def _split_host(netloc: str, default_port: int) -> tuple[str, int]:
    netloc = netloc.rpartition("@")[2]
    if netloc.startswith("["):  # [::1]:8000
        host, _, rest = netloc[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = netloc.partition(":")
    if port and not port.isdigit():
        raise ValidationError(f"{URL_ENV} has a bad port {port!r}; e.g. http://127.0.0.1:8000")
    return host, int(port) if port else default_port


def _quote(value: str) -> str:
    """One URL path segment, every byte outside the unreserved set %-escaped."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in str(value).encode())


def long_poll(fetch: Callable[[float], dict[str, Any]], timeout: float | None, poll: float, outage: float) -> dict[str, Any]:
    """The wait loop of both clients: ``fetch(hold)`` asks the server to hold the request up to
    ``hold`` seconds, until the job is terminal or ``timeout`` passes (None: no limit). A server
    that cannot be reached (restarting) is waited for up to ``outage`` seconds in a row."""
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    down_since: float | None = None
    while True:
        hold = poll if deadline is None else min(poll, max(deadline - time.monotonic(), 0.0))
        try:
            doc = fetch(hold)
        except ServerUnreachable:
            now = time.monotonic()
            down_since = down_since if down_since is not None else now
            if now - down_since >= outage or (deadline is not None and now >= deadline):
                raise
            time.sleep(min(2.0, max(0.1, now - down_since)))
            continue
        down_since = None
        if doc.get("status") in AT_REST or (deadline is not None and time.monotonic() >= deadline):
            return doc


def seconds(value: float) -> int | float:
    """A duration for a query string: ``30`` rather than ``30.0``."""
    value = round(max(value, 0.0), 3)
    return int(value) if value == int(value) else value


def _delay(attempt: int) -> float:
    """Exponential backoff plus up to 25% jitter (random is imported only when a retry needs it)."""
    import random

    base = BACKOFF * 2**attempt
    return base + random.uniform(0, 0.25 * base)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    import email.utils  # rare: only a date-valued Retry-After

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def error_of(status: int, reason: str, content: bytes, retry_after: str | None) -> OrchestratorError:
    """Rebuild the server's error class from a 4xx/5xx response (status, reason, body bytes and
    its Retry-After header), with ``status_code`` and, on a 429, ``retry_after`` seconds."""
    try:
        body = loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        cls = ERRORS_BY_CODE.get(body["error"], OrchestratorError)
        details = body.get("details")
        details = {str(k): v for k, v in details.items() if k != "message"} if isinstance(details, dict) else {}
        err = cls(str(body.get("message") or f"HTTP {status}"), **details)
        if cls is OrchestratorError and body["error"] != OrchestratorError.code:
            err.code = body["error"]
    else:
        text = content.decode("utf-8", "replace").strip()
        if len(text) > 500:
            text = text[:500] + "..."
        cls = _BY_STATUS.get(status, OrchestratorError)
        err = cls(text or f"HTTP {status} {reason or ''}".strip())
    err.status_code = status  # type: ignore[attr-defined]
    if isinstance(err, RateLimited) or status == 429:
        after = retry_after_seconds(retry_after)
        if after is None and isinstance(err.details.get("retry_after"), (int, float)):
            after = float(err.details["retry_after"])  # type: ignore[arg-type]
        err.retry_after = after  # type: ignore[attr-defined]
    return err


def rate_limited(
    err: OrchestratorError, method: str, path: str, waits: list[float], delay: float, retries: int, max_retry_after: float
) -> RateLimited:
    """The error once a 429 is no longer waited out: which limit, how long was waited, why it stopped."""
    limit = err.details.get("limit") or "the server's rate limit"
    why = (
        f"it asks for {delay:.0f}s more, over max_retry_after={max_retry_after:g}s"
        if delay > max_retry_after
        else f"rate_limit_retries={retries} reached"
    )
    message = (
        f"{method} {path} is rate limited by {limit}: still refused after {len(waits)} wait(s) totalling "
        f"{sum(waits):.1f}s as Retry-After asked; gave up because {why}. Server: {err.message}"
    )
    details = {k: v for k, v in err.details.items() if k != "retry_after"}
    limited = RateLimited(message, **details)
    limited.status_code = 429  # type: ignore[attr-defined]
    limited.retry_after = getattr(err, "retry_after", None)  # type: ignore[attr-defined]
    return limited
