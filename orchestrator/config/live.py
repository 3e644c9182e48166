"""A running server's view of its ``config.yaml`` after it started (``ConfigWatch``).

At each root job's submission the server compares the file with what it read last (its size, mtime
and content). When it changed, the file is loaded the way the server loaded it at start (the same
environment and overrides) and compared key by key with the server's settings:

- keys read when a job or a worker starts (the worker kind and its CLI's command, model and
  arguments, gates, the planner, limits, ``workers.env``, git's merge settings...) are applied to
  the server's settings at once, so the next job uses them (a running job's next attempt too, for
  the keys a worker reads as it starts);
- keys read once when the server starts (``RESTART_KEYS``: the API's port, key and threads, the
  workspace, the sandbox (but its backend), logging, the database, the executor, webhooks, the
  resource monitor's caps, the worktree port range, the approval links' lifetime, the path locks'
  lease and wait) are not applied: the server logs them and the submitter is told to restart;
- a file that no longer loads changes nothing: the server keeps every setting it has and says
  what is wrong, until the file is fixed.

The settings object every part of the engine holds is the one updated (section by section, each
an immutable value swapped whole), so no part keeps an older copy of a reloadable section.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .schema import SCHEMA
from .settings import Settings

log = logging.getLogger("orchestrator.config.live")

RESTART = "./quick-start.sh --restart"
# Read once at the server's start: a change waits for a restart. None: the whole section.
RESTART_KEYS: dict[str, frozenset[str] | None] = {
    "api": None,
    "logging": None,
    "database": None,
    "distributed": None,
    "webhooks": None,
    "orchestrator": frozenset({"execution_mode", "workspace_root", "templates_dir", "retention_days"}),
    "workers": frozenset(
        {
            "sandbox",
            "sandbox_writable",
            "sandbox_hidden",
            "sandbox_network",
            "sandbox_unix_sockets",
            "max_memory_mb",
            "memory_reserve_mb",
            "max_processes",
            "max_log_mb",
            "max_disk_mb",
            "monitor_interval",
            "quiet_after",
            "kinds",  # plugin kinds join the registry at the start (docs/plugins.md)
        }
    ),
    # The port pool (checkouts/bootstrap.py), the signed approval links' lifetime (webhooks/sending.py)
    # and the path lock tables (cluster/distribution.py) are built once, at the server's start.
    "git": frozenset({"repo", "port_range", "approval_link_ttl", "checkouts_root"}),
    "tasks": frozenset({"lock_lease", "lock_timeout", "steps"}),  # steps: loaded at the start (docs/plugins.md)
}


def needs_restart(section: str, key: str) -> bool:
    keys = RESTART_KEYS.get(section, frozenset())
    return keys is None or key in keys


@dataclass
class Reload:
    """What one look at the file found: the keys applied, the keys waiting for a restart, or why
    the file does not load (then nothing was applied)."""

    applied: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    error: str = ""

    def notes(self, path: Path) -> list[str]:
        """The sentences a submitter reads (the job's notes)."""
        said = []
        if self.error:
            said.append(f"{path} changed but does not load ({self.error}): the server keeps its settings until it is fixed")
        if self.applied:
            said.append(f"{path} changed: applied to new jobs: {', '.join(self.applied)}")
        if self.restart:
            said.append(f"{path} changed {', '.join(self.restart)}, which the server reads at start: restart to apply: {RESTART}")
        return said


def _stamp(path: Path) -> tuple[int, int, str] | None:
    """(size, mtime in ns, content digest), or None when the file cannot be read."""
    try:
        info = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, digest


class ConfigWatch:
    """Notices a changed config file and applies what it safely can (see the module's docstring).
    ``load`` loads the settings as the server did at start."""

    def __init__(self, settings: Settings, path: Path, load: Callable[[], Settings]) -> None:
        self.settings = settings
        self.path = path
        self._load = load
        self._lock = threading.Lock()
        self._seen = _stamp(path)
        self._pending = Reload()  # what still waits: restart keys, a file that does not load

    def check(self) -> Reload:
        """Look at the file now: what changed since the start and what was done with it. Never
        raises for the file's content."""
        with self._lock:
            stamp = _stamp(self.path)
            if stamp is None or stamp == self._seen:
                return self._pending
            if self._seen is not None and stamp[::2] == self._seen[::2]:  # touched, same content
                self._seen = stamp
                return self._pending
            self._seen = stamp
            try:
                fresh = self._load()
            except (ConfigError, OSError) as exc:
                why = exc.message if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                log.warning("%s changed but does not load: %s; keeping the server's settings", self.path, why)
                self._pending = Reload(restart=self._pending.restart, error=why)
                return self._pending
            applied, restart = self._apply(fresh)
            if applied:
                log.info("%s changed: applied to new jobs: %s", self.path, ", ".join(applied))
            if restart:
                log.warning("%s changed %s: restart to apply (%s)", self.path, ", ".join(restart), RESTART)
            self._pending = Reload(restart=restart)
            return Reload(applied, restart)

    def _apply(self, fresh: Settings) -> tuple[list[str], list[str]]:
        """Swap each reloadable section's changed keys into ``self.settings``; the keys applied,
        and the restart keys that differ from what the server runs with."""
        applied: list[str] = []
        restart: list[str] = []
        for f in dataclasses.fields(Settings):
            if f.name not in SCHEMA:  # base_dir, where the settings came from: not a section
                continue
            old, new = getattr(self.settings, f.name), getattr(fresh, f.name)
            changes: dict[str, Any] = {}
            for key in (k.name for k in dataclasses.fields(old)):
                if getattr(old, key) == getattr(new, key):
                    continue
                if needs_restart(f.name, key):
                    restart.append(f"{f.name}.{key}")
                else:
                    changes[key] = getattr(new, key)
            if changes:
                # Frozen on purpose for everyone else: the watch is the one writer, a section at a time.
                object.__setattr__(self.settings, f.name, dataclasses.replace(old, **changes))
                applied.extend(f"{f.name}.{key}" for key in changes)
        return applied, restart
