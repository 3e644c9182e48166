"""A small Python client for the orchestrator's REST API.

    from orchestrator.api.client import OrchestratorClient
    client = OrchestratorClient(api_url="http://localhost:8000", api_key="your-api-key")
    result = client.orchestrate(request="...", max_workers=4, enable_recursion=True)

Worker subprocesses build it with no arguments: the URL and key then come from
``ORCHESTRATOR_API_URL`` and ``ORCHESTRATOR_API_KEY``. This module imports only
the standard library, ``requests`` and ``orchestrator.api.calls``/``errors`` so that
workers start fast.

Every call, its retries, its errors (the server's own classes: ``except JobNotFound``
works across HTTP) and the long-poll ``wait`` are the API's one client's,
``calls.ApiClient``, whose docstring states the rules. What this module adds is the
transport: a ``requests`` session (connection reuse, a session of the caller's own, and
the streamed ``events``), where the spawn helper's ``calls.SpawnClient`` uses bare sockets
to start fast.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import requests

from orchestrator.api.calls import (
    BACKOFF,
    MAX_RETRY_AFTER,
    RATE_LIMIT_RETRIES,
    RETRIES,
    TERMINAL,
    TIMEOUT,
    ApiClient,
    _job_path,
    _NoAnswer,
    _Response,
    loads,
)
from orchestrator.events import EventType

__all__ = ["OrchestratorClient", "TERMINAL"]

log = logging.getLogger(__name__)

# Failures while reading a response, after the request went out.
_TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# urllib3 classes raised before any byte of the request is sent. Matched by
# name so that this module does not import urllib3 directly.
_PRE_SEND_NAMES = frozenset({"NewConnectionError", "ConnectTimeoutError", "NameResolutionError"})


class OrchestratorClient(ApiClient):
    """Client for the orchestrator REST API over ``requests``; see ``calls.ApiClient`` for the calls and retries."""

    _log = log

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = TIMEOUT,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        session: requests.Session | None = None,
        rate_limit_retries: int = RATE_LIMIT_RETRIES,
        max_retry_after: float = MAX_RETRY_AFTER,
    ) -> None:
        """Connect to ``api_url`` with ``api_key`` (default: from the environment), through
        ``session`` if given (it is then the caller's to close).
        ``rate_limit_retries`` and ``max_retry_after`` bound how a 429 is waited out."""
        super().__init__(
            api_url,
            api_key,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            rate_limit_retries=rate_limit_retries,
            max_retry_after=max_retry_after,
        )
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> OrchestratorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
                for event in _parse_sse(_iter_lines(resp.raw), last):
                    got_any = True
                    last = event["id"]
                    yield event
                    if event["event"] == EventType.END:
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
        """One request through the session; a streamed success is left open (``raw``)."""
        try:
            resp = self.session.request(
                method,
                self.api_url + path,
                params=params,
                json=body,
                headers=headers,
                timeout=timeout,
                stream=stream,
                allow_redirects=False,
            )
        except _TRANSPORT_ERRORS as exc:
            raise _NoAnswer(exc, sent=not _not_sent(exc)) from exc
        if stream and resp.status_code < 300:
            return _Response(resp.status_code, resp.reason or "", resp.headers, b"", raw=resp)
        try:
            content = resp.content or b""
        except _TRANSPORT_ERRORS as exc:  # the body of a streamed error response
            raise _NoAnswer(exc, sent=True) from exc
        finally:
            resp.close()
        return _Response(resp.status_code, resp.reason or "", resp.headers, content)


# --- helpers ------------------------------------------------------------------


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
                    payload: Any = loads(text)
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
