"""Checks every request passes before it reaches a route: the Host header, rate limits, held streams.

The Host check stops DNS rebinding: a web page on another name that resolves to
127.0.0.1 cannot drive the API from a browser. Rate limits are token buckets per
credential (each worker's credential has its own), and per address for requests
with a wrong key; open streams and long-polls are capped per credential and in all
(``StreamSlots``). A refusal is a 429 with ``Retry-After``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

from ..errors import RateLimited, ValidationError

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
MAX_BUCKETS = 10_000
# The setting behind each kind of bucket key, named in a 429 so a client can say which limit it hit.
LIMIT_SETTINGS = {"admin": "api.rate_limit_admin", "worker": "api.rate_limit_worker", "addr": "api.rate_limit_failed_auth"}


def host_name(header: str | None) -> str:
    """``example.com:8000`` -> ``example.com``; ``[::1]:8000`` -> ``[::1]``."""
    value = (header or "").strip().lower()
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def check_host(header: str | None, allowed: frozenset[str]) -> None:
    name = host_name(header)
    if name not in allowed:
        raise ValidationError(
            f"unexpected Host header {name[:80]!r}: this server answers to {', '.join(sorted(allowed))}. "
            "Add the name to api.allowed_hosts if you serve it under another name."
        )


def allowed_hosts(bind_host: str, extra: list[str], public_url: str = "") -> frozenset[str]:
    """Loopback names, the bound address, ``api.allowed_hosts`` and ``api.public_url``'s host (the
    name nodes and a TLS proxy in front send): any other Host is refused."""
    names = set(LOOPBACK_NAMES) | {h.lower() for h in extra}
    if bind_host not in ("", "0.0.0.0", "::"):
        names.add(bind_host.lower())
    if public_url:
        names.add(host_name(urlsplit(public_url).netloc))
    return frozenset(names)


class RateLimiter:
    """Token buckets by key; ``check`` raises RateLimited with how long to wait."""

    def __init__(self, burst: int) -> None:
        self.burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last time)
        self._lock = threading.Lock()

    def check(self, key: str, rate: float, what: str) -> None:
        if rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                wait = (1 - tokens) / rate
                setting = LIMIT_SETTINGS.get(key.split(":", 1)[0], "api.rate_burst")
                raise RateLimited(
                    f"too many requests for {what}: over {rate:g}/s after a burst of {self.burst} "
                    f"({setting}, api.rate_burst); retry in {wait:.2f}s",
                    retry_after=wait,
                    limit=setting,
                    rate=rate,
                )
            self._buckets[key] = (tokens - 1, now)
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)


# What a 429 for a held-stream cap asks a client to wait: streams end at api.long_poll_max or when
# their client goes, so a slot frees within seconds on a busy server. (error_response rounds up: 5 s.)
STREAM_RETRY_AFTER = 4.0


class StreamSlots:
    """Open streams and long-polls (each holds a server thread until it ends), counted per
    credential and in all. One credential holds at most ``per_key`` at once and all of them
    together at most ``total`` (api.threads less api.reserved_threads), so the threads that
    short requests need (/health, status, lists, the admin's calls) are never all held."""

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key = per_key
        self.total = total
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, key: str, who: str) -> Callable[[], None]:
        """One slot for ``key``, or RateLimited (429) naming the setting; call the result once done."""
        with self._lock:
            held = self._held.get(key, 0)
            if held >= self.per_key:
                raise RateLimited(
                    f"{who} already holds {held} open streams and long-polls (events, progress, log follow, wait, "
                    f"lock waits), the most one credential may (api.max_streams_per_key); close one, or retry in "
                    f"{STREAM_RETRY_AFTER + 1:g}s",
                    retry_after=STREAM_RETRY_AFTER,
                    limit="api.max_streams_per_key",
                    held=held,
                )
            if sum(self._held.values()) >= self.total:
                raise RateLimited(
                    f"all {self.total} server threads for streams and long-polls are held (api.threads less "
                    f"api.reserved_threads, kept for short requests); retry in {STREAM_RETRY_AFTER + 1:g}s",
                    retry_after=STREAM_RETRY_AFTER,
                    limit="api.reserved_threads",
                )
            self._held[key] = held + 1
        return functools.partial(self._give_back, key, [False])

    def held(self, key: str) -> int:
        with self._lock:
            return self._held.get(key, 0)

    def _give_back(self, key: str, done: list[bool]) -> None:
        with self._lock:
            if done[0]:  # a response's close may come twice (an error while streaming, then waitress)
                return
            done[0] = True
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)
