"""Signed attempts: a node runs only what the server signed, verified with a key from the node's
own configuration, never from Redis.

Redis is a wire, not an authority: anyone who can write to it (its password is on every node)
could otherwise put an attempt hash there and have a node run its argv, with its sandbox off.
So the server signs each attempt's whole spec (argv, cwd, env, sandbox, lease, paths, its id and
token, the protocol version and an expiry) with an Ed25519 key only it holds
(``<workspace>/.keys/cluster-ed25519.pem``, made on first use, mode 0600, beside the record key and
hidden from workers the same way); it writes the public half beside it (``cluster-ed25519.pub``),
which each node reads from the path its own config names (``distributed.verify_key_file``; by
default that same file under the node's own ``orchestrator.workspace_root``). Ed25519 rather than
a shared HMAC secret: a node holds only a public key, so a node broken into cannot sign for the
others.

The node checks, before anything else: every field there and of its type, the signature over the
canonical JSON of all of them, the protocol version, the expiry, and that the spec is the
attempt its RQ job names (id and token) and has not run on this node before. Anything else is
:class:`Refused` with the reason; the node logs it and reports the attempt ended with
``REFUSED_CODE`` and that reason, and goes on serving.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..audit.signing_key import load_or_create_file, write_whole
from ..config import Settings
from ..errors import ConfigError
from .leases import PROTOCOL_VERSION, AttemptSpec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_FILE = "cluster-ed25519.pem"
PUBLIC_KEY_FILE = "cluster-ed25519.pub"
SIGNED_FOR = 24 * 3600.0  # seconds a signed spec stays valid: a queued attempt waiting longer is refused
REFUSED_CODE = 126  # the exit status a refused attempt ends with ("cannot execute")
SIGNED_FIELDS = ("protocol", "expires_at")  # what the signed document adds to the spec's own fields


class Refused(Exception):
    """A spec a node will not run; ``str()`` says why."""


def key_paths(workspace_root: Path) -> tuple[Path, Path]:
    """(private, public) key files of the server whose workspace is ``workspace_root``."""
    folder = workspace_root / ".keys"
    return folder / KEY_FILE, folder / PUBLIC_KEY_FILE


def verify_key_path(settings: Settings) -> Path:
    """The server's public key a node checks each attempt with: ``distributed.verify_key_file``
    (relative to the config's folder), or by default the one under the node's own workspace."""
    value = settings.distributed.verify_key_file
    if not value:
        return key_paths(settings.workspace_root)[1]
    path = Path(value).expanduser()
    return path if path.is_absolute() else (settings.base_dir / path).resolve()


class SpecSigner:
    """The server's side: signs each spec it enqueues."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key

    @classmethod
    def for_workspace(cls, workspace_root: Path) -> SpecSigner:
        """The workspace's cluster key, made on first use; its public half written beside it
        (whole or not at all) for the nodes' ``distributed.verify_key_file``."""
        from cryptography.hazmat.primitives import serialization

        private, public = key_paths(workspace_root)
        key = load_or_create_file(private)  # KeyUnusable (a WorkspaceError) names the file and the fix
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        if not public.exists() or public.read_bytes() != pem:
            public.unlink(missing_ok=True)
            write_whole(public, pem)
        return cls(key)

    def sign(self, spec: AttemptSpec, now: float | None = None) -> str:
        """The JSON the attempt's hash holds: the spec, the protocol, an expiry and the signature."""
        document = _document(spec, (time.time() if now is None else now) + SIGNED_FOR)
        signature = self.key.sign(canonical(document))
        document["signature"] = base64.b64encode(signature).decode()
        return json.dumps(document, separators=(",", ":"))


class SpecVerifier:
    """The node's side: the server's public key, from the node's own configuration."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self.key = key

    @classmethod
    def from_file(cls, path: Path, setting: str = "distributed.verify_key_file") -> SpecVerifier:
        """The key in ``path``; a :class:`ConfigError` naming the file and the fix when there is none."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        fix = (
            f"copy the server's <workspace>/.keys/{PUBLIC_KEY_FILE} (written when the server starts with "
            f"distributed.executor: rq) to this node and name it in {setting}"
        )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the server's public key {path} ({exc.strerror or exc}): {fix}", key=setting) from None
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} holds no readable public key ({exc}): {fix}", key=setting) from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path} holds no Ed25519 public key: {fix}", key=setting)
        return cls(key)

    def verify(
        self, raw: str | bytes | None, attempt_id: str, token: int, now: float | None = None, *, expired_ok: bool = False
    ) -> AttemptSpec:
        """The spec in ``raw`` if the server signed it for this attempt and token and it has not
        expired (``expired_ok``: the server reading back its own, which may be older); else
        :class:`Refused` with the reason."""
        from cryptography.exceptions import InvalidSignature

        if raw is None:
            raise Refused("the attempt's hash holds no spec")
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise Refused(f"its spec is not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise Refused("its spec is not a JSON object")
        signature = document.pop("signature", None)
        if not isinstance(signature, str) or not signature:
            raise Refused("its spec is not signed (no signature)")
        wanted = [f.name for f in fields(AttemptSpec)] + list(SIGNED_FIELDS)
        missing = [name for name in wanted if name not in document]
        if missing:
            raise Refused(f"its spec lacks the field(s) {', '.join(missing)}")
        extra = sorted(set(document) - set(wanted))
        if extra:
            raise Refused(f"its spec has unknown field(s) {', '.join(extra)[:200]}")
        try:
            self.key.verify(base64.b64decode(signature, validate=True), canonical(document))
        except (InvalidSignature, ValueError):
            raise Refused("its signature does not verify with this node's key (distributed.verify_key_file)") from None
        if document["protocol"] != PROTOCOL_VERSION:
            raise Refused(f"it was signed for protocol {document['protocol']!r}; this node speaks {PROTOCOL_VERSION}")
        if not isinstance(document["expires_at"], int | float):
            raise Refused(f"its expiry is not a time ({document['expires_at']!r})")
        if not expired_ok and document["expires_at"] < (time.time() if now is None else now):
            raise Refused(f"its signature expired (expires_at {document['expires_at']!r})")
        spec_fields = {k: v for k, v in document.items() if k not in SIGNED_FIELDS}
        try:
            spec = AttemptSpec(**spec_fields)
        except TypeError as exc:
            raise Refused(f"its spec does not make an attempt ({exc})") from None
        if spec.id != attempt_id or spec.token != token:
            raise Refused(f"it is signed for attempt {spec.id} token {spec.token}, not {attempt_id} token {token}")
        _check_types(spec)
        return spec


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes signed: sorted keys, no spaces, ASCII only (the same on every machine)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _document(spec: AttemptSpec, expires_at: float) -> dict[str, Any]:
    """The spec's fields (the spec's own values, serialized at once, never changed) and the signed ones."""
    return {**spec.to_dict(), "protocol": PROTOCOL_VERSION, "expires_at": expires_at}


def _check_types(spec: AttemptSpec) -> None:
    """A signed spec is the server's; still, a wrong type is a clear refusal, not a crash later."""
    strings = ("id", "kind", "tag", "cwd", "log_path")
    bad = [name for name in strings if not isinstance(getattr(spec, name), str)]
    if not isinstance(spec.argv, list) or not spec.argv or not all(isinstance(a, str) for a in spec.argv):
        bad.append("argv")
    if not isinstance(spec.env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in spec.env.items()):
        bad.append("env")
    if spec.sandbox is not None and not isinstance(spec.sandbox, dict):
        bad.append("sandbox")
    if not isinstance(spec.token, int) or not isinstance(spec.lease, int | float):
        bad.append("token/lease")
    if bad:
        raise Refused(f"its spec has field(s) of the wrong type: {', '.join(bad)}")


__all__ = ["REFUSED_CODE", "Refused", "SpecSigner", "SpecVerifier", "key_paths"]
