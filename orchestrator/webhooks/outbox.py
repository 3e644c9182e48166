"""The outbox: one small JSON file per delivery in ``<workspace>/.webhooks/deliveries/``, written
(temp file and rename, filesystem.atomic_write) before the engine goes on, rewritten after each
try. A pending file is sent again after a restart; finished ones are kept for the listing
(``webhooks.keep_deliveries``, oldest dropped first). Files hold no secret: a delivery names its
endpoint by URL, and the sender looks the secret up in the settings at each try; a waiting job's
approval links are kept unsigned and signed at each try (approval_links.py's ``sign_unsigned``),
so no file holds a link that approves a job. (The folder is also out of every worker's sandbox:
workers/confinement.py shows a worker an empty workspace but for its own paths.)

Why files, not SQLite: a delivery is written once under the engine's lock and then only by its
own lane's thread, so there is nothing to coordinate; a file per delivery needs no schema, no
connection per thread, and a killed server leaves at worst a stray temp file (skipped). The
rename is not fsynced (the engine's lock is held): a killed process loses nothing, a power cut
may lose the last deliveries, like the event lines beside them."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.keys import StrEnum
from ..workspace.filesystem import atomic_write
from ..workspace.layout import webhook_deliveries

log = logging.getLogger("orchestrator.webhooks")
_counter = itertools.count()


def new_id(prefix: str, now: float) -> str:
    """Sorts by creation: milliseconds, then a counter, then randomness."""
    return f"{prefix}_{int(now * 1000):012x}{next(_counter) % 0xFFFFFF:06x}{secrets.token_hex(4)}"


class DeliveryState(StrEnum):
    """Where a delivery stands (the API calls it its ``status``)."""

    PENDING = "pending"  # to be sent, or sent again after a backoff
    DELIVERED = "delivered"  # a 2xx answered it
    FAILED = "failed"  # given up: out of tries, or its URL has no secret any more


STATUSES = tuple(DeliveryState)


@dataclass
class Delivery:
    """One event to one URL, and how its tries went. ``body`` is posted unchanged on every try."""

    delivery_id: str
    event_id: str
    type: str
    url: str
    target: str  # "endpoint" (webhooks.endpoints) or "callback" (a root job's callback_url)
    job_id: str
    body: str
    created_at: float
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    last_status: int | None = None  # the last HTTP status received
    last_error: str | None = None  # the last network error, or why it was given up
    last_attempt_at: float | None = None
    next_attempt_at: float | None = None
    ended_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def public(self) -> dict[str, Any]:
        """What the API lists (the body is left out: it is in the receiver's hands)."""
        data = self.to_dict()
        del data["body"]
        return {"status": data.pop("state"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        known["state"] = DeliveryState(known.get("state", DeliveryState.PENDING))
        return cls(**known)


class Outbox:
    """The deliveries on disk and in memory (the listing reads memory)."""

    def __init__(self, root: Path, keep: int) -> None:
        self.folder = webhook_deliveries(root)
        self.keep = keep
        self._lock = threading.Lock()
        self._all: dict[str, Delivery] = {}  # by id; ids sort by creation
        self._finished = 0

    def load(self) -> list[Delivery]:
        """Every delivery on disk; the pending ones, in creation order, are returned to be sent."""
        if not self.folder.is_dir():
            return []
        for path in sorted(self.folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                found = Delivery.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("webhooks: skipping unreadable delivery file %s: %s", path.name, exc)
                continue
            self._all[found.delivery_id] = found
        self._finished = sum(d.state != DeliveryState.PENDING for d in self._all.values())
        return [d for d in self._all.values() if d.state == DeliveryState.PENDING]

    def add(self, delivery: Delivery) -> None:
        """On disk before the caller goes on (at least once), then listed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(delivery)
        with self._lock:
            self._all[delivery.delivery_id] = delivery

    def save(self, delivery: Delivery) -> None:
        """After a try: the file rewritten; a finished delivery may push the oldest out."""
        try:
            self._write(delivery)
        except OSError as exc:  # it stays pending on disk: sent again after a restart (at least once)
            log.warning("webhooks: cannot record delivery %s: %s", delivery.delivery_id, exc)
        if delivery.state != DeliveryState.PENDING:
            with self._lock:
                self._finished += 1
                if self._finished > self.keep:
                    self._drop_oldest(self._finished - self.keep)

    def _drop_oldest(self, count: int) -> None:
        for key in sorted(self._all):
            if count <= 0:
                break
            if self._all[key].state != DeliveryState.PENDING:
                del self._all[key]
                (self.folder / f"{key}.json").unlink(missing_ok=True)
                self._finished -= 1
                count -= 1

    def _write(self, delivery: Delivery) -> None:
        data = json.dumps(delivery.to_dict(), separators=(",", ":")).encode()
        atomic_write(self.folder / f"{delivery.delivery_id}.json", data, durable=False)

    def page(self, status: str | None, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Newest first, optionally of one status."""
        with self._lock:
            found = [d for d in self._all.values() if status is None or d.state == status]
            found.sort(key=lambda d: d.delivery_id, reverse=True)
            return [d.public() for d in found[offset : offset + limit]], len(found)

    def counts(self) -> dict[str, int]:
        with self._lock:
            values = list(self._all.values())
        return {s: sum(d.state == s for d in values) for s in STATUSES}
