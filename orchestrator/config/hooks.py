"""The webhooks section's structured values: ``webhooks.endpoints`` (parsed and checked here) and
a request's ``callback_url`` (checked against ``webhooks.allowed_callback_hosts``). An endpoint's
secret never appears in an error: messages name the key, never its value."""

from __future__ import annotations

import re
from typing import Any, TypedDict
from urllib.parse import urlsplit

from ..errors import ConfigError
from .keys import StrEnum


class WebhookEvent(StrEnum):
    """A webhook's event type (its payload's ``type``): what an endpoint may subscribe to
    (webhooks/event_types.py derives them from the engine's events)."""

    JOB_STARTED = "job.started"
    JOB_COMPLETED = "job.completed"
    JOB_PARTIAL = "job.partial"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    JOB_WAITING = "job.waiting"
    WORKER_FAILED = "worker.failed"
    WORKER_CHILD_INCOMPLETE = "worker.child_incomplete"
    WORKER_REFUSED = "worker.refused"
    MERGE_COMPLETED = "merge.completed"
    MERGE_CONFLICTED = "merge.conflicted"
    GATE_FAILED = "gate.failed"
    CANDIDATE_SELECTED = "candidate.selected"


# What an endpoint may subscribe to; "*" is every one of them.
EVENTS = tuple(event.value for event in WebhookEvent)
# The webhooks section's comments (config/schema.py's WebhooksSettings; config.template.yaml shows them).
HELP = {
    "endpoints": "where job events are POSTed, signed (README: Webhooks and callbacks): [{url: https://host/path, "
    'events: [job.completed, job.failed] (or ["*"]), secret: 16+ characters, never shown, timeout: 10}]. '
    "A request cannot add one",
    "max_attempts": "tries of one delivery (network errors, 5xx, 408 and 429 are retried; another 4xx is not)",
    "backoff": "seconds before a delivery's first retry; doubled after each one",
    "backoff_max": "longest wait between two tries of a delivery, seconds",
    "allowed_callback_hosts": "hosts a request's config.callback_url may name, each HOST (its scheme's port only: 443 for "
    "https, 80 for http), HOST:PORT or HOST:* (any port) (empty: no callbacks), e.g. [n8n.example.com, n8n.internal:5678]",
    "callback_secret": "the secret callbacks (a request's config.callback_url) are signed with, like an endpoint's",
    "callback_url": "a root job's callback URL when its request's config names none (usually empty): told of the job's end",
    "keep_deliveries": "finished deliveries kept in <workspace>/.webhooks for GET /api/v1/webhooks/deliveries",
}
ENDPOINT_KEYS = ("url", "events", "secret", "timeout")


class Endpoint(TypedDict):
    """One of ``webhooks.endpoints``, checked."""

    url: str
    events: list[str]  # event names, or ["*"] for all
    secret: str  # signs its deliveries; never shown
    timeout: float


MAX_TIMEOUT = 300.0
DEFAULT_TIMEOUT = 10.0


