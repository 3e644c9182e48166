"""A small Python client for the orchestrator's REST API.

    from orchestrator.api.client import OrchestratorClient
    client = OrchestratorClient(api_url="http://localhost:8000", api_key="your-api-key")
    result = client.orchestrate(request="...", max_workers=4, enable_recursion=True)

Worker subprocesses build it with no arguments: the URL and key then come from
``ORCHESTRATOR_API_URL`` and ``ORCHESTRATOR_API_KEY``. This module imports only
the standard library, ``requests`` and ``orchestrator.errors`` so that workers
start fast.

Errors come back as the server's own classes (``except JobNotFound`` works
across HTTP), each with a ``status_code`` attribute; ``RateLimited`` also has
``retry_after`` (seconds, or None).

Retry rule: every request is retried up to ``retries`` times, with exponential
backoff and jitter, when the failure cannot have had an effect on the server
or repeating it is harmless:

* GET and HEAD (read-only) retry on any connection error, timeout or 5xx.
* Every other method (POST /orchestrate, POST /cancel, DELETE) retries only
  on failures that happened before the request was sent: connection refused,
  DNS failure, connect timeout. A read timeout, a dropped connection or a 5xx
  after sending is raised at once, since the server may already have created
  the job (a retry would start a duplicate tree).
* 4xx responses are never retried, except 429: the server refused the
  request before doing anything, so any method may be sent again. The client
  sleeps the ``Retry-After`` the server sent (the backoff delay if it sent
  none) up to ``rate_limit_retries`` times, as long as each wait is at most
  ``max_retry_after`` seconds; then it raises ``RateLimited`` naming the
  server's limit (e.g. ``api.rate_limit_worker``) and how long it waited.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import random
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal
from urllib.parse import quote

import requests

# The rules the spawn helper's standard-library path shares with this client: one place for each.
from orchestrator.api.wire import KEY_ENV, START_HINT, TERMINAL, URL_ENV, error_of, long_poll, rate_limited, seconds
from orchestrator.errors import OrchestratorError, RateLimited, ServerUnreachable, ValidationError

__all__ = ["OrchestratorClient", "TERMINAL"]

log = logging.getLogger(__name__)


_IDEMPOTENT = frozenset({"GET", "HEAD"})
# Failures while reading a response, after the request went out.
_TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# urllib3 classes raised before any byte of the request is sent. Matched by
# name so that this module does not import urllib3 directly.
_PRE_SEND_NAMES = frozenset({"NewConnectionError", "ConnectTimeoutError", "NameResolutionError"})

Expect = Literal["json", "text", "none"]


class OrchestratorClient:
    """Client for the orchestrator REST API; see the module docstring for retries."""

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        session: requests.Session | None = None,
        rate_limit_retries: int = 3,
        max_retry_after: float = 60.0,
    ) -> None:
        """Connect to ``api_url`` with ``api_key`` (default: from the environment).
        ``rate_limit_retries`` and ``max_retry_after`` bound how a 429 is waited out."""
        api_url = api_url or os.environ.get(URL_ENV) or None
        api_key = api_key or os.environ.get(KEY_ENV) or None
        missing = [
            f"{what} (pass {arg}=... or set {env})"
            for what, arg, env, value in (
                ("the API URL", "api_url", URL_ENV, api_url),
                ("the API key", "api_key", KEY_ENV, api_key),
            )
            if not value
        ]
        if missing:
            raise ValidationError("OrchestratorClient needs " + " and ".join(missing))
        assert api_url is not None and api_key is not None
        api_url = api_url.strip().rstrip("/")
        if not api_url.startswith(("http://", "https://")):
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
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()

    def __repr__(self) -> str:
        return f"OrchestratorClient(api_url={self.api_url!r})"

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> OrchestratorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- public API ---------------------------------------------------------

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
        return self._request("POST", "/api/v1/orchestrate", json=body)

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
        tasks: list[str] | None = None,
        config: dict[str, Any] | None = None,
        *,
        wait_timeout: float | None = None,
        poll: float = 30.0,
        **extra_config: Any,
    ) -> dict[str, Any]:
        """``orchestrate()`` then ``wait()`` up to ``wait_timeout``; returns the status document."""
        job = self.orchestrate(
            request,
            max_workers,
            enable_recursion,
            max_recursion_depth,
            default_timeout,
            tasks,
            config,
            **extra_config,
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

    def logs(self, job_id: str, worker: str, tail: int | None = None, gate: str | None = None) -> str:
        """A worker's log as text, or with ``gate`` that quality gate's whole output (its status
        entry's ``output_tail`` is the end of it); ``tail`` keeps only the last N lines."""
        params = {k: v for k, v in (("tail", tail), ("gate", gate)) if v is not None} or None
        return self._request("GET", f"{_job_path(job_id)}/workers/{_seg(worker)}/log", params=params, expect="text")

    def checkpoints(self, job_id: str, worker: str) -> dict[str, Any]:
        """A worktree worker's checkpoints: the commit each attempt started from (reset or kept)."""
        return self._request("GET", f"{_job_path(job_id)}/workers/{_seg(worker)}/checkpoints")

    def diff(self, job_id: str, worker: str | None = None, max_bytes: int | None = None) -> dict[str, Any]:
        """A unified diff: a worker's (its branch against its start point) or, without ``worker``,
        the job's; ``{"diff", "from", "to", "truncated", "bytes", "max_bytes", ...}``."""
        params = None if max_bytes is None else {"max_bytes": max_bytes}
        path = _job_path(job_id) + (f"/workers/{_seg(worker)}" if worker is not None else "") + "/diff"
        return self._request("GET", path, params=params)

    def conflicts(self, job_id: str) -> dict[str, Any]:
        """A root job's predicted conflicts between its workers' branches, and its last merge."""
        return self._request("GET", f"{_job_path(job_id)}/conflicts")

    def merge(self, job_id: str, strategy: str | None = None, into: str | None = None) -> dict[str, Any]:
        """Merge a finished root job's workers' branches (again): ``{"job_id", "merge"}``.
        ``strategy`` and ``into`` default to the job's config."""
        body = {k: v for k, v in (("strategy", strategy), ("into", into)) if v is not None}
        return self._request("POST", f"{_job_path(job_id)}/merge", json=body)

    def continue_worker(self, job_id: str, worker: str, feedback: str) -> dict[str, Any]:
        """Start a continue round of a finished root job's worker (admin key): ``{"job_id", "worker",
        "round"}``; the round runs on, its end in the worker's ``rounds``."""
        return self._request("POST", f"{_job_path(job_id)}/workers/{_seg(worker)}/continue", json={"feedback": feedback})

    def publish(self, job_id: str) -> dict[str, Any]:
        """Push a finished root job's result branch and open or update its pull request (again):
        ``{"job_id", "publish"}`` (the job's publish record: pushed, the pull request, or the error)."""
        return self._request("POST", f"{_job_path(job_id)}/publish")

    def approve(self, job_id: str, note: str | None = None) -> dict[str, Any]:
        """Land a root job waiting for approval (admin key); its status document after the decision.
        ``Conflict`` when it is not waiting."""
        return self._request("POST", f"{_job_path(job_id)}/approve", json={} if note is None else {"note": note})

    def reject(self, job_id: str, reason: str) -> dict[str, Any]:
        """End a root job waiting for approval failed, nothing merged (admin key; ``reason`` required)."""
        return self._request("POST", f"{_job_path(job_id)}/reject", json={"reason": reason})

    def lock(self, job_id: str, paths: list[str], lease: float | None = None, wait: float | None = None) -> dict[str, Any]:
        """Lock paths of the job tree's shared folder (a worker's credential: for that worker),
        waiting up to ``wait`` s (server default: tasks.lock_timeout); ``Conflict`` names the holder."""
        body: dict[str, Any] = {"paths": list(paths)}
        body.update({k: v for k, v in (("lease", lease), ("wait", wait)) if v is not None})
        hold = (3600.0 if wait is None else wait) + self.timeout  # the server's wait is at most 3600 s
        return self._request("POST", f"{_job_path(job_id)}/locks", json=body, timeout=hold)

    def unlock(self, job_id: str, lock_id: str) -> None:
        """Release a lock (its holder's credential, or the admin key)."""
        self._request("DELETE", f"{_job_path(job_id)}/locks/{_seg(lock_id)}", expect="none")

    def locks(self, job_id: str) -> dict[str, Any]:
        """The job tree's path locks: ``{"job_id", "root_job_id", "locks": [...]}``."""
        return self._request("GET", f"{_job_path(job_id)}/locks")

    def report(self, job_id: str, name: str = "final") -> str:
        """A Markdown report: ``"final"`` or ``"level_<n>"``."""
        return self._request("GET", f"{_job_path(job_id)}/report", params={"name": name}, expect="text")

    def nodes(self) -> dict[str, Any]:
        """The machines that run workers (admin key): ``{"executor": "local"|"rq", "nodes": [...]}``,
        each node with ``name``, ``host``, ``kinds``, ``slots``, ``running``, ``heartbeat_at``,
        ``heartbeat_age`` (seconds) and ``alive``."""
        return self._request("GET", "/api/v1/nodes")

    def health(self) -> dict[str, Any]:
        """The server's health document, ``{"status": "ok", ...}``."""
        return self._request("GET", "/health")

    def events(self, job_id: str, last_event_id: int | None = None) -> Iterator[dict[str, Any]]:
        """Follow the job tree's events: yields ``{"id", "event", "data"}`` dicts.

        Resumes after ``last_event_id`` if given. When the server closes the
        stream (or it drops) before an ``end`` event, reconnects with
        ``Last-Event-ID``; the ``end`` event is yielded, then iteration stops.
        """
        path = f"{_job_path(job_id)}/events"
        last = last_event_id
        empty_streams = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            resp = self._request("GET", path, headers=headers, stream=True)
            got_any = False
            try:
                for event in _parse_sse(_iter_lines(resp), last):
                    got_any = True
                    last = event["id"]
                    yield event
                    if event["event"] == "end":
                        return
            except _TRANSPORT_ERRORS as exc:
                log.debug("event stream for %s dropped (%s); reconnecting", job_id, type(exc).__name__)
            finally:
                resp.close()
            # Back off only when streams keep closing without news, so that a
            # server that closes at once is not hammered.
            empty_streams = 0 if got_any else empty_streams + 1
            if empty_streams:
                time.sleep(self._delay(min(empty_streams - 1, 5)))

    # --- transport ----------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
        stream: bool = False,
        expect: Expect = "json",
    ) -> Any:
        """Send one API request with retries; return JSON, text, None or (stream) the response."""
        url = self.api_url + path
        accept = "application/json" if expect == "json" else "*/*"
        send_headers = {"X-API-Key": self._api_key, "Accept": accept, **(headers or {})}
        waits: list[float] = []
        while True:
            resp = self._send(
                method,
                url,
                path,
                params=params,
                json=json,
                headers=send_headers,
                timeout=self.timeout if timeout is None else timeout,
                stream=stream,
            )
            if resp.status_code != 429:
                return self._handle(resp, method, path, stream, expect)
            err = _error_from(resp)
            resp.close()
            delay = err.retry_after if err.retry_after is not None else self._delay(len(waits))  # type: ignore[attr-defined]
            if len(waits) >= self.rate_limit_retries or delay > self.max_retry_after:
                raise self._gave_up(err, method, path, waits, delay)
            log.info("%s %s: rate limited (%s); waiting %.2fs as the server asks", method, path, err.details.get("limit"), delay)
            time.sleep(delay)
            waits.append(delay)

    def _send(
        self,
        method: str,
        url: str,
        path: str,
        *,
        params: dict[str, Any] | None,
        json: Any,
        headers: dict[str, str],
        timeout: float | tuple[float, float],
        stream: bool,
    ) -> requests.Response:
        """One request, retried on transport failures and (GET) 5xx as the module docstring says."""
        for attempt in range(self.retries + 1):
            last_try = attempt == self.retries
            try:
                resp = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=headers,
                    timeout=timeout,
                    stream=stream,
                    allow_redirects=False,
                )
            except _TRANSPORT_ERRORS as exc:
                if last_try or not (method in _IDEMPOTENT or _not_sent(exc)):
                    raise self._unreachable(method, url, exc, attempt + 1) from None
                log.debug("%s %s failed (%s); retry %d", method, path, type(exc).__name__, attempt + 1)
            else:
                if resp.status_code >= 500 and not last_try and method in _IDEMPOTENT:
                    resp.close()
                    log.debug("%s %s returned %d; retry %d", method, path, resp.status_code, attempt + 1)
                else:
                    return resp
            time.sleep(self._delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _handle(self, resp: requests.Response, method: str, path: str, stream: bool, expect: Expect) -> Any:
        """Turn a final response into a result or a raised error."""
        if resp.status_code >= 400:
            try:
                raise _error_from(resp)
            finally:
                resp.close()
        if 300 <= resp.status_code < 400:
            resp.close()
            # Not followed: requests would resend X-API-Key to any host.
            raise OrchestratorError(
                f"{method} {path} was redirected to {resp.headers.get('Location')!r}; "
                f"set {URL_ENV} to the server's final address",
                status_code=resp.status_code,
            )
        if stream:
            return resp
        if expect == "none":
            return None
        if expect == "text":
            if "charset" not in resp.headers.get("Content-Type", "").lower():
                resp.encoding = "utf-8"
            return resp.text
        try:
            return resp.json()
        except ValueError:
            raise OrchestratorError(
                f"{method} {path} returned non-JSON ({resp.headers.get('Content-Type', 'no content type')}); "
                f"is {self.api_url} the orchestrator API?"
            ) from None

    def _gave_up(self, err: OrchestratorError, method: str, path: str, waits: list[float], delay: float) -> RateLimited:
        """The error once a 429 is no longer waited out (the wording is shared with the spawn helper)."""
        return rate_limited(err, method, path, waits, delay, self.rate_limit_retries, self.max_retry_after)

    def _unreachable(self, method: str, url: str, exc: Exception, attempts: int) -> ServerUnreachable:
        """The error for a request that got no response."""
        if method in _IDEMPOTENT or _not_sent(exc):
            hint = START_HINT
        else:
            hint = "the request may have reached the server, so it was not retried (check list_jobs())"
        err = ServerUnreachable(
            f"Cannot reach the orchestrator API at {self.api_url} ({type(exc).__name__} on {method} "
            f"{url} after {attempts} attempt{'s' if attempts > 1 else ''}); {hint}.",
            url=url,
            attempts=attempts,
        )
        err.status_code = None  # type: ignore[attr-defined]
        return err

    def _delay(self, attempt: int) -> float:
        """Exponential backoff plus up to 25% jitter."""
        base = self.backoff * 2**attempt
        return base + random.uniform(0, 0.25 * base)


# --- helpers ------------------------------------------------------------------


def _seg(value: str) -> str:
    """One URL path segment, with ``/`` and friends escaped."""
    return quote(str(value), safe="")


def _job_path(job_id: str) -> str:
    return f"/api/v1/jobs/{_seg(job_id)}"


def _not_sent(exc: BaseException) -> bool:
    """True if ``exc`` happened before the request left (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ConnectionRefusedError):
            return True
        if _PRE_SEND_NAMES.intersection(cls.__name__ for cls in type(item).__mro__):
            return True
        todo.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])
    return False


def _error_from(resp: requests.Response) -> OrchestratorError:
    """Rebuild the server's error class from a 4xx/5xx response."""
    return error_of(resp.status_code, resp.reason or "", resp.content or b"", resp.headers.get("Retry-After"))


def _iter_lines(resp: requests.Response) -> Iterator[str]:
    """Lines of a streamed response as they arrive (``\\n`` or ``\\r\\n`` endings)."""
    buffer = b""
    for chunk in resp.iter_content(chunk_size=None):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r").decode("utf-8", errors="replace")
    if buffer:
        yield buffer.removesuffix(b"\r").decode("utf-8", errors="replace")


def _parse_sse(lines: Iterable[str], last_id: int | None = None) -> Iterator[dict[str, Any]]:
    """Server-Sent Events from lines: ``{"id", "event", "data"}``, data parsed as JSON.

    Follows the SSE rules: ``:`` lines are comments, ``data`` lines join with
    newlines, a blank line dispatches, an event without data is dropped, and
    the id carries over to later events that have none.
    """
    event_type = ""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    payload: Any = jsonlib.loads(text)
                except ValueError:
                    payload = text
                yield {"id": last_id, "event": event_type or "message", "data": payload}
            event_type, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event_type = value
        elif field == "id":
            try:
                last_id = int(value)
            except ValueError:
                pass
