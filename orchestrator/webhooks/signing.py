"""How a delivery is signed, and the receiver's check (the README shows the same few lines).

The signature is HMAC-SHA256, keyed with the endpoint's secret, over ``<timestamp>.<raw body>``
(the timestamp: whole seconds since the epoch, as sent in ``TIMESTAMP_HEADER``), sent as
``sha256=<hex>`` in ``SIGNATURE_HEADER``. A receiver recomputes it over the bytes it received,
compares in constant time, and refuses a timestamp older than a few minutes (a replay), and a
``delivery_id`` it has already seen (a retry it took already)."""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Orchestrator-Timestamp"
SIGNATURE_HEADER = "X-Orchestrator-Signature"
EVENT_HEADER = "X-Orchestrator-Event"
DELIVERY_HEADER = "X-Orchestrator-Delivery"
TOLERANCE = 300.0  # seconds a receiver should accept a timestamp away from its own clock


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``<timestamp>.<body>`` keyed with ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str, timestamp: str, signature: str, body: bytes, *, tolerance: float = TOLERANCE, now: float | None = None
) -> bool:
    """The receiver's check: the signature matches and the timestamp is recent (not a replay)."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature or "")
