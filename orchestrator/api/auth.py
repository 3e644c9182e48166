"""API keys: the admin key from config, and scoped worker credentials.

A worker credential is ``wk.<job id>.<worker>.<mac>`` where the MAC is an
HMAC of the job and worker under the admin key. It needs no storage, so it
survives a server restart, and it is only honoured while its worker is still
running: a leaked credential dies with its worker. It lets a worker start
child jobs under itself and read (never cancel or delete) its own job tree.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from .. import defences
from ..errors import AuthenticationError, ConfigError, Forbidden
from ..workspace.ids import JOB_ID_RE, WORKER_NAME_RE, root_of

PLACEHOLDER_KEYS = frozenset({"your-api-key", "your-secure-api-key", "changeme", "change-me", "secret", "test", "dev"})
MIN_KEY_CHARS = 16
MAX_KEY_BYTES = 4096


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, or one worker of one job tree."""

    admin: bool
    root_id: str | None = None
    job_id: str | None = None
    worker: str | None = None

    @property
    def key(self) -> str:
        """What this caller's rate bucket and held streams are counted under."""
        return "admin" if self.admin else f"worker:{self.job_id}:{self.worker}"

    @property
    def label(self) -> str:
        """This caller in a refusal's message."""
        return "the admin key" if self.admin else f"worker {self.worker}'s credential"

    def check_tree(self, job_id: str) -> None:
        """A worker may only touch its own job tree."""
        if not self.admin and root_of(job_id) != self.root_id and not defences.off("api_scope"):  # (the suite's switch)
            raise Forbidden(f"this worker credential is for job tree {self.root_id}; it cannot access job {job_id}")

    def require_admin(self, what: str) -> None:
        if not self.admin:
            raise Forbidden(f"a worker credential cannot {what}; use the admin API key")


def check_admin_key(key: str) -> None:
    """Refuse to serve with no key, a short key or a documentation placeholder."""
    if not key:
        raise ConfigError("no API key configured: run ./install.sh (it generates one into config.yaml) or set api.api_key")
    if key.lower() in PLACEHOLDER_KEYS:
        raise ConfigError(f"api.api_key is the placeholder '{key}' from the docs; set a real secret (./install.sh generates one)")
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"api.api_key is {len(key)} characters; use at least {MIN_KEY_CHARS} (./install.sh generates one)")


class Credentials:
    """Issues and checks keys. ``is_running(job_id, worker)`` tells whether a worker is alive."""

    def __init__(self, admin_key: str, is_running: Callable[[str, str], bool]) -> None:
        self._admin = admin_key.encode("utf-8")
        self._is_running = is_running

    def issue(self, root_id: str, job_id: str, worker: str) -> str:
        return f"wk.{job_id}.{worker}.{self._mac(job_id, worker)}"

    def authenticate(self, provided: str | None) -> Principal:
        """The caller behind ``X-API-Key``; 401 when missing or wrong, never a 500."""
        if not provided:
            raise AuthenticationError("missing X-API-Key header: send the API key from config.yaml (api.api_key)")
        raw = _to_bytes(provided)
        if len(raw) > MAX_KEY_BYTES:
            raise AuthenticationError("invalid API key")
        if hmac.compare_digest(raw, self._admin):
            return Principal(admin=True)
        if raw.startswith(b"wk."):
            return self._worker(raw)
        raise AuthenticationError("invalid API key: check X-API-Key against api.api_key in config.yaml")

    def _worker(self, raw: bytes) -> Principal:
        parts = raw.decode("latin-1").split(".")
        if len(parts) != 4 or not JOB_ID_RE.fullmatch(parts[1]) or not WORKER_NAME_RE.fullmatch(parts[2]):
            raise AuthenticationError("invalid API key")
        _, job_id, worker, mac = parts
        if not hmac.compare_digest(mac.encode("latin-1"), self._mac(job_id, worker).encode()):
            raise AuthenticationError("invalid API key")
        if not self._is_running(job_id, worker):
            raise AuthenticationError(f"this worker credential expired: worker {worker} of job {job_id} is no longer running")
        return Principal(admin=False, root_id=root_of(job_id), job_id=job_id, worker=worker)

    def _mac(self, job_id: str, worker: str) -> str:
        return hmac.new(self._admin, f"{job_id}/{worker}".encode(), hashlib.sha256).hexdigest()[:40]


def _to_bytes(value: str) -> bytes:
    """WSGI hands headers over as latin-1 strings; compare the bytes that were sent."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")
