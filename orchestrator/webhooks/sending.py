"""``Webhooks``: the sink (told of every engine event, maybe under the engine's lock: it derives
the webhook types, writes a delivery file per subscribed URL and queues it, nothing more) and
the lanes that send them. A lane is one thread per receiving origin (scheme, host, port) with
its deliveries in order: a receiver that hangs or fails holds up only its own lane, never the
engine or another receiver. A delivery is retried with exponential backoff on network errors,
5xx, 408 and 429, up to ``webhooks.max_attempts``; another 4xx (or 3xx) ends it failed."""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..config import Settings
from ..config.hooks import WebhookEvent
from ..events import Event
from ..models import JobRecord, WorkerRecord
from . import event_types as events
from .approval_links import sign_unsigned, unsigned_links
from .outbox import Delivery, DeliveryState, Outbox, new_id
from .signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

if TYPE_CHECKING:  # imported by the lanes only, when there is a delivery to send: `run` without webhooks never pays for it
    import requests

log = logging.getLogger("orchestrator.webhooks")
CALLBACK_TYPES = tuple(f"job.{status}" for status in events.TERMINAL)  # a root job's end
RETRIED_4XX = (408, 429)


class Webhooks:
    """The engine's outgoing webhooks and callbacks (``engine.webhooks``)."""

    def __init__(self, settings: Settings, root: Any, api_url: Callable[[], str | None], since: float = 0.0) -> None:
        self.settings = settings.webhooks
        self._approval = (settings.api.api_key, settings.git.approval_link_ttl)  # a waiting job's signed links
        self.api_url = api_url
        self.since = since  # when this server run began, on the engine's clock
        self.outbox = Outbox(root, self.settings.keep_deliveries)
        self.seen = events.Seen()
        self._lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}
        self._closed = False
        for pending in self.outbox.load():  # what a stopped or killed server left undelivered
            self._queue(pending)

    # -- the sink (announce.Sink) ------------------------------------------------------------
    def job_event(self, job: JobRecord, event: Event) -> None:
        if not self.settings.endpoints and not job.config.callback_url:
            return  # nothing subscribed: no cost to the engine
        try:
            with self._lock:
                types = events.job_types(self.seen, job, event, self.since)
            for kind in types:
                self._emit(kind, job, event, None)
        except Exception:  # a sink never raises into the engine
            log.exception("webhooks: cannot queue an event of job %s", getattr(job, "id", "?"))

    def worker_event(self, job: JobRecord, record: WorkerRecord, event: Event) -> None:
        if not self.settings.endpoints:
            return  # callbacks tell only of a root job's end
        try:
            with self._lock:
                types = events.worker_types(self.seen, job, record, event)
            for kind in types:
                self._emit(kind, job, event, events.worker_summary(record, event))
        except Exception:
            log.exception("webhooks: cannot queue an event of worker %s", getattr(record, "name", "?"))

    def _emit(self, kind: str, job: JobRecord, event: Event, worker: dict[str, Any] | None) -> None:
        targets = [(e["url"], "endpoint") for e in self.settings.endpoints if kind in e["events"] or "*" in e["events"]]
        if job.is_root and job.config.callback_url and kind in CALLBACK_TYPES:
            targets.append((job.config.callback_url, "callback"))
        if not targets:
            return
        now = time.time()
        event_id = new_id("evt", now)
        payload: dict[str, Any] = {"id": event_id, "delivery_id": "", "type": kind, "time": event.time}
        payload["job"] = events.job_summary(job)
        if worker is not None:
            payload["worker"] = worker
        payload["links"] = events.links(job, self.api_url)
        if kind == WebhookEvent.JOB_WAITING and self._approval[0]:  # approve or reject from the payload (approval_links.py)
            base = (self.api_url() or "").rstrip("/")
            # Signed when sent (attempt), never in the outbox's files: a signed link approves the job.
            unsigned = unsigned_links(job.id, now, self._approval[1])
            payload["links"].update({action: base + path for action, path in unsigned.items()})
        for url, target in targets:
            delivery_id = new_id("dlv", now)
            body = json.dumps({**payload, "delivery_id": delivery_id}, separators=(",", ":"))
            delivery = Delivery(delivery_id, event_id, kind, url, target, job.id, body, now)
            self.outbox.add(delivery)
            self._queue(delivery)

    # -- sending -----------------------------------------------------------------------------
    def _queue(self, delivery: Delivery) -> None:
        parts = urlsplit(delivery.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            if self._closed:
                return  # left on disk: sent after the next start
            lane = self._lanes.get(origin)
            if lane is None:
                lane = self._lanes[origin] = _Lane(origin, self)
            lane.put(delivery)

    def credentials(self, delivery: Delivery) -> tuple[str, float] | None:
        """The secret and timeout of the delivery's URL, from the settings of today (None: gone)."""
        if delivery.target == "callback":
            return (self.settings.callback_secret, 10.0) if self.settings.callback_secret else None
        for endpoint in self.settings.endpoints:
            if endpoint["url"] == delivery.url:
                return endpoint["secret"], endpoint["timeout"]
        return None

    def attempt(self, delivery: Delivery, session: requests.Session) -> None:
        """One try; the delivery's record says how it went and whether to try again."""
        import requests

        found = self.credentials(delivery)
        delivery.attempts += 1
        delivery.last_attempt_at = time.time()
        if found is None:
            where = "webhooks.callback_secret" if delivery.target == "callback" else "webhooks.endpoints"
            self._end(delivery, DeliveryState.FAILED, f"its URL has no secret in {where} any more: not sent")
            return
        secret, timeout = found
        body = delivery.body.encode()
        if delivery.type == WebhookEvent.JOB_WAITING and self._approval[0]:
            body = sign_unsigned(self._approval[0], delivery.body).encode()
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "orchestrator-webhooks",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(secret, stamp, body),
            EVENT_HEADER: delivery.type,
            DELIVERY_HEADER: delivery.delivery_id,
        }
        retry = False
        try:
            answer = session.post(delivery.url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
            answer.close()
            delivery.last_status, delivery.last_error = answer.status_code, None
            if 200 <= answer.status_code < 300:
                self._end(delivery, DeliveryState.DELIVERED, None)
                return
            retry = answer.status_code >= 500 or answer.status_code in RETRIED_4XX
            reason = f"HTTP {answer.status_code}"
        except requests.RequestException as exc:
            delivery.last_status, retry = None, True
            reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        if not retry or delivery.attempts >= self.settings.max_attempts:
            why = reason if not retry else f"{reason}; gave up after {delivery.attempts} tries (webhooks.max_attempts)"
            self._end(delivery, DeliveryState.FAILED, why)
            return
        delivery.last_error = reason
        wait = min(self.settings.backoff * 2 ** (delivery.attempts - 1), self.settings.backoff_max)
        delivery.next_attempt_at = time.time() + wait
        self.outbox.save(delivery)

    def _end(self, delivery: Delivery, status: DeliveryState, error: str | None) -> None:
        delivery.state, delivery.last_error = status, error
        delivery.ended_at, delivery.next_attempt_at = time.time(), None
        if status == DeliveryState.FAILED:
            log.warning("webhook %s to %s failed: %s", delivery.type, delivery.url, error)
        self.outbox.save(delivery)

    # -- reading and stopping ----------------------------------------------------------------
    def deliveries(self, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        return self.outbox.page(status, limit, offset)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the lanes; what is pending stays on disk for the next start."""
        with self._lock:
            self._closed = True
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.stop()
        deadline = time.monotonic() + timeout
        for lane in lanes:  # a lane in a hanging request is a daemon thread: it is not waited out
            lane.thread.join(max(0.0, deadline - time.monotonic()))


class _Lane:
    """One receiving origin's deliveries, sent in order by a thread of its own."""

    def __init__(self, origin: str, hooks: Webhooks) -> None:
        self.origin = origin
        self.hooks = hooks
        self._cond = threading.Condition()
        self._queue: collections.deque[Delivery] = collections.deque()
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name=f"webhooks {origin}", daemon=True)
        self.thread.start()

    def put(self, delivery: Delivery) -> None:
        with self._cond:
            self._queue.append(delivery)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def _run(self) -> None:
        import requests

        session = requests.Session()
        try:
            while True:
                with self._cond:
                    while not self._stopping and not self._ready():
                        self._cond.wait(self._wait())
                    if self._stopping:
                        return
                    delivery = self._queue[0]
                try:
                    self.hooks.attempt(delivery, session)
                except Exception:  # never lose the lane to a bug: the delivery ends failed
                    log.exception("webhooks: delivery %s", delivery.delivery_id)
                    self.hooks._end(delivery, DeliveryState.FAILED, "internal error while sending; see the server log")
                if delivery.state != DeliveryState.PENDING:
                    with self._cond:
                        self._queue.popleft()
        finally:
            session.close()

    def _ready(self) -> bool:
        if not self._queue:
            return False
        due = self._queue[0].next_attempt_at
        return due is None or due <= time.time()

    def _wait(self) -> float | None:
        if not self._queue or self._queue[0].next_attempt_at is None:
            return None
        return max(0.01, self._queue[0].next_attempt_at - time.time())
