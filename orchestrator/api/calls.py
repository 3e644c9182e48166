"""The API's one client: every call, the request rules, and a standard-library transport.

``ApiClient`` holds everything a call to the REST API needs whatever carries it: the URL and
key, the ``X-API-Key`` header, the paths, the retries, errors as the server's own classes and
the long-poll ``wait``. A subclass adds only a transport (``_exchange``): ``SpawnClient`` here
(one ``_socket`` per request), ``OrchestratorClient`` in ``client.py`` (a ``requests``
session, for connection reuse and the event stream).

``orchestrator-spawn`` runs once per child job inside every AI worker, so its start-up is on
the hand-off's critical path: importing ``requests`` costs about ten times Python's own
start-up, ``http.client`` (the ``email`` package) several milliseconds more, and even ``json``
and ``socket`` (through ``re``, ``enum`` and ``selectors``) about 20 ms on a loaded 2-core
machine against 1 ms for the C modules behind them (measured). So this module imports only
``orchestrator.errors`` and ``protocol`` (which import nothing), speaks the little HTTP/1.1 it
needs (``Connection: close``) and reads and writes JSON with ``_json``'s scanner and encoder,
falling back to ``socket``/``json`` where those are missing; an ``https://`` URL goes through
``http.client`` instead. ``typing``, ``logging`` and ``random`` stay out for the same reason.

The rules, for both transports:

* Errors come back as the server's own classes (``ERRORS_BY_CODE``; ``except JobNotFound``
  works across HTTP), each with ``status_code``; ``RateLimited`` also has ``retry_after``
  (seconds, or None).
* Every request is retried up to ``retries`` times, with exponential backoff and jitter, when
  the failure cannot have had an effect on the server or repeating it is harmless: GET and
  HEAD (read-only) on any connection error, timeout or 5xx; every other method (POST
  /orchestrate, POST /cancel, DELETE) only on failures before the request was sent
  (connection refused, DNS failure, connect timeout). A read timeout, a dropped connection or
  a 5xx after sending is raised at once, since the server may already have created the job (a
  retry would start a duplicate tree).
* 4xx responses are never retried, except 429: the server refused the request before doing
  anything, so any method may be sent again. The client sleeps the ``Retry-After`` the server
  sent (the backoff delay if it sent none) up to ``rate_limit_retries`` times, as long as each
  wait is at most ``max_retry_after`` seconds; then it raises ``RateLimited`` naming the
  server's limit (e.g. ``api.rate_limit_worker``) and how long it waited.
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
    from collections.abc import Callable, Mapping
    from typing import Any, Literal

URL_ENV = protocol.API_URL
KEY_ENV = protocol.API_KEY
KEY_FILE_ENV = protocol.API_KEY_FILE


def worker_key(environ: Mapping[str, str] | None = None) -> str:
    """The worker's credential: ``ORCHESTRATOR_API_KEY``, else the file ``ORCHESTRATOR_API_KEY_FILE``
    names (its first line; where /proc is shared the key is not put in the environment); '' for
    neither, or a file that cannot be read (the caller's message names both variables)."""
    environ = os.environ if environ is None else environ
    key = environ.get(KEY_ENV, "")
    path = environ.get(KEY_FILE_ENV, "")
    if key or not path:
        return key
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return ""


TERMINAL = frozenset(TERMINAL_STATUSES)
AT_REST = TERMINAL | {"waiting"}  # nothing runs: ended, or waiting for a person's approval (delivery/approval.py)
START_HINT = "start the server with `./quick-start.sh --start` (or `python api_server.py`)"
TIMEOUT = 30.0  # seconds per request, on top of a long-poll's hold
RETRIES = 3
BACKOFF = 0.2
RATE_LIMIT_RETRIES = 3
MAX_RETRY_AFTER = 60.0
_IDEMPOTENT = frozenset({"GET", "HEAD"})  # read-only: retried whatever failed (module docstring)
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


class _Response:
    """A response as the rules read it, whichever transport fetched it: ``headers`` are looked up
    by lower-case name; ``raw`` is the transport's own response when it was asked to stream."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], body: bytes, raw: Any = None) -> None:
        self.status, self.reason, self.headers, self.body, self.raw = status, reason, headers, body, raw

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()


class _NoAnswer(Exception):
    """A request that got no response. ``cause`` is the transport's own error; ``sent`` is False
    when it failed before any byte of the request left (a retry cannot duplicate it)."""

    def __init__(self, cause: BaseException, sent: bool) -> None:
        super().__init__(str(cause))
        self.cause, self.sent = cause, sent


class ApiClient:
    """Every call of the REST API under the rules of the module docstring; a subclass supplies the
    transport (``_exchange``). The URL and key default to ``ORCHESTRATOR_API_URL`` and
    ``ORCHESTRATOR_API_KEY``, which is how a worker's processes build it with no arguments."""

    _log: Any = None  # a logging.Logger for retry notes (the requests client's); logging's import costs the helper's start-up

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = TIMEOUT,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        rate_limit_retries: int = RATE_LIMIT_RETRIES,
        max_retry_after: float = MAX_RETRY_AFTER,
    ) -> None:
        """Connect to ``api_url`` with ``api_key`` (default: from the environment).
        ``rate_limit_retries`` and ``max_retry_after`` bound how a 429 is waited out."""
        api_url = (api_url or os.environ.get(URL_ENV) or "").strip().rstrip("/")
        api_key = api_key or worker_key()
        missing = [
            f"{what} (pass {arg}=... or set {env})"
            for what, arg, env, value in (
                ("the API URL", "api_url", URL_ENV, api_url),
                ("the API key", "api_key", f"{KEY_ENV} or {KEY_FILE_ENV}", api_key),
            )
            if not value
        ]
        if missing:
            raise ValidationError("OrchestratorClient needs " + " and ".join(missing))
        scheme, sep, _ = api_url.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise ValidationError(f"api_url must start with http:// or https://, e.g. http://localhost:8000 (got {api_url!r})")
        if retries < 0 or timeout <= 0 or backoff < 0 or rate_limit_retries < 0 or max_retry_after < 0:
            raise ValidationError(
                "need retries >= 0, timeout > 0, backoff >= 0, rate_limit_retries >= 0 and max_retry_after >= 0"
            )
        self.api_url = api_url
        self._api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.rate_limit_retries = rate_limit_retries
        self.max_retry_after = max_retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self.api_url!r})"

    # --- jobs -----------------------------------------------------------------------
    def orchestrate(
        self,
        request: str,
        max_workers: int | None = None,
        enable_recursion: bool | None = None,
        max_recursion_depth: int | None = None,
        default_timeout: float | None = None,
        tasks: list[Any] | None = None,
        config: dict[str, Any] | None = None,
        **extra_config: Any,
    ) -> dict[str, Any]:
        """Submit a job; returns the 202 document (``job_id``, ``status``, ``urls``...).

        Non-None options and ``extra_config`` go into the job's config, on top of ``config``.
        """
        options = dict(
            max_workers=max_workers,
            enable_recursion=enable_recursion,
            max_recursion_depth=max_recursion_depth,
            default_timeout=default_timeout,
            **extra_config,
        )
        merged = {**(config or {}), **{k: v for k, v in options.items() if v is not None}}
        body: dict[str, Any] = {"request": request, "config": merged}
        if tasks is not None:
            body["tasks"] = list(tasks)
        return self._request("POST", "/api/v1/orchestrate", body=body)

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's status document (status, progress, results)."""
        return self._request("GET", f"{_job_path(job_id)}/status")

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 30.0, outage: float = 120.0) -> dict[str, Any]:
        """Long-poll until the job is terminal, waits for approval, or ``timeout`` seconds pass (None: no limit).

        Each call asks the server to hold the request up to ``min(poll, remaining)``
        seconds; there is no client-side sleep. Returns the last status document,
        which is not terminal if the overall timeout ran out. A server that cannot be
        reached (it is restarting: it re-adopts its running workers) is waited for, up to
        ``outage`` seconds in a row, before ``ServerUnreachable`` is raised.
        """
        if poll <= 0:
            raise ValidationError("poll must be > 0 seconds")
        path = f"{_job_path(job_id)}/wait"
        return long_poll(
            lambda hold: self._request("GET", path, params={"timeout": seconds(hold)}, timeout=hold + self.timeout),
            timeout,
            poll,
            outage,
        )

    def orchestrate_and_wait(
        self,
        request: str,
        max_workers: int | None = None,
        enable_recursion: bool | None = None,
        max_recursion_depth: int | None = None,
        default_timeout: float | None = None,
        tasks: list[Any] | None = None,
        config: dict[str, Any] | None = None,
        *,
        wait_timeout: float | None = None,
        poll: float = 30.0,
        **extra_config: Any,
    ) -> dict[str, Any]:
        """``orchestrate()`` then ``wait()`` up to ``wait_timeout``; returns the status document."""
        job = self.orchestrate(
            request, max_workers, enable_recursion, max_recursion_depth, default_timeout, tasks, config, **extra_config
        )
        return self.wait(job["job_id"], timeout=wait_timeout, poll=poll)

    def list_jobs(self, status: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """A page of jobs: ``{"jobs": [...], "total", "limit", "offset"}``."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        return self._request("GET", "/api/v1/jobs", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job and its children; ``Conflict`` if it already finished."""
        return self._request("POST", f"{_job_path(job_id)}/cancel")

    def delete(self, job_id: str, branches: str | None = None) -> None:
        """Delete a job and its workspace, with its worktrees and branches; ``branches="all"``
        removes its result branch too (kept by default)."""
        params = None if branches is None else {"branches": branches}
        self._request("DELETE", _job_path(job_id), params=params, expect="none")

    # --- a job's workers and results ------------------------------------------------
    def logs(self, job_id: str, worker: str, tail: int | None = None, gate: str | None = None) -> str:
        """A worker's log as text, or with ``gate`` that quality gate's whole output (its status
        entry's ``output_tail`` is the end of it); ``tail`` keeps only the last N lines."""
        params = {k: v for k, v in (("tail", tail), ("gate", gate)) if v is not None} or None
        return self._request("GET", f"{_job_path(job_id)}/workers/{_quote(worker)}/log", params=params, expect="text")

    def checkpoints(self, job_id: str, worker: str) -> dict[str, Any]:
        """A worktree worker's checkpoints: the commit each attempt started from (reset or kept)."""
        return self._request("GET", f"{_job_path(job_id)}/workers/{_quote(worker)}/checkpoints")

    def diff(self, job_id: str, worker: str | None = None, max_bytes: int | None = None) -> dict[str, Any]:
        """A unified diff: a worker's (its branch against its start point) or, without ``worker``,
        the job's; ``{"diff", "from", "to", "truncated", "bytes", "max_bytes", ...}``."""
        params = None if max_bytes is None else {"max_bytes": max_bytes}
        path = _job_path(job_id) + (f"/workers/{_quote(worker)}" if worker is not None else "") + "/diff"
        return self._request("GET", path, params=params)

    def conflicts(self, job_id: str) -> dict[str, Any]:
        """A root job's predicted conflicts between its workers' branches, and its last merge."""
        return self._request("GET", f"{_job_path(job_id)}/conflicts")

    def merge(self, job_id: str, strategy: str | None = None, into: str | None = None) -> dict[str, Any]:
        """Merge a finished root job's workers' branches (again): ``{"job_id", "merge"}``.
        ``strategy`` and ``into`` default to the job's config."""
        body = {k: v for k, v in (("strategy", strategy), ("into", into)) if v is not None}
        return self._request("POST", f"{_job_path(job_id)}/merge", body=body)

    def continue_worker(self, job_id: str, worker: str, feedback: str) -> dict[str, Any]:
        """Start a continue round of a finished root job's worker (admin key): ``{"job_id", "worker",
        "round"}``; the round runs on, its end in the worker's ``rounds``."""
        return self._request("POST", f"{_job_path(job_id)}/workers/{_quote(worker)}/continue", body={"feedback": feedback})

    def publish(self, job_id: str) -> dict[str, Any]:
        """Push a finished root job's result branch and open or update its pull request (again):
        ``{"job_id", "publish"}`` (the job's publish record: pushed, the pull request, or the error)."""
        return self._request("POST", f"{_job_path(job_id)}/publish")

    def approve(self, job_id: str, note: str | None = None) -> dict[str, Any]:
        """Land a root job waiting for approval (admin key); its status document after the decision.
        ``Conflict`` when it is not waiting."""
        return self._request("POST", f"{_job_path(job_id)}/approve", body={} if note is None else {"note": note})

    def reject(self, job_id: str, reason: str) -> dict[str, Any]:
        """End a root job waiting for approval failed, nothing merged (admin key; ``reason`` required)."""
        return self._request("POST", f"{_job_path(job_id)}/reject", body={"reason": reason})

    def report(self, job_id: str, name: str = "final") -> str:
        """A Markdown report: ``"final"`` or ``"level_<n>"``."""
        return self._request("GET", f"{_job_path(job_id)}/report", params={"name": name}, expect="text")

    # --- path locks (orchestrator-lock, cli/lock.py) --------------------------------
    def lock(self, job_id: str, paths: list[str], lease: float | None = None, wait: float | None = None) -> dict[str, Any]:
        """Lock paths of the job tree's shared folder (a worker's credential: for that worker),
        waiting up to ``wait`` s (server default: tasks.lock_timeout); ``Conflict`` names the holder."""
        body: dict[str, Any] = {"paths": list(paths)}
        body.update({k: v for k, v in (("lease", lease), ("wait", wait)) if v is not None})
        hold = (3600.0 if wait is None else wait) + self.timeout  # the server's wait is at most 3600 s
        return self._request("POST", f"{_job_path(job_id)}/locks", body=body, timeout=hold)

    def unlock(self, job_id: str, lock_id: str) -> None:
        """Release a lock (its holder's credential, or the admin key)."""
        self._request("DELETE", f"{_job_path(job_id)}/locks/{_quote(lock_id)}", expect="none")

    def locks(self, job_id: str) -> dict[str, Any]:
        """The job tree's path locks: ``{"job_id", "root_job_id", "locks": [...]}``."""
        return self._request("GET", f"{_job_path(job_id)}/locks")

    # --- the server -----------------------------------------------------------------
    def nodes(self) -> dict[str, Any]:
        """The machines that run workers (admin key): ``{"executor": "local"|"rq", "nodes": [...]}``,
        each node with ``name``, ``host``, ``kinds``, ``slots``, ``running``, ``heartbeat_at``,
        ``heartbeat_age`` (seconds) and ``alive``."""
        return self._request("GET", "/api/v1/nodes")

    def health(self) -> dict[str, Any]:
        """The server's health document, ``{"status": "ok", ...}`` (``"degraded"``, ``queue`` saying
        since when, while the rq executor's Redis does not answer)."""
        return self._request("GET", "/health")

    # --- the rules ------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        stream: bool = False,
        expect: Literal["json", "text", "none"] = "json",
    ) -> Any:
        """One API call with its retries and 429 waits: the JSON value, the text (``expect="text"``),
        None (``"none"``, or a 204) or, with ``stream``, the open ``_Response``."""
        accept = "application/json" if expect == "json" else "*/*"
        send_headers = {"X-API-Key": self._api_key, "Accept": accept, **(headers or {})}
        waits: list[float] = []
        while True:
            resp = self._send(method, path, params, body, send_headers, self.timeout if timeout is None else timeout, stream)
            if resp.status != 429:
                return self._handle(resp, method, path, stream, expect)
            err = error_of(resp.status, resp.reason, resp.body, resp.headers.get("retry-after"))
            resp.close()
            delay = err.retry_after if err.retry_after is not None else self._delay(len(waits))  # type: ignore[attr-defined]
            if len(waits) >= self.rate_limit_retries or delay > self.max_retry_after:
                raise self._rate_limited(err, method, path, waits, delay)
            if self._log:
                self._log.info(
                    "%s %s: rate limited (%s); waiting %.2fs as the server asks", method, path, err.details.get("limit"), delay
                )
            time.sleep(delay)
            waits.append(delay)

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: Any,
        headers: dict[str, str],
        timeout: float,
        stream: bool,
    ) -> _Response:
        """One request, retried on transport failures and (GET) 5xx as the module docstring says."""
        for attempt in range(self.retries + 1):
            last_try = attempt == self.retries
            try:
                resp = self._exchange(method, path, params, body, headers, timeout, stream)
            except _NoAnswer as exc:
                if last_try or not (method in _IDEMPOTENT or not exc.sent):
                    raise self._unreachable(method, path, exc, attempt + 1) from None
                if self._log:
                    self._log.debug("%s %s failed (%s); retry %d", method, path, type(exc.cause).__name__, attempt + 1)
            else:
                if not (resp.status >= 500 and not last_try and method in _IDEMPOTENT):
                    return resp
                resp.close()
                if self._log:
                    self._log.debug("%s %s returned %d; retry %d", method, path, resp.status, attempt + 1)
            time.sleep(self._delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: Any,
        headers: dict[str, str],
        timeout: float,
        stream: bool,
    ) -> _Response:
        """Send one request to ``api_url + path`` with ``params`` as its query and ``body`` as JSON;
        its response, or ``_NoAnswer``. The transport: each subclass's own."""
        raise NotImplementedError

    def _handle(self, resp: _Response, method: str, path: str, stream: bool, expect: Literal["json", "text", "none"]) -> Any:
        """Turn a final response into a result or a raised error."""
        if resp.status >= 400:
            try:
                raise error_of(resp.status, resp.reason, resp.body, resp.headers.get("retry-after"))
            finally:
                resp.close()
        if 300 <= resp.status < 400:
            resp.close()
            # Not followed: the key would be resent to whatever host the Location names.
            raise OrchestratorError(
                f"{method} {path} was redirected to {resp.headers.get('location')!r}; "
                f"set {URL_ENV} to the server's final address",
                status_code=resp.status,
            )
        if stream:
            return resp
        if expect == "none" or resp.status == 204:  # no content (a DELETE)
            return None
        content_type = resp.headers.get("content-type") or ""
        if expect == "text":
            return _text(resp.body, content_type)
        try:
            return loads(resp.body)
        except ValueError:
            raise OrchestratorError(
                f"{method} {path} returned non-JSON ({content_type or 'no content type'}); is {self.api_url} the orchestrator API?"
            ) from None

    def _rate_limited(self, err: OrchestratorError, method: str, path: str, waits: list[float], delay: float) -> RateLimited:
        """The error once a 429 is no longer waited out: which limit, how long was waited, why it stopped."""
        limit = err.details.get("limit") or "the server's rate limit"
        why = (
            f"it asks for {delay:.0f}s more, over max_retry_after={self.max_retry_after:g}s"
            if delay > self.max_retry_after
            else f"rate_limit_retries={self.rate_limit_retries} reached"
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

    def _unreachable(self, method: str, path: str, exc: _NoAnswer, attempts: int) -> ServerUnreachable:
        """The error for a request that got no response."""
        url = self.api_url + path
        if method in _IDEMPOTENT or not exc.sent:
            hint = START_HINT
        else:
            hint = "the request may have reached the server, so it was not retried (check list_jobs())"
        err = ServerUnreachable(
            f"Cannot reach the orchestrator API at {self.api_url} ({type(exc.cause).__name__} on {method} "
            f"{url} after {attempts} attempt{'s' if attempts > 1 else ''}); {hint}.",
            url=url,
            attempts=attempts,
        )
        err.status_code = None  # type: ignore[attr-defined]
        return err

    def _delay(self, attempt: int) -> float:
        """Exponential backoff plus up to 25% jitter (random is imported only when a retry needs it)."""
        import random

        base = self.backoff * 2**attempt
        return base + random.uniform(0, 0.25 * base)


class SpawnClient(ApiClient):
    """The API over the standard library's sockets, one connection per request: the spawn and lock
    helpers' client, whose start-up is on a hand-off's critical path (module docstring)."""

    def __init__(self, api_url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        super().__init__(api_url, api_key, **options)
        if any(c in self._api_key for c in "\r\n\0"):  # it goes into the request head as it is
            raise ValidationError(f"{KEY_ENV} holds a line break or NUL; set it to the key alone")
        scheme, _, rest = self.api_url.partition("://")
        netloc, _, prefix = rest.partition("/")
        self._https = scheme.lower() == "https"
        self._prefix = "/" + prefix if prefix else ""
        self._host_header = netloc
        self._host, self._port = _split_host(netloc, 443 if self._https else 80)

    def _exchange(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: Any,
        headers: dict[str, str],
        timeout: float,
        stream: bool,
    ) -> _Response:
        data = None if body is None else dumps(body).encode()
        target = self._prefix + path + _query(params)
        head = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self._host_header}",
            *(f"{name}: {value}" for name, value in headers.items()),
            "Connection: close",
            "User-Agent: orchestrator-spawn",
        ]
        if data is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        elif method not in _IDEMPOTENT:
            head.append("Content-Length: 0")
        if self._https:
            return self._exchange_tls(method, target, data, timeout, head)
        try:
            sock = _connect(self._host, self._port, min(timeout, self.timeout))
        except OSError as exc:  # refused, DNS, connect timeout: nothing was sent
            raise _NoAnswer(exc, sent=False) from exc
        try:
            sock.settimeout(timeout)
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (data or b""))
            return _read_response(_Stream(sock))
        except OSError as exc:
            raise _NoAnswer(exc, sent=True) from exc
        finally:
            sock.close()

    def _exchange_tls(self, method: str, target: str, data: bytes | None, timeout: float, head: list[str]) -> _Response:
        import http.client  # only for https://: its import costs the plain path several ms

        conn = http.client.HTTPSConnection(self._host, self._port, timeout=min(timeout, self.timeout))
        try:
            try:
                conn.connect()
            except OSError as exc:
                raise _NoAnswer(exc, sent=False) from exc
            conn.sock.settimeout(timeout)
            headers = dict(line.split(": ", 1) for line in head[1:])
            headers.pop("Host")
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            body = resp.read(MAX_BODY + 1)
            return _Response(resp.status, resp.reason, {k.lower(): v for k, v in resp.getheaders()}, body)
        except http.client.HTTPException as exc:
            raise _NoAnswer(ConnectionError(f"{type(exc).__name__}: {exc}"), sent=True) from exc
        except OSError as exc:
            raise _NoAnswer(exc, sent=True) from exc
        finally:
            conn.close()


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


def _quote(value: object) -> str:
    """One URL path segment or query value, every byte outside the unreserved set %-escaped."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in str(value).encode())


def _job_path(job_id: str) -> str:
    return f"/api/v1/jobs/{_quote(job_id)}"


def _query(params: dict[str, Any] | None) -> str:
    """``?name=value&...`` of the parameters that are not None ("" when none are)."""
    pairs = [f"{_quote(name)}={_quote(value)}" for name, value in (params or {}).items() if value is not None]
    return "?" + "&".join(pairs) if pairs else ""


def _text(body: bytes, content_type: str) -> str:
    """A text body in the charset its Content-Type names, else UTF-8; undecodable bytes replaced."""
    charset = "utf-8"
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip(" '\"")
    try:
        return body.decode(charset, "replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", "replace")


def long_poll(fetch: Callable[[float], dict[str, Any]], timeout: float | None, poll: float, outage: float) -> dict[str, Any]:
    """The wait loop: ``fetch(hold)`` asks the server to hold the request up to
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