def check_url(value: Any, where: str) -> str:
    """An http(s) URL with a host and no user:password part (a credential belongs in the secret)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{where}: give an http:// or https:// URL, such as https://n8n.example.com/webhook/orchestrator", key=where
        )
    if len(value) > 2048:
        raise ConfigError(f"{where}: the URL is over 2048 characters", key=where)
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise ConfigError(f"{where}: not a URL ({exc})", key=where) from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{where}: only http:// and https:// URLs are allowed, not {parts.scheme or 'none'}://", key=where)
    if not parts.hostname:
        raise ConfigError(f"{where}: the URL has no host", key=where)
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{where}: no user:password@ in the URL; deliveries are signed with the secret instead", key=where)
    return value.strip()


def parse_endpoints(value: Any, where: str) -> list[Endpoint]:
    """``webhooks.endpoints``: a list of ``{url, events, secret, timeout}``, each url once."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of {{url, events, secret, timeout}} mappings", key=where)
    endpoints: list[Endpoint] = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at} must be a mapping {{url, events, secret, timeout}}", key=at)
        unknown = sorted(str(k) for k in item if k not in ENDPOINT_KEYS)
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {', '.join(unknown)}. Known: {', '.join(ENDPOINT_KEYS)}", key=at)
        url = check_url(item.get("url"), f"{at}.url")
        if any(e["url"] == url for e in endpoints):
            raise ConfigError(f"{at}.url: this URL is listed twice; list all its events in one entry", key=f"{at}.url")
        events = item.get("events", ["*"])
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            raise ConfigError(f'{at}.events: give a list of event names, or ["*"] for all', key=f"{at}.events")
        bad = [e for e in events if e != "*" and e not in EVENTS]
        if bad:
            raise ConfigError(
                f"{at}.events: unknown event {bad[0][:60]!r}. Known: {', '.join(EVENTS)}, or * for all", key=f"{at}.events"
            )
        secret = item.get("secret")
        if not isinstance(secret, str) or len(secret) < 16:  # never echoed: it is the endpoint's signing key
            raise ConfigError(
                f"{at}.secret: give a string of at least 16 characters to sign deliveries with "
                "(e.g. python -c 'import secrets; print(secrets.token_hex(32))')",
                key=f"{at}.secret",
            )
        timeout = item.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= MAX_TIMEOUT:
            raise ConfigError(f"{at}.timeout: give seconds from 0.1 to {MAX_TIMEOUT:g}", key=f"{at}.timeout")
        endpoints.append({"url": url, "events": list(dict.fromkeys(events)), "secret": secret, "timeout": float(timeout)})
    return endpoints


ANY_PORT = "*"
DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_ENTRY = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[^\s:/@\[\]]+)(?::(?P<port>[0-9]{1,5}|\*))?")


def parse_callback_hosts(value: Any, where: str) -> list[str]:
    """``webhooks.allowed_callback_hosts``: ``HOST``, ``HOST:PORT`` or ``HOST:*`` each (an IPv6
    address in brackets), lower-cased. A bare HOST allows its URL scheme's own port only."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of HOST, HOST:PORT or HOST:* entries", key=where)
    entries = []
    for i, item in enumerate(value):
        found = _HOST_ENTRY.fullmatch(item.strip()) if isinstance(item, str) else None
        port = found["port"] if found else None
        if found is None or (port not in (None, ANY_PORT) and not 1 <= int(port) <= 65535):
            raise ConfigError(
                f"{where}[{i}]: {str(item)[:80]!r} is not HOST, HOST:PORT (1-65535) or HOST:* (any port), "
                "e.g. n8n.example.com or n8n.internal:5678",
                key=f"{where}[{i}]",
            )
        entries.append(item.strip().lower())
    return entries


def _host_port(entry: str) -> tuple[str, str | None]:
    found = _HOST_ENTRY.fullmatch(entry)
    assert found is not None  # parse_callback_hosts checked every entry
    return found["host"].strip("[]"), found["port"]


def check_callback_url(value: str, allowed_hosts: list[str], secret: str) -> str:
    """A request's ``config.callback_url``: an http(s) URL whose host and port an entry of
    ``allowed_hosts`` allows (a bare host: the scheme's own port only, so a callback can never
    reach another service of that host, such as its SSH port or this API)."""
    url = check_url(value, "config.callback_url")
    parts = urlsplit(url)
    host, port = (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS[parts.scheme]
    ports = [p for h, p in map(_host_port, allowed_hosts) if h == host]
    if not ports:
        raise ConfigError(
            f"config.callback_url: host {host!r} is not in webhooks.allowed_callback_hosts "
            f"({', '.join(allowed_hosts) or 'empty: no callbacks allowed'}). Add it there in config.yaml to allow callbacks to it.",
            key="callback_url",
        )
    if not any(p == ANY_PORT or int(p or DEFAULT_PORTS[parts.scheme]) == port for p in ports):
        raise ConfigError(
            f"config.callback_url: port {port} of host {host!r} is not allowed by webhooks.allowed_callback_hosts "
            f"({', '.join(allowed_hosts)}; a host without a port allows {parts.scheme}'s own port, "
            f"{DEFAULT_PORTS[parts.scheme]}, only). Add {f'[{host}]' if ':' in host else host}:{port} there in config.yaml "
            "to allow it.",
            key="callback_url",
        )
    if not secret:
        raise ConfigError(
            "config.callback_url: this server has no webhooks.callback_secret to sign callbacks with; set one in config.yaml",
            key="callback_url",
        )
    return url
