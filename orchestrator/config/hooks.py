"""The webhooks section's structured values: ``webhooks.endpoints`` (parsed and checked here) and
a request's ``callback_url`` (checked against ``webhooks.allowed_callback_hosts``). An endpoint's
secret never appears in an error: messages name the key, never its value."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

# What an endpoint may subscribe to; "*" is every one of them (webhooks/events.py derives them).
EVENTS = (
    "job.started",
    "job.completed",
    "job.partial",
    "job.failed",
    "job.cancelled",
    "job.waiting",
    "worker.failed",
    "merge.completed",
    "merge.conflicted",
    "gate.failed",
    "candidate.selected",
)
# The webhooks section's comments (config/schema.py's WebhooksSettings; config.template.yaml shows them).
HELP = {
    "endpoints": "where job events are POSTed, signed (README: Webhooks and callbacks): [{url: https://host/path, "
    'events: [job.completed, job.failed] (or ["*"]), secret: 16+ characters, never shown, timeout: 10}]. '
    "A request cannot add one",
    "max_attempts": "tries of one delivery (network errors, 5xx, 408 and 429 are retried; another 4xx is not)",
    "backoff": "seconds before a delivery's first retry; doubled after each one",
    "backoff_max": "longest wait between two tries of a delivery, seconds",
    "allowed_callback_hosts": "hosts a request's config.callback_url may name (empty: no callbacks), e.g. [n8n.example.com]",
    "callback_secret": "the secret callbacks (a request's config.callback_url) are signed with, like an endpoint's",
    "callback_url": "a root job's callback URL when its request's config names none (usually empty): told of the job's end",
    "keep_deliveries": "finished deliveries kept in <workspace>/.webhooks for GET /api/v1/webhooks/deliveries",
}
ENDPOINT_KEYS = ("url", "events", "secret", "timeout")
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


def parse_endpoints(value: Any, where: str) -> list[dict[str, Any]]:
    """``webhooks.endpoints``: a list of ``{url, events, secret, timeout}``, each url once."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of {{url, events, secret, timeout}} mappings", key=where)
    endpoints: list[dict[str, Any]] = []
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


def check_callback_url(value: str, allowed_hosts: list[str], secret: str) -> str:
    """A request's ``config.callback_url``: an http(s) URL whose host is in ``allowed_hosts``."""
    url = check_url(value, "config.callback_url")
    host = (urlsplit(url).hostname or "").lower()
    if host not in {h.lower() for h in allowed_hosts}:
        raise ConfigError(
            f"config.callback_url: host {host!r} is not in webhooks.allowed_callback_hosts "
            f"({', '.join(allowed_hosts) or 'empty: no callbacks allowed'}). Add it there in config.yaml to allow callbacks to it.",
            key="callback_url",
        )
    if not secret:
        raise ConfigError(
            "config.callback_url: this server has no webhooks.callback_secret to sign callbacks with; set one in config.yaml",
            key="callback_url",
        )
    return url
