"""Outgoing webhooks and callbacks: every job event a receiver subscribed to, POSTed as signed
JSON, at least once (an outbox on disk survives a restart), never slowing the engine.

Configured in config.yaml's ``webhooks`` section (config/hooks.py checks it); a request adds
no endpoint, only (a root job, to a host in ``webhooks.allowed_callback_hosts``) its callback_url.

Modules:

- ``event_types``: the webhook types derived from the engine's events, and a job's summary (pure);
- ``signing``: the signature and the receiver's check (HMAC-SHA256 over "<timestamp>.<body>");
- ``outbox``: a file per delivery under <workspace>/.webhooks/deliveries, and the listing;
- ``sending``: ``Webhooks``: the sink, and a sending lane per receiving host (retries, backoff);
- ``approval_links``: the signed approve and reject links a waiting job's payload carries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..config import Settings
from ..workspace.layout import Workspace
from .sending import Webhooks
from .signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Webhooks",
    "attach",
    "sign",
    "verify",
]


class Announcing(Protocol):
    """What ``attach`` needs of the engine's ``announce.Announcer``: its list of sinks."""

    sinks: list[Any]


def attach(
    settings: Settings, workspace: Workspace, announce: Announcing, api_url: Callable[[], str | None], since: float
) -> Webhooks:
    """The engine's webhooks (``engine.webhooks``), told of every event it announces; stopped by its
    shutdown. Deliveries left pending by the last run are sent again now. ``since``: the engine's
    clock now (a job started before it was resumed after a restart: no second job.started)."""
    hooks = Webhooks(settings, workspace.root, api_url, since)
    announce.sinks.append(hooks)
    return hooks
