"""The workspace's record-signing key: Ed25519 (pyca/cryptography), made once (at install, or by
the first record) in ``<workspace>/.keys/record-ed25519.pem`` with mode 0600, beside the records it
signs and never in the user's checkout. Workers never see the folder (the sandbox hides it): a
worker that could read it could sign a record of its own.

The key is written whole or not at all (a temporary file, synced, then linked into place): a full
disk at the first signing once left a 0-byte key, and every later record failed on it. A key file
that holds no key (such a one, or a damaged one) is :class:`KeyUnusable`, naming the file and the fix."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NoSpace, WorkspaceError, no_space

if TYPE_CHECKING:  # cryptography is imported by the first record, not by every process that hides the key
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_DIR = ".keys"
KEY_FILE = "record-ed25519.pem"


def key_dir(workspace_root: Path) -> Path:
    return workspace_root / KEY_DIR


def key_path(workspace_root: Path) -> Path:
    return key_dir(workspace_root) / KEY_FILE


class KeyUnusable(WorkspaceError):
    """The key file is there but holds no Ed25519 key: a write cut short (0 bytes), or a damaged file."""


def load_or_create(workspace_root: Path) -> Ed25519PrivateKey:
    """The folder's key; made if there is none (exclusively: two processes making it at once keep
    one). :class:`KeyUnusable` for a key file that holds none; a :class:`~orchestrator.errors.WorkspaceError`
    (``NoSpace`` on a full disk) naming the file when it cannot be written, and then no file is left."""
    return load_or_create_file(key_path(workspace_root))


def load_or_create_file(path: Path) -> Ed25519PrivateKey:
    """``load_or_create`` for the key at ``path`` (the cluster's attempt-signing key uses it too)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        return load(path)
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        made = write_whole(path, pem)
    except OSError as exc:
        kind = NoSpace if no_space(exc) else WorkspaceError
        raise kind(f"the signing key could not be written at {path}: {exc.strerror or exc}") from exc
    return key if made else load(path)


def write_whole(path: Path, data: bytes) -> bool:
    """``data`` at ``path`` (mode 0600), all of it or nothing: written to a temporary file beside it,
    synced, then linked into place (a link, unlike a rename, never replaces a key another process
    made meanwhile). False when ``path`` was there already (that key is kept)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def load(path: Path) -> Ed25519PrivateKey:
    """The key in ``path`` (FileNotFoundError when there is none; :class:`KeyUnusable` when the file
    holds none, with what to do about it)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = path.read_bytes()
    fix = f"remove {path} and a new key is made by the next record or `./orchestrator.sh verify --key`"
    if not data.strip():
        raise KeyUnusable(
            f"the signing key {path} is empty ({len(data)} bytes): its writing was cut short (a full disk?) "
            f"and it never signed a record; {fix}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyUnusable(
            f"the signing key {path} holds no readable key ({exc}); {fix} (records it signed will no "
            "longer verify: restore it from a copy if you have one)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyUnusable(f"{path} holds no Ed25519 key: move it away, and a new one is made")
    return key


def public_text(key: Ed25519PublicKey) -> str:
    """``ed25519:<base64 of the 32 raw bytes>``: how a record and ``verify --key`` name it."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + base64.b64encode(raw).decode()


def public_from_text(text: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not text.startswith("ed25519:"):
        raise ValueError(f"not an ed25519 public key: {text[:40]!r}")
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.removeprefix("ed25519:"), validate=True))
