"""The workspace's record-signing key: Ed25519 (pyca/cryptography), made once (at install, or by
the first record) in ``<workspace>/.keys/record-ed25519.pem`` with mode 0600, beside the records it
signs and never in the user's checkout. Workers never see the folder (the sandbox hides it): a
worker that could read it could sign a record of its own."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported by the first record, not by every process that hides the key
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_DIR = ".keys"
KEY_FILE = "record-ed25519.pem"


def key_dir(workspace_root: Path) -> Path:
    return workspace_root / KEY_DIR


def key_path(workspace_root: Path) -> Path:
    return key_dir(workspace_root) / KEY_FILE


def load_or_create(workspace_root: Path) -> Ed25519PrivateKey:
    """The folder's key; made if there is none (exclusively: two processes making it at once keep one)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = key_path(workspace_root)
    try:
        return load(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load(path)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return key


def load(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds no Ed25519 key: move it away, and a new one is made")
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
