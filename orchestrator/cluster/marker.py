"""The shared-workspace check: the server writes a marker file with a random token into its
workspace and the same (path, token) into Redis; a node refuses to start until it reads that
token from that path, i.e. until it mounts the server's workspace at the same path. The marker in
Redis also says the server's version and protocol: a node of another protocol refuses to start."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import redis

from .. import __version__
from ..workspace.filesystem import atomic_write
from .names import PROTOCOL_VERSION, Names

MARKER_FILE = ".cluster_marker"


@dataclass(frozen=True)
class Marker:
    workspace: str  # the server's workspace, absolute
    token: str
    protocol: int = PROTOCOL_VERSION  # what the server speaks (names.PROTOCOL_VERSION); 1: a server before it was said
    version: str = __version__  # the server's orchestrator version


def write_marker(client: redis.Redis, names: Names, workspace: Path) -> Marker:
    """Write the marker file (a fresh token each server start), then tell Redis where it is."""
    base = workspace.resolve()
    marker = Marker(str(base), secrets.token_hex(16))
    atomic_write(base / MARKER_FILE, json.dumps({"token": marker.token}).encode())
    said = {"workspace": marker.workspace, "token": marker.token, "protocol": marker.protocol, "version": marker.version}
    client.set(names.marker, json.dumps(said))
    return marker


def server_marker(client: redis.Redis, names: Names) -> Marker | None:
    """The marker the server published (None: no server has started with this prefix yet)."""
    raw = client.get(names.marker)
    if not isinstance(raw, bytes):
        return None
    try:
        data = json.loads(raw)
        protocol = data.get("protocol", 1)
        return Marker(str(data["workspace"]), str(data["token"]), protocol, str(data.get("version", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def check_marker(marker: Marker) -> str | None:
    """None when this machine sees the server's marker at the same path; else what is wrong."""
    path = Path(marker.workspace) / MARKER_FILE
    try:
        token = json.loads(path.read_text(encoding="utf-8")).get("token")
    except FileNotFoundError:
        return (
            f"this machine cannot see the server's workspace at {marker.workspace} (no {MARKER_FILE} there): "
            "mount the shared workspace at the same path on every node (README: Cluster)"
        )
    except (OSError, ValueError, AttributeError) as exc:
        return f"cannot read {path}: {exc}"
    if token != marker.token:
        return (
            f"{path} is not the running server's (another server's workspace, or a stale copy): "
            "mount the server's own workspace at that path"
        )
    if not os.access(marker.workspace, os.W_OK):
        return f"the workspace {marker.workspace} is not writable by this user: a node writes logs and files there"
    return None
